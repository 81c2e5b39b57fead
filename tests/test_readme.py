"""Every ```python block of README.md runs as written, so the README cannot silently rot.

Each block is executed on its own in a fresh namespace, from a temporary directory, with the
Agg matplotlib backend; the test id is the ``###`` heading the block sits under.
"""

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"

_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_HEADING = re.compile(r"^###[ \t]+(.+?)[ \t]*$", re.MULTILINE)


def _python_blocks(text):
    """Returns ``[(id, code)]`` for every fenced python block, id from the preceding ### heading."""
    headings = [(m.start(), m.group(1)) for m in _HEADING.finditer(text)]
    blocks, seen = [], {}
    for match in _FENCE.finditer(text):
        title = next((h for pos, h in reversed(headings) if pos < match.start()), "preamble")
        slug = re.sub(r"[^0-9a-z]+", "-", title.lower()).strip("-") or "block"
        seen[slug] = seen.get(slug, 0) + 1
        ident = slug if seen[slug] == 1 else f"{slug}-{seen[slug]}"
        # pad so that tracebacks point at the README's own line numbers
        padding = "\n" * text.count("\n", 0, match.start(1))
        blocks.append((ident, padding + match.group(1)))
    return blocks


BLOCKS = _python_blocks(README.read_text())


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 5, (
        f"expected a python example per family in README.md, found {len(BLOCKS)}"
    )


@pytest.mark.parametrize("code", [c for _, c in BLOCKS], ids=[i for i, _ in BLOCKS])
def test_readme_block_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    dtype, grad = torch.get_default_dtype(), torch.is_grad_enabled()
    namespace = {"__name__": "__readme__"}
    try:
        with torch.random.fork_rng(devices=[]):  # leave the global RNG as other tests expect it
            exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 (running the README is the point)
    finally:
        torch.set_default_dtype(dtype)
        torch.set_grad_enabled(grad)
        try:
            import matplotlib.pyplot as plt

            plt.close("all")
        except ImportError:
            pass
