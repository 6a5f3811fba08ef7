"""The book's one rule for verdicts: every rule gives PASS, FAIL and INCONCLUSIVE on data made
for it; intervals and powers against scipy; the ledger from stored notebooks."""
import json
import math

import nbformat
import numpy as np
import pytest
from scipy import stats

from dlbook import claims as C


@pytest.fixture(autouse=True)
def real_data_only(monkeypatch):
    """Other tests in the same process load bundled samples; the collector would then mark
    every experiment `n/a (sample data)`. Each test here starts with no data loaded."""
    from dlbook.data import registry

    monkeypatch.setattr(registry, "_SOURCES", {})


# ---------------------------------------------------------------- derivations and constructions
def test_derivation_verdicts_and_bounds():
    assert C.derivation("D", "s", 3e-15, below=1e-12).verdict == "PASS"
    c = C.derivation("D", "s", 3e-15, below=1e-12)
    assert c.measured == "< 1e-12" and c.rule == "< 1e-12"  # the printed bound is at the threshold
    assert C.derivation("D", "s", 2e-3, below=1e-2).measured == "0.002"
    assert C.derivation("D", "s", 2e-2, below=1e-2).verdict == "FAIL"
    assert C.derivation("D", "s", 0.5, above=0).verdict == "PASS"
    assert C.derivation("D", "s", -0.5, at_least=0).verdict == "FAIL"
    assert C.derivation("D", "s", 0, equals=0).measured == "0"
    assert C.derivation("D", "s", 1e-3, at_most=1e-3).verdict == "PASS"


def test_derivation_refuses_ambiguous_or_invisible_rules():
    with pytest.raises(C.ClaimError, match="exactly one"):
        C.derivation("D", "s", 1.0, below=1, above=0)
    with pytest.raises(C.ClaimError, match="coarser"):
        C.derivation("D", "s", 1e-14, below=1e-12, resolution=1e-9)
    with pytest.raises(C.ClaimError, match="number"):
        C.derivation("D", "s", "x", below=1)


def test_close_writes_its_tolerance():
    c = C.close("D", "s", 1.004, 1.0, atol=0.01)
    assert c.verdict == "PASS" and c.rule == "|error| ≤ 0.01" and c.measured == "0.004"
    assert C.close("D", "s", 1.02, 1.0, atol=0.01).verdict == "FAIL"
    assert C.close("D", "s", 2.0 + 1e-13, 2.0, rtol=1e-10).measured == "< 2e-10"
    with pytest.raises(C.ClaimError):
        C.close("D", "s", 1, 1)


def test_construction_is_never_evidence():
    assert C.construction("K", "mask", True).verdict == "holds by construction"
    assert C.construction("K", "count", True, 30, of="data").verdict == "a property of the data"
    assert C.construction("K", "mask", False).verdict == "BROKEN"
    with pytest.raises(C.ClaimError):
        C.construction("K", "x", True, of="paper")


# ---------------------------------------------------------------- the t rule
def test_t_interval_matches_scipy():
    rng = np.random.default_rng(0)
    a = rng.normal(1.0, 0.5, 7)
    c = C.experiment("E", "s", a, above=0)
    lo, hi = stats.t.interval(0.95, len(a) - 1, loc=a.mean(), scale=stats.sem(a))
    assert c.interval == pytest.approx((lo, hi), rel=1e-12)
    assert c.n == 7 and c.estimate == pytest.approx(a.mean())


def test_welch_interval_matches_scipy():
    a, b = np.array([1.0, 1.4, 0.9, 1.3]), np.array([0.2, 0.8, 0.5, 0.1, 0.4])
    c = C.experiment("E", "s", a, b, above=0, paired=False)
    r = stats.ttest_ind(a, b, equal_var=False)
    lo, hi = r.confidence_interval(0.95)
    assert c.interval == pytest.approx((lo, hi), rel=1e-10)


def test_directional_rule_gives_all_three_verdicts():
    assert C.experiment("E", "s", [2.0, 2.1, 1.9, 2.05], above=1.0).verdict == "PASS"
    assert C.experiment("E", "s", [0.0, 0.1, -0.1, 0.05], above=1.0).verdict == "FAIL"
    assert C.experiment("E", "s", [0.0, 2.0, 1.5, -0.5], above=1.0).verdict == "INCONCLUSIVE"
    assert C.experiment("E", "s", [0.1, 0.2, 0.15], below=0.5).verdict == "PASS"
    assert C.experiment("E", "s", [0.9, 1.0, 0.95], below=0.5).verdict == "FAIL"


def test_paired_difference_and_the_rule_texts():
    a, b = [0.80, 0.82, 0.81, 0.79, 0.83], [0.70, 0.71, 0.72, 0.69, 0.70]
    c = C.experiment("E", "s", a, b, above=0.05)
    assert c.verdict == "PASS" and "n = 5 pairs" in c.rule and c.estimate == pytest.approx(0.106)
    assert c.values == pytest.approx(tuple(np.subtract(a, b)))
    with pytest.raises(C.ClaimError, match="paired"):
        C.experiment("E", "s", [1, 2, 3], [1, 2], above=0)


def test_three_seeds_at_two_standard_errors_is_not_a_pass():
    # mean 2.2 SE above zero with 3 seeds: p ~ 0.08 one-sided under t(2), not decided
    a = np.array([1.0, 2.0, 3.0])
    a = a - a.mean() + 2.2 * a.std(ddof=1) / math.sqrt(3)
    assert C.experiment("E", "s", a, above=0).verdict == "INCONCLUSIVE"


def test_mde_is_the_effect_with_80_percent_power():
    se, df = 0.3, 9
    d = C.mde_t(se, df)
    tc = stats.t.ppf(0.975, df)
    assert stats.nct.sf(tc, df, d / se) == pytest.approx(0.8, abs=1e-8)
    # and by simulation: a true effect of d beyond the threshold passes about 80 % of the time
    rng = np.random.default_rng(1)
    sd = se * math.sqrt(df + 1)
    wins = sum(C.experiment("E", "s", rng.normal(d, sd, df + 1), above=0).verdict == "PASS" for _ in range(2000))
    assert 0.74 < wins / 2000 < 0.86


def test_one_run_is_inconclusive_unless_deterministic():
    c = C.experiment("E", "s", [3.0], above=1)
    assert c.verdict == "INCONCLUSIVE" and math.isinf(c.mde) and "two seeds" in c.note
    c = C.experiment("E", "s", [3.0], above=1, deterministic=True)
    assert c.verdict == "PASS" and c.interval == (3.0, 3.0) and c.mde == 0


def test_non_finite_values_are_refused():
    with pytest.raises(C.ClaimError, match="non-finite"):
        C.experiment("E", "s", [1.0, float("nan")], above=0)
    with pytest.raises(C.ClaimError, match="no values"):
        C.experiment("E", "s", [], above=0)
    with pytest.raises(C.ClaimError, match="exactly one"):
        C.experiment("E", "s", [1.0, 2.0])


# ---------------------------------------------------------------- equivalence
def test_equivalence_gives_all_three_verdicts():
    rng = np.random.default_rng(2)
    tight = rng.normal(0.0, 0.1, 20)
    assert C.equivalent("Q", "s", tight, margin=0.5).verdict == "PASS"
    assert C.equivalent("Q", "s", tight + 3, margin=0.5).verdict == "FAIL"
    c = C.equivalent("Q", "s", [0.0, 2.0, -1.5, 1.0], margin=0.5)
    assert c.verdict == "INCONCLUSIVE" and c.mde > 0.5 and "runs" in c.note


def test_failing_to_reject_is_never_a_pass():
    # a wide null: the t rule cannot exclude 0, and the equivalence test will not call it equal
    a = [0.0, 4.0, -3.0, 2.0, -2.5]
    assert C.experiment("E", "s", a, above=0).verdict == "INCONCLUSIVE"
    assert C.equivalent("Q", "s", a, margin=1.0).verdict == "INCONCLUSIVE"


def test_tost_interval_is_the_90_percent_one():
    a = np.array([0.1, -0.2, 0.05, 0.0, 0.15, -0.1])
    c = C.equivalent("Q", "s", a, margin=1)
    lo, hi = stats.t.interval(0.90, len(a) - 1, loc=a.mean(), scale=stats.sem(a))
    assert c.interval == pytest.approx((lo, hi)) and c.level == pytest.approx(0.9)
    se = stats.sem(a)
    assert c.mde == pytest.approx(se * (stats.t.ppf(0.95, 5) + stats.t.ppf(0.9, 5)))
    with pytest.raises(C.ClaimError, match="margin"):
        C.equivalent("Q", "s", a, margin=0)


# ---------------------------------------------------------------- rates
def test_rate_uses_the_exact_binomial_interval():
    c = C.rate("R", "s", 9, 10, above=0.5)
    ci = stats.binomtest(9, 10).proportion_ci(0.95, method="exact")
    assert c.interval == pytest.approx((ci.low, ci.high))
    assert ci.low > 0.5 and c.verdict == "PASS"  # 9/10: the exact lower bound is 0.555
    assert c.measured == "9/10" and c.estimate == 0.9


def test_rate_gives_all_three_verdicts():
    assert C.rate("R", "s", 20, 20, above=0.5).verdict == "PASS"
    assert C.rate("R", "s", 0, 20, above=0.5).verdict == "FAIL"
    assert C.rate("R", "s", 2, 3, above=0.5).verdict == "INCONCLUSIVE"
    assert C.rate("R", "s", 0, 20, below=0.5).verdict == "PASS"
    with pytest.raises(C.ClaimError):
        C.rate("R", "s", 4, 3, above=0.5)


def test_rate_mde_against_the_binomial_power():
    n, p0 = 20, 0.5
    d = C.mde_rate(n, p0, upper=True)
    kc = min(k for k in range(n + 1) if stats.binom.sf(k - 1, n, p0) <= 0.025)
    assert stats.binom.sf(kc - 1, n, p0 + d) == pytest.approx(0.8, abs=1e-6)
    assert math.isinf(C.mde_rate(3, 0.5, upper=True))  # 3/3 cannot reject p = 0.5 at 2.5 %


def test_two_rates_by_fisher():
    assert C.rates("R", "s", 1, 3, 3, 3).verdict == "INCONCLUSIVE"  # the 1/3 vs 3/3 of a finding
    assert C.rates("R", "s", 30, 30, 2, 30).verdict == "PASS"
    assert C.rates("R", "s", 2, 30, 30, 30).verdict == "FAIL"
    c = C.rates("R", "s", 1, 3, 3, 3)
    assert math.isinf(c.mde) and "could decide" in c.note
    assert C.mde_two_rates(20, 20, 0.2) < 0.6


# ---------------------------------------------------------------- collecting, context, showing
def test_smoke_and_sample_data_decide_nothing(monkeypatch):
    s = C.Claims("99", profile="smoke", quiet=True)
    c = s.add(C.experiment("E", "s", [2.0, 2.1, 1.9], above=1.0))
    assert c.verdict == "n/a (smoke)"
    d = s.add(C.derivation("D", "s", 1e-15, below=1e-12))
    assert d.verdict == "PASS"  # derivations are the same under every profile
    from dlbook.data import registry

    monkeypatch.setattr(registry, "_SOURCES", {"mnist/train": "mnist_sample.npz, bundled sample"})
    s = C.Claims("99", profile="cpu", quiet=True)
    assert s.add(C.experiment("E", "s", [2.0, 2.1, 1.9], above=1.0)).verdict == "n/a (sample data)"
    monkeypatch.setattr(registry, "_SOURCES", {"mnist/train": "train-images.gz, offline copy"})
    s = C.Claims("99", profile="cpu", quiet=True)
    assert s.add(C.experiment("E", "s", [2.0, 2.1, 1.9], above=1.0)).verdict == "PASS"
    monkeypatch.setenv("DLBOOK_REHEARSAL", "1")
    s = C.Claims("99", profile="full", quiet=True)
    assert s.add(C.experiment("E", "s", [2.0, 2.1, 1.9], above=1.0)).verdict == "n/a (rehearsal)"


def test_claims_print_derivations_and_refuse_duplicates(capsys):
    s = C.Claims("99", profile="cpu")
    s.derivation("D1", "an identity", 1e-16, below=1e-12)
    assert capsys.readouterr().out == "[PASS] D1: an identity: < 1e-12 (< 1e-12)\n"
    with pytest.raises(C.ClaimError, match="twice"):
        s.derivation("D1", "again", 0.0, below=1)
    with pytest.raises(KeyError):
        s["nope"]
    assert s.passed("D1")


def test_display_carries_html_text_and_json():
    s = C.Claims("07", title="VAE", profile="cpu", headline="The bound holds", quiet=True)
    s.derivation("D1", "x", 1e-16, below=1e-12)
    s.add(C.experiment("C9 a", "rate falls", [-0.5, -0.4, -0.6], below=0))
    s.report("R1", "a baseline", 0.9)
    s.construction("K1", "mask", True)
    b = s._repr_mimebundle_()
    assert set(b) == {"text/html", "text/plain", C.MIME}
    h = b["text/html"]
    assert C.report("D12a'", "x", 1).anchor == "claim-D12a_27" != C.report("D12a", "x", 1).anchor
    assert 'id="claim-C9-a"' in h and h.index("Derivations") < h.index("Construction") < h.index("Experiments")
    js = json.loads(json.dumps(b[C.MIME]))  # plain JSON
    back = [C.Claim.from_json(c) for c in js["claims"]]
    assert back == C._by_kind(s.items) and [c.kind for c in back] == ["derivation", "construction", "experiment",
                                                                       "report"]  # as the tables show them
    assert s.counts() == {"derivation": {"PASS": 1}, "experiment": {"PASS": 1}, "report": {"reported": 1},
                          "construction": {"holds by construction": 1}}


def test_json_round_trip_with_infinities():
    c = C.experiment("E", "s", [1.0], above=0)
    d = json.loads(json.dumps(c.to_json()))
    assert d["mde"] == "inf" and C.Claim.from_json(d) == c


def _notebook(tmp_path, name, claims=None, title="Chapter"):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}\n\ntext")]
    if claims is not None:
        cell = nbformat.v4.new_code_cell("claims")
        cell.outputs = [nbformat.v4.new_output("display_data", data={**claims._repr_mimebundle_()})]
        nb.cells.append(cell)
    p = tmp_path / name
    nbformat.write(nb, p)
    return p


def test_ledger_counts_and_links(tmp_path):
    s = C.Claims("01", title="One", profile="cpu", headline="Holds", quiet=True)
    s.derivation("D1", "x", 0.0, below=1e-9)
    s.add(C.experiment("E1", "x", [1.0, 1.1, 0.9], above=0))
    s.add(C.experiment("E2", "x", [0.0, 1.0, -1.0], above=0))
    a = _notebook(tmp_path, "01_one.ipynb", s, "One")
    b = _notebook(tmp_path, "02_two.ipynb", None, "Two")
    entries = C.ledger([b, a])
    assert [e["chapter"] for e in entries] == ["01", "02"]
    assert entries[0]["counts"] == {"derivation": {"PASS": 1}, "experiment": {"PASS": 1, "INCONCLUSIVE": 1}}
    assert entries[1]["claims"] is None and "not yet" in C.decided_line(entries[1])
    assert C.decided_line(entries[0]) == "Holds. experiments: 1 PASS, 1 INCONCLUSIVE; derivations: 1 of 1 hold"
    h = C.ledger_html(entries, "notebooks/")
    assert 'href="notebooks/01_one.html#claim-E2"' in h and 'href="notebooks/02_two.html"' in h
    assert C.totals(entries) == {"derivation": {"PASS": 1}, "experiment": {"PASS": 1, "INCONCLUSIVE": 1}}


def test_a_chapter_stores_its_claims_once(tmp_path):
    s = C.Claims("01", profile="cpu", quiet=True)
    p = _notebook(tmp_path, "01_x.ipynb", s)
    nb = nbformat.read(p, 4)
    nb.cells.append(nbformat.v4.new_code_cell("claims", outputs=nb.cells[-1].outputs))
    nbformat.write(nb, p)
    with pytest.raises(C.ClaimError, match="twice"):
        C.stored_claims(p)


def test_ledger_of_the_stored_notebooks_matches_their_tables():
    """The ledger built from the recorded chapters: every chapter listed, and for each chapter
    on dlbook.claims the counts equal the rows of the table the chapter shows."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    nbs = sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    entries = C.ledger(nbs)
    assert [e["notebook"] for e in entries] == [p.name for p in nbs] and len(entries) == 8
    for e, p in zip(entries, nbs):
        if e["claims"] is None:
            continue
        nb = json.loads(p.read_text())
        shown = [o["data"]["text/html"] for c in nb["cells"] if c["cell_type"] == "code"
                 for o in c.get("outputs", []) if C.MIME in o.get("data", {})]
        html = "".join(shown) if isinstance(shown[0], str) else "".join(shown[0])
        rows = re.findall(r'<tr id="(claim-[^"]+)">', html)
        assert rows == [c.anchor for c in e["claims"]], p.name
        assert len(set(rows)) == len(rows), f"{p.name}: two rows share an anchor"
        total = sum(sum(v.values()) for v in e["counts"].values())
        assert total == len(e["claims"]) > 0
        assert e["profile"] == nb["metadata"]["dlbook"]["provenance"]["profile"], p.name


def test_rerender_rewrites_only_the_html_from_the_stored_json(tmp_path):
    s = C.Claims("01", profile="cpu", quiet=True)
    s.add(C.experiment("E1", "x", [1.0, 1.1, 0.9], above=0))
    p = _notebook(tmp_path, "01_one.ipynb", s)
    nb = nbformat.read(p, 4)
    nb.cells[-1].outputs[0]["data"]["text/html"] = "<p>an older rendering</p>"
    nbformat.write(nb, p)
    assert C.rerender(p) is True
    out = nbformat.read(p, 4).cells[-1].outputs[0]["data"]
    assert out["text/html"] == s.html() and out[C.MIME] == s.to_json()
    assert C.rerender(p) is False  # nothing left to change
