"""Sphinx extension for the book's HTML: what the reader's browser loads and what search shows.

1. Each script once. Sphinx 7.4 writes an inline script that an extension registers after the
   builder was initialised twice: the builder keeps one copy with `filename=None`, and
   `prepare_writing` adds the registry's copy again as `filename=''`, which compares unequal.
   sphinx-thebe's `const THEBE_JS_URL = ...` then throws "Identifier 'THEBE_JS_URL' has
   already been declared" on every page. Duplicates are dropped from each page's script list.
2. Search snippets offline. Sphinx's search page fetches every hit's HTML page to cut a snippet
   out of `[role=main]`; browsers refuse `fetch` for a book opened from disk (file://), so no
   snippet is shown, and over http the snippet comes from the theme's navigation that sits in
   `[role=main]`. The text of every page's article (from the resolved doctree, nested by
   section, so anchored hits find their section) is written to `_static/search-text.js`, and
   `search-snippets.js` answers search's requests from it. Both are loaded by the search page
   only.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

from docutils import nodes
from sphinx.application import Sphinx

SEARCH_TEXT = "search-text.js"
_SKIP = (nodes.raw, nodes.comment, nodes.image, nodes.substitution_definition, nodes.target,
         nodes.system_message)


def _dedupe_scripts(app: Sphinx, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, keep = set(), []
    for js in scripts:
        key = (getattr(js, "filename", js) or "", tuple(sorted(getattr(js, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            keep.append(js)
    scripts[:] = keep


def _search_page_scripts(app: Sphinx, pagename, templatename, context, doctree) -> None:
    if pagename == "search":
        app.add_js_file(SEARCH_TEXT)
        app.add_js_file("search-snippets.js")
    elif doctree is not None:  # resolved: citations, toctrees and cross-references filled in
        app.book_search_text[pagename] = f'<div role="main">{_article_html(doctree)}</div>'


def _text(node: nodes.Node) -> str:
    node = node.deepcopy()
    for skip in list(node.findall(lambda n: isinstance(n, _SKIP))):
        if skip.parent is not None:
            skip.parent.remove(skip)
    return " ".join(node.astext().split())


def _article_html(node: nodes.Element) -> str:
    """The doctree as nested <section id=...> blocks of escaped plain text."""
    out = []
    for child in node.children:
        if isinstance(child, nodes.section):
            sid = html.escape(child["ids"][0]) if child["ids"] else ""
            out.append(f'<section id="{sid}">\n{_article_html(child)}</section>\n')
        elif not isinstance(child, _SKIP):
            t = _text(child)
            if t:
                out.append(f"<p>{html.escape(t)}</p>\n")
    return "".join(out)


def _write_search_text(app: Sphinx, exception) -> None:
    if exception or app.builder.format != "html":
        return
    pages = dict(app.book_search_text)
    for docname in sorted(app.env.found_docs - set(pages)):  # not rewritten in this build
        try:
            doctree = app.env.get_doctree(docname)
        except FileNotFoundError:
            continue
        pages[docname] = f'<div role="main">{_article_html(doctree)}</div>'
    pages = dict(sorted(pages.items()))
    target = Path(app.outdir) / "_static" / SEARCH_TEXT
    target.write_text("window.BOOK_SEARCH_TEXT = " + json.dumps(pages, ensure_ascii=False) + ";\n",
                      encoding="utf-8")


def setup(app: Sphinx) -> dict:
    app.book_search_text = {}
    app.connect("html-page-context", _search_page_scripts)
    app.connect("html-page-context", _dedupe_scripts, priority=900)  # after every extension added its own
    app.connect("build-finished", _write_search_text)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
