"""The Colab setup cell of every chapter, and the one setting it depends on: the repository.

The repository address lives in one place, ``_config.yml`` (``repository.url`` and
``repository.branch``). The book's launch and GitHub buttons read it from there; the Colab badge
and the setup cell of each notebook carry it as text, written from there by this module.

The setup cell never stores a commit. In Colab it asks Colab for the notebook being run and reads
the commit its outputs were recorded from (``metadata.dlbook.provenance.install_ref``, written by
`dlbook.record`), so that the reader installs the code that made the outputs; without that commit
(a notebook never recorded, or another front end) it installs the branch and says so. The cell is
therefore byte-identical in the ``.md`` and the ``.ipynb``, and opening and saving a chapter in
JupyterLab (directly or through jupytext) changes nothing.

    python -m dlbook.colab --all                  # rewrite every chapter's setup cell
    python -m dlbook.colab notebooks/02_lipschitz.ipynb
    python -m dlbook.colab --check --all          # exit 1 if a notebook needs rewriting

A fork edits ``repository.url`` in ``_config.yml`` and runs ``python -m dlbook.colab --all``.
It edits only the setup cell, the Colab badge link, the kernelspec and jupytext header and the recorded
``install_ref`` (set to the commit on the provenance line) of each pair, executes nothing, and is idempotent: a second run
changes nothing.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"

# The lines the setup cell holds inside `if "google.colab" in sys.modules:`; {url} and
# {branch} come from _config.yml. `{ref}` is IPython's own expansion at run time.
BLOCK = '''\
    # Install the dlbook commit that recorded these outputs (the notebook's provenance), else {branch}.
    from google.colab import _message
    try:
        ref = _message.blocking_request("get_ipynb", timeout_sec=60)["ipynb"]["metadata"]["dlbook"]["provenance"]["install_ref"]
        print(f"setup: installing dlbook at {{ref}}, the commit that recorded these outputs")
    except Exception as e:  # never recorded, or Colab did not answer
        ref = "{branch}"
        print(f"setup: no recorded commit found ({{type(e).__name__}}): installing dlbook from the {branch} branch")
    %pip install -q "dlbook @ git+{url}@{{ref}}"'''

# The first line of the block (to find a block already written) and the install line it ends with.
_START = "    # Install the dlbook commit that recorded these outputs"
_INSTALL = re.compile(r'^\s*%pip install -q "dlbook @ git\+(\S+?)@([^"]+)"\s*$')


def repository(root: Path = ROOT) -> tuple[str, str]:
    """(url, branch) from _config.yml."""
    import yaml

    repo = yaml.safe_load((root / "_config.yml").read_text())["repository"]
    return repo["url"].rstrip("/"), repo.get("branch", "main")


def block(url: str, branch: str) -> str:
    return BLOCK.format(url=url, branch=branch)


def setup_source(src: str, url: str, branch: str) -> str:
    """`src` (a cell's source) with its dlbook install replaced by the run-time block."""
    lines = src.split("\n")
    end = next((i for i, ln in enumerate(lines) if _INSTALL.match(ln)), None)
    if end is None:
        return src
    start = next((i for i in range(end, -1, -1) if lines[i].startswith(_START)), end)
    return "\n".join(lines[:start] + block(url, branch).split("\n") + lines[end + 1:])


def is_setup_cell(src: str) -> bool:
    return any(_INSTALL.match(ln) for ln in src.split("\n"))


# The Colab badge under each chapter's title links to the .ipynb in the configured repository.
_BADGE = re.compile(r"https://colab\.research\.google\.com/github/[^/\s)]+/[^/\s)]+/blob/[^/\s)]+/(notebooks/[\w.-]+\.ipynb)")


def badge_link(text: str, url: str, branch: str) -> str:
    """`text` with every Colab badge link pointing at the configured repository and branch."""
    slug = url.split("github.com/", 1)[1] if "github.com/" in url else url
    return _BADGE.sub(lambda m: f"https://colab.research.google.com/github/{slug}/blob/{branch}/{m.group(1)}", text)


# The kernel as JupyterLab writes it when it opens a chapter (ipykernel's own kernelspec); any
# other display name marks the tab unsaved at once and autosave rewrites both files. In the text
# file's header the keys come in the order JupyterLab sends them.
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
_MD_KERNELSPEC = re.compile(r"^kernelspec:\n(?:  \S.*\n)+", re.M)


def _fix_md(text: str, url: str, branch: str) -> str:
    """The text notebook with its setup cell, badge link and kernelspec rewritten (nothing else)."""
    text = badge_link(text, url, branch)
    if text.startswith("---\n"):
        end = text.index("\n---\n", 4)
        ks = "kernelspec:\n" + "".join(f"  {k}: {KERNELSPEC[k]}\n" for k in ("name", "display_name", "language"))
        text = _MD_KERNELSPEC.sub(lambda m: ks, text[:end + 1], count=1) + text[end + 1:]
    out, pos = [], 0
    for m in re.finditer(r"(```\{code-cell\}[^\n]*\n)(.*?)(\n```\n)", text, re.S):
        body = m.group(2)
        if is_setup_cell(body):
            # a cell's options (`:tags: [...]`, a blank line) precede its source
            opts, sep, src = body.partition("\n\n") if body.startswith(":") else ("", "", body)
            body = opts + sep + setup_source(src, url, branch)
        out += [text[pos:m.start(2)], body]
        pos = m.end(2)
    out.append(text[pos:])
    return "".join(out)


def _fix_ipynb(text: str, url: str, branch: str) -> str:
    """The notebook JSON with its setup cell and jupytext metadata as Jupyter writes them."""
    nb = json.loads(text)
    for cell in nb["cells"]:
        src = "".join(cell["source"])
        if cell["cell_type"] == "code" and is_setup_cell(src):
            new = setup_source(src, url, branch)
        elif cell["cell_type"] == "markdown":
            new = badge_link(src, url, branch)
        else:
            continue
        if new != src:
            cell["source"] = new.splitlines(keepends=True)
    # Colab installs the commit on the provenance line (a pin once bumped by hand is reset to it)
    prov = nb["metadata"].get("dlbook", {}).get("provenance", {})
    commit = prov.get("commit", "")
    if commit and "+" not in commit and commit != "unknown" and not prov.get("install_ref", "").startswith(commit):
        prov["install_ref"] = _full(commit)
    nb["metadata"]["kernelspec"] = dict(KERNELSPEC)
    # jupytext's contents manager drops text_representation from the .ipynb when it saves
    nb["metadata"].get("jupytext", {}).pop("text_representation", None)
    # the same layout as nbformat.write (what Jupyter writes): indent 1, sorted keys, no ASCII escapes
    return json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def _full(commit: str) -> str:
    import subprocess

    return subprocess.run(["git", "rev-parse", "--verify", f"{commit}^{{commit}}"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()


def sync(ipynb: Path, check: bool = False) -> list[str]:
    """Rewrite the pair's setup cell; return the names of the files that changed (or would)."""
    url, branch = repository()
    ipynb = Path(ipynb)
    md = ipynb.with_suffix(".md")
    changed = []
    for path, fix in ((md, _fix_md), (ipynb, _fix_ipynb)):
        before = path.read_text()
        after = fix(before, url, branch)
        if after != before:
            changed.append(path.name)
            if not check:
                path.write_text(after)
    return changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dlbook.colab", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="*", type=Path)
    ap.add_argument("--all", action="store_true", help="every notebooks/NN_*.ipynb")
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file would change")
    a = ap.parse_args(argv)
    nbs = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")) if a.all else a.notebooks
    if not nbs:
        ap.error("name notebooks (notebooks/NN_name.ipynb) or pass --all")
    stale = []
    for nb in nbs:
        changed = sync(nb, check=a.check)
        stale += changed
        print(f"colab: {Path(nb).name}: " + (("would change " if a.check else "rewrote ") + ", ".join(changed)
                                               if changed else "up to date"))
    return 1 if (a.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
