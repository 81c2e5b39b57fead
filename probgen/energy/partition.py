"""Estimates of $\\log Z_\\theta = \\log \\int e^{-E_\\theta(x)} dx$ and the normalised log-likelihood."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from probgen.energy.energies import Energy
from probgen.exceptions import ProbgenNumericalError

__all__ = [
    "LogPartitionBracket",
    "LogPartitionEstimate",
    "log_likelihood",
    "log_partition_ais",
    "log_partition_ais_flow",
    "log_partition_grid",
    "log_partition_importance",
]


@dataclass
class LogPartitionEstimate:
    """Importance-sampling estimate of $\\log Z$.

    Attributes:
        log_z: $\\log \\frac1m \\sum_j w_j$, $w_j = e^{-E(x'_j)} / q(x'_j)$.
        ess: effective sample size $(\\sum w)^2 / \\sum w^2 \\in [1, m]$; a small ESS/m means
            $q$ misses mass of the model and ``log_z`` is unreliable (typically too low).
        num_samples: $m$.
        std_err: delta-method standard error of ``log_z``.
    """

    log_z: Tensor
    ess: Tensor
    num_samples: int
    std_err: Tensor


@torch.no_grad()
def log_partition_importance(energy: Energy, noise, num_samples: int = 100_000, batch_size: int = 10_000, generator: torch.Generator | None = None) -> LogPartitionEstimate:
    """$\\log Z$ by importance sampling from ``noise`` (any object with ``sample``/``log_prob``).

    Args:
        energy: the model.
        noise: proposal $q$.
        num_samples: $m$.
        batch_size: samples per energy evaluation.
        generator: for $q$'s samples.
    """
    if num_samples < 2 or batch_size < 1:
        raise ValueError(f"num_samples must be >= 2 and batch_size >= 1, got {num_samples}, {batch_size}")
    chunks = []
    left = num_samples
    while left:
        k = min(batch_size, left)
        x = noise.sample(k, generator)
        chunks.append(-energy(x) - noise.log_prob(x))
        left -= k
    log_w = torch.cat(chunks)
    if torch.isnan(log_w).any():
        raise ProbgenNumericalError("log_partition_importance: NaN log weight (energy or q.log_prob returned NaN)")
    lse = torch.logsumexp(log_w, 0)
    log_z = lse - math.log(num_samples)
    ess = torch.exp(2 * lse - torch.logsumexp(2 * log_w, 0))
    w = (log_w - log_z).exp()  # w / mean(w)
    std_err = w.std() / math.sqrt(num_samples)
    return LogPartitionEstimate(log_z=log_z, ess=ess, num_samples=num_samples, std_err=std_err)


@torch.no_grad()
def log_partition_grid(energy: Energy, low: float | Sequence[float], high: float | Sequence[float], num_points: int = 512, batch_size: int = 65536) -> Tensor:
    """$\\log Z$ by the midpoint rule on a box (ground truth for 1-D and 2-D energies).

    Args:
        energy: a 1-D or 2-D energy (``event_shape`` ``(1,)`` or ``(2,)``).
        low, high: the box, a float for every axis or one per axis; it must hold the mass.
        num_points: cells per axis.
    """
    d = energy.dim
    if d not in (1, 2) or len(energy.event_shape) != 1:
        raise ValueError(f"log_partition_grid needs event_shape (1,) or (2,), got {energy.event_shape}")
    low = [float(low)] * d if isinstance(low, (int, float)) else [float(v) for v in low]
    high = [float(high)] * d if isinstance(high, (int, float)) else [float(v) for v in high]
    if len(low) != d or len(high) != d or any(h <= l for l, h in zip(low, high)):
        raise ValueError(f"low/high must give {d} intervals with high > low, got {low}, {high}")
    param = next(iter(energy.parameters()), None)
    dtype = param.dtype if param is not None else torch.get_default_dtype()
    device = param.device if param is not None else None
    axes = [l + (h - l) * (torch.arange(num_points, dtype=dtype, device=device) + 0.5) / num_points for l, h in zip(low, high)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, d)
    neg_e = torch.cat([-energy(grid[i : i + batch_size]) for i in range(0, grid.shape[0], batch_size)])
    log_cell = sum(math.log((h - l) / num_points) for l, h in zip(low, high))
    return torch.logsumexp(neg_e, 0) + log_cell


@dataclass
class LogPartitionBracket:
    """AIS bracket on $\\log Z$: ``lower`` from AIS started at $q$, ``upper`` from reverse AIS.

    Attributes:
        lower: forward AIS $\\log \\hat Z$ (a stochastic lower bound).
        upper: reverse AIS estimate (a stochastic upper bound if its starts are model samples;
            ``nan`` when no starts were given).
        ess: ESS of the forward weights (of ``num_chains``).
        lower_std_err, upper_std_err: delta-method standard errors.
        num_chains: chains per direction.
    """

    lower: Tensor
    upper: Tensor
    ess: Tensor
    lower_std_err: Tensor
    upper_std_err: Tensor
    num_chains: int


def log_partition_ais(
    energy: Energy,
    noise,
    num_chains: int = 1000,
    num_levels: int = 100,
    x_target: Tensor | None = None,
    *,
    steps_per_level: int = 1,
    step_size: float = 0.05,
    generator: torch.Generator | None = None,
    transition: str = "mala",
    num_leapfrog: int = 5,
) -> LogPartitionBracket:
    """$\\log Z$ bracketed by AIS from ``noise`` and reverse AIS from ``x_target`` (sigmoid schedule, MALA or HMC).

    The annealing path is $q^{1-\\beta} e^{-\\beta E}$ (:func:`probgen.samplers.ais`); for a tilted
    model $E = E_{net} - \\log q$ this is $q\\,e^{-\\beta E_{net}}$. ``noise.log_prob`` must be
    differentiable in $x$ (every noise here is; :class:`~probgen.energy.FlowNoise` through its ODE).

    Args:
        energy: the model.
        noise: $q$ (``sample``, ``log_prob``).
        num_chains: forward chains.
        num_levels: $K$.
        x_target: starts of the reverse run ``(n, *event_shape)``: exact model samples for a true
            upper bound; held-out data give the usual BDMC-on-data check (an upper bound only
            as far as the data are model samples). None: no upper bound (``upper = nan``).
        steps_per_level, step_size: MALA transitions (the step adapts to 0.65 acceptance).
        generator: random source.
        transition, num_leapfrog: ``"mala"`` or ``"hmc"`` transitions, leapfrog steps per HMC
            transition (:func:`probgen.samplers.ais`).
    """
    from probgen.samplers import ais, reverse_ais, sigmoid_betas

    betas = sigmoid_betas(num_levels)
    kw = dict(steps_per_level=steps_per_level, step_size=step_size, generator=generator, transition=transition, num_leapfrog=num_leapfrog)
    fwd = ais(energy, noise, num_chains, betas, **kw)
    if x_target is None:
        nan = torch.full_like(fwd.log_z, float("nan"))
        upper, upper_se = nan, nan
    else:
        rev = reverse_ais(energy, noise, x_target, betas, **kw)
        upper, upper_se = rev.log_z, rev.std_err
    return LogPartitionBracket(lower=fwd.log_z, upper=upper, ess=fwd.ess, lower_std_err=fwd.std_err, upper_std_err=upper_se, num_chains=num_chains)


def log_partition_ais_flow(
    tilt: Energy,
    flow,
    num_chains: int = 1000,
    num_levels: int = 100,
    x_target: Tensor | None = None,
    *,
    steps_per_level: int = 1,
    step_size: float = 0.05,
    generator: torch.Generator | None = None,
    transition: str = "mala",
    num_leapfrog: int = 5,
) -> LogPartitionBracket:
    """AIS bracket on $\\log Z$ of the tilted flow model $p \\propto q\\,e^{-E_{net}}$, annealed in the base space.

    :func:`log_partition_ais` on :class:`~probgen.energy.PulledBackEnergy` from the flow's base
    $\\rho_0$: the path is $\\rho_0(z)\\,e^{-\\beta E_{net}(T(z))}$, so no $\\log q$ (no divergence
    solve) is needed, only gradients through the sampling ODE. The reverse run starts from
    $T^{-1}(x_{target})$ (:meth:`~probgen.energy.FlowNoise.inverse`). The bracket is on the
    $\\log Z$ of $q = T_\\#\\rho_0$ for the discretised map $T$, the $q$ that
    :meth:`~probgen.energy.FlowNoise.sample` draws from.

    Args:
        tilt: $E_{net}$ (data space).
        flow: the :class:`~probgen.energy.FlowNoise` $q$.
        num_chains, num_levels, steps_per_level, step_size, generator, transition, num_leapfrog: as
            :func:`log_partition_ais`.
        x_target: data-space starts of the reverse run (see :func:`log_partition_ais`), or None.
    """
    from probgen.energy.noise import PulledBackEnergy

    pulled = PulledBackEnergy(tilt, flow)
    z_target = None if x_target is None else flow.inverse(x_target)
    return log_partition_ais(pulled, flow.base, num_chains, num_levels, z_target, steps_per_level=steps_per_level, step_size=step_size, generator=generator,
                             transition=transition, num_leapfrog=num_leapfrog)


def log_likelihood(energy: Energy, x: Tensor, log_z: Tensor | float) -> Tensor:
    """Normalised $\\log p(x) = -E(x) - \\log Z$, shape ``(batch,)``."""
    return -energy(x) - log_z
