// Search snippets that also work for a book opened from disk (file://), where browsers refuse
// fetch(). Sphinx's search page fetches each hit's page to cut a snippet out of [role=main];
// book_html.py writes every page's article text to search-text.js (window.BOOK_SEARCH_TEXT),
// and the requests for those pages are answered from it. Loaded on the search page only.
(() => {
  const pages = () => window.BOOK_SEARCH_TEXT || {};
  const root = () => new URL(document.documentElement.dataset.content_root || "./", document.baseURI);
  const docOf = (input) => {
    try {
      const url = new URL(typeof input === "string" ? input : input.url, document.baseURI);
      const base = root();
      if (url.origin !== base.origin || !url.pathname.startsWith(base.pathname)) return null;
      return decodeURIComponent(url.pathname.slice(base.pathname.length)).replace(/\.html$/, "");
    } catch (e) {
      return null;
    }
  };
  const fetchPage = window.fetch.bind(window);
  window.fetch = (input, init) => {
    const doc = docOf(input);
    if (doc !== null && Object.prototype.hasOwnProperty.call(pages(), doc)) {
      return Promise.resolve(new Response(pages()[doc], {headers: {"Content-Type": "text/html"}}));
    }
    return fetchPage(input, init);
  };
})();
