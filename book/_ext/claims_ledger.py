"""Sphinx extension: the ``claims-ledger`` directive renders every chapter's stored claims.

The record step stores each chapter's claims as JSON beside its claims table (see
`dlbook.claims`); the directive reads the stored notebooks named in the table of contents and
writes the ledger (counts by kind and verdict, one line per article, every claim linked to its
row in the chapter). It reads stored outputs only and runs nothing; each notebook is a
dependency of the page, so a re-recorded chapter rebuilds it.
"""
from __future__ import annotations

import posixpath
from pathlib import Path

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective


class ClaimsLedger(SphinxDirective):
    has_content = False

    def run(self):
        from dlbook.claims import ledger, ledger_html

        env = self.env
        chapters = sorted(d for d in env.found_docs if d.startswith("notebooks/"))
        paths = []
        for doc in chapters:
            p = Path(env.doc2path(doc))
            if p.suffix != ".ipynb":
                raise self.error(f"claims-ledger: {doc} is not a stored notebook ({p.name})")
            env.note_dependency(str(p))
            paths.append(p)
        if not paths:
            raise self.error("claims-ledger: no chapter notebooks found under notebooks/")
        here = posixpath.dirname(env.docname)
        prefix = posixpath.relpath("notebooks", here or ".") + "/"
        return [nodes.raw("", ledger_html(ledger(paths), prefix), format="html")]


def setup(app: Sphinx):
    app.add_directive("claims-ledger", ClaimsLedger)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
