"""Record a chapter: execute its text notebook with papermill into the paired `.ipynb`
(in place) under a profile, then write a provenance line into the cell tagged
``provenance``.

    python -m dlbook.record notebooks/07_vae_information_bottleneck.ipynb --profile cpu
    python -m dlbook.record --all

The text file (``.md``) is the source of truth; the `.ipynb` is rebuilt from it, so the
two never drift. A failing run leaves the committed `.ipynb` untouched.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import __version__
from .config import PROFILES, device_name, resolve_profile

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
TEXT_EXT = ".md"


def text_for(ipynb: Path) -> Path:
    t = ipynb.with_suffix(TEXT_EXT)
    if not t.exists():
        raise FileNotFoundError(f"{ipynb} has no paired text file {t.name}; create it with "
                                f"`jupytext --set-formats ipynb,md:myst {ipynb}`")
    return t


def git_commit(root: Path = ROOT) -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "dlbook"],
                               cwd=root, capture_output=True, text=True).stdout.strip()
        return rev + ("+local-changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def provenance_line(p: dict) -> str:
    data = "; ".join(p.get("data", [])) or "none loaded"
    return (f"Recorded outputs: profile **{p['profile']}** on {p['device']}, "
            f"wall time {p['wall_time_s'] / 60:.1f} min, dlbook {p['dlbook']}, commit `{p['commit']}`, "
            f"{p['date']}. Data: {data}.")


def _set_provenance(nb, prov: dict) -> bool:
    line = provenance_line(prov)
    nb.metadata["dlbook"] = {"provenance": prov}
    for cell in nb.cells:
        if "provenance" in cell.get("metadata", {}).get("tags", []):
            from nbformat import v4

            cell.outputs = [v4.new_output("display_data", data={"text/markdown": line, "text/plain": line})]
            return True
    return False


def record(ipynb: Path, profile: str, timeout: int | None = None) -> dict:
    import jupytext
    import nbformat
    import papermill as pm

    ipynb = Path(ipynb).resolve()
    text = text_for(ipynb)
    nb = jupytext.read(text)
    nb.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3",
                                          "language": "python"})
    env_log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    env_log.close()
    old = {k: os.environ.get(k) for k in ("DLBOOK_PROFILE", "DLBOOK_PROVENANCE_LOG")}
    os.environ["DLBOOK_PROFILE"] = profile
    os.environ["DLBOOK_PROVENANCE_LOG"] = env_log.name
    tmp = ipynb.with_name(f".{ipynb.stem}.recording.ipynb")
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(nb, str(tmp), parameters={"profile": profile}, kernel_name="python3",
                            cwd=str(ipynb.parent), progress_bar=False, execution_timeout=timeout)
    except Exception:
        print(f"record: {ipynb.name} failed under profile {profile}; the failed run is in {tmp} "
              "and the committed notebook is unchanged", file=sys.stderr)
        raise
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    wall = time.perf_counter() - t0
    out = nbformat.read(tmp, as_version=4)
    # papermill's injected cell would make the .ipynb disagree with its text file; the
    # profile it carried is in the provenance instead.
    out.cells = [c for c in out.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    for c in out.cells:
        c.metadata.pop("papermill", None)
        c.metadata.pop("execution", None)
    out.metadata.pop("papermill", None)
    data = sorted(set(Path(env_log.name).read_text().splitlines()))
    os.unlink(env_log.name)
    prov = {"profile": profile, "device": device_name(), "wall_time_s": round(wall, 1),
            "dlbook": __version__, "commit": git_commit(), "data": data,
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    if not _set_provenance(out, prov):
        print(f"record: warning: {ipynb.name} has no cell tagged 'provenance'", file=sys.stderr)
    nbformat.write(out, str(tmp))
    os.replace(tmp, ipynb)
    print(f"record: {ipynb.relative_to(ROOT) if ipynb.is_relative_to(ROOT) else ipynb}: "
          f"{provenance_line(prov)}")
    return prov


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dlbook.record", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="*", type=Path)
    ap.add_argument("--all", action="store_true", help="every notebooks/*.ipynb")
    ap.add_argument("--profile", default=None,
                    help=f"one of {', '.join(PROFILES)} (default: full with CUDA, else cpu)")
    ap.add_argument("--timeout", type=int, default=None, help="per-cell timeout in seconds")
    a = ap.parse_args(argv)
    # "record" means the published result: never default to smoke even under pytest.
    profile = resolve_profile(a.profile) if a.profile else ("full" if _cuda() else "cpu")
    nbs = sorted(NOTEBOOKS.glob("[0-9]*.ipynb")) if a.all else a.notebooks
    if not nbs:
        ap.error("name notebooks or pass --all")
    for nb in nbs:
        record(nb, profile, a.timeout)
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main())
