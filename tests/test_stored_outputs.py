"""What the recorded notebooks store is fit to publish and to compare: no roundoff-level
numbers in the outputs nbval compares, no absolute paths of the recording machine, no
progress bars, no stray True/False echo; and every equation label a `dlbook` comment cites
exists in a chapter."""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
IGNORE = ("NBVAL_IGNORE_OUTPUT", "NBVAL_SKIP")
IGNORE_TAGS = ("nbval-ignore-output", "nbval-skip")

# A number in mantissa form with an exponent of -9 or below (2.6e-16, 1.0e-09, 3e-16): a
# float64 roundoff value, which differs between BLAS kernels and thread counts. A power of ten
# (`< 1e-9` printed by dlbook.nb.bound, `eps=1e-12`) has no mantissa digits to differ.
ROUNDOFF = re.compile(r"(?<![\w.])(?:\d+\.\d+|[2-9]|\d{2,})[eE]-0*(?:9|[1-9]\d+)\b")
# An absolute path with at least two folders (/home/x/y, /tmp/a/b.npz, C:\Users\...).
ABSPATH = re.compile(r"(?<![\w:/.\-~$])/(?:[A-Za-z0-9_.+-]+/){2,}[A-Za-z0-9_.+-]*|[A-Z]:\\\\")
BAR = re.compile(r"\d+%\|.*\|")


def _text(o: dict) -> str:
    if o.get("output_type") == "stream":
        t = o.get("text", "")
        return "".join(t) if isinstance(t, list) else t
    parts = []
    for mime in ("text/plain", "text/markdown", "text/html"):
        v = o.get("data", {}).get(mime)
        if v is not None:
            parts.append("".join(v) if isinstance(v, list) else v)
    if o.get("output_type") == "error":
        parts.append("\n".join(o.get("traceback", [])))
    return "\n".join(parts)


def _compared(cell: dict) -> bool:
    src = "".join(cell["source"])
    tags = cell.get("metadata", {}).get("tags", [])
    return (cell["cell_type"] == "code" and cell.get("execution_count") is not None
            and not any(m in src for m in IGNORE) and not any(t in tags for t in IGNORE_TAGS))


def _cells(ipynb: Path) -> list[dict]:
    return json.loads(ipynb.read_text())["cells"]


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=lambda p: p.stem)
def test_compared_outputs_hold_no_roundoff_numbers(ipynb):
    bad = [(i, m.group(0)) for i, c in enumerate(_cells(ipynb)) if _compared(c)
           for o in c.get("outputs", []) for m in ROUNDOFF.finditer(_text(o))]
    assert not bad, (f"{ipynb.name}: roundoff-level numbers in outputs nbval compares (cell, value): {bad}; "
                     "print them through dlbook.nb.bound / Checks.check(resolution=...)")


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_outputs_hold_no_absolute_paths(ipynb):
    bad = [(i, m.group(0)) for i, c in enumerate(_cells(ipynb)) if c["cell_type"] == "code"
           for o in c.get("outputs", []) for m in ABSPATH.finditer(_text(o))]
    prov = json.loads(ipynb.read_text())["metadata"].get("dlbook", {})
    bad += [("metadata", m.group(0)) for m in ABSPATH.finditer(json.dumps(prov))]
    assert not bad, f"{ipynb.name}: absolute paths in stored outputs: {bad[:10]}"


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=lambda p: p.stem)
def test_figures_were_drawn_with_every_glyph(ipynb):
    """A figure recorded without a font for its text (Chinese on a machine with no CJK font)
    shows empty boxes; matplotlib says so on stderr, which the record step keeps."""
    bad = [i for i, c in enumerate(_cells(ipynb)) if c["cell_type"] == "code"
           for o in c.get("outputs", []) if "missing from font" in _text(o)]
    assert not bad, (f"{ipynb.name}: cells {sorted(set(bad))} drew figures with missing glyphs; install a font "
                     "for them (Debian: apt-get install fonts-noto-cjk) and record again")


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_progress_bars_are_stored(ipynb):
    nb = json.loads(ipynb.read_text())
    state = nb["metadata"].get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    progress = [k for k, m in state.items() if m.get("model_name") in ("FloatProgressModel", "IntProgressModel")]
    text_bars = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"
                 for o in c.get("outputs", []) if BAR.search(_text(o))]
    assert not progress and not text_bars, (f"{ipynb.name}: {len(progress)} progress widgets, text bars in "
                                            f"cells {text_bars}; record with python -m dlbook.record")


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_stray_boolean_echo(ipynb):
    bad = [i for i, c in enumerate(_cells(ipynb)) if c["cell_type"] == "code"
           for o in c.get("outputs", []) if o.get("output_type") == "execute_result"
           and _text(o).strip() in ("True", "False")]
    assert not bad, f"{ipynb.name}: cells {bad} end by echoing True/False"


def test_every_equation_label_cited_in_dlbook_exists():
    labels = set()
    for md in (ROOT / "notebooks").glob("[0-9][0-9]_*.md"):
        labels |= set(re.findall(r"^\$\$\s*\((eq-[\w-]+)\)", md.read_text(), flags=re.M))
        labels |= set(re.findall(r":label:\s*(eq-[\w-]+)", md.read_text()))
    cited = {}
    for py in (ROOT / "dlbook").rglob("*.py"):
        for n, line in enumerate(py.read_text().splitlines(), 1):
            for lab in re.findall(r"\beq-\d\d-[\w-]*\w", line):
                cited.setdefault(lab, f"{py.relative_to(ROOT)}:{n}")
    missing = {lab: where for lab, where in cited.items() if lab not in labels}
    assert not missing, f"equation labels cited in dlbook but defined in no chapter: {missing}"


def test_patterns():
    assert ROUNDOFF.search("error 2.6e-16 (< 1e-12)").group(0) == "2.6e-16"
    assert not ROUNDOFF.search("error < 1e-12 (< 1e-10), eps=1e-12") and not ROUNDOFF.search("lr 3e-4, 1e-08x")
    assert ROUNDOFF.search("5.3E-15") and ROUNDOFF.search("value 3e-16.")
    assert ABSPATH.search("read /home/user/data/x.npz") and ABSPATH.search("at /tmp/a/b")
    assert not ABSPATH.search("see https://kexue.fm/archives/6181 and $DLBOOK_DATA/mnist/x.gz, 1/2/3")
