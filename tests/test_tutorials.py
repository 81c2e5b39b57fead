"""Every tutorial is valid jupytext percent format and runs in smoke mode."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((REPO / "tutorials").glob("*.py"))


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs_in_smoke_mode(path, tmp_path):
    import jupytext

    notebook = jupytext.read(path)
    code_cells = [c for c in notebook.cells if c.cell_type == "code"]
    assert len(code_cells) >= 3, f"{path.name} should be a percent-format notebook with several cells"
    assert any(c.cell_type == "markdown" for c in notebook.cells), f"{path.name} has no markdown cells"
    env = {**os.environ, "PROBGEN_SMOKE": "1", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{path.name} failed:\n{out.stderr[-4000:]}"
