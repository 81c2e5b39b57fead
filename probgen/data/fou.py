r"""Fractional Ornstein-Uhlenbeck paths, simulated from exact fBM (not the Markov approximation).

The fOU process $dX = -\theta X\,dt + \sigma\,dB_H$, $X(0) = x_0$, has the pathwise solution
(integration by parts of the Young integral)

$$X(t) = e^{-\theta t} x_0 + \sigma\Big(B_H(t) - \theta \int_0^t e^{-\theta(t-s)} B_H(s)\,ds\Big).$$

:func:`simulate_fou` draws $B_H$ exactly (Davies-Harte) on a grid ``fine`` times finer than
the observation grid and evaluates the integral by the trapezoidal rule, so the only error is
the quadrature of a smooth-weighted integral of a continuous path (no SDE discretisation and
no Markov approximation).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from probgen.data.base import ProbgenDataModule, plot_samples
from probgen.sde.fbm import KINDS, sample_fbm
from probgen.validation import check_choice, check_int, check_real

__all__ = ["FOUBridge", "FOUPaths", "simulate_fou"]


def simulate_fou(
    num_paths: int,
    hurst: float,
    theta: float = 1.0,
    sigma: float = 1.0,
    horizon: float = 1.0,
    n_obs: int = 50,
    x0: float = 0.0,
    fine: int = 8,
    kind: str = "type1",
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """fOU paths at ``n_obs`` equally spaced times in ``(0, horizon]``.

    Args:
        num_paths: number of paths.
        hurst: Hurst index in (0, 1).
        theta: mean-reversion rate (>= 0; 0 gives scaled fBM).
        sigma: noise scale > 0.
        horizon: final time > 0.
        n_obs: number of observation times ``horizon * k / n_obs``, ``k = 1..n_obs``.
        x0: initial value.
        fine: fBM grid points per observation interval for the integral.
        kind: fBM kind (``"type1"`` via Davies-Harte; ``"type2"`` via Cholesky, small grids).
        generator: torch generator.
        dtype: output dtype.

    Returns:
        ``times: (n_obs,)`` and ``paths: (num_paths, n_obs)``.
    """
    if theta < 0 or sigma <= 0 or horizon <= 0 or n_obs < 1 or fine < 1:
        raise ValueError(
            f"need theta >= 0, sigma > 0, horizon > 0, n_obs >= 1, fine >= 1; got theta={theta}, "
            f"sigma={sigma}, horizon={horizon}, n_obs={n_obs}, fine={fine}"
        )
    m = n_obs * fine
    s = torch.linspace(0.0, horizon, m + 1, dtype=torch.float64)
    method = "davies-harte" if kind == "type1" else "cholesky"
    b = sample_fbm(s, hurst, num_paths, kind=kind, method=method, generator=generator)  # (n, m+1)
    if theta > 0:
        h = horizon / m
        # I(t_n) = int_0^{t_n} e^{-theta (t_n - s)} B(s) ds by the trapezoidal rule, as a
        # recursion I_{n+1} = e^{-theta h} I_n + h/2 (e^{-theta h} B_n + B_{n+1}), vectorised
        # as e^{-theta t_n} * cumsum(e^{theta s} ...) in float64 (theta * horizon <= ~30).
        if theta * horizon > 30:
            raise ValueError(f"theta * horizon = {theta * horizon} > 30 is outside the simulator's range")
        w = torch.exp(theta * s)
        trap = 0.5 * h * (w[:-1] * b[:, :-1] + w[1:] * b[:, 1:])
        integral = torch.cat([b.new_zeros(num_paths, 1), trap.cumsum(-1)], dim=-1) * torch.exp(-theta * s)
        x = torch.exp(-theta * s) * x0 + sigma * (b - theta * integral)
    else:
        x = x0 + sigma * b
    idx = torch.arange(fine, m + 1, fine)
    return s[idx].to(dtype), x[:, idx].to(dtype)


class FOUPaths(ProbgenDataModule):
    """Observed fOU paths with known $H$ and $\\theta$ (learn them with ``FractionalSDE``).

    Batches are ``(values (B, n_obs, 1), times (B, n_obs))``; every path starts at ``x0``
    at time 0 (not part of the observations).

    Args:
        hurst, theta, sigma, horizon, n_obs, x0, fine, kind: see :func:`simulate_fou`.
        obs_noise: std of Gaussian noise added to the observations.
        num_train, num_val, num_test: split sizes.
        batch_size, eval_batch_size, num_workers, seed: see ``ProbgenDataModule``.
    """

    def __init__(
        self,
        hurst: float = 0.7,
        theta: float = 1.0,
        sigma: float = 1.0,
        horizon: float = 2.0,
        n_obs: int = 40,
        x0: float = 0.0,
        fine: int = 8,
        kind: str = "type1",
        obs_noise: float = 0.0,
        num_train: int = 512,
        num_val: int = 128,
        num_test: int = 128,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, seed)
        check_real("hurst", hurst, gt=0, lt=1)
        check_real("theta", theta)
        check_real("sigma", sigma, gt=0)
        check_real("horizon", horizon, gt=0)
        check_int("n_obs", n_obs, ge=1)
        check_real("x0", x0)
        check_int("fine", fine, ge=1)
        check_choice("kind", kind, KINDS)
        check_real("obs_noise", obs_noise, ge=0)
        for name, value in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test)):
            check_int(name, value, ge=1)
        self.hurst, self.theta, self.sigma, self.horizon = hurst, theta, sigma, horizon
        self.n_obs, self.x0, self.fine, self.kind = n_obs, x0, fine, kind
        self.obs_noise = obs_noise
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}

    def build_splits(self) -> dict[str, tuple[Tensor, ...]]:
        gen = torch.Generator().manual_seed(self.seed)
        out = {}
        for name, n in self.sizes.items():
            times, x = simulate_fou(n, self.hurst, self.theta, self.sigma, self.horizon, self.n_obs, self.x0,
                                    self.fine, self.kind, generator=gen)
            if self.obs_noise > 0:
                x = x + self.obs_noise * torch.randn(x.shape, generator=gen)
            out[name] = (x.unsqueeze(-1), times.expand(n, -1).contiguous())
        return out

    def plot_samples(self, samples: Tensor, path: str | Path) -> Path:
        self.setup()
        return plot_samples(samples, path, reference=self.splits["test"][0], title="fOU paths")


class FOUBridge(ProbgenDataModule):
    """The paper's fBM/fOU bridge: one noisy observation ``obs_value`` at ``obs_time``.

    Every item is the same observation; an epoch is ``num_paths`` posterior paths in
    batches of ``batch_size`` (the official code trains on 32 paths per step).
    Batches are ``(values (B, 1, 1), times (B, 1))``.
    """

    def __init__(
        self,
        obs_time: float = 2.0,
        obs_value: float = 0.0,
        num_paths: int = 320,
        batch_size: int = 32,
        eval_batch_size: int | None = 256,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, seed)
        check_real("obs_time", obs_time, gt=0)
        check_real("obs_value", obs_value)
        check_int("num_paths", num_paths, ge=1)
        self.obs_time, self.obs_value, self.num_paths = obs_time, obs_value, num_paths

    def build_splits(self) -> dict[str, tuple[Tensor, ...]]:
        def split(n: int) -> tuple[Tensor, Tensor]:
            return torch.full((n, 1, 1), float(self.obs_value)), torch.full((n, 1), float(self.obs_time))

        return {"train": split(self.num_paths), "val": split(256), "test": split(256)}

    def plot_samples(self, samples: Tensor, path: str | Path) -> Path:
        return plot_samples(samples, path, title="bridge posterior paths")

