"""Open the built book in headless Chromium at 1280 px, offline, and measure what a reader sees;
with --phone, at 390 px (a phone held upright).

Per page it measures, in the DOM:
- typeset math (no raw TeX left); display equations wider than the column (named by their
  number, label and first characters of TeX); the first equation number (each chapter starts
  at (1)), numbers that run 1, 2, 3 ... and `{eq}` references that show the target's number;
- every element in the article that overflows its box: fine when it scrolls with a visible
  scroll bar, a defect when it clips (text outputs, tables, widget readouts) or spills out of
  the column; the page itself must not scroll sideways;
- every figure (PNG in the article, widget images included): its natural size and the dpi in
  the PNG's pHYs chunk, the displayed size, and the screen size of a 10 pt label,
  10/72 * dpi * displayed/natural, which must be at least 8 px; that a click opens it full size;
- page errors, console errors, failed requests and any request that needs the network;
- what the chapter contract keeps out of recorded outputs: progress-bar widgets and absolute
  paths of the recording machine;
- one search box per page; and on the search page (over http and from file://) results with
  snippets.
It fails (exit 1) on any defect, naming each offender, and keeps a full-page screenshot of each
page in _build/artifacts/.

    python .ci/browser_check.py [-v] [--phone] [notebooks/07_vae_information_bottleneck book/data ...]

--phone: a 390 x 844 px window. A display equation wider than the column is then no defect if it
scrolls sideways in its own box with a visible bar and the edge cue (a shadow where more is
hidden, book.css); nothing may be cut or make the page scroll. The search page is checked at
1280 px only. Screenshots go to _build/artifacts/phone/.

-v also lists the elements that scroll sideways (with a visible bar, so not defects).
"""
from __future__ import annotations

import functools
import http.server
import re
import sys
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
ART = ROOT / "_build" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--enable-features=OverlayScrollbar", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
WIDTH, HEIGHT = 1280, 900
PHONE = (390, 844)
PHONE_MODE = False
LABEL_PT, MIN_LABEL_PX = 10, 8.0   # a 10 pt label must cover at least 8 screen pixels
MIN_BAR_PX = 6                     # a horizontal scroll bar thinner than this does not count as visible
SEARCH_TERM = "wasserstein"
VERBOSE = False

RAW_TEX = """() => {
  const main = document.querySelector('article') || document.querySelector('main') || document.body;
  const c = main.cloneNode(true);
  c.querySelectorAll('pre, code, script, style, mjx-container, .cell_output').forEach(e => e.remove());
  const t = c.innerText;
  return ['$$', '\\\\[', '\\\\begin{', '\\\\frac', '\\\\mathbb'].filter(s => t.includes(s));
}"""

MEASURE = r"""async ({labelPt, minBar}) => {
  const art = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
  const artBox = art.getBoundingClientRect();
  const shown = e => { const r = e.getBoundingClientRect(); const cs = getComputedStyle(e);
                       return r.width > 0 && r.height > 0 && cs.visibility !== 'hidden'; };
  const cells = Array.from(art.querySelectorAll('div.cell'));
  const where = e => {
    const sec = e.closest('section[id]'); const cell = e.closest('div.cell');
    return [sec ? '#' + sec.id : '', cell ? 'cell ' + (cells.indexOf(cell) + 1) : ''].filter(Boolean).join(' ');
  };
  const text = (e, n = 50) => (e.innerText || e.textContent || '').trim().replace(/\s+/g, ' ').slice(0, n);
  const bar = e => { const cs = getComputedStyle(e);
    if (!['auto', 'scroll'].includes(cs.overflowX)) return 0;
    return e.offsetHeight - e.clientHeight - parseFloat(cs.borderTopWidth) - parseFloat(cs.borderBottomWidth); };
  const kind = e => {
    if (e.closest('.widget-readout')) return 'widget readout';
    if (e.closest('.jupyter-widgets, .widget-subarea')) return 'widget';
    if (e.closest('.cell_input')) return 'code input';
    if (e.matches('table, .pst-scrollable-table-container, .table-wrapper') || e.querySelector('table'))
      return e.closest('.cell_output') ? 'output table' : 'table';
    if (e.closest('.cell_output')) return 'output text';
    if (e.closest('pre, .highlight')) return 'code block';
    return e.tagName.toLowerCase() + (e.className && typeof e.className === 'string' ? '.' + e.className.split(' ')[0] : '');
  };
  const tex = e => { try { const it = MathJax.startup.document.getMathItemsWithin(e);
                           if (it.length) return it[0].math.trim().replace(/\s+/g, ' '); } catch (err) {}
                     return text(e); };

  // display equations and their numbers
  const eqs = [];
  for (const mj of art.querySelectorAll('mjx-container[display="true"]')) {
    const box = mj.closest('div.math') || mj;
    const math = mj.querySelector('mjx-math') || mj;
    const need = Math.ceil(math.getBoundingClientRect().width);
    const have = Math.floor(mj.getBoundingClientRect().width);
    const eqno = box.querySelector('.eqno');
    // the box that scrolls: MathJax's container (beside the number), or the whole div.math
    const sc = [mj, box].find(x => x.scrollWidth > x.clientWidth + 1) || mj;
    const scrolls = sc.scrollWidth > sc.clientWidth + 1 && bar(sc) >= minBar;
    const cue = /gradient/.test(getComputedStyle(sc).backgroundImage);
    eqs.push({id: box.id || '', eqno: eqno ? eqno.firstChild.textContent.trim() : '', tex: tex(box).slice(0, 60),
              need, have, wide: need > have + 1, scrolls, cue, bar: bar(sc),
              where: where(box)});
  }
  const eqnos = Array.from(art.querySelectorAll('div.math .eqno')).map(e => e.firstChild.textContent.trim());
  const badRefs = [];
  for (const a of art.querySelectorAll('a[href*="#equation-"]:not(.headerlink)')) {
    const [path, id] = a.getAttribute('href').split('#');
    if (path && !location.pathname.endsWith(path.split('/').pop())) continue;  // cross-page: Sphinx resolved it
    const t = document.getElementById(id); const n = t && t.querySelector('.eqno');
    const want = n ? n.firstChild.textContent.trim() : null;
    if (want === null) badRefs.push(`${a.innerText.trim()} -> #${id} (no such numbered equation)`);
    else if (!a.innerText.includes(want.replace(/[()]/g, ''))) badRefs.push(`${a.innerText.trim()} -> #${id} shows ${want}`);
  }
  // inline math: the typeset formula wider than the box it sits in (glyph overhang is not clipping)
  const inlineClipped = Array.from(art.querySelectorAll('span.math')).filter(s => {
      const m = s.querySelector('mjx-math');
      // a formula in a box that scrolls with a visible bar (phones) is not cut
      return shown(s) && m && m.getBoundingClientRect().width > s.getBoundingClientRect().width + 1
             && !(s.scrollWidth > s.clientWidth + 1 && bar(s) >= minBar);
  }).map(s => ({tex: tex(s).slice(0, 50), where: where(s)}));

  // elements that overflow their box (math handled above)
  const overflow = [];
  for (const e of art.querySelectorAll('*')) {
    if (e.closest('mjx-container, div.math, span.math')) continue;
    const cs = getComputedStyle(e);
    if (cs.overflowX === 'visible' || e.scrollWidth <= e.clientWidth + 1 || !shown(e)) continue;
    const b = bar(e);
    overflow.push({kind: kind(e), where: where(e), text: text(e), need: e.scrollWidth, have: e.clientWidth,
                   bar: b, scrolls: b >= minBar, cue: /gradient/.test(cs.backgroundImage)});
  }
  // elements that spill out of the column with nothing clipping them
  const spill = [];
  for (const e of art.querySelectorAll('*')) {
    if (e.closest('mjx-container')) continue;
    const r = e.getBoundingClientRect();
    if (r.width === 0 || (r.right <= artBox.right + 1 && r.left >= artBox.left - 1)) continue;
    let p = e.parentElement, clipped = false;
    while (p && p !== art) { if (getComputedStyle(p).overflowX !== 'visible') { clipped = true; break; } p = p.parentElement; }
    if (clipped || (e.parentElement && spill.some(s => s.el.contains(e)))) continue;
    spill.push({el: e, kind: kind(e), where: where(e), text: text(e), by: Math.round(Math.max(r.right - artBox.right, artBox.left - r.left))});
  }

  // figures: PNGs in the article, the pHYs dpi read from the bytes
  const dpiOf = b => {
    if (b.length < 8 || b[0] !== 0x89 || b[1] !== 0x50 || b[2] !== 0x4E || b[3] !== 0x47) return {png: false};
    let i = 8;
    while (i + 8 <= b.length) {
      const len = ((b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]) >>> 0;
      const type = String.fromCharCode(b[i + 4], b[i + 5], b[i + 6], b[i + 7]);
      if (type === 'pHYs') {
        const ppu = ((b[i + 8] << 24) | (b[i + 9] << 16) | (b[i + 10] << 8) | b[i + 11]) >>> 0;
        return {png: true, dpi: b[i + 16] === 1 ? ppu * 0.0254 : null};
      }
      if (type === 'IDAT') break;
      i += 12 + len;
    }
    return {png: true, dpi: null};
  };
  const figs = [], broken = [];
  let n = 0;
  for (const img of art.querySelectorAll('img')) {
    if (!img.complete || img.naturalWidth === 0) {
      if (shown(img) || img.closest('p, .cell_output')) broken.push({src: img.getAttribute('src').slice(0, 90), alt: img.alt, where: where(img)});
      continue;
    }
    if (!shown(img)) continue;
    let info = {png: false};
    try { info = dpiOf(new Uint8Array(await (await fetch(img.src)).arrayBuffer())); } catch (err) {}
    if (!info.png) continue;
    n += 1;
    const w = img.getBoundingClientRect().width;
    const scale = w / img.naturalWidth;
    figs.push({n, where: where(img), widget: !!img.closest('.jupyter-widgets, .widget-subarea'),
               src: img.src.startsWith('blob:') || img.src.startsWith('data:') ? '(widget image)' : img.src.split('/').pop().slice(0, 16),
               natW: img.naturalWidth, natH: img.naturalHeight, shownW: Math.round(w), dpi: info.dpi,
               label: info.dpi ? labelPt / 72 * info.dpi * scale : null});
  }

  // progress bars stored in the outputs (the contract: bars show while a notebook runs, not in
  // the book; a closed bar is kept as an invisible widget that leaves a blank gap)
  const bars = Array.from(art.querySelectorAll('.widget-subarea')).filter(
      w => w.querySelector('.widget-hprogress, .widget-vprogress')).map(w => ({
      where: where(w), shown: w.innerText.trim().replace(/\s+/g, ' ').slice(0, 40),
      gap: Math.round(w.getBoundingClientRect().height)}));
  // absolute paths of the recording machine in what the reader sees
  const paths = [];
  for (const m of art.innerText.matchAll(/(?<![\w.~\/])\/(?:work|home|root|tmp|Users|mnt|opt|var|content)\/[^\s;,)'"]+/g))
    if (!paths.includes(m[0].replace(/\.$/, ''))) paths.push(m[0].replace(/\.$/, ''));

  // widgets, claims tables, search boxes, sideways page scroll
  const nState = document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]').length;
  const nWidgets = art.querySelectorAll('.jupyter-widgets, .widget-slider, .widget-dropdown').length;
  const headers = Array.from(art.querySelectorAll('table')).map(
      t => Array.from(t.querySelectorAll('th')).map(h => h.innerText.trim().toLowerCase()).join('|'));
  const searchBoxes = Array.from(document.querySelectorAll(
      'input[type="search"], .search-button-field, .search-button__button, #searchbox input'))
      .filter(e => shown(e) && !e.closest('dialog, #pst-search-dialog')).map(
      e => (e.closest('[class]').parentElement.className || e.className).toString().slice(0, 40));
  // dlbook.claims tables: the verdict column must be in view without scrolling sideways
  const verdicts = Array.from(art.querySelectorAll('.dlbook-claims table')).map(t => {
    const th = Array.from(t.querySelectorAll('th')).find(h => h.innerText.trim().toLowerCase() === 'verdict');
    const box = t.closest('.dlbook-claims').getBoundingClientRect();
    return th ? {right: Math.round(th.getBoundingClientRect().right), boxRight: Math.round(box.right)} : null;
  }).filter(x => x);
  const ledgerLinks = new Set(Array.from(art.querySelectorAll('a[href*="notebooks/"]')).map(
      a => (a.getAttribute('href').match(/notebooks\/(\d\d)_/) || [])[1]).filter(x => x)).size;
  const doc = document.documentElement;
  return {verdicts, ledgerLinks, nMath: document.querySelectorAll('mjx-container').length, eqs, eqnos, badRefs, inlineClipped,
          overflow, spill: spill.map(({el, ...s}) => s), figs, broken, nState, nWidgets, headers, searchBoxes,
          bars, paths,
          pageScroll: doc.scrollWidth > doc.clientWidth + 1 ? doc.scrollWidth - doc.clientWidth : 0,
          artWidth: Math.round(artBox.width)};
}"""

LIGHTBOX = """async () => {
  const img = Array.from(document.querySelectorAll('article .cell_output img')).find(
      i => i.complete && i.naturalWidth > 0 && i.getBoundingClientRect().width > 0);
  if (!img) return 'no figure';
  img.scrollIntoView(); img.click();
  await new Promise(r => setTimeout(r, 100));
  const box = document.querySelector('.book-lightbox');
  if (!box || getComputedStyle(box).display === 'none') return 'a click on a figure does not open it';
  const big = box.querySelector('img');
  try { await big.decode(); } catch (err) { return 'the opened figure does not load'; }
  const w = big.getBoundingClientRect().width;
  const msg = Math.abs(w - img.naturalWidth) > 1 ? `the opened figure is ${Math.round(w)} px wide, not its natural ${img.naturalWidth}` : '';
  document.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape'}));
  await new Promise(r => setTimeout(r, 50));
  if (getComputedStyle(box).display !== 'none' && box.isConnected) return 'Escape does not close the opened figure';
  return msg;
}"""

SEARCH = """async () => {
  for (let i = 0; i < 100; i++) {
    const s = document.querySelector('#search-results .search-summary, #search-results > p');
    if (s && /finished|did not match/i.test(s.innerText)) break;
    await new Promise(r => setTimeout(r, 100));
  }
  await new Promise(r => setTimeout(r, 500));
  return Array.from(document.querySelectorAll('#search-results li')).map(li => ({
    title: li.querySelector('a').innerText.trim().slice(0, 50),
    snippet: ((li.querySelector('p.context') || {}).innerText || '').trim().replace(/\\s+/g, ' ').slice(0, 120)}));
}"""


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve() -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(_Quiet, directory=str(HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


def toc_pages() -> tuple[list[str], list[str]]:
    """(chapter pages, other pages) in the order of _toc.yml."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    stack = list(toc.get("parts", [])) + list(toc.get("chapters", []))
    while stack:
        item = stack.pop(0)
        if "file" in item:
            files.append(item["file"])
        stack[:0] = list(item.get("chapters", [])) + list(item.get("sections", []))
    chapters = [f for f in files if f.startswith("notebooks/") and (ROOT / f"{f}.ipynb").exists()]
    return chapters, [f for f in files if f not in chapters]


class Page:
    """One browser tab that records errors and any request that needs the network."""

    def __init__(self, context, base: str):
        self.errors: list[str] = []
        self.page = context.new_page()
        self.page.on("pageerror", lambda e: self.errors.append(f"script error: {str(e).splitlines()[0]}"))
        self.page.on("console", self._console)
        self.page.on("response", lambda r: r.status >= 400 and self.errors.append(f"HTTP {r.status}: {r.url[len(base):]}"))
        self.page.on("requestfailed", self._failed)
        self.base = base

    def _console(self, msg):
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            self.errors.append(f"console error: {msg.text.splitlines()[0][:160]}")

    def _failed(self, req):
        if req.url.startswith(self.base) or req.url.startswith("file:"):
            if req.failure and "ERR_ABORTED" not in req.failure:
                self.errors.append(f"request failed: {req.url} ({req.failure})")
        else:
            self.errors.append(f"needs the network: {req.url[:100]}")

    def settle(self) -> None:
        p = self.page
        p.wait_for_function("() => !window.MathJax || !MathJax.startup || MathJax.startup.promise", timeout=30000)
        p.evaluate("() => window.MathJax && MathJax.startup ? MathJax.startup.promise : null")
        n_views = p.locator('script[type="application/vnd.jupyter.widget-view+json"]').count()
        if n_views:
            try:
                p.wait_for_function(f"() => document.querySelectorAll('.widget-subarea').length >= {n_views}", timeout=15000)
            except Exception:
                pass
        p.wait_for_function("() => Array.from(document.images).every(i => i.complete)", timeout=15000)
        p.wait_for_timeout(300)


def screenshot(p, path: Path) -> None:
    """The whole page as a reader sees it. A full_page screenshot leaves out the scroll bars of
    inner elements, so the viewport is made as tall as the page instead."""
    h = p.evaluate("() => document.documentElement.scrollHeight")
    p.set_viewport_size({"width": WIDTH, "height": h})
    p.wait_for_timeout(200)
    h = min(h, p.evaluate("() => document.documentElement.scrollHeight"))
    p.screenshot(path=str(path), clip={"x": 0, "y": 0, "width": WIDTH, "height": h})
    p.set_viewport_size({"width": WIDTH, "height": HEIGHT})


def judge(pg: str, m: dict, chapter: bool, lightbox: str) -> list[str]:
    bad: list[str] = []
    if chapter and m["nMath"] == 0:
        bad.append("no typeset math (mjx-container) on the page")
    for e in m["eqs"]:
        name = " ".join(x for x in (e["eqno"], e["id"].replace("equation-", "")) if x) or e["where"]
        if e["wide"] and PHONE_MODE:
            # on a phone a long equation scrolls in its own box, with a bar and the edge cue
            if not e["scrolls"]:
                bad.append(f"equation {name} is {e['need']} px wide in {e['have']} px and does not scroll "
                           f"(scroll bar {e['bar']} px): {e['tex']}")
            elif not e["cue"]:
                bad.append(f"equation {name} scrolls but shows no edge cue (book.css): {e['tex']}")
        elif e["wide"]:
            bad.append(f"equation {name} is {e['need']} px wide, {e['have']} px fit beside its number: break it "
                       f"(split/aligned/multline): {e['tex']}")
    for s in m["inlineClipped"]:
        bad.append(f"inline math clipped ({s['where']}): {s['tex']}")
    if chapter and m["eqnos"]:
        if m["eqnos"][0] != "(1)":
            bad.append(f"the first equation number is {m['eqnos'][0]}, not (1)")
        want = [f"({i})" for i in range(1, len(m["eqnos"]) + 1)]
        if m["eqnos"] != want:
            bad.append(f"equation numbers do not run 1..{len(want)}: {' '.join(m['eqnos'][:12])} ...")
    bad += [f"equation reference {r}" for r in m["badRefs"]]
    for o in m["overflow"]:
        if PHONE_MODE and o["scrolls"] and not o["cue"] and o["kind"] in ("table", "output table", "code input",
                                                                        "code block"):
            bad.append(f"{o['kind']} scrolls but shows no edge cue ({o['where']}): {o['text']!r}")
        if not o["scrolls"]:
            bad.append(f"{o['kind']} clipped ({o['where']}): needs {o['need']} px, has {o['have']} px, "
                       f"{'a ' + str(o['bar']) + ' px scroll bar' if o['bar'] > 0 else 'no visible scroll bar'}: "
                       f"{o['text']!r}")
    for s in m["spill"]:
        bad.append(f"{s['kind']} spills {s['by']} px out of the column ({s['where']}): {s['text']!r}")
    if m["pageScroll"]:
        bad.append(f"the page scrolls sideways by {m['pageScroll']} px")
    for f in m["figs"]:
        if f["dpi"] is None:
            bad.append(f"figure {f['n']} ({f['where']}, {f['src']}): the PNG has no pHYs dpi, legibility unknown")
        elif f["label"] < MIN_LABEL_PX and not PHONE_MODE:  # on a phone a tap opens it full size
            inches = f["natW"] / f["dpi"]
            bad.append(f"figure {f['n']}{' (widget)' if f['widget'] else ''} ({f['where']}): {f['natW']}x{f['natH']} px "
                       f"at {f['dpi']:.0f} dpi = {inches:.1f} in wide, shown {f['shownW']} px: a {LABEL_PT} pt label is "
                       f"{f['label']:.2f} px (< {MIN_LABEL_PX:g}); make it at most "
                       f"{LABEL_PT / 72 * f['shownW'] / MIN_LABEL_PX:.1f} in wide (dlbook.plots.figsize)")
    for where in dict.fromkeys(b["where"] for b in m["bars"]):
        here = [b for b in m["bars"] if b["where"] == where]
        shown = [repr(b["shown"]) for b in here if b["shown"]]
        gap = sum(b["gap"] for b in here if not b["shown"])
        what = ", ".join(([f"shown as {', '.join(shown)}"] if shown else [])
                         + ([f"{len(here) - len(shown)} invisible, {gap} px of blank space"] if gap else []))
        bad.append(f"{len(here)} progress bar(s) stored in the outputs ({where}): {what}")
    if m["paths"]:
        bad.append(f"absolute paths of the recording machine in the text: {', '.join(m['paths'][:4])}")
    for b in m["broken"]:
        bad.append(f"broken image ({b['where']}): {b['alt'] or ''} {b['src']}")
    if chapter:
        if not m["figs"]:
            bad.append("no figures on the page")
        if m["nState"] and not m["nWidgets"]:
            bad.append(f"{m['nState']} widget views stored but none rendered")
        if m["verdicts"]:  # on dlbook.claims: grouped tables, the verdict in view at this width
            hidden = [v for v in m["verdicts"] if v["right"] > v["boxRight"] + 1]
            if hidden:
                bad.append(f"{len(hidden)} claims tables whose verdict column needs sideways scrolling")
        else:
            claims = [h for h in m["headers"] if "threshold" in h and "pass" in h]
            if len(claims) < 2:
                bad.append(f"expected the two claims tables (threshold/pass columns), found {len(claims)}")
    if pg.endswith("claims-ledger") and m["ledgerLinks"] != len(toc_pages()[0]):
        bad.append(f"the claims ledger links {m['ledgerLinks']} chapters, not all {len(toc_pages()[0])}")
    if len(m["searchBoxes"]) != 1:
        bad.append(f"{len(m['searchBoxes'])} search boxes on the page ({', '.join(m['searchBoxes'])}), want one")
    if lightbox:
        bad.append(f"figure viewer: {lightbox}")
    return bad


def check_page(context, base: str, pg: str, chapter: bool) -> list[str]:
    t0 = time.time()
    tab = Page(context, base)
    p = tab.page
    p.goto(f"{base}/{pg}.html", wait_until="load")
    tab.settle()
    problems: list[str] = []
    raw = p.evaluate(RAW_TEX)
    if raw:
        problems.append(f"raw TeX left in the text: {raw}")
    m = p.evaluate(MEASURE, {"labelPt": LABEL_PT, "minBar": MIN_BAR_PX})
    ART.mkdir(parents=True, exist_ok=True)
    shot = ART / ("phone" if PHONE_MODE else "") / (Path(pg).name + ".png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    screenshot(p, shot)
    lightbox = p.evaluate(LIGHTBOX) if m["figs"] and chapter else ""
    lightbox = "" if lightbox == "no figure" else lightbox
    problems += judge(pg, m, chapter, lightbox)
    problems += list(dict.fromkeys(tab.errors))
    if VERBOSE:
        for o in m["overflow"]:
            if o["scrolls"]:
                print(f"  scrolls {o['kind']} ({o['where']}): {o['need']} px in {o['have']} px: {o['text'][:40]!r}")
    labels = [f["label"] for f in m["figs"] if f["label"]]
    scrolls = sum(o["scrolls"] for o in m["overflow"])
    wide = [e for e in m["eqs"] if e["wide"]]
    wide_note = f", {len(wide)} wider than the column" + (f" ({sum(e['scrolls'] for e in wide)} scroll in their box)"
                                                          if PHONE_MODE else "")
    claims = len(m["verdicts"]) or sum("threshold" in h and "pass" in h for h in m["headers"])
    first = m["eqnos"][0] if m["eqnos"] else "-"
    smallest = f"smallest 10 pt label {min(labels):.2f} px" if labels else "no PNG"
    print(f"{pg}{' @' + str(WIDTH) + ' px' if PHONE_MODE else ''}: {m['nMath']} formulas "
          f"({len(m['eqs'])} display{wide_note}, first number {first}), "
          f"{len(m['figs'])} figures ({smallest}), {m['nWidgets']} widget elements ({m['nState']} views), "
          f"{claims} claims tables, {len(m['overflow']) - scrolls} clipped + {len(m['spill'])} spilling elements "
          f"({scrolls} scroll with a bar), {len(set(tab.errors))} script/console/request errors; "
          f"{time.time() - t0:.1f} s "
          f"-> {shot.relative_to(ROOT)}")
    p.close()
    return problems


def check_search(context, base: str) -> list[str]:
    """Search results with snippets, over http and from file:// (the book read from disk)."""
    problems = []
    for name, url in (("http", f"{base}/search.html?q={SEARCH_TERM}"),
                      ("file://", (HTML / "search.html").as_uri() + f"?q={SEARCH_TERM}")):
        tab = Page(context, base)
        tab.page.goto(url, wait_until="load")
        res = tab.page.evaluate(SEARCH)
        tab.page.screenshot(path=str(ART / f"search-{name.strip(':/')}.png"))
        empty = [r["title"] for r in res if not r["snippet"]]
        print(f"search ({name}) for {SEARCH_TERM!r}: {len(res)} results, {len(res) - len(empty)} with a snippet"
              + (f"; e.g. {res[0]['title']!r}: {res[0]['snippet']!r}" if res else ""))
        if not res:
            problems.append(f"search ({name}): no results for {SEARCH_TERM!r}")
        problems += [f"search ({name}): no snippet for {t!r}" for t in empty]
        problems += [f"search ({name}): {e}" for e in dict.fromkeys(tab.errors)]
        tab.page.close()
    return problems


def main(argv: list[str]) -> int:
    from playwright.sync_api import sync_playwright

    global VERBOSE, PHONE_MODE, WIDTH, HEIGHT
    VERBOSE = "-v" in argv
    PHONE_MODE = "--phone" in argv
    if PHONE_MODE:
        WIDTH, HEIGHT = PHONE
    argv = [a for a in argv if a not in ("-v", "--phone")]
    chapters, others = toc_pages()
    pages = argv or chapters + others
    httpd, base = serve()
    failed = False
    t0 = time.time()

    def offline(route):  # the book must work with no network: nothing but the local server
        if route.request.url.startswith(base) or route.request.url.startswith("file:"):
            route.continue_()
        else:
            route.abort("internetdisconnected")

    try:
        with sync_playwright() as p:
            # Playwright hides scroll bars by default; a reader sees them, and the check measures them.
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True,
                                        ignore_default_args=["--hide-scrollbars"])
            context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT}, service_workers="block")
            context.route(re.compile(r"^(https?|wss?)://.*"), offline)
            report = []
            for pg in pages:
                report.append((pg, check_page(context, base, pg, pg in chapters)))
            if not argv and not PHONE_MODE:
                report.append(("search", check_search(context, base)))
            browser.close()
    finally:
        httpd.shutdown()
    for pg, problems in report:
        for msg in problems:
            print(f"  FAIL {pg}: {msg}")
        failed |= bool(problems)
    n = sum(len(p) for _, p in report)
    print(f"browser check at {WIDTH} px ({time.time() - t0:.0f} s):", f"FAILED, {n} defects" if failed else "all pages OK")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
