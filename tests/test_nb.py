import pytest

from dlbook import nb


def test_fmt_is_stable_across_tiny_differences():
    assert nb.fmt(0.123456789) == nb.fmt(0.123456789 + 1e-12) == "0.1235"
    assert nb.fmt(3) == "3" and nb.fmt(True) == "yes" and nb.fmt(float("nan")) == "nan"
    assert nb.fmt(0.0) == "0"


def test_checks_print_verdicts_and_build_the_table(capsys):
    c = nb.Checks()
    assert c.check("A", "one is one", 1.0, "== 1", True) is None  # nothing echoed after the line
    assert c.close("B", "pi", 3.0, 3.14159, atol=1e-3) is None
    assert c.passed("A") and not c.passed("B")
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("[PASS] A") and out[1].startswith("[FAIL] B")
    md = c._repr_markdown_()
    assert "| A | one is one | 1 | == 1 | PASS |" in md and "FAIL" in md
    assert not c.all_passed
    # re-checking an id replaces its row
    c.close("B", "pi", 3.14159, 3.14159, atol=1e-3)
    assert c.all_passed and len(c.rows) == 2


def test_results_pass_column_depends_on_profile():
    r = nb.Results("smoke")
    r.add("E1", "x", 0.5, ">= 0.4", True)
    assert r.rows[0][-1] == "n/a (smoke)" and r.passed["E1"] is None
    r = nb.Results("cpu")
    r.add("E1", "x", 0.5, ">= 0.6", False)
    r.add("E2", "needs a GPU run", "see fig", "FID < 30", None, needs="full")
    r.add("E3", "a contrast, not a claim", 0.1, "report", None)
    assert [row[-1] for row in r.rows] == ["FAIL", "n/a (full profile)", "reported"]
    assert r.passed["E3"] is None
    assert "E2" in repr(r)


def test_show_source_and_galleries():
    code = nb.show_source(nb.fmt)
    assert "def fmt" in code.data
    png = b"\x89PNG\r\n\x1a\n"
    g = nb.slider_gallery([png, png], ["a", "b"], "x")
    slider, stack = g.children
    assert stack.selected_index == 0
    slider.index = 1
    with pytest.raises(ValueError, match="as many labels"):
        nb.slider_gallery([png], ["a", "b"])
    d = nb.dropdown_gallery([png, png, png], ["p", "q", "r"])
    assert len(d.children[1].children) == 3


def test_md_table_escapes_pipes():
    t = nb.md_table(["a", "b"], [["x|y", "1"]]).splitlines()
    assert t == ["| a | b |", "|---|---|", "| x\\|y | 1 |"]


def test_bound_prints_roundoff_as_a_bound():
    assert nb.bound(2.6e-16) == "< 1e-9" and nb.bound(-3e-13, 1e-12) == "< 1e-12"
    assert nb.bound(3.2e-8, 1e-5) == "< 1e-5" and nb.bound(2.5e-4, 1e-5) == 2.5e-4
    assert nb.bound(0) == 0 and nb.bound(0.0) == "< 1e-9"  # a count is exact, a float error is not
    assert nb.bound(0.25) == 0.25 and nb.bound("n/a") == "n/a" and nb.bound(float("nan")) != "< 1e-9"
    with pytest.raises(ValueError):
        nb.bound(1.0, 0)


def test_checks_show_roundoff_values_the_same_everywhere(capsys):
    c = nb.Checks()
    for err in (2.6e-16, 2.4e-16, 5.3e-15):  # what two machines print for one check
        c.check("K", "identity holds", err, "< 1e-12", err < 1e-12)
    lines = capsys.readouterr().out.splitlines()
    assert len(set(lines)) == 1 and lines[0] == "[PASS] K: identity holds: < 1e-9 (< 1e-12)"
    c.check("F", "float32 path", 3.1e-8, "< 1e-4", True, resolution=1e-6)
    assert c.items["F"].value == "< 1e-6"
    c.check("G", "a real value stays", 0.0123456, "< 0.1", True)
    assert c.items["G"].value == "0.0123"


def test_grid_gallery_links_a_dropdown_and_a_slider_per_row():
    png = b"\x89PNG\r\n\x1a\n"
    g = nb.grid_gallery([[png, "<b>x</b>"], [png, png]], ["r1", "r2"], ["c1", "c2"], "row", "col")
    dd, outer = g.children
    assert len(outer.children) == 2 and dd.options == ("r1", "r2")
    slider, stack = outer.children[0].children
    assert slider.options == ("c1", "c2") and stack.children[1].value == "<b>x</b>"
    with pytest.raises(ValueError, match="rows of 2 pages"):
        nb.grid_gallery([[png, png], [png]], ["r1", "r2"], ["c1", "c2"])
