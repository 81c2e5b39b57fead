"""Annealed importance sampling (AIS) and reverse AIS: a bracket on $\\log Z$.

For an unnormalised target $f(x) = e^{-E(x)}$ and a normalised initial distribution $p_0$
(e.g. an EBM's noise $q$), the geometric path $\\pi_\\beta \\propto p_0^{1-\\beta} f^\\beta$,
$0 = \\beta_0 < \\dots < \\beta_K = 1$, is followed by MCMC transitions $T_k$ that leave
$\\pi_{\\beta_k}$ invariant (MALA steps of :func:`probgen.samplers.langevin`, or HMC
transitions of :func:`probgen.samplers.hmc` with ``transition="hmc"``). Neal (2001), Eq. 3-4:

$$\\log w = \\sum_{k=1}^{K} (\\beta_k - \\beta_{k-1}) \\big[\\log f(x_{k-1}) - \\log p_0(x_{k-1})\\big],
\\qquad \\mathbb E[w] = Z,$$

with $x_0 \\sim p_0$ and $x_k = T_k(x_{k-1})$. $\\log \\hat Z = \\log \\frac1n \\sum_i w_i$ is a
stochastic **lower** bound: $\\mathbb E[\\log \\hat Z] \\le \\log Z$ (Jensen).

Reverse AIS (Grosse, Ghahramani & Adams 2015, "Sandwiching the marginal likelihood using
bidirectional Monte Carlo") runs the same chain backwards from exact samples of the target
($\\beta$ from 1 to 0); its weights $w^{rev}$ have $\\mathbb E[w^{rev}] = 1/Z$, so
$-\\log \\frac1n \\sum_i w^{rev}_i$ is a stochastic **upper** bound. Started from data instead
of exact model samples it is an upper bound only as far as the data are model samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from probgen.exceptions import SamplerDivergedError
from probgen.samplers.hmc import hmc
from probgen.samplers.langevin import langevin

TRANSITIONS = ("mala", "hmc")

__all__ = ["AISResult", "ais", "geometric_betas", "reverse_ais", "sigmoid_betas"]


@dataclass
class AISResult:
    """Output of :func:`ais` / :func:`reverse_ais`.

    Attributes:
        log_z: the estimate of $\\log Z$ (a lower bound in expectation for :func:`ais`, an upper
            bound for :func:`reverse_ais`).
        log_w: per-chain log weights ``(n,)`` (for the reverse run: of $1/Z$).
        ess: effective sample size $(\\sum w)^2 / \\sum w^2$ of the weights.
        std_err: delta-method standard error of ``log_z``, ``std(w / mean w) / sqrt(n)``.
        x: final states ``(n, *event_shape)`` (target samples after :func:`ais`, $p_0$ samples
            after :func:`reverse_ais`).
        acceptance: mean MALA / HMC acceptance over levels and chains.
    """

    log_z: Tensor
    log_w: Tensor
    ess: Tensor
    std_err: Tensor
    x: Tensor
    acceptance: float


def sigmoid_betas(num_levels: int, scale: float = 4.0, dtype=torch.float64) -> Tensor:
    """The sigmoidal schedule of Grosse et al. (2015): dense near both ends, ``(K + 1,)`` from 0 to 1."""
    if isinstance(num_levels, bool) or not isinstance(num_levels, int) or num_levels < 1:
        raise ValueError(f"num_levels must be a positive int, got {num_levels!r}")
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    s = torch.sigmoid(torch.linspace(-scale, scale, num_levels + 1, dtype=dtype))
    return (s - s[0]) / (s[-1] - s[0])


def geometric_betas(num_levels: int, start: float = 1e-4, dtype=torch.float64) -> Tensor:
    """$\\beta_k$ geometric from ``start`` to 1 after $\\beta_0 = 0$, ``(K + 1,)``."""
    if isinstance(num_levels, bool) or not isinstance(num_levels, int) or num_levels < 1:
        raise ValueError(f"num_levels must be a positive int, got {num_levels!r}")
    if not 0 < start < 1:
        raise ValueError(f"start must be in (0, 1), got {start!r}")
    if num_levels == 1:
        return torch.tensor([0.0, 1.0], dtype=dtype)
    return torch.cat([torch.zeros(1, dtype=dtype), torch.logspace(math.log10(start), 0.0, num_levels, dtype=dtype)])


def _check_betas(betas: Sequence[float] | Tensor) -> list[float]:
    b = [float(v) for v in (betas.detach().cpu().tolist() if isinstance(betas, Tensor) else betas)]
    if len(b) < 2 or b[0] != 0.0 or b[-1] != 1.0 or any(not b1 > b0 for b0, b1 in zip(b, b[1:])):
        raise ValueError(f"betas must increase strictly from 0 to 1 with at least 2 values, got {b[:3]}...{b[-2:]}")
    return b


def _summary(log_w: Tensor, sign: float) -> tuple[Tensor, Tensor, Tensor]:
    n = log_w.shape[0]
    lse = torch.logsumexp(log_w, 0)
    log_mean = lse - math.log(n)
    ess = torch.exp(2 * lse - torch.logsumexp(2 * log_w, 0))
    std_err = (log_w - log_mean).exp().std() / math.sqrt(n)
    return sign * log_mean, ess, std_err


def _run(
    energy: Callable[[Tensor], Tensor],
    init_log_prob: Callable[[Tensor], Tensor],
    x: Tensor,
    betas: list[float],
    steps_per_level: int,
    step_size: float,
    adapt: bool,
    target_acceptance: float,
    generator: torch.Generator | None,
    transition: str = "mala",
    num_leapfrog: int = 5,
) -> tuple[Tensor, Tensor, float]:
    """Anneal along ``betas`` (in the given order) from ``x``; log weights of $f/p_0$ increments."""
    if isinstance(steps_per_level, bool) or not isinstance(steps_per_level, int) or steps_per_level < 1:
        raise ValueError(f"steps_per_level must be a positive int, got {steps_per_level!r}")
    if not (isinstance(step_size, (int, float)) and not isinstance(step_size, bool) and step_size > 0 and math.isfinite(step_size)):
        raise ValueError(f"step_size must be a finite number > 0, got {step_size!r}")
    if not 0 < target_acceptance < 1:
        raise ValueError(f"target_acceptance must be in (0, 1), got {target_acceptance!r}")
    if transition not in TRANSITIONS:
        raise ValueError(f"transition must be one of {TRANSITIONS}, got {transition!r}")
    if isinstance(num_leapfrog, bool) or not isinstance(num_leapfrog, int) or num_leapfrog < 1:
        raise ValueError(f"num_leapfrog must be an int >= 1, got {num_leapfrog!r}")

    def log_ratio(z: Tensor) -> Tensor:  # log f - log p0
        with torch.no_grad():
            return -energy(z) - init_log_prob(z)

    log_w = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    h, acc_sum = float(step_size), 0.0
    for b_prev, b in zip(betas, betas[1:]):
        log_w = log_w + (b - b_prev) * log_ratio(x)

        def annealed(z: Tensor, b=b) -> Tensor:
            return b * energy(z) - (1.0 - b) * init_log_prob(z)

        if transition == "hmc":
            res = hmc(annealed, x, steps_per_level, h, num_leapfrog=num_leapfrog, generator=generator)
        else:
            res = langevin(annealed, x, steps_per_level, h, method="mala", generator=generator)
        x = res.x
        acc_sum += res.mean_acceptance
        if adapt:  # a function of the past only, so every T_k stays pi_k-invariant
            h *= math.exp(res.mean_acceptance - target_acceptance)
    if not bool(torch.isfinite(log_w).all()):
        raise SamplerDivergedError("ais: non-finite log weight; lower step_size or add levels")
    return log_w, x, acc_sum / (len(betas) - 1)


def ais(
    energy: Callable[[Tensor], Tensor],
    init,
    num_chains: int,
    betas: Sequence[float] | Tensor,
    *,
    steps_per_level: int = 1,
    step_size: float = 0.05,
    adapt_step_size: bool = True,
    target_acceptance: float = 0.65,
    generator: torch.Generator | None = None,
    transition: str = "mala",
    num_leapfrog: int = 5,
) -> AISResult:
    """$\\log Z$ of $e^{-E}$ by AIS from ``init`` along the geometric path, MALA or HMC transitions.

    Args:
        energy: $E$, ``x: (n, *event_shape) -> (n,)``, differentiable in ``x``.
        init: $p_0$, an object with ``sample(n, generator) -> (n, *event_shape)`` and a
            differentiable ``log_prob(x) -> (n,)`` (e.g. an EBM's noise $q$).
        num_chains: $n$.
        betas: the schedule ``(K + 1,)``, 0 to 1 (see :func:`sigmoid_betas`).
        steps_per_level: MALA steps (or HMC transitions) per level.
        step_size: initial MALA step $h$ (for HMC: the leapfrog step).
        adapt_step_size: after each level multiply $h$ by $e^{\\bar a - a^*}$ ($\\bar a$ the mean
            acceptance): a function of the past, so the weights stay valid.
        target_acceptance: $a^*$.
        generator: for $p_0$'s samples and the MALA / HMC noise.
        transition: ``"mala"`` (:func:`~probgen.samplers.langevin`) or ``"hmc"``
            (:func:`~probgen.samplers.hmc`: leapfrog with a Metropolis correction).
        num_leapfrog: leapfrog steps per HMC transition (ignored for MALA).

    Returns:
        :class:`AISResult` with a stochastic lower bound of $\\log Z$.

    Raises:
        ValueError: bad schedule, step size, counts or ``transition``.
        SamplerDivergedError: non-finite weights or states.
    """
    b = _check_betas(betas)
    if isinstance(num_chains, bool) or not isinstance(num_chains, int) or num_chains < 2:
        raise ValueError(f"num_chains must be an int >= 2, got {num_chains!r}")
    x0 = init.sample(num_chains, generator).detach()
    log_w, x, acc = _run(energy, init.log_prob, x0, b, steps_per_level, step_size, adapt_step_size, target_acceptance, generator,
                         transition, num_leapfrog)
    log_z, ess, se = _summary(log_w, 1.0)
    return AISResult(log_z=log_z, log_w=log_w, ess=ess, std_err=se, x=x, acceptance=acc)


def reverse_ais(
    energy: Callable[[Tensor], Tensor],
    init,
    x_target: Tensor,
    betas: Sequence[float] | Tensor,
    *,
    steps_per_level: int = 1,
    step_size: float = 0.05,
    adapt_step_size: bool = True,
    target_acceptance: float = 0.65,
    generator: torch.Generator | None = None,
    transition: str = "mala",
    num_leapfrog: int = 5,
) -> AISResult:
    """Reverse AIS from samples of the target: a stochastic upper bound of $\\log Z$.

    The chain of :func:`ais` run backwards ($\\beta$ from 1 to 0) from ``x_target``
    ``(n, *event_shape)``, exact samples of $e^{-E}/Z$; the log weights
    $\\sum_k (\\beta_{k-1} - \\beta_k)[\\log f - \\log p_0](x)$ estimate $1/Z$ without bias and
    $\\log Z \\le \\mathbb E[-\\log \\frac1n \\sum_i w^{rev}_i]$. Other arguments as :func:`ais`.
    """
    b = _check_betas(betas)
    if not isinstance(x_target, Tensor) or x_target.dim() < 2 or x_target.shape[0] < 2:
        raise ValueError(f"x_target must be a tensor (n >= 2, *event_shape), got {getattr(x_target, 'shape', type(x_target))}")
    log_w, x, acc = _run(energy, init.log_prob, x_target.detach(), b[::-1], steps_per_level, step_size, adapt_step_size,
                         target_acceptance, generator, transition, num_leapfrog)
    log_z, ess, se = _summary(log_w, -1.0)
    return AISResult(log_z=log_z, log_w=log_w, ess=ess, std_err=se, x=x, acceptance=acc)
