// Loaded between require.min.js and embed-amd.js. The widget manager's stylesheet asks for its
// Font Awesome 5 fonts relative to the AMD module's address, which requirejs derives from the
// module name: "<page folder>/@jupyter-widgets/html-manager/dist/<hash>.woff2", a folder that
// does not exist. Mapping the two modules that carry the stylesheet onto fonts/ here makes
// those requests find the fonts shipped beside this file.
(() => {
  const here = document.currentScript.src.replace(/[^/]*$/, "");
  require.config({
    paths: {
      "@jupyter-widgets/html-manager": here + "fonts/html-manager",
      "@jupyter-widgets/html-manager/dist/libembed-amd": here + "fonts/libembed-amd",
    },
  });
})();
