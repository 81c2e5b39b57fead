"""Hamiltonian Monte Carlo on data-space tensors: leapfrog with a Metropolis correction.

Target $\\pi(x) \\propto \\exp(-E(x))$ for an energy ``energy(x) -> (batch,)``; every row of
``x`` is an independent chain with an identity mass matrix. Neal (2011), "MCMC using
Hamiltonian dynamics", Sec. 5.2 (Eq. 5.18-5.20, Fig. 2): with momentum $p \\sim \\mathcal N(0, I)$
and $H(x, p) = E(x) + \\lVert p \\rVert^2 / 2$, ``num_leapfrog`` $= L$ leapfrog steps of size $h$

$$p \\leftarrow p - \\tfrac h2 \\nabla E(x), \\quad x \\leftarrow x + h p, \\quad p \\leftarrow p - \\tfrac h2 \\nabla E(x)$$

give a proposal $(x', p')$ that is accepted with probability $\\min(1, e^{H(x, p) - H(x', p')})$.
The leapfrog map is volume-preserving and reversible (under $p \\to -p$), so the kernel leaves
$\\pi$ exactly invariant for every $h$ and $L$. With a fixed trajectory time $hL$ the chain
mixes slowly in a direction of curvature $\\omega^2$ when $\\omega h L$ is near a multiple of
$\\pi$ (the trajectory returns to, or mirrors, its start; Neal 2011, Sec. 5.4.2.2): pick $hL$ off
those values, or several (e.g. over AIS levels).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from probgen.exceptions import SamplerDivergedError
from probgen.samplers.langevin import LangevinResult, _energy_and_grad
from probgen.validation import check_finite

__all__ = ["hmc"]


def hmc(
    energy: Callable[[Tensor], Tensor],
    x0: Tensor,
    steps: int,
    step_size: float,
    *,
    num_leapfrog: int = 5,
    generator: torch.Generator | None = None,
) -> LangevinResult:
    """Run ``steps`` HMC transitions (``num_leapfrog`` leapfrog steps each) on every row of ``x0``.

    Args:
        energy: $E$, ``x: (batch, *event_shape) -> (batch,)``, differentiable in ``x``.
        x0: initial states ``(batch, *event_shape)``; the output follows its dtype and device.
        steps: number of HMC transitions (each a fresh momentum, a trajectory and a
            Metropolis test).
        step_size: leapfrog step $h > 0$.
        num_leapfrog: leapfrog steps $L \\ge 1$ per transition ($L = 1$ is MALA with step
            $h^2 / 2$).
        generator: optional ``torch.Generator`` on ``x0``'s device (momenta and accept/reject
            draws); by default the global RNG.

    Returns:
        :class:`~probgen.samplers.LangevinResult`: final states, their energies, the per-chain
        acceptance rate and its mean (``trace`` is None). A trajectory whose energy is not
        finite is rejected.

    Raises:
        ValueError: ``steps`` not an int >= 0, ``step_size`` not finite > 0, ``num_leapfrog``
            not an int >= 1, non-finite ``x0``.
        SamplerDivergedError: non-finite states after the run (cannot happen with finite
            ``x0``: rejected trajectories keep the old state).

    Example:
        >>> out = hmc(energy, torch.zeros(512, 2), steps=200, step_size=0.2, num_leapfrog=10)
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    if isinstance(step_size, bool) or not isinstance(step_size, (int, float)) or not (math.isfinite(step_size) and step_size > 0):
        raise ValueError(f"step_size must be a finite number > 0, got {step_size!r}")
    if isinstance(num_leapfrog, bool) or not isinstance(num_leapfrog, int) or num_leapfrog < 1:
        raise ValueError(f"num_leapfrog must be an int >= 1, got {num_leapfrog!r}")
    if not isinstance(x0, Tensor) or x0.dim() < 2 or x0.shape[0] < 1:
        raise ValueError(f"x0 must be a tensor (batch >= 1, *event_shape), got {getattr(x0, 'shape', type(x0))}")
    check_finite("x0", x0)
    h = float(step_size)
    x = x0.detach().clone()
    e, g = _energy_and_grad(energy, x, None)
    accepted = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    shape = (-1, *([1] * (x.dim() - 1)))
    for _ in range(steps):
        p = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        h0 = e + 0.5 * p.reshape(p.shape[0], -1).pow(2).sum(1)
        y, gy = x, g
        p = p - 0.5 * h * gy
        for k in range(num_leapfrog):
            y = y + h * p
            ey, gy = _energy_and_grad(energy, y, None)
            p = p - (0.5 if k == num_leapfrog - 1 else 1.0) * h * gy
        h1 = ey + 0.5 * p.reshape(p.shape[0], -1).pow(2).sum(1)
        log_a = torch.where(torch.isfinite(h1), h0 - h1, torch.full_like(h1, -math.inf))  # a non-finite H' rejects
        u = torch.rand(x.shape[0], generator=generator, dtype=x.dtype, device=x.device)
        acc = torch.log(u) < log_a
        x = torch.where(acc.reshape(shape), y, x)
        e = torch.where(acc, ey, e)
        g = torch.where(acc.reshape(shape), gy, g)
        accepted = accepted + acc.to(x.dtype)
    if not bool(torch.isfinite(x).all()):
        raise SamplerDivergedError("hmc: non-finite state; lower step_size")
    rate = accepted / max(steps, 1)
    return LangevinResult(x=x.detach(), energy=e.detach(), acceptance_rate=rate, mean_acceptance=float(rate.mean()))
