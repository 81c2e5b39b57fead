"""Small data made in code for SGLD ensembles: two moons / spirals classification and a 1-D
regression toy with a gap (the classic setting for comparing predictive bands with NUTS).

All three are seeded by ``seed``, so one config gives the same data on every machine.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from probgen.data.base import ProbgenDataModule
from probgen.validation import check_int, check_real


def make_two_moons(n: int, noise: float = 0.1, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Two interleaved half circles (as scikit-learn's ``make_moons``), labels 0/1.

    Returns:
        ``x (n, 2)`` float32 and ``y (n,)`` long; the classes alternate in size by at most one.
    """
    n0 = n - n // 2
    t0 = torch.rand(n0, generator=generator) * math.pi
    t1 = torch.rand(n // 2, generator=generator) * math.pi
    a = torch.stack([torch.cos(t0), torch.sin(t0)], 1)
    b = torch.stack([1 - torch.cos(t1), 0.5 - torch.sin(t1)], 1)
    x = torch.cat([a, b]) + noise * torch.randn(n, 2, generator=generator)
    y = torch.cat([torch.zeros(n0, dtype=torch.long), torch.ones(n // 2, dtype=torch.long)])
    return x, y


def make_spirals(n: int, num_classes: int = 2, noise: float = 0.2, turns: float = 1.5,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """``num_classes`` interleaved Archimedean spirals in the plane.

    Returns:
        ``x (n, 2)`` and ``y (n,)`` with classes as equal as possible.
    """
    y = torch.arange(n) % num_classes
    r = torch.rand(n, generator=generator)
    angle = 2 * math.pi * turns * r + 2 * math.pi * y / num_classes
    radius = 0.25 + 2.75 * r
    x = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], 1)
    return x + noise * torch.randn(n, 2, generator=generator), y


def make_gap_regression(n: int, noise: float = 0.1, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """1-D regression with a gap: ``x`` in ``[-1, -0.3] U [0.3, 1]`` (uniform), ``y = sin(3x) + x + noise``.

    Returns:
        ``x (n, 1)`` and ``y (n, 1)``.
    """
    u = torch.rand(n, generator=generator)
    side = torch.rand(n, generator=generator) < 0.5
    x = torch.where(side, -1 + 0.7 * u, 0.3 + 0.7 * u)[:, None]
    y = torch.sin(3 * x) + x + noise * torch.randn(n, 1, generator=generator)
    return x, y


class _Classification2D(ProbgenDataModule):
    """Common part: train/val/test drawn independently from the same generator."""

    def __init__(self, num_train: int, num_test: int, batch_size: int, seed: int, num_workers: int = 0) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, eval_batch_size=4096)
        check_int("num_train", num_train, ge=1)
        check_int("num_test", num_test, ge=1)
        self.num_train, self.num_test = num_train, num_test

    def _draw(self, n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def build_splits(self) -> dict[str, tuple[Tensor, ...]]:
        g = torch.Generator().manual_seed(self.seed)
        return {"train": self._draw(self.num_train, g), "val": self._draw(self.num_test, g),
                "test": self._draw(self.num_test, g)}

    @property
    def num_classes(self) -> int:
        self.setup()
        return int(self.splits["train"][1].max()) + 1

    def grid(self, resolution: int = 100, margin: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
        """A ``resolution x resolution`` grid around the training data: ``(xx, yy, points (r*r, 2))``."""
        self.setup()
        x = self.splits["train"][0]
        lo, hi = x.min(0).values - margin, x.max(0).values + margin
        xx, yy = torch.meshgrid(torch.linspace(lo[0], hi[0], resolution), torch.linspace(lo[1], hi[1], resolution), indexing="xy")
        return xx, yy, torch.stack([xx.flatten(), yy.flatten()], 1)

    def plot_samples(self, samples: Tensor, path: str | Path) -> Path:
        from probgen.data.base import plot_samples

        return plot_samples(samples[:, :2] if samples.dim() == 2 else samples, path, title="posterior draws (first 2 weights)")


class TwoMoons(_Classification2D):
    """Two-moons binary classification (batches ``(x (b, 2), y (b,))``).

    Args:
        num_train: training points; ``num_test``: points in each of val and test.
        noise: std of the Gaussian noise added to the moons.
        batch_size: training batch size.
        seed: data and shuffle seed.
    """

    def __init__(self, num_train: int = 500, num_test: int = 1000, noise: float = 0.15, batch_size: int = 100,
                 seed: int = 0, num_workers: int = 0) -> None:
        super().__init__(num_train, num_test, batch_size, seed, num_workers)
        check_real("noise", noise, ge=0)
        self.noise = noise

    def _draw(self, n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        return make_two_moons(n, self.noise, g)


class Spirals(_Classification2D):
    """Interleaved-spirals classification (batches ``(x (b, 2), y (b,))``).

    Args:
        num_train, num_test: as for :class:`TwoMoons`.
        num_classes: number of spiral arms (classes), >= 2.
        noise: std of the Gaussian noise.
        turns: turns of each arm.
    """

    def __init__(self, num_train: int = 1000, num_test: int = 1000, num_classes: int = 2, noise: float = 0.2,
                 turns: float = 1.5, batch_size: int = 100, seed: int = 0, num_workers: int = 0) -> None:
        super().__init__(num_train, num_test, batch_size, seed, num_workers)
        check_int("num_classes", num_classes, ge=2)
        check_real("noise", noise, ge=0)
        check_real("turns", turns, gt=0)
        self.k, self.noise, self.turns = num_classes, noise, turns

    def _draw(self, n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        return make_spirals(n, self.k, self.noise, self.turns, g)


class GapRegression1D(ProbgenDataModule):
    """1-D regression with a gap in the inputs (batches ``(x (b, 1), y (b, 1))``); val/test are a
    dense grid on ``[-1.5, 1.5]`` with noisy targets, so predictive bands can be compared there.

    Args:
        num_train: training points.
        noise: observation noise std.
        num_grid: test grid size.
        batch_size: training batch size (default: full batch).
    """

    def __init__(self, num_train: int = 40, noise: float = 0.1, num_grid: int = 200, batch_size: int = 40,
                 seed: int = 0, num_workers: int = 0) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, eval_batch_size=4096)
        check_int("num_train", num_train, ge=1)
        check_real("noise", noise, gt=0)
        check_int("num_grid", num_grid, ge=1)
        self.num_train, self.noise, self.num_grid = num_train, noise, num_grid

    def build_splits(self) -> dict[str, tuple[Tensor, ...]]:
        g = torch.Generator().manual_seed(self.seed)
        train = make_gap_regression(self.num_train, self.noise, g)
        xg = torch.linspace(-1.5, 1.5, self.num_grid)[:, None]
        yg = torch.sin(3 * xg) + xg + self.noise * torch.randn(self.num_grid, 1, generator=g)
        return {"train": train, "val": (xg, yg), "test": (xg, yg)}
