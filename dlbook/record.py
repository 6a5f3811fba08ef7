"""Record a chapter: execute its text notebook with papermill into the paired `.ipynb`
(in place) under a profile, then write a provenance line into the cell tagged
``provenance`` and store the commit the outputs came from, which the Colab setup cell installs.

    python -m dlbook.record notebooks/07_vae_information_bottleneck.ipynb --profile cpu
    python -m dlbook.record --all

The text file (``.md``) is the source of truth and is never written; the `.ipynb` is rebuilt
from it, so the two never drift. Only an existing `.ipynb` with its paired `.md` is accepted.
A failing run leaves the committed `.ipynb` untouched and no temp file behind. Progress bars
show while a notebook runs interactively but are kept out of recorded outputs.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import __version__
from .config import PROFILES, ProfileError, device_name, rehearsal, resolve_profile

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
TEXT_EXT = ".md"
# An install line `dlbook @ git+<repository>@<ref>` (the chapters' setup cells write `{ref}`,
# resolved in Colab from the provenance: see dlbook.colab).
INSTALL_REF = re.compile(r"(dlbook @ git\+\S+?)@([0-9A-Za-z._/-]+)([\"'])")


class RecordError(RuntimeError):
    """A notebook that cannot be recorded; the message says why in one line."""


def text_for(ipynb: Path) -> Path:
    t = ipynb.with_suffix(TEXT_EXT)
    if not t.exists():
        raise FileNotFoundError(f"{ipynb} has no paired text file {t.name}; create it with "
                                f"`jupytext --set-formats ipynb,md:myst {ipynb}`")
    return t


def check_target(path: Path) -> Path:
    """Accept only an existing `.ipynb` whose paired `.md` exists; anything else is refused."""
    path = Path(path)
    if path.suffix != ".ipynb":
        raise RecordError(f"record takes a chapter's .ipynb, not {path.name!r} (the .md is its source "
                          f"and is never written): pass {path.with_suffix('.ipynb').name}")
    if not path.is_file():
        raise RecordError(f"{path} does not exist; create the pair with `jupytext --set-formats ipynb,md:myst "
                          f"{path.with_suffix(TEXT_EXT)}`")
    if not path.with_suffix(TEXT_EXT).is_file():
        raise RecordError(f"{path.name} has no paired text file {path.with_suffix(TEXT_EXT).name}; create it "
                          f"with `jupytext --set-formats ipynb,md:myst {path}`")
    return path.resolve()


def _git(*args: str, root: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def git_commit(root: Path = ROOT) -> str:
    """The short commit, with ``+local-changes`` when `dlbook/` differs from it (a changed file,
    or a new one not yet committed: a notebook may import it)."""
    try:
        rev = _git("rev-parse", "--short=12", "HEAD", root=root)
        dirty = _git("status", "--porcelain", "--untracked-files=all", "--", "dlbook", root=root)
        return rev + ("+local-changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def full_commit(root: Path = ROOT) -> str | None:
    try:
        return _git("rev-parse", "HEAD", root=root)
    except (OSError, subprocess.CalledProcessError):
        return None


def provenance_line(p: dict) -> str:
    data = "; ".join(p.get("data", [])) or "none loaded"
    kind = " (rehearsal: smoke sizes, numbers meaningless)" if p.get("rehearsal") else ""
    return (f"Recorded outputs: profile **{p['profile']}**{kind} on {p['device']}, "
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


def pin_install(nb, ref: str) -> int:
    """Point every ``dlbook @ git+...@<ref>`` install line at `ref`; returns how many. (The
    chapters' setup cells no longer store a ref; they read the provenance, see dlbook.colab.)"""
    n = 0
    for cell in nb.cells:
        if cell.cell_type == "code" and "dlbook @ git+" in cell.source:
            cell.source, k = INSTALL_REF.subn(lambda m: f"{m.group(1)}@{ref}{m.group(3)}", cell.source)
            n += k
    return n


_BAR_LINE = re.compile(r"^.*\d+%\|.*\|.*\[.*\]\s*$")
_PROGRESS_MODELS = ("FloatProgressModel", "IntProgressModel")
_WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
_WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _refs(obj) -> set[str]:
    """Model ids a widget's state refers to ("IPY_MODEL_<id>")."""
    if isinstance(obj, str):
        return {obj[10:]} if obj.startswith("IPY_MODEL_") else set()
    if isinstance(obj, dict):
        return set().union(*(_refs(v) for v in obj.values())) if obj else set()
    if isinstance(obj, list):
        return set().union(*(_refs(v) for v in obj)) if obj else set()
    return set()


def strip_progress(nb) -> int:
    """Remove progress bars from stored outputs: tqdm's notebook widgets (an HBox holding a
    progress model) with every model only they use, and tqdm's text bars in streams.
    Returns how many outputs were removed. Other widgets (galleries) are kept."""
    state = nb.metadata.get("widgets", {}).get(_WIDGET_STATE, {}).get("state", {})
    bars = {mid for mid, m in state.items()
            if any(state.get(c, {}).get("model_name") in _PROGRESS_MODELS for c in _refs(m.get("state", {})))}
    removed = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for o in cell.get("outputs", []):
            view = o.get("data", {}).get(_WIDGET_VIEW) if o.get("output_type") in ("display_data", "execute_result") else None
            if view is not None and (view.get("model_id") in bars or view.get("model_id") not in state):
                removed += 1
                continue
            if o.get("output_type") == "stream":
                lines = [ln for ln in o["text"].replace("\r", "\n").split("\n") if not _BAR_LINE.match(ln)]
                text = "\n".join(lines)
                if not text.strip():
                    removed += 1
                    continue
                o["text"] = text if text.endswith("\n") or not o["text"].endswith("\n") else text + "\n"
            kept.append(o)
        cell.outputs = kept
    if state:
        # drop the models only the bars use; keep everything else (galleries, their links)
        def reach(roots):
            seen, todo = set(), list(roots)
            while todo:
                mid = todo.pop()
                if mid in seen or mid not in state:
                    continue
                seen.add(mid)
                todo += list(_refs(state[mid].get("state", {})))
            return seen

        keep = reach(set(state) - reach(bars))
        for mid in list(state):
            if mid not in keep:
                del state[mid]
        if not state:
            nb.metadata.pop("widgets", None)
    return removed


def _sigterm_as_exit(signum, frame):  # `timeout` sends SIGTERM: unwind so that temp files are removed
    raise SystemExit(128 + signum)


def record(ipynb: Path, profile: str, timeout: int | None = None, allow_dirty: bool = False) -> dict:
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _sigterm_as_exit)
        try:
            return _record(ipynb, profile, timeout, allow_dirty)
        finally:
            signal.signal(signal.SIGTERM, previous)
    return _record(ipynb, profile, timeout, allow_dirty)


def _record(ipynb: Path, profile: str, timeout: int | None, allow_dirty: bool) -> dict:
    import shutil

    import jupytext
    import nbformat
    import papermill as pm

    ipynb = check_target(ipynb)
    commit = git_commit()
    if commit.endswith("+local-changes") and not allow_dirty:
        raise RecordError("dlbook/ has uncommitted changes: commit them first, so that the recorded commit "
                          "is the code that made the outputs (or pass --allow-dirty for a trial run)")
    text = text_for(ipynb)
    nb = jupytext.read(text)
    nb.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3",
                                          "language": "python"})
    env_log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    env_log.close()
    tmpdir = tempfile.mkdtemp(prefix="dlbook-record-")
    tmp = Path(tmpdir) / ipynb.name
    # Published numbers under cpu/full come from the real data: no silent fallback to a sample.
    env = {"DLBOOK_PROFILE": profile, "DLBOOK_PROVENANCE_LOG": env_log.name,
           "DLBOOK_REAL_DATA": "0" if profile == "smoke" else "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    t0 = time.perf_counter()
    try:
        try:
            pm.execute_notebook(nb, str(tmp), parameters={"profile": profile}, kernel_name="python3",
                                cwd=str(ipynb.parent), progress_bar=False, execution_timeout=timeout)
        except Exception:
            print(f"record: {ipynb.name} failed under profile {profile}; the committed notebook is unchanged",
                  file=sys.stderr)
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
        strip_progress(out)
        data = sorted(set(Path(env_log.name).read_text().splitlines()))
        prov = {"profile": profile, "device": device_name(), "wall_time_s": round(wall, 1),
                "dlbook": __version__, "commit": commit, "data": data,
                "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
        if rehearsal():  # DLBOOK_REHEARSAL=1: full's code paths at smoke sizes, numbers meaningless
            prov["rehearsal"] = True
        if not commit.endswith("+local-changes") and full_commit():
            # the Colab setup cell reads this at run time (dlbook.colab): no commit is stored as
            # text, so the cell stays identical in the .md and the .ipynb
            prov["install_ref"] = full_commit()
        # as Jupyter's jupytext contents manager writes an .ipynb (opening and saving changes nothing)
        out.metadata.get("jupytext", {}).pop("text_representation", None)
        if not _set_provenance(out, prov):
            print(f"record: warning: {ipynb.name} has no cell tagged 'provenance'", file=sys.stderr)
        final = ipynb.with_name(f".{ipynb.stem}.{os.getpid()}.part")
        try:
            nbformat.write(out, str(final))
            os.replace(final, ipynb)
        finally:
            if final.exists():
                final.unlink()
    finally:
        os.unlink(env_log.name)
        shutil.rmtree(tmpdir, ignore_errors=True)
    shown = ipynb.relative_to(ROOT) if ipynb.is_relative_to(ROOT) else ipynb.name
    print(f"record: {shown}: {provenance_line(prov)}")
    return prov


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dlbook.record", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="*", type=Path)
    ap.add_argument("--all", action="store_true", help="every notebooks/NN_*.ipynb")
    ap.add_argument("--profile", default=None,
                    help=f"one of {', '.join(PROFILES)} (default: $DLBOOK_PROFILE, else full with CUDA, else cpu)")
    ap.add_argument("--timeout", type=int, default=None, help="per-cell timeout in seconds")
    ap.add_argument("--allow-dirty", action="store_true",
                    help="record although dlbook/ has uncommitted changes (Colab then installs the branch)")
    a = ap.parse_args(argv)
    try:
        # "record" means the published result: never default to smoke even under pytest.
        env = os.environ.get("DLBOOK_PROFILE", "").strip()
        profile = resolve_profile(a.profile or env) if (a.profile or env) else ("full" if _cuda() else "cpu")
        nbs = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")) if a.all else a.notebooks
        if not nbs:
            raise RecordError("name notebooks (notebooks/NN_name.ipynb) or pass --all")
        nbs = [check_target(nb) for nb in nbs]  # refuse a bad name before running anything
        for nb in nbs:
            record(nb, profile, a.timeout, a.allow_dirty)
    except (RecordError, ProfileError) as e:
        print(f"record: {e}", file=sys.stderr)
        return 2
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main())
