"""Every chapter notebook agrees with its text file, installs dlbook from the configured
repository, is listed in the table of contents and carries recorded outputs."""
import json
import re
from pathlib import Path

import jupytext
import pytest
import yaml

from dlbook import colab

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())


def test_there_are_chapters():
    assert NOTEBOOKS, "no notebooks/NN_*.ipynb found"


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=lambda p: p.stem)
def test_text_and_notebook_agree(ipynb):
    text = ipynb.with_suffix(".md")
    assert text.exists(), f"{ipynb.name} has no paired {text.name}"
    a, b = jupytext.read(text), jupytext.read(ipynb)
    assert len(a.cells) == len(b.cells), f"{ipynb.name}: {len(b.cells)} cells, {text.name}: {len(a.cells)}"
    for i, (ca, cb) in enumerate(zip(a.cells, b.cells)):
        assert ca.cell_type == cb.cell_type, f"cell {i}: {ca.cell_type} vs {cb.cell_type}"
        # identical, the setup cell included: opening the pair in JupyterLab takes the inputs
        # from the text file, so any difference would be written back into the .ipynb
        assert ca.source.strip() == cb.source.strip(), f"{ipynb.name} cell {i} differs from {text.name}"


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=lambda p: p.stem)
def test_setup_cell_installs_the_recorded_commit_from_the_configured_repository(ipynb):
    url, branch = CONFIG["repository"]["url"], CONFIG["repository"]["branch"]
    nb = json.loads(ipynb.read_text())
    src = "".join("".join(c["source"]) for c in nb["cells"])
    # the setup cell is exactly the one dlbook.colab writes for the configured repository: it
    # reads the recorded commit from the notebook's provenance at run time
    assert colab.sync(ipynb, check=True) == [], (f"{ipynb.name}: setup cell or jupytext header out of date: "
                                                 f"run python -m dlbook.colab {ipynb.relative_to(ROOT)}")
    assert f'"dlbook @ git+{url}@{{ref}}"' in src and f'ref = "{branch}"' in src
    prov = nb["metadata"].get("dlbook", {}).get("provenance", {})
    # Colab installs the commit on the provenance line (the short commit is its prefix)
    if prov.get("commit") and "+" not in prov["commit"]:
        assert prov.get("install_ref", "").startswith(prov["commit"]), (
            f"{ipynb.name}: Colab would install {prov.get('install_ref')}, the outputs came from {prov['commit']}")
    assert f"colab.research.google.com/github/{url.split('github.com/')[1]}/blob/{branch}/notebooks/{ipynb.name}" in src
    # the badge is an inline image: it shows without network (no external badge image)
    assert "colab-badge.svg" not in src and "data:image/png;base64," in src


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=lambda p: p.stem)
def test_recorded_with_provenance_and_no_errors(ipynb):
    nb = json.loads(ipynb.read_text())
    prov = nb["metadata"].get("dlbook", {}).get("provenance")
    assert prov and prov["profile"] in ("cpu", "full"), f"{ipynb.name}: run python -m dlbook.record"
    code = [c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]
    assert all(c["execution_count"] is not None for c in code), f"{ipynb.name} has unexecuted cells"
    assert not [o for c in code for o in c["outputs"] if o["output_type"] == "error"]
    tags = [t for c in code for t in c["metadata"].get("tags", [])]
    assert "parameters" in tags and "provenance" in tags


def test_every_notebook_is_in_the_toc():
    toc = (ROOT / "_toc.yml").read_text()
    for ipynb in NOTEBOOKS:
        assert f"notebooks/{ipynb.stem}" in toc, f"{ipynb.name} is not in _toc.yml"


# A paragraph still to be written: a line that is only a marker (RESULTS-TEXT, TODO, XXX, TBD).
PLACEHOLDER = re.compile(r"^\s*(?:[A-Z]+-TEXT|TODO\b.*|XXX\b.*|TBD\b.*|FIXME\b.*)\s*$|\bXXX\b", re.M)


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=lambda p: p.stem)
def test_text_has_no_placeholders(ipynb):
    text = ipynb.with_suffix(".md").read_text()
    found = [m.group(0).strip() for m in PLACEHOLDER.finditer(text)]
    assert not found, f"{ipynb.with_suffix('.md').name}: unwritten text {found}"
