"""Notebook helpers: derivation checks and experiment results with their tables,
showing `dlbook` source beside an equation, and widgets that work from stored outputs."""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .config import rehearsal, resolve_profile


# Below this, a float64 check's value is rounding noise: it depends on the BLAS kernel and the
# thread count, so it is printed as a bound and never as digits.
RESOLUTION = 1e-9


def _sci(x: float) -> str:
    """1e-09 -> '1e-9', 2.5e-07 -> '2.5e-7': the short form used in bounds."""
    m, e = f"{x:.1e}".split("e")
    m = m.rstrip("0").rstrip(".")
    return f"{m}e{int(e)}"


def bound(v: Any, resolution: float = RESOLUTION) -> str | Any:
    """A check's value as printed: ``< resolution`` when it is smaller in magnitude than the
    check can resolve (float64 roundoff by default; pass e.g. ``1e-5`` for a float32
    computation), else the value itself. The text is then the same on every machine."""
    if resolution <= 0:
        raise ValueError(f"bound: resolution must be > 0, got {resolution}")
    if isinstance(v, (bool, int)) or type(v).__name__.startswith(("int", "uint", "bool")):
        return v  # counts are exact
    try:
        x = float(v)
    except (TypeError, ValueError):
        return v
    if math.isfinite(x) and abs(x) < resolution:
        return f"< {_sci(resolution)}"
    return v


def fmt(v: Any, digits: int = 4) -> str:
    """A number printed the same on every machine: `digits` significant digits; tiny
    differences below that (BLAS, thread counts) never change the text. Values of a check
    that may sit at roundoff level go through `bound` first."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if v == 0:
            return "0"
        return f"{v:.{digits}g}"
    try:
        import numpy as np

        if isinstance(v, np.generic):
            return fmt(v.item(), digits)
    except ImportError:  # pragma: no cover
        pass
    return str(v)


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table; `|` inside a cell is escaped so it cannot split the cell."""
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


class _Table:
    header: tuple[str, ...]

    def __init__(self):
        self.rows: list[tuple[str, ...]] = []

    def _repr_markdown_(self) -> str:
        return md_table(self.header, self.rows)

    def __repr__(self) -> str:
        widths = [max(len(str(r[i])) for r in [self.header, *self.rows]) for i in range(len(self.header))]
        line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
        return "\n".join([line(self.header), line(["-" * w for w in widths])] + [line(r) for r in self.rows])


@dataclass
class _Check:
    id: str
    statement: str
    value: str
    threshold: str
    passed: bool


class Checks(_Table):
    """Derivation checks: deterministic, profile-independent verdicts.

    ``checks.check("K1", "KL closed form = Monte Carlo", err, "< 1e-2", err < 1e-2)`` prints
    one line now and a row of the final table (``checks`` as the last expression of a cell).
    A failing check is recorded and shown as FAIL, never hidden."""

    header = ("id", "statement", "value", "threshold", "pass")

    def __init__(self, digits: int = 3):
        super().__init__()
        self.digits = digits
        self.items: dict[str, _Check] = {}

    def check(self, id: str, statement: str, value: Any, threshold: str, passed: bool,
              quiet: bool = False, resolution: float = RESOLUTION) -> None:
        """Record and print one verdict. `value` is shown through `bound(value, resolution)`,
        so an error at roundoff level prints as ``< 1e-9`` on every machine. Returns nothing,
        so a cell that ends with a check echoes nothing after the verdict line."""
        c = _Check(id, statement, fmt(bound(value, resolution), self.digits), threshold, bool(passed))
        self.items[id] = c
        self.rows = [(i.id, i.statement, i.value, i.threshold, "PASS" if i.passed else "FAIL")
                     for i in self.items.values()]
        if not quiet:
            print(f"[{'PASS' if c.passed else 'FAIL'}] {id}: {statement}: {c.value} ({threshold})")

    def close(self, id: str, statement: str, got: float, want: float, rtol: float = 0.0,
              atol: float = 0.0, resolution: float = RESOLUTION) -> None:
        """Check |got - want| <= atol + rtol |want|; the value shown is the error."""
        err = abs(float(got) - float(want))
        tol = atol + rtol * abs(float(want))
        self.check(id, statement, err, f"|error| <= {fmt(tol, 2)}", err <= tol, resolution=resolution)

    def passed(self, id: str) -> bool:
        return self.items[id].passed

    @property
    def all_passed(self) -> bool:
        return all(c.passed for c in self.items.values())


class Results(_Table):
    """Experiment results: measured under the current profile; under smoke the pass column
    reads ``n/a (smoke)`` because a few steps prove nothing."""

    header = ("id", "statement", "measured", "threshold", "pass")

    def __init__(self, profile: str | None = None, digits: int = 3):
        super().__init__()
        self.profile = resolve_profile(profile)
        self.digits = digits
        self.passed: dict[str, bool | None] = {}

    def add(self, id: str, statement: str, measured: Any, threshold: str, passed: bool | None,
            needs: str | None = None) -> None:
        """`needs="full"` marks a claim only the full profile can show (then passed=None
        under other profiles, and the row says where to look). `passed=None` without `needs`
        is a measurement reported for contrast, not a claim: its verdict reads ``reported``."""
        if self.profile == "smoke" or (self.profile == "full" and rehearsal()):
            verdict = "n/a (smoke)" if self.profile == "smoke" else "n/a (rehearsal)"
            ok = None
        elif needs and needs != self.profile and passed is None:
            verdict = f"n/a ({needs} profile)"
            ok = None
        elif passed is None:
            verdict = "reported"
            ok = None
        else:
            ok = bool(passed)
            verdict = "PASS" if ok else "FAIL"
        self.passed[id] = ok
        self.rows = [r for r in self.rows if r[0] != id] + [
            (id, statement, measured if isinstance(measured, str) else fmt(measured, self.digits),
             threshold, verdict)]


def show_source(obj: Callable | type, name: str | None = None):
    """Display the source of a `dlbook` function or class (so the notebook shows the
    code next to its equation without keeping a second copy)."""
    from IPython.display import Code

    return Code(inspect.getsource(obj), language="python")


def slider_gallery(images: Sequence[bytes], labels: Sequence[str], description: str = "",
                   width: str = "560px"):
    """A slider over precomputed PNG images. The slider and the image stack are linked in
    the browser (`jslink`), so the widget also works in the static book, with no kernel."""
    import ipywidgets as W

    if len(images) != len(labels) or not images:
        raise ValueError("slider_gallery: need as many labels as images (and at least one)")
    pages = [W.Image(value=png, format="png", layout=W.Layout(width=width)) for png in images]
    stack = W.Stack(pages, selected_index=0)
    slider = W.SelectionSlider(options=[str(l) for l in labels], index=0,
                               description=description, continuous_update=True,
                               style={"description_width": "initial"}, layout=W.Layout(width=width))
    W.jslink((slider, "index"), (stack, "selected_index"))
    return W.VBox([slider, stack])


def dropdown_gallery(images: Sequence[bytes], labels: Sequence[str], description: str = "",
                     width: str = "560px"):
    """Like `slider_gallery` with a dropdown (for categorical choices such as a norm)."""
    import ipywidgets as W

    if len(images) != len(labels) or not images:
        raise ValueError("dropdown_gallery: need as many labels as images (and at least one)")
    pages = [W.Image(value=png, format="png", layout=W.Layout(width=width)) for png in images]
    stack = W.Stack(pages, selected_index=0)
    dd = W.Dropdown(options=[str(l) for l in labels], index=0, description=description,
                    style={"description_width": "initial"})
    W.jslink((dd, "index"), (stack, "selected_index"))
    return W.VBox([dd, stack])


def grid_gallery(pages: Sequence[Sequence[bytes | str]], rows: Sequence[str], cols: Sequence[str],
                 row_description: str = "", col_description: str = "", width: str = "560px"):
    """Precomputed pages over a grid of two settings: a dropdown picks the row, a slider the
    column. A page is PNG bytes (an image) or a string (HTML, e.g. a small table). Every link
    is a browser-side `jslink`, so the widget works in the static book with no kernel: each row
    is its own slider gallery inside a stack that the dropdown selects."""
    import ipywidgets as W

    if len(pages) != len(rows) or not rows or any(len(r) != len(cols) for r in pages) or not cols:
        raise ValueError(f"grid_gallery: need {len(rows)} rows of {len(cols)} pages each (at least one)")

    def page(p):
        if isinstance(p, (bytes, bytearray)):
            return W.Image(value=bytes(p), format="png", layout=W.Layout(width=width))
        return W.HTML(value=str(p), layout=W.Layout(width=width))

    def row(items):
        stack = W.Stack([page(p) for p in items], selected_index=0)
        slider = W.SelectionSlider(options=[str(c) for c in cols], index=0, description=col_description,
                                   continuous_update=True, style={"description_width": "initial"},
                                   layout=W.Layout(width=width))
        W.jslink((slider, "index"), (stack, "selected_index"))
        return W.VBox([slider, stack])

    outer = W.Stack([row(r) for r in pages], selected_index=0)
    dd = W.Dropdown(options=[str(r) for r in rows], index=0, description=row_description,
                    style={"description_width": "initial"})
    W.jslink((dd, "index"), (outer, "selected_index"))
    return W.VBox([dd, outer])
