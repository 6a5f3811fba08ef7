// The book's page script (loaded on every page through html_js_files).
//
// 1. MathJax 2 API for the widget manager. The ipywidgets HTML manager typesets every widget
//    description with `MathJax.Hub.Queue(["Typeset", MathJax.Hub, el])`, the MathJax 2 API,
//    whenever `window.MathJax` exists. This book runs MathJax 3 (sphinx-mathjax-offline), which
//    has no `Hub`, so each description threw "Cannot read properties of undefined (reading
//    'Queue')". When MathJax 3 installs itself, it gets a `Hub` whose `Queue` hands "Typeset"
//    jobs to MathJax 3's `typesetPromise`, so descriptions with $...$ are typeset as well.
// 2. Figures open full size on click (Escape, a click or the close button closes them).
(() => {
  const hub = (mj) => ({
    Queue: (...jobs) => {
      for (const job of jobs) {
        if (!Array.isArray(job) || job[0] !== "Typeset") continue;
        const el = job[2];
        const ready = mj.startup && mj.startup.promise ? mj.startup.promise : Promise.resolve();
        ready.then(() => (mj.typesetPromise ? mj.typesetPromise(el ? [el] : undefined) : null))
          .catch((e) => console.warn("MathJax typeset of a widget label failed:", e));
      }
    },
  });
  const withHub = (v) => {
    if (v && typeof v === "object" && v.version && !v.Hub) v.Hub = hub(v);
    return v;
  };
  let current = withHub(window.MathJax);
  try {
    Object.defineProperty(window, "MathJax", {
      configurable: true,
      enumerable: true,
      get: () => current,
      set: (v) => { current = withHub(v); },
    });
  } catch (e) {
    // MathJax already defined a fixed global: add the Hub when the page is ready.
    document.addEventListener("DOMContentLoaded", () => withHub(window.MathJax));
  }
})();

(() => {
  let box = null;
  const close = () => { if (box) box.hidden = true; };
  const open = (img) => {
    if (!box) {
      box = document.createElement("div");
      box.className = "book-lightbox";
      box.setAttribute("role", "dialog");
      box.setAttribute("aria-label", "Figure at full size");
      box.innerHTML = '<button type="button" class="book-lightbox__close" aria-label="Close">&times;</button><img alt="">';
      box.addEventListener("click", close);
      document.body.appendChild(box);
    }
    const big = box.querySelector("img");
    big.src = img.currentSrc || img.src;
    big.alt = img.alt || "";
    box.hidden = false;
    box.querySelector("button").focus();
  };
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") close(); });
  document.addEventListener("click", (e) => {
    const img = e.target.closest && e.target.closest("article .cell_output img, article .widget-image");
    if (!img || img.closest(".book-lightbox") || img.closest("a")) return;
    e.preventDefault();
    open(img);
  });
})();

// 3. Inline math wider than the text column (a phone; MathJax 3 does not break lines) gets the
//    class book-wide-inline, which makes it scroll in its own box (book.css); the rest of the
//    inline math stays on the text's baseline, with no scroll bar.
(() => {
  const mark = () => {
    for (const s of document.querySelectorAll("article span.math")) {
      const m = s.querySelector("mjx-math");
      const col = s.closest("p, li, dd, td, div") || s.parentElement;
      if (!m || !col) continue;
      const wide = m.getBoundingClientRect().width > col.getBoundingClientRect().width - 2;
      s.classList.toggle("book-wide-inline", wide);
    }
  };
  const start = () => {
    const mj = window.MathJax;
    const ready = mj && mj.startup && mj.startup.promise ? mj.startup.promise : Promise.resolve();
    ready.then(mark).catch(() => {});
  };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
  let t = null;
  window.addEventListener("resize", () => { clearTimeout(t); t = setTimeout(mark, 150); });
})();
