"""The record step on a throwaway notebook: provenance written, papermill's injected cell
removed, the text file untouched, and a failing run leaves the committed notebook as it was."""
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
    :tags: [parameters]

    profile = None
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


def test_record_writes_outputs_and_provenance(nb):
    md, ipynb = nb
    before = md.read_text()
    prov = record.record(ipynb, "smoke")
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


def test_failing_record_leaves_notebook_untouched(nb):
    md, ipynb = nb
    md.write_text(TEXT.replace("FAIL_HERE", "True"))
    before = ipynb.read_bytes()
    with pytest.raises(Exception):
        record.record(ipynb, "smoke")
    assert ipynb.read_bytes() == before


def test_missing_text_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="jupytext --set-formats"):
        record.text_for(tmp_path / "02_none.ipynb")


def test_cli_rejects_unknown_profile(nb):
    md, ipynb = nb
    with pytest.raises(Exception, match="smoke, cpu, full"):
        record.main([str(ipynb), "--profile", "gpu"])
