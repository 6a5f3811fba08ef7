"""Claims as data: one rule decides every verdict of the book.

A claim is an id, a statement, a kind, the measured values and a rule; the rule decides the
verdict and writes its own threshold text, so no notebook writes a threshold. Four kinds,
shown in separate groups:

- ``derivation``: an identity checked numerically at a stated resolution. PASS or FAIL; the
  value prints as a bound at or below the threshold (``< 1e-12``), identical on every machine
  and under every profile, so nbval compares it.
- ``construction``: a property the code or the data guarantees (a mask, an identity, a count).
  Shown as "holds by construction" or "a property of the data", never as evidence for or
  against the article; if it does not hold, the code is broken and the row says so.
- ``experiment``: values per seed or run, decided by the book's one rule:

  * a directional claim ("A exceeds B by more than delta") takes a 95 % t-interval of the
    difference (paired when the runs pair, Welch otherwise): PASS when the interval clears
    delta, FAIL when it lies entirely on the other side, INCONCLUSIVE otherwise;
  * a "no effect" claim is an equivalence test with a margin (TOST at 5 %): PASS when the
    90 % interval lies inside the margin, FAIL when the 95 % interval lies outside it,
    INCONCLUSIVE otherwise. Failing to reject a difference is never a PASS;
  * a rate over seeds (collapses, modes reached) takes the exact Clopper-Pearson interval; two
    rates compared take Fisher's exact test with the exact interval of the odds ratio.

  Every row carries n, the estimate, the interval and the minimum detectable effect (MDE) of
  its design: the smallest true effect beyond the threshold that the same design detects with
  80 % power at the observed spread (noncentral t; exact binomial for rates), so an
  INCONCLUSIVE row says what would decide it.
- ``report``: a measured number with no verdict.

Under the smoke profile an experiment reads ``n/a (smoke)``, under a rehearsal of the full
profile (``DLBOOK_REHEARSAL=1``) ``n/a (rehearsal)``; a run that fell back to a bundled data
sample reads ``n/a (sample data)``; a claim only the full profile can show reads
``n/a (full profile)``. The statistics come from ``scipy.stats``.

A notebook collects its claims in one `Claims` object and shows it once; the display also
carries the claims as JSON (`MIME`), from which the book's claims ledger is built.
"""
from __future__ import annotations

import html
import json
import math
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .nb import RESOLUTION, bound, fmt

KINDS = ("derivation", "construction", "experiment", "report")
KIND_TITLES = {"derivation": "Derivations: identities checked numerically",
               "construction": "Construction: what the code or the data guarantees (not evidence)",
               "experiment": "Experiments: decided by the book's rule",
               "report": "Reported measurements (no verdict)"}
ALPHA = 0.05   # two-sided level of every interval; TOST runs two one-sided tests at ALPHA
POWER = 0.80   # the power at which the minimum detectable effect is quoted
MIME = "application/vnd.dlbook.claims+json"
DECIDED = ("PASS", "FAIL", "INCONCLUSIVE")


class ClaimError(ValueError):
    """A claim that cannot be decided as asked (wrong kind, no values, a rule without a
    threshold): the message says what to pass instead."""


@dataclass(frozen=True)
class Claim:
    id: str
    statement: str
    kind: str
    verdict: str
    measured: str              # the measured value as shown (estimate, or the check's value)
    rule: str                  # the threshold text, written by the rule
    n: int | None = None
    estimate: float | None = None
    interval: tuple[float, float] | None = None
    level: float | None = None  # confidence level of `interval`
    mde: float | None = None
    note: str = ""             # what would decide an INCONCLUSIVE row, or why a row is n/a
    values: tuple = ()

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ClaimError(f"claim {self.id}: unknown kind {self.kind!r}; choose one of {KINDS}")
        if not str(self.id).strip():
            raise ClaimError("a claim needs a non-empty id")

    @property
    def anchor(self) -> str:
        """The HTML id of the claim's row: ``claim-`` and the id, spaces as dashes and any other
        character outside [A-Za-z0-9.-] as ``_`` and its code (so D12a and D12a' differ)."""
        a = re.sub(r"\s+", "-", self.id.strip())
        return "claim-" + re.sub(r"[^A-Za-z0-9.-]", lambda m: f"_{ord(m.group()):x}", a)

    def to_json(self) -> dict:
        d = asdict(self)
        d["interval"] = list(self.interval) if self.interval is not None else None
        d["values"] = [float(v) if isinstance(v, (int, float, np.floating, np.integer)) else v for v in self.values]
        d["anchor"] = self.anchor
        for k in ("estimate", "mde"):
            if d[k] is not None and not math.isfinite(d[k]):
                d[k] = None if math.isnan(d[k]) else ("inf" if d[k] > 0 else "-inf")
        if d["interval"] is not None:
            d["interval"] = [v if math.isfinite(v) else ("inf" if v > 0 else "-inf") for v in d["interval"]]
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Claim":
        d = {k: v for k, v in d.items() if k != "anchor"}
        num = lambda v: float(v) if isinstance(v, str) and v in ("inf", "-inf") else v
        if d.get("interval") is not None:
            d["interval"] = tuple(num(v) for v in d["interval"])
        for k in ("estimate", "mde"):
            d[k] = num(d.get(k))
        d["values"] = tuple(d.get("values", ()))
        return cls(**d)


def _f(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float) and math.isinf(x):
        return "∞" if x > 0 else "−∞"
    return fmt(float(x), digits)


def _values(name: str, v, claim_id: str) -> np.ndarray:
    a = np.asarray(list(v) if not isinstance(v, np.ndarray) else v, dtype=np.float64).ravel()
    if a.size == 0:
        raise ClaimError(f"claim {claim_id}: {name} has no values")
    if not np.all(np.isfinite(a)):
        raise ClaimError(f"claim {claim_id}: {name} holds a non-finite value ({a.tolist()}); a run that "
                         f"diverged is a result to report, not a number to average")
    return a


# ------------------------------------------------------------------ derivations, constructions
def derivation(id: str, statement: str, value: Any, *, below: float | None = None,
               at_most: float | None = None, above: float | None = None, at_least: float | None = None,
               equals: Any = None, resolution: float | None = None, digits: int = 3) -> Claim:
    """An identity checked numerically. Exactly one of ``below`` (value < t), ``at_most``
    (value <= t), ``above`` (value > t), ``at_least`` (value >= t), ``equals`` (value == t,
    for exact counts). The value prints through `dlbook.nb.bound` at ``resolution``, which
    defaults to the smaller of float64 roundoff (1e-9) and an upper threshold, so a pass below
    a tight threshold prints as ``< threshold`` rather than a coarser bound."""
    given = {k: v for k, v in dict(below=below, at_most=at_most, above=above, at_least=at_least,
                                    equals=equals).items() if v is not None}
    if len(given) != 1:
        raise ClaimError(f"claim {id}: give exactly one of below / at_most / above / at_least / equals, "
                         f"got {sorted(given) or 'none'}")
    (how, t), = given.items()
    upper = how in ("below", "at_most")
    if resolution is None:
        resolution = min(RESOLUTION, float(t)) if upper and float(t) > 0 else RESOLUTION
    if upper and resolution > float(t):
        raise ClaimError(f"claim {id}: resolution {resolution:g} is coarser than the threshold {t:g}; "
                         f"a pass could not be seen")
    x = value
    try:
        xf = float(x)
    except (TypeError, ValueError):
        raise ClaimError(f"claim {id}: the value must be a number, got {x!r}") from None
    ok = {"below": lambda: xf < t, "at_most": lambda: xf <= t, "above": lambda: xf > t,
          "at_least": lambda: xf >= t, "equals": lambda: xf == t}[how]()
    sym = {"below": "<", "at_most": "≤", "above": ">", "at_least": "≥", "equals": "="}[how]
    shown = fmt(bound(x, resolution), digits) if not isinstance(x, (bool, int, np.integer)) else str(int(x))
    return Claim(id, statement, "derivation", "PASS" if ok else "FAIL", shown, f"{sym} {_f(t, 3)}",
                 n=1, estimate=xf)


def close(id: str, statement: str, got: float, want: float, *, atol: float = 0.0, rtol: float = 0.0,
          resolution: float | None = None, digits: int = 3) -> Claim:
    """A derivation: |got - want| <= atol + rtol |want|; the value shown is the error."""
    tol = float(atol) + float(rtol) * abs(float(want))
    if tol <= 0:
        raise ClaimError(f"claim {id}: close() needs atol or rtol > 0")
    c = derivation(id, statement, abs(float(got) - float(want)), at_most=tol, resolution=resolution,
                   digits=digits)
    return replace(c, rule=f"|error| ≤ {_f(tol, 2)}")


def construction(id: str, statement: str, holds: bool, value: Any = None, *, of: str = "code") -> Claim:
    """A property the code (``of="code"``) or the data (``of="data"``) guarantees. Shown for
    the reader to see, never counted for or against the article. If it does not hold the
    code is broken, and the row says so."""
    if of not in ("code", "data"):
        raise ClaimError(f"claim {id}: of must be 'code' or 'data', got {of!r}")
    label = "holds by construction" if of == "code" else "a property of the data"
    verdict = label if bool(holds) else "BROKEN"
    shown = "–" if value is None else (value if isinstance(value, str) else fmt(value, 4))
    return Claim(id, statement, "construction", verdict, shown, label)


def report(id: str, statement: str, value: Any, *, digits: int = 3, values: Sequence[float] = ()) -> Claim:
    """A measured number with no verdict (a contrast, a timing, a baseline's score)."""
    shown = value if isinstance(value, str) else fmt(value, digits)
    return Claim(id, statement, "report", "reported", shown, "–", values=tuple(values))


# ------------------------------------------------------------------ the t rule
def _t_summary(a: np.ndarray, b: np.ndarray | None, paired: bool):
    """Estimate, standard error and degrees of freedom of mean(a) [- mean(b)]."""
    if b is None:
        return float(a.mean()), (float(a.std(ddof=1)) / math.sqrt(a.size) if a.size > 1 else math.nan), a.size - 1, a.size
    if paired:
        if a.size != b.size:
            raise ClaimError(f"paired values differ in length ({a.size} vs {b.size}); pass paired=False "
                             f"for independent runs")
        d = a - b
        return float(d.mean()), (float(d.std(ddof=1)) / math.sqrt(d.size) if d.size > 1 else math.nan), d.size - 1, d.size
    if a.size < 2 or b.size < 2:
        return float(a.mean() - b.mean()), math.nan, 0, min(a.size, b.size)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1)) if se > 0 else a.size + b.size - 2
    return float(a.mean() - b.mean()), se, df, min(a.size, b.size)


def t_interval(est: float, se: float, df: float, level: float = 1 - ALPHA) -> tuple[float, float]:
    """The two-sided t interval est ± t_{(1+level)/2, df} se."""
    from scipy import stats

    if se == 0:
        return est, est
    h = float(stats.t.ppf(0.5 + level / 2, df)) * se
    return est - h, est + h


def mde_t(se: float, df: float, alpha: float = ALPHA / 2, power: float = POWER) -> float:
    """Smallest true effect (beyond the threshold) that a one-sided t test at `alpha` detects
    with `power`, for standard error `se` and `df` degrees of freedom: solves
    1 - F_nct(t_crit; df, effect/se) = power."""
    from scipy import optimize, stats

    if se == 0:
        return 0.0
    if not math.isfinite(se) or df < 1:
        return math.inf
    tc = float(stats.t.ppf(1 - alpha, df))
    f = lambda nc: float(stats.nct.sf(tc, df, nc)) - power
    hi = tc + 10.0
    while f(hi) < 0:
        hi *= 2
    return float(optimize.brentq(f, 0.0, hi, xtol=1e-10)) * se


def mde_equivalence(se: float, df: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest margin that TOST at `alpha` establishes with `power` when the true
    difference is zero: margin = se (t_{1-alpha, df} + t_{(1+power)/2, df})."""
    from scipy import stats

    if se == 0:
        return 0.0
    if not math.isfinite(se) or df < 1:
        return math.inf
    return se * float(stats.t.ppf(1 - alpha, df) + stats.t.ppf(0.5 + power / 2, df))


def _design(b, paired: bool, n: int) -> str:
    if b is None:
        return f"n = {n}"
    return f"n = {n} pairs" if paired else "Welch, unpaired"


def experiment(id: str, statement: str, a: Sequence[float], b: Sequence[float] | None = None, *,
               above: float | None = None, below: float | None = None, paired: bool = True,
               deterministic: bool = False, unit: str = "", digits: int = 3) -> Claim:
    """A directional claim over runs: mean(a) - mean(b) > ``above`` (or < ``below``); without
    `b`, mean(a) itself. 95 % t-interval (paired differences when `paired`, Welch
    otherwise): PASS when it clears the threshold, FAIL when it lies entirely on the other
    side, INCONCLUSIVE otherwise. ``deterministic=True`` declares a measurement that no seed
    changes (one run is then the whole sample: the interval is the point)."""
    if (above is None) == (below is None):
        raise ClaimError(f"claim {id}: give exactly one of above= or below= (the claimed threshold)")
    a_ = _values("a", a, id)
    b_ = None if b is None else _values("b", b, id)
    est, se, df, n = _t_summary(a_, b_, paired)
    if deterministic:
        se, df = 0.0, max(df, 1)
    t = float(above if above is not None else below)
    sym = ">" if above is not None else "<"
    what = "mean" if b_ is None else "difference"
    rule = f"{what} {sym} {_f(t, 3)}{unit}: 95 % t-interval"
    vals = tuple(a_.tolist()) if b_ is None else tuple((a_ - b_).tolist()) if paired else tuple(a_.tolist())
    if not math.isfinite(se):
        return Claim(id, statement, "experiment", "INCONCLUSIVE", _f(est, digits) + unit, rule, n=n, estimate=est,
                     mde=math.inf, note="one run has no spread: needs at least two seeds", values=vals)
    lo, hi = t_interval(est, se, df)
    if above is not None:
        verdict = "PASS" if lo > t else "FAIL" if hi <= t else "INCONCLUSIVE"
    else:
        verdict = "PASS" if hi < t else "FAIL" if lo >= t else "INCONCLUSIVE"
    mde = mde_t(se, df)
    note = "" if verdict != "INCONCLUSIVE" else (
        f"decides an effect {_f(mde, 2)}{unit} beyond the threshold with 80 % power; more runs narrow it")
    return Claim(id, statement, "experiment", verdict, _f(est, digits) + unit,
                 rule + ("" if not deterministic else " (deterministic: the point)") + f", {_design(b_, paired, n)}",
                 n=n, estimate=est, interval=(lo, hi), level=1 - ALPHA, mde=mde, note=note, values=vals)


def equivalent(id: str, statement: str, a: Sequence[float], b: Sequence[float] | None = None, *,
               margin: float, center: float = 0.0, paired: bool = True, unit: str = "",
               digits: int = 3) -> Claim:
    """A "no effect" claim: |mean(a) - mean(b) - center| < margin, by two one-sided tests at
    5 % (TOST). PASS when the 90 % interval lies inside (center - margin, center + margin),
    FAIL when the 95 % interval lies outside it, INCONCLUSIVE otherwise. The MDE is the
    smallest margin this design would establish with 80 % power if the truth were `center`."""
    if not margin > 0:
        raise ClaimError(f"claim {id}: an equivalence claim needs a margin > 0 stated from the article")
    a_ = _values("a", a, id)
    b_ = None if b is None else _values("b", b, id)
    est, se, df, n = _t_summary(a_, b_, paired)
    lo_m, hi_m = center - margin, center + margin
    rule = (f"within {_f(center, 3)} ± {_f(margin, 3)}{unit}: TOST, 90 % interval inside, "
            f"{_design(b_, paired, n)}")
    vals = tuple(a_.tolist()) if b_ is None else tuple((a_ - b_).tolist()) if paired else tuple(a_.tolist())
    if not math.isfinite(se):
        return Claim(id, statement, "experiment", "INCONCLUSIVE", _f(est, digits) + unit, rule, n=n, estimate=est,
                     mde=math.inf, note="one run has no spread: needs at least two seeds", values=vals)
    lo90, hi90 = t_interval(est, se, df, 1 - 2 * ALPHA)
    lo95, hi95 = t_interval(est, se, df)
    if lo_m < lo90 and hi90 < hi_m:
        verdict = "PASS"
    elif hi95 <= lo_m or lo95 >= hi_m:
        verdict = "FAIL"
    else:
        verdict = "INCONCLUSIVE"
    mde = mde_equivalence(se, df)
    note = "" if verdict != "INCONCLUSIVE" else (
        f"this design establishes a margin of {_f(mde, 2)}{unit} with 80 % power; the stated margin needs "
        f"about {math.ceil(n * (mde / margin) ** 2)} runs" if math.isfinite(mde) and mde > 0 else "")
    return Claim(id, statement, "experiment", verdict, _f(est, digits) + unit, rule, n=n, estimate=est,
                 interval=(lo90, hi90), level=1 - 2 * ALPHA, mde=mde, note=note, values=vals)


# ------------------------------------------------------------------ rates
def _binom_ci(k: int, n: int) -> tuple[float, float]:
    from scipy import stats

    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=1 - ALPHA, method="exact")
    return float(ci.low), float(ci.high)


def mde_rate(n: int, p0: float, upper: bool, alpha: float = ALPHA / 2, power: float = POWER) -> float:
    """Smallest |p1 - p0| that the exact one-sided binomial test at `alpha` with `n` trials
    detects with `power` (inf when no outcome of n trials could reject)."""
    from scipy import optimize, stats

    if upper:  # claim p > p0: reject for k >= kc
        ks = [k for k in range(n + 1) if stats.binom.sf(k - 1, n, p0) <= alpha]
        if not ks:
            return math.inf
        kc = min(ks)
        f = lambda p: float(stats.binom.sf(kc - 1, n, p)) - power
        return float(optimize.brentq(f, p0, 1.0)) - p0 if f(1.0) > 0 else math.inf
    ks = [k for k in range(n + 1) if stats.binom.cdf(k, n, p0) <= alpha]
    if not ks:
        return math.inf
    kc = max(ks)
    f = lambda p: float(stats.binom.cdf(kc, n, p)) - power
    return p0 - float(optimize.brentq(f, 0.0, p0)) if f(0.0) > 0 else math.inf


def rate(id: str, statement: str, successes: int, n: int, *, above: float | None = None,
         below: float | None = None, what: str = "runs") -> Claim:
    """A rate over runs (e.g. seeds that reach every mode): claim rate > ``above`` or
    < ``below``. Exact (Clopper-Pearson) 95 % interval: PASS when it clears the threshold,
    FAIL when it lies on the other side, INCONCLUSIVE otherwise."""
    if (above is None) == (below is None):
        raise ClaimError(f"claim {id}: give exactly one of above= or below=")
    k, n = int(successes), int(n)
    if n < 1 or not 0 <= k <= n:
        raise ClaimError(f"claim {id}: need 0 <= successes <= n and n >= 1, got {k} of {n}")
    lo, hi = _binom_ci(k, n)
    t = float(above if above is not None else below)
    if not 0 <= t <= 1:
        raise ClaimError(f"claim {id}: a rate threshold lies in [0, 1], got {t}")
    if above is not None:
        verdict = "PASS" if lo > t else "FAIL" if hi <= t else "INCONCLUSIVE"
    else:
        verdict = "PASS" if hi < t else "FAIL" if lo >= t else "INCONCLUSIVE"
    mde = mde_rate(n, t, above is not None)
    note = "" if verdict != "INCONCLUSIVE" else (
        f"{n} {what} detect a rate {_f(mde, 2)} beyond the threshold with 80 % power" if math.isfinite(mde)
        else f"no outcome of {n} {what} could decide it")
    sym = ">" if above is not None else "<"
    return Claim(id, statement, "experiment", verdict, f"{k}/{n}", f"rate {sym} {_f(t, 3)}: exact binomial interval",
                 n=n, estimate=k / n, interval=(lo, hi), level=1 - ALPHA, mde=mde, note=note)


def _fisher_region(na: int, nb: int, alpha: float) -> np.ndarray:
    """Outcomes (ka, kb) where Fisher's one-sided test rejects 'rate a <= rate b' at alpha."""
    from scipy import stats

    hyper = np.zeros((na + 1, nb + 1), dtype=bool)
    for ka in range(na + 1):
        for kb in range(nb + 1):
            m = ka + kb  # P(X >= ka) for X ~ hypergeom(na + nb, m, na)
            hyper[ka, kb] = stats.hypergeom.sf(ka - 1, na + nb, m, na) <= alpha
    return hyper


def mde_two_rates(na: int, nb: int, pb: float, alpha: float = ALPHA / 2, power: float = POWER) -> float:
    """Smallest p_a - p_b (p_b fixed) that Fisher's one-sided exact test detects with `power`."""
    from scipy import optimize, stats

    region = _fisher_region(na, nb, alpha)
    fb = stats.binom.pmf(np.arange(nb + 1), nb, pb)

    def pw(pa):
        fa = stats.binom.pmf(np.arange(na + 1), na, pa)
        return float((np.outer(fa, fb) * region).sum())

    if pw(1.0) < power:
        return math.inf
    return float(optimize.brentq(lambda p: pw(p) - power, pb, 1.0)) - pb


def rates(id: str, statement: str, ka: int, na: int, kb: int, nb: int, *, labels: tuple[str, str] = ("a", "b"),
          what: str = "runs") -> Claim:
    """Two rates over runs: the claim 'rate a > rate b'. Fisher's exact test with the exact
    (conditional) 95 % interval of the odds ratio: PASS when it lies above 1, FAIL when it
    lies below 1, INCONCLUSIVE otherwise. The MDE is in rate points at b's observed rate."""
    from scipy.stats.contingency import odds_ratio

    for k, n in ((ka, na), (kb, nb)):
        if n < 1 or not 0 <= k <= n:
            raise ClaimError(f"claim {id}: need 0 <= successes <= n and n >= 1, got {k} of {n}")
    res = odds_ratio([[ka, na - ka], [kb, nb - kb]], kind="conditional")
    ci = res.confidence_interval(confidence_level=1 - ALPHA)
    lo, hi = float(ci.low), float(ci.high)
    verdict = "PASS" if lo > 1 else "FAIL" if hi < 1 else "INCONCLUSIVE"
    mde = mde_two_rates(na, nb, kb / nb)
    diff = ka / na - kb / nb
    note = "" if verdict != "INCONCLUSIVE" else (
        f"{na} vs {nb} {what} detect a difference of {_f(mde, 2)} in rate with 80 % power" if math.isfinite(mde)
        else f"no outcome of {na} vs {nb} {what} could decide it")
    return Claim(id, statement, "experiment", verdict, f"{ka}/{na} vs {kb}/{nb}",
                 f"rate {labels[0]} > rate {labels[1]}: Fisher exact, odds-ratio interval above 1",
                 n=min(na, nb), estimate=diff, interval=(lo, hi), level=1 - ALPHA, mde=mde, note=note)


def not_decided(id: str, statement: str, why: str, measured: str = "–") -> Claim:
    """An experiment this run cannot decide at all, e.g. ``why="full profile"``: the verdict
    reads ``n/a (<why>)``."""
    return Claim(id, statement, "experiment", f"n/a ({why})", measured, "–", note="")


# ------------------------------------------------------------------ collecting and showing
def sample_data_used() -> list[str]:
    """Data this process read from a bundled sample rather than the real data set."""
    from .data.registry import sources

    return [f"{k}: {v}" for k, v in sources().items() if "bundled sample" in v]


@dataclass
class Claims:
    """The claims of one chapter, in the order they were made. Derivations and constructions
    print one line when made (a notebook's derivation cells show them); the whole set renders
    as tables grouped by kind, with the claims as JSON beside the HTML for the ledger."""

    chapter: str
    title: str = ""
    profile: str | None = None
    headline: str = ""
    items: list[Claim] = field(default_factory=list)
    quiet: bool = False

    def __post_init__(self):
        from .config import resolve_profile

        self.profile = resolve_profile(self.profile)

    # --- adding
    def add(self, claim: Claim) -> Claim:
        if any(c.id == claim.id or c.anchor == claim.anchor for c in self.items):
            raise ClaimError(f"claim {claim.id} is made twice in chapter {self.chapter}")
        claim = self._in_context(claim)
        self.items.append(claim)
        if claim.kind in ("derivation", "construction") and not self.quiet:
            print(f"[{claim.verdict}] {claim.id}: {claim.statement}: {claim.measured} ({claim.rule})")
        return claim

    def extend(self, claims: Iterable[Claim]) -> "Claims":
        for c in claims:
            self.add(c)
        return self

    # These return nothing, so a cell that ends with a check shows only its printed line
    # (``claims[id]`` gives the claim back).
    def derivation(self, *a, **k) -> None:
        self.add(derivation(*a, **k))

    def close(self, *a, **k) -> None:
        self.add(close(*a, **k))

    def construction(self, *a, **k) -> None:
        self.add(construction(*a, **k))

    def report(self, *a, **k) -> None:
        self.add(report(*a, **k))

    def _in_context(self, c: Claim) -> Claim:
        """Experiments under smoke or on sample data decide nothing."""
        if c.kind != "experiment" or c.verdict.startswith("n/a"):
            return c
        from .config import rehearsal

        if self.profile == "smoke":
            return replace(c, verdict="n/a (smoke)", note="a few steps prove nothing; the recorded profile decides it")
        if rehearsal():
            return replace(c, verdict="n/a (rehearsal)", note="the full profile's code paths at smoke's sizes")
        if sample_data_used():
            return replace(c, verdict="n/a (sample data)",
                           note="run on a bundled sample; point $DLBOOK_MIRROR or $DLBOOK_DATA at the real data")
        return c

    # --- reading
    def __getitem__(self, id: str) -> Claim:
        for c in self.items:
            if c.id == id:
                return c
        raise KeyError(f"no claim {id!r} in chapter {self.chapter}")

    def passed(self, id: str) -> bool:
        return self[id].verdict == "PASS"

    def of_kind(self, kind: str) -> list[Claim]:
        return [c for c in self.items if c.kind == kind]

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for c in self.items:
            v = out.setdefault(c.kind, {})
            v[c.verdict] = v.get(c.verdict, 0) + 1
        return out

    def to_json(self) -> dict:
        return {"chapter": self.chapter, "title": self.title, "profile": self.profile,
                "headline": self.headline, "claims": [c.to_json() for c in _by_kind(self.items)]}

    # --- showing
    def html(self) -> str:
        return render_html(self.items, self.chapter)

    def _repr_mimebundle_(self, include=None, exclude=None):
        return {"text/html": self.html(), "text/plain": self.text(), MIME: self.to_json()}

    def text(self) -> str:
        lines = []
        for kind in KINDS:
            group = self.of_kind(kind)
            if group:
                lines.append(KIND_TITLES[kind])
                lines += [f"  {c.id}: {c.verdict}: {c.measured}" for c in group]
        return "\n".join(lines)


def _by_kind(claims: Iterable[Claim]) -> list[Claim]:
    """Claims in the order the tables show them: grouped by kind, in the order made."""
    return sorted(claims, key=lambda c: KINDS.index(c.kind))


_CSS = """<style>
.dlbook-claims{overflow-x:auto;max-width:100%}
.dlbook-claims table{border-collapse:collapse;width:100%;font-size:0.85em;margin:0.4em 0 1.2em}
.dlbook-claims th,.dlbook-claims td{border-bottom:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}
.dlbook-claims td.v{font-weight:600}
.dlbook-claims td.claim{min-width:15em}
.dlbook-claims td.num{white-space:nowrap}
.dlbook-claims small{color:#555}
.dlbook-claims td.PASS{color:#17692e}.dlbook-claims td.FAIL,.dlbook-claims td.BROKEN{color:#a3161b}
.dlbook-claims td.INCONCLUSIVE{color:#8a5a00}
.dlbook-claims h4{margin:0.8em 0 0.2em;font-size:1em}
</style>"""


def _interval_text(c: Claim) -> str:
    """The interval; its level only where it is not the table's 95 % (TOST's 90 %)."""
    if c.interval is None:
        return "–"
    lo, hi = c.interval
    lvl = f" ({round(100 * c.level)} %)" if c.level and abs(c.level - (1 - ALPHA)) > 1e-9 else ""
    return f"[{_f(lo)}, {_f(hi)}]{lvl}"


def render_html(items: Sequence[Claim], chapter: str = "") -> str:
    """The chapter's claims as HTML tables, one per kind; the verdict column comes second so
    it is visible without scrolling, the rule and what would decide an INCONCLUSIVE row sit
    under the claim, and each row's id is its claim's anchor."""
    e = html.escape
    out = [_CSS, '<div class="dlbook-claims">']
    for kind in KINDS:
        group = [c for c in items if c.kind == kind]
        if not group:
            continue
        out.append(f"<h4>{e(KIND_TITLES[kind])}</h4><table>")
        if kind == "experiment":
            head = ("id", "verdict", "claim (rule)", "estimate", "interval (95 %)", "n", "MDE")
        elif kind == "report":
            head = ("id", "measurement", "value")
        else:
            head = ("id", "verdict", "claim", "value", "rule")
        out.append("<thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr></thead><tbody>")
        for c in group:
            cls = c.verdict.split()[0] if c.verdict.split() else ""
            v = f'<td class="v {e(cls)}">{e(c.verdict)}</td>'
            if kind == "experiment":
                small = " · ".join(x for x in (c.rule if c.rule != "–" else "", c.note) if x)
                stmt = e(c.statement) + (f"<br><small>{e(small)}</small>" if small else "")
                cells = [v, f'<td class="claim">{stmt}</td>', f'<td class="num">{e(c.measured)}</td>',
                         f'<td class="num">{e(_interval_text(c))}</td>',
                         f"<td>{'' if c.n is None else c.n}</td>", f'<td class="num">{e(_f(c.mde, 2))}</td>']
            elif kind == "report":
                cells = [f"<td>{e(c.statement)}</td>", f"<td>{e(c.measured)}</td>"]
            else:
                stmt = e(c.statement) + (f"<br><small>{e(c.note)}</small>" if c.note else "")
                cells = [v, f'<td class="claim">{stmt}</td>', f'<td class="num">{e(c.measured)}</td>',
                         f'<td class="num">{e(c.rule)}</td>']
            out.append(f'<tr id="{e(c.anchor)}"><td>{e(c.id)}</td>' + "".join(cells) + "</tr>")
        out.append("</tbody></table>")
    out.append("</div>")
    return "\n".join(out)


def rerender(ipynb: str | Path) -> bool:
    """Rewrite the HTML of a recorded chapter's claims table from the claims it stored (the
    HTML is a function of the JSON alone: nothing is re-run). True if the file changed."""
    import nbformat

    nb = nbformat.read(str(ipynb), as_version=4)
    changed = False
    for cell in nb.cells:
        for o in cell.get("outputs", []) if cell.cell_type == "code" else []:
            data = o.get("data", {})
            if MIME in data:
                items = [Claim.from_json(c) for c in data[MIME]["claims"]]
                new = render_html(items, data[MIME].get("chapter", ""))
                if data.get("text/html") != new:
                    data["text/html"] = new
                    changed = True
    if changed:
        nbformat.write(nb, str(ipynb))
    return changed


# ------------------------------------------------------------------ the ledger
def stored_claims(ipynb: str | Path) -> dict | None:
    """The claims a recorded notebook stored (the JSON beside its claims table), or None if
    the chapter stores none."""
    nb = json.loads(Path(ipynb).read_text(encoding="utf-8"))
    found = None
    for cell in nb.get("cells", []):
        for o in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            data = o.get("data", {}) if o.get("output_type") in ("display_data", "execute_result") else {}
            if MIME in data:
                if found is not None:
                    raise ClaimError(f"{Path(ipynb).name}: claims stored twice; a chapter shows them once")
                found = data[MIME]
    return found


def ledger(notebooks: Iterable[str | Path]) -> list[dict]:
    """One entry per chapter notebook: its stored claims (or ``claims: None`` for a chapter
    not yet on `dlbook.claims`), with counts by kind and verdict."""
    rows = []
    for p in sorted(Path(x) for x in notebooks):
        data = stored_claims(p)
        entry = {"notebook": p.name, "page": p.with_suffix(".html").name, "chapter": p.name[:2],
                 "title": _title(p), "claims": None, "counts": {}, "headline": "", "profile": None}
        if data is not None:
            claims = _by_kind(Claim.from_json(c) for c in data["claims"])
            entry.update(claims=claims, headline=data.get("headline", ""), profile=data.get("profile"))
            for c in claims:
                entry["counts"].setdefault(c.kind, {}).setdefault(c.verdict, 0)
                entry["counts"][c.kind][c.verdict] += 1
        rows.append(entry)
    return rows


def _title(p: Path) -> str:
    nb = json.loads(p.read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return p.stem


def totals(entries: Sequence[dict]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for e in entries:
        for kind, by in e["counts"].items():
            for v, n in by.items():
                out.setdefault(kind, {}).setdefault(v, 0)
                out[kind][v] += n
    return out


def decided_line(entry: dict) -> str:
    """What the book decided about an article, in one line: the chapter's headline if it
    wrote one, then the experiment verdicts counted."""
    if entry["claims"] is None:
        return "not yet on dlbook.claims: its table is decided in the notebook"
    c = entry["counts"]
    exp = c.get("experiment", {})
    parts = [f"{exp[v]} {v}" for v in DECIDED if exp.get(v)]
    parts += [f"{n} {v}" for v, n in sorted(exp.items()) if v not in DECIDED]
    der = c.get("derivation", {})
    head = entry["headline"].rstrip(".")
    tail = (f"experiments: {', '.join(parts) or 'none'}; derivations: {der.get('PASS', 0)} of "
            f"{sum(der.values())} hold")
    return f"{head}. {tail}" if head else tail[0].upper() + tail[1:]


def ledger_html(entries: Sequence[dict], link_prefix: str = "") -> str:
    """The claims ledger as HTML: counts by kind and verdict, one line per article, then every
    claim with kind, verdict, measured value and a link to its row in the chapter."""
    e = html.escape
    tot = totals(entries)
    out = [_CSS, '<div class="dlbook-claims">', "<h4>Counts by kind and verdict</h4><table>",
           "<thead><tr><th>kind</th><th>verdicts</th><th>total</th></tr></thead><tbody>"]
    for kind in KINDS:
        by = tot.get(kind, {})
        if by:
            txt = ", ".join(f"{n} {v}" for v, n in sorted(by.items(), key=lambda kv: (-kv[1], kv[0])))
            out.append(f"<tr><td>{kind}</td><td>{e(txt)}</td><td>{sum(by.values())}</td></tr>")
    if not tot:
        out.append('<tr><td colspan="3">no chapter stores its claims yet</td></tr>')
    conv = sum(1 for x in entries if x["claims"] is not None)
    out.append(f"</tbody></table><p>{conv} of {len(entries)} chapters decide their claims with "
               f"<code>dlbook.claims</code>.</p>")
    out.append("<h4>What the book decided, article by article</h4><table><thead><tr><th>chapter</th>"
               "<th>decided</th></tr></thead><tbody>")
    for x in entries:
        out.append(f'<tr><td><a href="{e(link_prefix + x["page"])}">{e(x["title"])}</a></td>'
                   f"<td>{e(decided_line(x))}</td></tr>")
    out.append("</tbody></table>")
    for x in entries:
        out.append(f'<h4 id="ledger-{e(x["chapter"])}"><a href="{e(link_prefix + x["page"])}">{e(x["title"])}</a></h4>')
        if x["claims"] is None:
            out.append("<p>Not yet on <code>dlbook.claims</code>: its claims table is decided inside the "
                       "notebook and is not collected here.</p>")
            continue
        out.append("<table><thead><tr><th>id</th><th>kind</th><th>verdict</th><th>measured</th><th>claim</th>"
                   "</tr></thead><tbody>")
        for c in x["claims"]:
            cls = c.verdict.split()[0] if c.verdict.split() else ""
            out.append(f'<tr><td><a href="{e(link_prefix + x["page"])}#{e(c.anchor)}">{e(c.id)}</a></td>'
                       f'<td>{c.kind}</td><td class="v {e(cls)}">{e(c.verdict)}</td><td>{e(c.measured)}</td>'
                       f"<td>{e(c.statement)}</td></tr>")
        out.append("</tbody></table>")
    out.append("</div>")
    return "\n".join(out)
