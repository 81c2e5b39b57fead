"""The docs site builds offline: MathJax is served from the site, every equation typesets, and
nothing is loaded from a CDN.

One strict build of the real mkdocs.yml into a temporary folder, with the tutorials converted
but not executed (CI's `mkdocs build --strict` executes them in smoke mode). Every equation of
every page is then typeset by the bundled MathJax itself (node, liteDOM) with the site's
configuration: a TeX error, an undefined macro or a delimiter left raw fails the test.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXTERNAL = re.compile(  # a script, style sheet, image or frame loaded from another host
    r"""<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*["']?(?:https?:)?//""", re.IGNORECASE)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("mkdocs_jupyter")
    pytest.importorskip("mkdocstrings")
    pytest.importorskip("mathjax", reason="the docs extra's django-static-mathjax is not installed")
    from mkdocs.commands.build import build
    from mkdocs.config import load_config

    out = tmp_path_factory.mktemp("site")
    with pytest.MonkeyPatch.context() as mp:  # the hook sets PROBGEN_SMOKE / MPLBACKEND: keep them local
        mp.chdir(REPO)
        mp.setenv("PROBGEN_SMOKE", "1")
        mp.setenv("MPLBACKEND", "Agg")
        config = load_config(str(REPO / "mkdocs.yml"), site_dir=str(out), strict=True)
        config.plugins["mkdocs-jupyter"].config["execute"] = False
        build(config)
    return out


def _pages(site: Path) -> list[Path]:
    return sorted(p for p in site.rglob("*.html") if p.name != "404.html")


def test_mathjax_is_served_by_the_site(site):
    bundle = site / "javascripts" / "mathjax"
    assert (bundle / "tex-mml-chtml.js").stat().st_size > 500_000
    fonts = list((bundle / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))
    assert len(fonts) >= 20, f"CHTML fonts missing: {fonts}"
    assert (site / "javascripts" / "mathjax-config.js").is_file()
    for page in _pages(site):
        html = page.read_text(encoding="utf-8")
        external = EXTERNAL.findall(html)
        assert not external, f"{page.relative_to(site)} loads from another host: {external[:3]}"
        if "arithmatex" in html or "jp-MarkdownOutput" in html:
            assert re.search(r'<script src="[./]*javascripts/mathjax/tex-mml-chtml\.js', html), (
                f"{page.relative_to(site)} has maths but does not load the bundled MathJax")


def test_every_equation_typesets(site, tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the MathJax typesetting check needs it")
    import sys

    sys.path.insert(0, str(REPO / "docs" / "hooks"))
    try:
        from probgen_docs import mathjax_root
    finally:
        sys.path.pop(0)
    from bs4 import BeautifulSoup  # a dependency of nbconvert (mkdocs-jupyter)

    # what MathJax sees in the browser, less what liteDOM cannot parse and what holds no maths
    clean = tmp_path / "pages"
    pages = {}
    for page in _pages(site):
        soup = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
        for tag in soup(["script", "style"]):
            tag.decompose()
        for tag in soup.find_all(lambda t: "-" in t.name):  # custom elements such as <clipboard-copy>
            tag.unwrap()
        name = page.relative_to(site).as_posix()
        target = clean / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(str(soup), encoding="utf-8")
        pages[str(target)] = name
    try:
        out = subprocess.run(
            [node, str(REPO / "tests" / "docs_mathjax.js"), str(mathjax_root()),
             str(REPO / "docs" / "javascripts" / "mathjax-config.js"), *pages],
            check=False, capture_output=True, text=True, timeout=600,
        )
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"MathJax did not finish; pages done: {err.stdout!r:.2000}")
    assert out.returncode == 0, out.stderr[-3000:]
    results = {pages[r["page"]]: r for r in map(json.loads, out.stdout.splitlines())}
    assert len(results) == len(pages)
    bad = {p: (r["errors"][:3], r["raw"][:3]) for p, r in results.items() if r["errors"] or r["raw"]}
    assert not bad, f"equations that do not render: {bad}"
    # the family pages and the tutorials are where the maths is: each must have typeset some
    for page in ("interpolants/index.html", "fractional/index.html", "nngp/index.html", "ensembles/index.html",
                 "energy/index.html", "sde/index.html", "tutorials/nngp/index.html",
                 "tutorials/energy_models/index.html"):
        assert results[page]["typeset"] >= 5, f"{page}: only {results[page]['typeset']} equations typeset"


def test_tutorials_are_pages_with_the_smoke_note(site):
    for path in sorted((REPO / "tutorials").glob("*.py")):
        page = site / "tutorials" / path.stem / "index.html"
        assert page.is_file(), f"no page for {path.name}"
        html = page.read_text(encoding="utf-8")
        assert "PROBGEN_SMOKE=1" in html and "benchmarks/#" in html, f"{path.name}: no smoke-run note"
        assert "jp-MarkdownOutput" in html and "jp-CodeCell" in html, f"{path.name}: not rendered as a notebook"
        assert "Load mathjax" not in html, f"{path.name}: nbconvert's CDN MathJax loader is still there"


# DESIGN.md's public names, by the package they are imported from
PUBLIC = {
    "probgen.sde": ["sdeint", "odeint", "MarkovFBM", "fbm_covariance", "sample_fbm"],
    "probgen.samplers": ["SGLD", "PSGLD", "SGHMC", "langevin", "cyclical_schedule", "rhat", "ess"],
    "probgen.interpolants": ["Interpolant", "generate", "log_likelihood"],
    "probgen.nngp": ["NNGPKernel", "StudentTProcess", "ScaleMixtureGP"],
    "probgen.ensembles": ["SGLDEnsemble"],
    "probgen.energy": ["EnergyBasedModel"],
    "probgen.fractional": ["FractionalSDE", "LatentFractionalSDE"],
}
# no tensor goes in or out: the optimizers update parameters in place; the schedule maps a step to a float
NO_SHAPES = {"SGLD", "PSGLD", "SGHMC", "cyclical_schedule"}


def _public():
    return [(module, name) for module, names in PUBLIC.items() for name in names]


@pytest.mark.parametrize(("module", "name"), _public(), ids=[n for _, n in _public()])
def test_public_name_has_a_docstring_with_shapes_and_equation(module, name):
    import importlib
    import inspect
    import sys

    obj = getattr(importlib.import_module(module), name)
    doc = inspect.getdoc(obj) or ""
    module_doc = inspect.getdoc(sys.modules[obj.__module__]) or ""
    assert "Args:" in doc, f"{name}: no Google-style Args section"
    assert "$" in doc or "$" in module_doc, f"{name}: no equation in its docstring or its module's"
    assert re.search(r"\b(19|20)\d\d\b", doc + module_doc), f"{name}: no paper cited (author, year)"
    if name not in NO_SHAPES:
        docs = [doc] + [inspect.getdoc(m) or "" for _, m in inspect.getmembers(obj, inspect.isfunction)
                        if not _.startswith("_")]
        assert any(re.search(r"``\(", d) for d in docs), f"{name}: no shapes like ``(batch, d)``"


def test_public_names_are_rendered(site):
    import importlib

    html = "\n".join(p.read_text(encoding="utf-8") for p in _pages(site))
    missing = []
    for module, name in _public():
        defined_in = getattr(importlib.import_module(module), name).__module__
        if f'id="{module}.{name}"' not in html and f'id="{defined_in}.{name}"' not in html:
            missing.append(f"{module}.{name}")
    assert not missing, f"no API entry in the docs for {missing}"
