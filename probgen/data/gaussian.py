"""A Gaussian data set: the closed-form test bed of energy-based models (the paper's mean study)."""

from __future__ import annotations

import torch

from probgen.data.base import ProbgenDataModule
from probgen.validation import check_int, check_real, check_reals

__all__ = ["GaussianDataModule"]


class GaussianDataModule(ProbgenDataModule):
    """Samples of $\\mathcal N(\\mu, \\sigma^2 I_d)$ as train / val / test splits (one tensor ``x`` each).

    Args:
        dim: dimension $d$.
        mean: $\\mu$, a float (every coordinate) or ``d`` floats.
        std: $\\sigma > 0$.
        n_train, n_val, n_test: split sizes.
        batch_size, eval_batch_size, num_workers, seed: see :class:`ProbgenDataModule`; the
            splits use seeds ``seed``, ``seed + 1``, ``seed + 2``.
    """

    def __init__(
        self,
        dim: int = 1,
        mean: float | list[float] = 0.0,
        std: float = 1.0,
        n_train: int = 10_000,
        n_val: int = 2_000,
        n_test: int = 2_000,
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers, seed=seed)
        check_int("dim", dim, ge=1)
        check_real("std", std, gt=0)
        check_reals("mean", mean, length=(1, dim))
        mean_t = torch.as_tensor(mean, dtype=torch.get_default_dtype()).reshape(-1)
        if mean_t.numel() not in (1, dim):
            raise ValueError(f"mean must be a float or {dim} floats, got {mean!r}")
        for arg, v in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
            check_int(arg, v, ge=1)
        self.dim, self.mean, self.std = dim, mean_t.expand(dim).clone(), float(std)
        self.n_train, self.n_val, self.n_test = n_train, n_val, n_test

    def build_splits(self):
        out = {}
        for i, (split, n) in enumerate((("train", self.n_train), ("val", self.n_val), ("test", self.n_test))):
            g = torch.Generator().manual_seed(self.seed + i)
            out[split] = (self.mean + self.std * torch.randn(n, self.dim, generator=g),)
        return out
