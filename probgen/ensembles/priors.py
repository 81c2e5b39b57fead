r"""Priors $p(\theta)$ over network weights, evaluated on stacked chains ``{name: (S, ...)}``."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import Distribution

PRIOR_NAMES = ("gaussian", "laplace", "student_t")


class GaussianPrior:
    r"""Independent $\mathcal N(0, s^2)$ on every weight; with ``fan_in`` the variance is $s^2/\text{fan-in}$.

    Args:
        scale: prior standard deviation $s$ > 0.
        fan_in: divide the variance of each weight matrix by its fan-in (the NNGP
            parametrisation); biases keep $s^2$.
    """

    def __init__(self, scale: float = 1.0, fan_in: bool = False) -> None:
        if not scale > 0:
            raise ValueError(f"prior scale must be > 0, got {scale}")
        self.scale, self.fan_in = float(scale), fan_in

    def _std(self, v: Tensor) -> float:
        if self.fan_in and v.dim() >= 3:
            return self.scale / math.sqrt(math.prod(v.shape[2:]))
        return self.scale

    def log_prob(self, params: dict[str, Tensor]) -> Tensor:
        """``(S,)`` log-density of each parameter set (stacked along dim 0)."""
        total = 0.0
        for v in params.values():
            s = self._std(v)
            n = v[0].numel()
            total = total - 0.5 * v.flatten(1).square().sum(1) / s**2 - n * (math.log(s) + 0.5 * math.log(2 * math.pi))
        return total

    def sample_like(self, params: dict[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """A draw from the prior with the shapes of ``params``."""
        return {
            k: self._std(v) * torch.randn(v.shape, generator=generator, dtype=v.dtype, device=v.device)
            for k, v in params.items()
        }


class DistributionPrior:
    """Any scalar ``torch.distributions`` / ``pyro.distributions`` law, i.i.d. on every weight.

    Args:
        distribution: a distribution with ``event_shape == ()`` and ``batch_shape == ()``
            (e.g. ``Laplace(0., 0.5)``, ``StudentT(3., 0., 1.)``).
    """

    def __init__(self, distribution: Distribution) -> None:
        if not isinstance(distribution, Distribution):
            raise TypeError(f"distribution must be a torch Distribution, got {type(distribution).__name__}")
        if distribution.event_shape != () or distribution.batch_shape != ():
            raise ValueError(
                "distribution must be scalar (batch_shape () and event_shape ()), got "
                f"{tuple(distribution.batch_shape)} / {tuple(distribution.event_shape)}"
            )
        self.distribution = distribution

    def log_prob(self, params: dict[str, Tensor]) -> Tensor:
        """``(S,)`` summed log-density of each parameter set."""
        return sum(self.distribution.log_prob(v).flatten(1).sum(1) for v in params.values())

    def sample_like(self, params: dict[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """A draw from the prior with the shapes of ``params`` (global RNG; ``generator`` unused)."""
        return {k: self.distribution.sample(v.shape).to(v) for k, v in params.items()}


def make_prior(name: str = "gaussian", scale: float = 1.0, df: float = 3.0, fan_in: bool = False):
    """Prior by name: ``"gaussian"`` (scale = std), ``"laplace"`` (scale = b), ``"student_t"`` (df, scale)."""
    if name not in PRIOR_NAMES:
        raise ValueError(f"prior must be one of {PRIOR_NAMES}, got {name!r}")
    if not scale > 0:
        raise ValueError(f"prior scale must be > 0, got {scale}")
    if name == "gaussian":
        return GaussianPrior(scale, fan_in=fan_in)
    if name == "laplace":
        return DistributionPrior(torch.distributions.Laplace(0.0, scale))
    if not df > 0:
        raise ValueError(f"student_t df must be > 0, got {df}")
    return DistributionPrior(torch.distributions.StudentT(df, 0.0, scale))
