r"""Gibbs updates of Gamma hyperpriors on Gaussian precisions (conjugate, closed form).

With $n$ Gaussian quantities $r_i \sim \mathcal N(0, \lambda^{-1})$ (weights under a prior
of precision $\lambda$, or residuals $y_i - f_\theta(x_i)$ under noise of precision
$\lambda$) and the prior $\lambda \sim \mathrm{Gamma}(a, b)$ (shape, rate), the full
conditional is

$$\lambda \mid r \sim \mathrm{Gamma}\Big(a + \frac n2,\; b + \frac12 \sum_i r_i^2\Big).$$

Alternating such draws with SG-MCMC steps on the weights samples the joint posterior of the
weights and the precisions (Springenberg et al. 2016 resample theirs every few steps; a
minibatch estimate of $\sum_i r_i^2$ scaled by $N/B$ stands in for the full sum).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["gamma_precision_gibbs", "sample_gamma"]


def sample_gamma(concentration: Tensor, generator: torch.Generator | None = None) -> Tensor:
    r"""Standard Gamma draws $\mathrm{Gamma}(a, 1)$, one per element, with a ``generator``.

    Marsaglia & Tsang's (2000) squeeze method, vectorised (each round accepts over 95% of the
    remaining elements), with the boost $G(a) = G(a + 1)\,U^{1/a}$ for $a < 1$. torch's own
    Gamma sampler takes no generator, which counter-based or per-chain seeding needs.

    Args:
        concentration: shapes $a > 0$, any shape.
        generator: optional ``torch.Generator`` on ``concentration``'s device.

    Returns:
        Draws of ``concentration``'s shape, dtype and device.
    """
    a = torch.as_tensor(concentration)
    if not a.is_floating_point():
        a = a.to(torch.get_default_dtype())
    if not bool((a > 0).all()) or not bool(torch.isfinite(a).all()):
        raise ValueError("concentration must be finite and > 0")
    boost = a < 1
    d = torch.where(boost, a + 1, a) - 1.0 / 3.0
    c = 1.0 / (9.0 * d).sqrt()
    out = torch.empty_like(a)
    todo = torch.ones_like(a, dtype=torch.bool)
    while bool(todo.any()):
        z = torch.randn(a.shape, generator=generator, dtype=a.dtype, device=a.device)
        u = torch.rand(a.shape, generator=generator, dtype=a.dtype, device=a.device)
        v = (1 + c * z) ** 3
        ok = (v > 0) & (u.clamp_min(1e-300).log() < 0.5 * z * z + d - d * v + d * v.clamp_min(1e-300).log())
        take = todo & ok
        out = torch.where(take, d * v, out)
        todo = todo & ~ok
    u = torch.rand(a.shape, generator=generator, dtype=a.dtype, device=a.device)
    return torch.where(boost, out * u.clamp_min(1e-300) ** (1.0 / a), out)


def gamma_precision_gibbs(
    sum_sq: Tensor | float,
    count: Tensor | float,
    concentration: float,
    rate: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""One Gibbs draw of a Gaussian precision under a Gamma(a, b) prior (module docstring).

    Args:
        sum_sq: $\sum_i r_i^2$, any shape (e.g. ``(chains,)``).
        count: $n$, broadcastable to ``sum_sq``.
        concentration: prior shape $a > 0$.
        rate: prior rate $b > 0$.
        generator: optional ``torch.Generator``.

    Returns:
        $\lambda \sim \mathrm{Gamma}(a + n/2, b + \mathrm{sum\_sq}/2)$, shaped like ``sum_sq``.
    """
    if not concentration > 0:
        raise ValueError(f"concentration must be > 0, got {concentration}")
    if not rate > 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    s = torch.as_tensor(sum_sq)
    if not s.is_floating_point():
        s = s.to(torch.get_default_dtype())
    if not bool(torch.isfinite(s).all()) or bool((s < 0).any()):
        raise ValueError("sum_sq must be finite and >= 0")
    n = torch.as_tensor(count, dtype=s.dtype, device=s.device)
    if bool((n < 0).any()):
        raise ValueError("count must be >= 0")
    shape = torch.broadcast_to(concentration + n / 2, s.shape)
    return sample_gamma(shape, generator) / (rate + s / 2)
