"""MkDocs hooks for the probgen site (registered under `hooks:` in mkdocs.yml).

- MathJax is served from the site itself, never from a CDN: its files come from the
  `django-static-mathjax` wheel (MathJax 3, a dependency of the `docs` extra) and are added
  to the site under `javascripts/mathjax/`.
- The tutorials in `tutorials/` become pages under `tutorials/`; mkdocs-jupyter executes them
  with `PROBGEN_SMOKE=1` (set here unless the caller set it), and each page opens with a note
  that its numbers come from the smoke run, pointing to the full-run numbers.
- nbconvert's own MathJax 2 loader (a CDN script) is cut from the notebook pages; the site's
  MathJax typesets their markdown cells instead.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import mkdocs.plugins
from mkdocs.structure.files import File, Files

REPO = Path(__file__).resolve().parents[2]
TUTORIALS = REPO / "tutorials"
MATHJAX_DEST = "javascripts/mathjax"
# the combined TeX/MathML -> CommonHTML bundle, then what it loads on demand: TeX extensions
# (autoload), the CHTML fonts, the context menu and its accessibility extensions
MATHJAX_FILES = ("tex-mml-chtml.js",)
MATHJAX_TREES = ("input/tex/extensions", "output/chtml", "ui", "a11y")

# tutorial stem -> (family page, section of docs/benchmarks.md with the full-run numbers)
TUTORIAL_PAGES = {
    "interpolants": ("interpolants.md", "stochastic-interpolants"),
    "fractional_sde": ("fractional.md", "fractional-noise-neural-sdes"),
    "nngp": ("nngp.md", "scale-mixtures-of-nngps"),
    "sgld_ensembles": ("ensembles.md", "sgld-bayesian-ensembles"),
    "energy_models": ("energy.md", "energy-based-models"),
}

_NBCONVERT_MATHJAX = re.compile(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->", re.DOTALL)


def mathjax_root() -> Path:
    """The `es5` folder of the bundled MathJax 3 distribution.

    Raises:
        RuntimeError: the `django-static-mathjax` package (docs extra) is not installed.
    """
    try:
        import mathjax  # the django-static-mathjax wheel: MathJax 3 under mathjax/static/mathjax
    except ImportError as err:
        raise RuntimeError(
            "the docs need the bundled MathJax: pip install 'django-static-mathjax>=3.2.2' "
            "(part of the docs extra: pip install -e '.[docs]')"
        ) from err
    root = Path(mathjax.__path__[0]) / "static" / "mathjax" / "es5"
    if not (root / MATHJAX_FILES[0]).is_file():
        raise RuntimeError(f"no MathJax bundle at {root}: reinstall django-static-mathjax")
    return root


def on_config(config):
    # the tutorials run in smoke mode at docs build (a few seconds each); PROBGEN_SMOKE=0 renders
    # the full runs instead. The notebook kernels inherit this environment.
    os.environ.setdefault("PROBGEN_SMOKE", "1")
    # the kernels must draw inline for the figures to reach the pages (an inherited Agg would not)
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    return config


@mkdocs.plugins.event_priority(100)  # before mkdocs-jupyter's on_files, which claims the tutorials
def on_files(files: Files, config) -> Files:
    site_dir, urls = config["site_dir"], config["use_directory_urls"]
    for path in sorted(TUTORIALS.glob("*.py")):
        files.append(File(f"tutorials/{path.name}", str(REPO), site_dir, urls))
    root = mathjax_root()
    paths = [root / name for name in MATHJAX_FILES]
    for tree in MATHJAX_TREES:
        paths += sorted(p for p in (root / tree).rglob("*") if p.is_file())
    for path in paths:
        uri = f"{MATHJAX_DEST}/{path.relative_to(root).as_posix()}"
        files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def _tutorial_stem(page) -> str | None:
    src = page.file.src_uri
    if src.startswith("tutorials/") and src.endswith(".py"):
        return Path(src).stem
    return None


def on_page_content(html: str, page, config, files) -> str:
    stem = _tutorial_stem(page)
    if stem is None:
        return html
    html = _NBCONVERT_MATHJAX.sub("", html)
    family, section = TUTORIAL_PAGES.get(stem, (None, None))
    links = f'<a href="../../benchmarks/#{section}">Benchmarks</a>' if section else "Benchmarks"
    family_link = f' and on the <a href="../../{family[:-3]}/">family page</a>' if family else ""
    smoke = os.environ.get("PROBGEN_SMOKE") == "1"
    if smoke:
        note = (
            '<div class="admonition note"><p class="admonition-title">Smoke run</p>'
            f"<p>This page was executed at docs build with <code>PROBGEN_SMOKE=1</code>: every step "
            "count is cut to a few iterations, so its printed numbers and its plots show that the "
            "code runs, not how well the method does. The full-run numbers are in "
            f"{links}{family_link}; run <code>python tutorials/{stem}.py</code> to reproduce "
            "them.</p></div>"
        )
    else:
        note = (
            '<div class="admonition note"><p class="admonition-title">Full run</p>'
            f"<p>This page was executed at docs build with the full step counts. "
            f"The benchmark tables are in {links}{family_link}.</p></div>"
        )
    # after the notebook's title when it has one, else at the top
    head, sep, rest = html.partition("</h1>")
    return head + sep + note + rest if sep else note + html
