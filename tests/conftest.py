import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UCI_ROOT = Path(os.environ.get("PROBGEN_UCI_ROOT", REPO.parent / "shared" / "data" / "uci"))
os.environ.setdefault("PROBGEN_UCI_ROOT", str(UCI_ROOT))
os.environ.setdefault("MPLBACKEND", "Agg")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one intra-op thread per xdist worker: `-n 2` on 2 cores would otherwise run 4 BLAS threads
    import torch

    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def uci_root():
    if not (UCI_ROOT / "yacht" / "data.txt").exists():
        pytest.skip(f"UCI data not found under {UCI_ROOT}")
    return UCI_ROOT
