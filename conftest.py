"""pytest (and nbval) run under the smoke profile unless told otherwise: the notebook
kernels inherit this environment."""
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent

os.environ.setdefault("DLBOOK_PROFILE", "smoke")
os.environ.setdefault("MPLBACKEND", "Agg")
# Without network the loaders use these offline copies if present (CI has ../shared beside
# the clone); otherwise they fall back to the samples bundled with dlbook.
_shared = ROOT.parent / "shared" / "data"
if _shared.is_dir() and "DLBOOK_MIRROR" not in os.environ:
    os.environ["DLBOOK_MIRROR"] = str(_shared)


@pytest.hookimpl(trylast=True)  # after nbval has mapped its deprecated option names
def pytest_configure(config):
    """Plain `pytest --nbval notebooks/` is the whole command: when nbval is active, its
    kernel is this interpreter (the environment pytest runs in, not whatever `python3`
    kernelspec a machine has) and its outputs are compared after tests/nbval_sanitize.cfg
    (memory addresses, tqdm rates, wall times). Flags given on the command line win.
    Set here rather than in `addopts` so that `pytest tests` needs no nbval, and so that
    the sanitizer is found from any working directory."""
    opt = config.option
    if not (getattr(opt, "nbval", False) or getattr(opt, "nbval_lax", False)):
        return
    if opt.nbval_sanitize_with is None:
        opt.nbval_sanitize_with = str(ROOT / "tests" / "nbval_sanitize.cfg")
    if not opt.nbval_kernel_name:
        opt.nbval_current_env = True
