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


@pytest.fixture
def offline_data(tmp_path, monkeypatch):
    """A machine without network, data mirror or cached files: the cpu profile, an empty
    $DLBOOK_DATA under tmp_path (returned), downloads forbidden."""
    monkeypatch.setenv("DLBOOK_PROFILE", "cpu")
    monkeypatch.setenv("DLBOOK_DATA", str(tmp_path / "cache"))
    monkeypatch.delenv("DLBOOK_MIRROR", raising=False)
    monkeypatch.setenv("DLBOOK_OFFLINE", "1")
    return tmp_path


@pytest.fixture(scope="module")
def one_thread():
    """Tiny nets: one thread avoids OpenMP contention on a shared machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
