"""The record step on a throwaway notebook: provenance written, papermill's injected cell
removed, no progress bars stored, the Colab cell pinned, the text file untouched; a failing
run or a bad argument leaves everything as it was."""
import json
import textwrap

import jupytext
import pytest

from dlbook import record

TEXT = textwrap.dedent('''\
    ---
    jupytext:
      formats: ipynb,md:myst
      text_representation:
        extension: .md
        format_name: myst
    kernelspec:
      display_name: Python 3
      language: python
      name: python3
    ---

    # Tiny

    ```{code-cell} ipython3
    :tags: [provenance]

    print("live run")
    ```

    ```{code-cell} ipython3
    :tags: [remove-cell]

    import sys
    if "google.colab" in sys.modules:
        %pip install -q "dlbook @ git+https://example.org/dlbook@main"
    ```

    ```{code-cell} ipython3
    :tags: [parameters]

    profile = None
    ```

    ```{code-cell} ipython3
    from tqdm.auto import tqdm
    for _ in tqdm(range(3)):
        pass
    ```

    ```{code-cell} ipython3
    import os
    from dlbook.config import resolve_profile
    print(resolve_profile(profile), os.environ["DLBOOK_PROFILE"])
    assert FAIL_HERE is False
    ```
    ''')


@pytest.fixture
def nb(tmp_path):
    md = tmp_path / "01_tiny.md"
    md.write_text(TEXT.replace("FAIL_HERE", "False"))
    ipynb = tmp_path / "01_tiny.ipynb"
    jupytext.write(jupytext.read(md), ipynb)
    return md, ipynb


def _files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_record_writes_outputs_and_provenance(nb):
    md, ipynb = nb
    before = md.read_text()
    prov = record.record(ipynb, "smoke", allow_dirty=True)
    assert prov["profile"] == "smoke" and prov["dlbook"] and prov["commit"]
    out = json.loads(ipynb.read_text())
    sources = ["".join(c["source"]) for c in out["cells"]]
    assert not any("injected-parameters" in c["metadata"].get("tags", []) for c in out["cells"])
    assert len(out["cells"]) == len(jupytext.read(md).cells)
    prov_cell = next(c for c in out["cells"] if "provenance" in c["metadata"].get("tags", []))
    line = prov_cell["outputs"][0]["data"]["text/markdown"]
    line = "".join(line) if isinstance(line, list) else line
    assert "profile **smoke**" in line and "wall time" in line and "commit" in line
    run_cell = out["cells"][sources.index(next(s for s in sources if "resolve_profile" in s))]
    assert "smoke smoke" in "".join(run_cell["outputs"][0]["text"])
    assert out["metadata"]["dlbook"]["provenance"]["profile"] == "smoke"
    assert "papermill" not in out["metadata"]
    assert md.read_text() == before
    # no progress bar is stored, as a widget or as text
    assert "widgets" not in out["metadata"]
    outputs = json.dumps([c.get("outputs", []) for c in out["cells"]])
    assert "widget-view" not in outputs and "it/s" not in outputs
    # no commit is written into the setup cell (it reads install_ref at run time in Colab), so the
    # cell is the text file's; the jupytext header is stored as Jupyter saves an .ipynb
    setup = next(s for s in sources if "%pip install" in s)
    assert setup == next(c.source for c in jupytext.read(md).cells if "%pip install" in c.source)
    assert prov.get("install_ref", "") == out["metadata"]["dlbook"]["provenance"].get("install_ref", "")
    assert "text_representation" not in out["metadata"].get("jupytext", {})
    assert sorted(_files(md.parent)) == ["01_tiny.ipynb", "01_tiny.md"]


def test_failing_record_leaves_notebook_untouched(nb):
    md, ipynb = nb
    md.write_text(TEXT.replace("FAIL_HERE", "True"))
    before = _files(md.parent)
    with pytest.raises(Exception):
        record.record(ipynb, "smoke", allow_dirty=True)
    assert _files(md.parent) == before  # no temp file either


def test_missing_text_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="jupytext --set-formats"):
        record.text_for(tmp_path / "02_none.ipynb")


def test_cli_rejects_unknown_profile(nb, capsys):
    md, ipynb = nb
    assert record.main([str(ipynb), "--profile", "gpu"]) == 2
    assert "smoke, cpu, full" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["01_tiny.md", "01_tiny", "02_missing.ipynb", "notes.txt"])
def test_cli_refuses_anything_but_a_paired_ipynb(nb, capsys, name):
    md, ipynb = nb
    before = _files(md.parent)
    assert record.main([str(md.parent / name), "--profile", "smoke", "--allow-dirty"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("record: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert _files(md.parent) == before  # nothing written, no stray file


def test_cli_refuses_an_ipynb_without_its_text_file(tmp_path, capsys):
    lone = tmp_path / "03_lone.ipynb"
    lone.write_text("{}")
    assert record.main([str(lone), "--allow-dirty"]) == 2
    assert "no paired text file" in capsys.readouterr().err


def test_cli_honours_the_profile_variable(nb, monkeypatch):
    md, ipynb = nb
    monkeypatch.setenv("DLBOOK_PROFILE", "smoke")
    assert record.main([str(ipynb), "--allow-dirty"]) == 0
    assert json.loads(ipynb.read_text())["metadata"]["dlbook"]["provenance"]["profile"] == "smoke"


def test_pin_install_points_the_setup_cell_at_a_commit():
    import nbformat

    cell = nbformat.v4.new_code_cell('%pip install -q "dlbook @ git+https://github.com/o/r@main"')
    nb = nbformat.v4.new_notebook(cells=[cell])
    assert record.pin_install(nb, "0123abc") == 1
    assert nb.cells[0].source == '%pip install -q "dlbook @ git+https://github.com/o/r@0123abc"'


def test_a_recording_may_not_fall_back_to_the_bundled_sample(offline_data, monkeypatch):
    """Under cpu/full the record step sets DLBOOK_REAL_DATA=1: a loader without the real data
    stops with one clear error instead of publishing numbers from a few hundred sample images."""
    import warnings

    from dlbook import data

    monkeypatch.setenv("DLBOOK_REAL_DATA", "1")
    with pytest.raises(data.DataError, match="may not use the bundled sample.*DLBOOK_MIRROR"):
        data.load("mnist", "test")
    with pytest.raises(data.DataError, match="may not use the bundled sample"):
        data.load_text("couplet", "test")
    monkeypatch.setenv("DLBOOK_REAL_DATA", "0")  # what the record step sets for smoke
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert "bundled sample" in data.load("mnist", "test").source


def test_an_uncommitted_new_module_makes_the_commit_local_changes(tmp_path):
    import subprocess

    run = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)
    run("init", "-q")
    (tmp_path / "dlbook").mkdir()
    (tmp_path / "dlbook" / "a.py").write_text("x = 1\n")
    run("add", "-A")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a")
    assert not record.git_commit(tmp_path).endswith("+local-changes")
    (tmp_path / "dlbook" / "new_module.py").write_text("y = 2\n")  # not yet committed
    assert record.git_commit(tmp_path).endswith("+local-changes")


def test_sigterm_during_record_leaves_no_temp_files(nb, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    md, ipynb = nb
    md.write_text(TEXT.replace("assert FAIL_HERE is False", "import time; time.sleep(60)"))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp))
    code = f"from dlbook import record; record.record(__import__('pathlib').Path({str(ipynb)!r}), 'smoke', allow_dirty=True)"
    p = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=os.getcwd())
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp.glob("dlbook-record-*")):
        time.sleep(0.2)
    assert list(tmp.glob("dlbook-record-*")), "the record step never started"
    time.sleep(3)  # the kernel is running the notebook
    p.send_signal(signal.SIGTERM)
    assert p.wait(60) != 0
    time.sleep(1)
    assert not list(tmp.glob("dlbook-record-*")) and not [f for f in tmp.iterdir() if f.suffix == ".log"]
