import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from probgen.testing import write_uci_layout

REPO = Path(__file__).resolve().parents[1]
# No test reads the real UCI data (a user's clone has nothing beside it): every test, and every
# config in models/ that names a UCI set with root: null, reads this small generated copy in the
# UCI layout, whatever $PROBGEN_UCI_ROOT says outside the test run.
UCI_ROOT = write_uci_layout(Path(tempfile.mkdtemp(prefix="probgen-uci-")), num_rows=120, num_splits=3)
atexit.register(shutil.rmtree, UCI_ROOT, ignore_errors=True)
os.environ["PROBGEN_UCI_ROOT"] = str(UCI_ROOT)
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
    """Root of the generated UCI-layout data (120 rows a set, 3 splits, 12 test rows each)."""
    return UCI_ROOT
