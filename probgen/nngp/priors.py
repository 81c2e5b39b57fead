"""Priors on the readout scale $\\sigma^2$ that torch lacks.

torch provides :class:`~torch.distributions.InverseGamma`, :class:`~torch.distributions.Gamma`,
:class:`~torch.distributions.LogNormal` and :class:`~torch.distributions.HalfCauchy`; the paper's
heavy-tailed Burr type XII prior (Lee, Yun, Yang, Lee 2022, sec. 3.3) is added here.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Distribution, constraints
from torch.distributions.utils import broadcast_all

__all__ = ["BurrXII"]


class BurrXII(Distribution):
    """Burr type XII distribution, density $\\frac{c d}{\\lambda} (x/\\lambda)^{c-1} (1 + (x/\\lambda)^c)^{-d-1}$.

    Same parameterisation as ``scipy.stats.burr12(c, d, scale=scale)``. Its tail is
    $x^{-cd-1}$, so moments of order $\\ge c d$ do not exist; as a prior on $\\sigma^2$ it gives a
    predictive with polynomial tails that, unlike the inverse gamma, is not a Student t.

    Args:
        c: shape $c > 0$.
        d: shape $d > 0$.
        scale: $\\lambda > 0$.
    """

    arg_constraints = {"c": constraints.positive, "d": constraints.positive, "scale": constraints.positive}
    support = constraints.positive
    has_rsample = True

    def __init__(self, c, d, scale=1.0, validate_args=None) -> None:
        self.c, self.d, self.scale = broadcast_all(c, d, scale)
        super().__init__(self.c.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(BurrXII, _instance)
        batch_shape = torch.Size(batch_shape)
        new.c, new.d, new.scale = (t.expand(batch_shape) for t in (self.c, self.d, self.scale))
        super(BurrXII, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        z = value / self.scale
        log_z = torch.log(z)
        return (torch.log(self.c) + torch.log(self.d) - torch.log(self.scale) + (self.c - 1.0) * log_z
                - (self.d + 1.0) * torch.nn.functional.softplus(self.c * log_z))

    def cdf(self, value: Tensor) -> Tensor:
        z = value / self.scale
        return -torch.expm1(-self.d * torch.log1p(z.pow(self.c)))

    def icdf(self, value: Tensor) -> Tensor:
        # (1 - u)^(-1/d) - 1 = expm1(-log1p(-u) / d)
        return self.scale * torch.expm1(-torch.log1p(-value) / self.d).pow(1.0 / self.c)

    def rsample(self, sample_shape=torch.Size()) -> Tensor:
        shape = self._extended_shape(sample_shape)
        u = torch.rand(shape, dtype=self.c.dtype, device=self.c.device)
        u = u.clamp(torch.finfo(u.dtype).tiny, 1.0 - torch.finfo(u.dtype).eps)
        return self.icdf(u)

    @property
    def mean(self) -> Tensor:
        """$\\lambda d\\, B(d - 1/c, 1 + 1/c)$ for $c d > 1$, else ``inf``."""
        a, b = self.d - 1.0 / self.c, 1.0 + 1.0 / self.c
        log_beta = torch.lgamma(a.clamp_min(1e-12)) + torch.lgamma(b) - torch.lgamma(a.clamp_min(1e-12) + b)
        m = self.scale * self.d * torch.exp(log_beta)
        return torch.where(self.c * self.d > 1.0, m, torch.full_like(m, float("inf")))
