"""pytest (and nbval) run under the smoke profile unless told otherwise: the notebook
kernels inherit this environment."""
import os
from pathlib import Path

os.environ.setdefault("DLBOOK_PROFILE", "smoke")
os.environ.setdefault("MPLBACKEND", "Agg")
# Without network the loaders use these offline copies if present (CI has ../shared beside
# the clone); otherwise they fall back to the samples bundled with dlbook.
_shared = Path(__file__).resolve().parent.parent / "shared" / "data"
if _shared.is_dir() and "DLBOOK_MIRROR" not in os.environ:
    os.environ["DLBOOK_MIRROR"] = str(_shared)
