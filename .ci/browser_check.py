"""Open built chapter pages in headless Chromium and check what a reader sees: typeset math
(no raw TeX left), figures that load, rendered widgets, the two claims tables. Keeps a
full-page screenshot of each page in _build/artifacts/.

    python .ci/browser_check.py [notebooks/07_vae_information_bottleneck ...]
"""
from __future__ import annotations

import functools
import http.server
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
ART = ROOT / "_build" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]

RAW_TEX = """() => {
  const main = document.querySelector('main') || document.body;
  const c = main.cloneNode(true);
  c.querySelectorAll('pre, code, script, style, mjx-container, .cell_output').forEach(e => e.remove());
  const t = c.innerText;
  return ['$$', '\\\\[', '\\\\begin{', '\\\\frac', '\\\\mathbb'].filter(s => t.includes(s));
}"""


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


# Known noise from third-party scripts, harmless for the reader: sphinx-thebe declares its
# URL constant twice, and the widget manager probes for the MathJax 2 API (MathJax 3 here).
KNOWN_JS_NOISE = ("THEBE_JS_URL", "reading 'Queue'")


def serve() -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(_Quiet, directory=str(HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


def check_page(browser, base: str, page_path: str) -> list[str]:
    problems: list[str] = []
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    js_errors: list[str] = []
    page.on("pageerror", lambda e: js_errors.append(str(e)))
    page.goto(f"{base}/{page_path}.html", wait_until="load")
    page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=30000)
    page.evaluate("() => MathJax.startup.promise")
    page.wait_for_timeout(1500)  # widgets render after the embed script has run
    n_math = page.locator("mjx-container").count()
    if n_math == 0:
        problems.append("no typeset math (mjx-container) on the page")
    raw = page.evaluate(RAW_TEX)
    if raw:
        problems.append(f"raw TeX left in the text: {raw}")
    imgs = page.evaluate("""() => Array.from(document.querySelectorAll('main img'))
        .filter(i => i.src.startsWith(location.origin)).map(
        i => ({src: i.src.slice(-60), ok: i.complete && i.naturalWidth > 0}))""")
    if not imgs:
        problems.append("no figures on the page")
    problems += [f"figure did not load: {i['src']}" for i in imgs if not i["ok"]]
    n_state = page.locator('script[type="application/vnd.jupyter.widget-view+json"]').count()
    n_widgets = page.locator(".jupyter-widgets, .widget-slider, .widget-dropdown").count()
    if n_state and not n_widgets:
        problems.append(f"{n_state} widget views stored but none rendered")
    headers = page.evaluate("""() => Array.from(document.querySelectorAll('main table')).map(
        t => Array.from(t.querySelectorAll('th')).map(h => h.innerText.trim().toLowerCase()).join('|'))""")
    claims = [h for h in headers if "threshold" in h and "pass" in h]
    if len(claims) < 2:
        problems.append(f"expected the two claims tables (threshold/pass columns), found {len(claims)}")
    problems += [f"JavaScript error: {e}" for e in js_errors if not any(k in e for k in KNOWN_JS_NOISE)]
    ART.mkdir(parents=True, exist_ok=True)
    shot = ART / (Path(page_path).name + ".png")
    page.screenshot(path=str(shot), full_page=True)
    print(f"{page_path}: {n_math} formulas, {len(imgs)} figures, {n_widgets} widget elements "
          f"({n_state} stored views), {len(claims)} claims tables -> {shot.relative_to(ROOT)}")
    page.close()
    return problems


def main(argv: list[str]) -> int:
    from playwright.sync_api import sync_playwright

    pages = argv or sorted(f"notebooks/{p.stem}" for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    httpd, base = serve()
    failed = False
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
            for pg in pages:
                problems = check_page(browser, base, pg)
                for msg in problems:
                    print(f"  FAIL {pg}: {msg}")
                failed |= bool(problems)
            browser.close()
    finally:
        httpd.shutdown()
    print("browser check:", "FAILED" if failed else "all pages OK")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
