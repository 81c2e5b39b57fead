"""Small regression sets made in code (owned by the nngp family).

``HeavyTailRegression``: $y = \\sin(3x) + x/2 + s\\,\\varepsilon$ with Student-t noise
$\\varepsilon \\sim t_\\nu$ on inputs drawn uniformly from $[-2, 2]^d$ (only the first coordinate
enters $f$). Small $\\nu$ gives outliers: the case where a Student-t process or another heavy-tailed
scale mixture beats the Gaussian NNGP (Lee et al. 2022, sec. 5.1, their ``syn-t`` set).
"""

from __future__ import annotations

import torch
from torch import Tensor

from probgen.data.base import ProbgenDataModule
from probgen.validation import check_int, check_real

__all__ = ["HeavyTailRegression", "heavy_tail_regression"]


def heavy_tail_regression(
    num_points: int, input_dim: int = 1, noise_df: float = 2.0, noise_scale: float = 0.2,
    generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Draw ``(x (n, d), y (n, 1))`` from the heavy-tailed regression model (module docstring)."""
    if num_points < 1 or input_dim < 1:
        raise ValueError(f"num_points and input_dim must be >= 1, got {num_points}, {input_dim}")
    if noise_df <= 0 or noise_scale < 0:
        raise ValueError(f"noise_df must be > 0 and noise_scale >= 0, got {noise_df}, {noise_scale}")
    x = 4.0 * torch.rand(num_points, input_dim, generator=generator, dtype=torch.float64) - 2.0
    f = torch.sin(3.0 * x[:, :1]) + 0.5 * x[:, :1]
    # t_nu = z / sqrt(chi2_nu / nu); torch's chi2 sampler takes no generator: fork and seed the RNG
    z = torch.randn(num_points, 1, generator=generator, dtype=torch.float64)
    with torch.random.fork_rng(devices=[]):
        seed = int(torch.randint(2**62, (1,), generator=generator)) if generator is not None else None
        if seed is not None:
            torch.manual_seed(seed)
        chi2 = torch.distributions.Chi2(torch.tensor(float(noise_df), dtype=torch.float64)).sample((num_points, 1))
    y = f + noise_scale * z / torch.sqrt(chi2 / noise_df)
    return x.to(dtype), y.to(dtype)


class HeavyTailRegression(ProbgenDataModule):
    """Heavy-tailed synthetic regression (``(x, y)`` batches, ``y: (b, 1)``).

    Args:
        num_train, num_val, num_test: split sizes.
        input_dim: input dimension ``d``.
        noise_df: degrees of freedom $\\nu$ of the Student-t noise (``inf``-like values: Gaussian).
        noise_scale: noise scale $s$.
        batch_size: training batch size (GP models use the whole set regardless).
        seed: data seed.
    """

    def __init__(
        self,
        num_train: int = 200,
        num_val: int = 100,
        num_test: int = 500,
        input_dim: int = 1,
        noise_df: float = 2.0,
        noise_scale: float = 0.2,
        batch_size: int = 200,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        for name, value in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test)):
            check_int(name, value, ge=1)
        check_int("input_dim", input_dim, ge=1)
        check_real("noise_df", noise_df, gt=0)
        check_real("noise_scale", noise_scale, gt=0)
        self.num_train, self.num_val, self.num_test = num_train, num_val, num_test
        self.input_dim, self.noise_df, self.noise_scale = input_dim, noise_df, noise_scale

    def build_splits(self) -> dict[str, tuple[Tensor, ...]]:
        g = torch.Generator().manual_seed(self.seed)
        n = self.num_train + self.num_val + self.num_test
        x, y = heavy_tail_regression(n, self.input_dim, self.noise_df, self.noise_scale, generator=g)
        a, b = self.num_train, self.num_train + self.num_val
        return {"train": (x[:a], y[:a]), "val": (x[a:b], y[a:b]), "test": (x[b:], y[b:])}
