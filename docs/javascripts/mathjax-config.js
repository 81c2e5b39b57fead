// MathJax 3 configuration for pymdownx.arithmatex (generic mode) and the notebook pages.
// The MathJax bundle itself is served from this site (javascripts/mathjax/, added by
// docs/hooks/probgen_docs.py from the django-static-mathjax wheel): no CDN.
window.MathJax = {
  tex: {
    // arithmatex writes \( \) and \[ \]; the tutorials' markdown cells keep $ and $$
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true
  },
  options: {
    // typeset only arithmatex output, the notebooks' rendered markdown and the table of
    // contents (a heading with maths appears there too), never code or page chrome. MathJax
    // ignores an element whose class matches ignoreHtmlClass and all inside it, except where a
    // class matches processHtmlClass; the descendants of those are typeset unless they match
    // ignoreHtmlClass again (so it must not match everything, as ".*|" would).
    ignoreHtmlClass: "md-header|md-container",
    processHtmlClass: "arithmatex|jp-MarkdownOutput|md-nav__link"
  }
};

// mkdocs-material's instant navigation swaps the page without reloading: typeset again
if (typeof document$ !== "undefined") {
  document$.subscribe(() => {
    if (window.MathJax && MathJax.typesetPromise) {
      MathJax.startup.output.clearCache();
      MathJax.typesetClear();
      MathJax.texReset();
      MathJax.typesetPromise();
    }
  });
}
