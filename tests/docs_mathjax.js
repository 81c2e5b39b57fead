// Typesets built HTML pages with the bundled MathJax (liteDOM, no browser), configured as the
// site configures it (docs/javascripts/mathjax-config.js), and prints one JSON line per page:
// how many expressions were typeset, the first 20 characters of any that stayed raw, and every
// TeX error (undefined macros count as errors here; in a browser they would show as red text).
//   node tests/docs_mathjax.js MATHJAX_ES5_DIR CONFIG_JS PAGE.html...
// liteDOM's parser is strict: tests/test_docs.py hands it pages without scripts, styles and
// custom elements (the notebooks' <clipboard-copy> breaks it).
const fs = require("fs");
const [mathjaxDir, configPath, ...pages] = process.argv.slice(2);
global.window = {};
require(configPath); // sets window.MathJax = {tex, options}
const site = window.MathJax;
const errors = [];
require(mathjaxDir + "/node-main.js").init({
  loader: {load: ["input/tex", "output/chtml"]},
  tex: {
    ...site.tex,
    packages: {"[-]": ["noundefined"]},
    formatError: (jax, err) => { errors.push(String(err.message)); return jax.formatError(err); },
  },
  options: site.options,
}).then(async (MathJax) => {
  // node-main creates the HTML handler but registers none: register it to typeset whole pages
  MathJax._.mathjax.mathjax.handlers.register(MathJax.startup.handler);
  for (const page of pages) {
    errors.length = 0;
    const text = fs.readFileSync(page, "utf8");
    const doc = MathJax.startup.getDocument(text);
    await MathJax._.mathjax.mathjax.handleRetriesFor(() => doc.render()); // waits for autoloaded TeX packages
    const items = Array.from(doc.math);
    // what a reader would still see as raw TeX: delimiters left in text outside code
    const adaptor = MathJax.startup.adaptor;
    const body = adaptor.body(doc.document);
    const raw = [];
    const walk = (node) => {
      const kind = adaptor.kind(node);
      if (kind === "#text") {
        const text = adaptor.value(node);
        const m = text.match(/\\\(|\\\[/);
        if (m) raw.push(text.slice(m.index, m.index + 20));
        return;
      }
      if (kind.startsWith("#")) return; // comments, doctype
      if (["script", "style", "code", "pre", "textarea", "mjx-container"].includes(kind)) return;
      for (const child of adaptor.childNodes(node)) walk(child);
    };
    walk(body);
    console.log(JSON.stringify({page, typeset: items.length, errors: [...errors], raw}));
  }
}).catch((err) => { console.error(err); process.exit(1); });
