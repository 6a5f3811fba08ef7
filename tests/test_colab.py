"""The Colab setup cell that dlbook.colab writes: no commit stored as text, the repository from
_config.yml, idempotent; and results under a rehearsal of the full profile."""
from dlbook import colab

OLD = '''import sys
if "google.colab" in sys.modules:
    %pip install -q "dlbook @ git+https://github.com/o/r@0123abc"
    %pip install -q pytorch-fid==0.3.0'''


def test_setup_source_reads_the_commit_at_run_time_and_is_idempotent():
    new = colab.setup_source(OLD, "https://github.com/me/fork", "dev")
    assert '"dlbook @ git+https://github.com/me/fork@{ref}"' in new and "0123abc" not in new
    assert 'ref = "dev"' in new and '"get_ipynb"' in new and "install_ref" in new
    assert new.endswith("%pip install -q pytorch-fid==0.3.0")  # the cell's other lines are kept
    assert colab.setup_source(new, "https://github.com/me/fork", "dev") == new
    # the address changes in place
    other = colab.setup_source(new, "https://github.com/you/other", "main")
    assert "you/other@{ref}" in other and "me/fork" not in other and other.count("get_ipynb") == 1
    compile(new.replace("%pip", "pass  #"), "setup", "exec")  # valid Python around the magic


def test_badge_link_follows_the_configured_repository():
    text = "[![Open](x)](https://colab.research.google.com/github/a/b/blob/main/notebooks/02_x.ipynb)"
    out = colab.badge_link(text, "https://github.com/me/fork", "dev")
    assert out == "[![Open](x)](https://colab.research.google.com/github/me/fork/blob/dev/notebooks/02_x.ipynb)"


def test_results_under_a_rehearsal_are_not_verdicts(monkeypatch):
    from dlbook.nb import Results

    monkeypatch.setenv("DLBOOK_REHEARSAL", "1")
    r = Results("full")
    r.add("X1", "a claim", 0.5, "> 0.4", True)
    assert r.passed["X1"] is None and r.rows[-1][-1] == "n/a (rehearsal)"
    monkeypatch.delenv("DLBOOK_REHEARSAL")
    r = Results("full")
    r.add("X1", "a claim", 0.5, "> 0.4", True)
    assert r.passed["X1"] is True
