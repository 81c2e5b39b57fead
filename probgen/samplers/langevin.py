"""Langevin samplers on data-space tensors: ULA, MALA and annealed Langevin.

Target density $\\pi_T(x) \\propto \\exp(-E(x)/T)$ for an energy ``energy(x) -> (batch,)``;
every row of ``x`` is an independent chain.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from probgen.exceptions import SamplerDivergedError
from probgen.validation import check_finite

__all__ = ["LangevinResult", "langevin"]

ScheduleLike = Sequence[float] | Tensor | Callable[[int], float]


@dataclass
class LangevinResult:
    """Output of :func:`langevin`.

    Attributes:
        x: final states ``(batch, *event_shape)``, detached.
        energy: energies of the final states ``(batch,)``, detached.
        acceptance_rate: per-chain fraction of accepted MALA proposals ``(batch,)``; for
            ULA, ones (every move is taken).
        mean_acceptance: the mean of ``acceptance_rate`` over chains (a float).
        trace: ``(n_saved, batch, *event_shape)`` states after steps ``trace_every``,
            ``2 * trace_every``, ... if ``trace_every > 0``, else None.
    """

    x: Tensor
    energy: Tensor
    acceptance_rate: Tensor
    mean_acceptance: float
    trace: Tensor | None = None


def _schedule(name: str, spec: ScheduleLike, steps: int) -> list[float]:
    if callable(spec):
        values = [float(spec(k)) for k in range(steps)]
    else:
        if isinstance(spec, Tensor):
            spec = spec.detach().cpu().tolist()
        values = [float(v) for v in spec]
        if len(values) != steps:
            raise ValueError(
                f"anneal[{name!r}] must have one value per step ({steps}), got {len(values)}"
            )
    bad = [v for v in values if not math.isfinite(v) or v < 0 or (name == "step_size" and v == 0)]
    if bad:
        allowed = "> 0" if name == "step_size" else ">= 0"
        raise ValueError(f"anneal[{name!r}] values must be finite and {allowed}, got {bad[0]}")
    return values


def _energy_and_grad(
    energy: Callable[[Tensor], Tensor], x: Tensor, clip_grad: float | None
) -> tuple[Tensor, Tensor]:
    """Energy ``(batch,)`` and its gradient, the latter clipped to norm ``clip_grad`` per
    sample."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        e = energy(x)
        if not isinstance(e, Tensor) or e.shape != (x.shape[0],):
            got = tuple(e.shape) if isinstance(e, Tensor) else type(e).__name__
            raise ValueError(
                f"energy(x) must return a tensor of shape (batch,) = ({x.shape[0]},), got {got}"
            )
        (g,) = torch.autograd.grad(e.sum(), x)
    if clip_grad is not None:
        norm = g.reshape(g.shape[0], -1).norm(dim=1)
        factor = (clip_grad / (norm + 1e-12)).clamp(max=1.0)
        g = g * factor.reshape(-1, *([1] * (g.dim() - 1)))
    return e.detach(), g


def langevin(
    energy: Callable[[Tensor], Tensor],
    x0: Tensor,
    steps: int,
    step_size: float | Tensor,
    *,
    method: str = "ula",
    temperature: float = 1.0,
    clip_grad: float | None = None,
    anneal: Mapping[str, ScheduleLike] | None = None,
    generator: torch.Generator | None = None,
    trace_every: int = 0,
    check_every: int = 100,
) -> LangevinResult:
    """Run Langevin chains on an energy: unadjusted (ULA) or Metropolis-adjusted (MALA).

    ULA (Roberts & Tweedie, 1996, eq. 2.1; Durmus & Moulines, 2017), with step $h$:

    $$x' = x - h \\nabla E(x) + \\sqrt{2 h T}\\, \\xi, \\qquad \\xi \\sim \\mathcal{N}(0, I).$$

    It has $O(h)$ bias. MALA (Roberts & Tweedie, 1996, sec. 1.4.2) takes $x'$ as a proposal
    $y$ and accepts it with probability

    $$\\min\\Big(1, \\frac{\\exp(-E(y)/T)\\, q(x \\mid y)}{\\exp(-E(x)/T)\\, q(y \\mid x)}\\Big),
    \\quad q(y \\mid x) = \\mathcal{N}\\big(y;\\, x - h\\nabla E(x),\\, 2hT I\\big),$$

    which makes $\\pi_T$ exactly invariant. Gradient clipping (``clip_grad``: the gradient of
    each sample is rescaled to norm at most ``clip_grad``, as in short-run EBM sampling) enters
    $q$ in both directions, so MALA stays exact with it. Each step costs one energy and one
    gradient evaluation.

    Annealing: ``anneal={"temperature": ..., "step_size": ...}`` (either key or both) gives
    the value at each step $k = 0, \\dots, steps-1$, as a sequence of length ``steps`` or a
    callable ``k -> value`` (e.g. ``lambda k: cyclical_schedule(k, steps, 4, 0.1)``), and
    overrides ``temperature`` / ``step_size``. With MALA, step $k$ is exact for
    $\\pi_{T_k}$ (annealed MCMC).

    Non-finite energies or gradients are flagged on the device without a host sync and the
    flag is read every ``check_every`` steps and at the end; then
    :class:`SamplerDivergedError` is raised, naming the step window and the chains.

    Args:
        energy: callable ``x -> (batch,)``, differentiable in ``x``.
        x0: initial states ``(batch, *event_shape)``; one chain per row; float dtype.
        steps: number of steps, >= 0.
        step_size: $h > 0$, a float or a tensor of shape ``(batch,)`` (one per chain).
        method: ``"ula"`` or ``"mala"``.
        temperature: $T > 0$ ($T = 0$ allowed for ULA: gradient descent).
        clip_grad: optional maximum gradient norm per sample, > 0.
        anneal: optional per-step schedules, see above.
        generator: optional ``torch.Generator`` on ``x0``'s device; by default the global RNG.
        trace_every: keep the states every ``trace_every`` steps (0: no trace).
        check_every: steps between divergence checks (each check is one host sync).

    Returns:
        A :class:`LangevinResult`.

    Raises:
        SamplerDivergedError: a state or energy became NaN or infinite.

    Example:
        >>> energy = lambda x: 0.5 * (x**2).sum(-1)
        >>> out = langevin(energy, torch.zeros(512, 2), steps=500, step_size=0.1, method="mala")
        >>> out.x.shape, out.mean_acceptance
    """
    if not isinstance(x0, Tensor) or not x0.is_floating_point() or x0.dim() < 1:
        raise TypeError("x0 must be a floating-point tensor of shape (batch, *event_shape)")
    if x0.shape[0] == 0:
        raise ValueError("x0 must hold at least one chain, got batch size 0")
    check_finite("x0", x0)  # bad input, not a diverged chain
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    if method not in ("ula", "mala"):
        raise ValueError(f"method must be 'ula' or 'mala', got {method!r}")
    if not (
        isinstance(temperature, numbers.Real)
        and not isinstance(temperature, bool)
        and math.isfinite(temperature)
        and (temperature > 0 or (temperature == 0 and method == "ula"))
    ):
        allowed = "> 0" if method == "mala" else ">= 0 (0: gradient descent)"
        raise ValueError(f"temperature must be a finite number {allowed}, got {temperature!r}")
    if clip_grad is not None and not clip_grad > 0:
        raise ValueError(f"clip_grad must be None or > 0, got {clip_grad}")
    if isinstance(trace_every, bool) or not isinstance(trace_every, int) or trace_every < 0:
        raise ValueError(f"trace_every must be an int >= 0, got {trace_every!r}")
    if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
        raise ValueError(f"check_every must be an int >= 1, got {check_every!r}")
    batch = x0.shape[0]
    bshape = (batch,) + (1,) * (x0.dim() - 1)  # broadcast a per-chain scalar over events
    if isinstance(step_size, Tensor):
        if step_size.dim() > 1 or step_size.numel() not in (1, batch):
            raise ValueError(
                f"step_size tensor must be a scalar or of shape (batch,) = ({batch},), "
                f"got {tuple(step_size.shape)}"
            )
        if not bool(((step_size > 0) & torch.isfinite(step_size)).all()):
            raise ValueError(
                f"step_size must be finite and > 0 for every chain, got {step_size.tolist()[:8]}"
            )
        step_size = step_size.to(dtype=x0.dtype, device=x0.device)
        base_h = (
            step_size.reshape(-1, *([1] * (x0.dim() - 1)))
            if step_size.numel() > 1
            else step_size.reshape(())
        )
    else:
        real = isinstance(step_size, numbers.Real) and not isinstance(step_size, bool)
        if not (real and step_size > 0 and math.isfinite(step_size)):
            raise ValueError(f"step_size must be a finite number > 0, got {step_size!r}")
        base_h = float(step_size)
    h_sched = temp_sched = None
    if anneal is not None:
        unknown = set(anneal) - {"temperature", "step_size"}
        if unknown:
            raise ValueError(
                f"anneal keys must be 'temperature' and/or 'step_size', got {sorted(unknown)}"
            )
        if "step_size" in anneal:
            h_sched = _schedule("step_size", anneal["step_size"], steps)
        if "temperature" in anneal:
            temp_sched = _schedule("temperature", anneal["temperature"], steps)
            if any(t == 0 for t in temp_sched) and method == "mala":
                raise ValueError("anneal['temperature'] must be > 0 with method='mala'")

    x = x0.detach().clone()
    e, g = _energy_and_grad(energy, x, clip_grad)
    accepted = torch.zeros(batch, dtype=x.dtype, device=x.device)
    # one device flag, updated without a host sync; read every check_every steps
    ok = torch.ones((), dtype=torch.bool, device=x.device)
    last_checked = 0
    trace = []

    def check(upto: int) -> None:
        nonlocal last_checked
        if not bool(ok):
            rows = ~(torch.isfinite(e) & torch.isfinite(g.reshape(batch, -1)).all(dim=1))
            chains = rows.nonzero().flatten().tolist()
            shown = ", ".join(map(str, chains[:8])) + (", ..." if len(chains) > 8 else "")
            where = "in x0" if upto == 0 else f"between steps {last_checked} and {upto}"
            raise SamplerDivergedError(
                f"langevin ({method}): non-finite energy or gradient {where} "
                f"({len(chains)} of {batch} chains now non-finite: {shown}). Try a smaller "
                "step_size, set clip_grad (e.g. 0.01-1 times the typical gradient norm), or "
                "check energy(x) for overflow."
            )
        last_checked = upto

    def update_ok() -> None:
        # a NaN or inf anywhere makes the sum non-finite (inf - inf is NaN)
        ok.logical_and_(torch.isfinite(e.sum() + g.sum()))

    update_ok()
    check(0)  # a bad x0 is reported as such

    for k in range(steps):
        h = base_h if h_sched is None else h_sched[k]
        temp = temperature if temp_sched is None else temp_sched[k]
        xi = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        if isinstance(h, Tensor):
            y = x - h * g + (2.0 * temp * h).sqrt() * xi
        else:
            y = torch.add(x, g, alpha=-h).add_(xi, alpha=math.sqrt(2.0 * h * temp))
        e_y, g_y = _energy_and_grad(energy, y, clip_grad)
        if method == "mala":
            # log q(x | y) - log q(y | x), q(. | x) = N(x - h g(x), 2hT I); the normalisers
            # cancel, and y - (x - h g(x)) = sqrt(2hT) xi gives the forward term directly
            bwd = (x - y + h * g_y).square() / (4.0 * h * temp)
            log_q_ratio = (0.5 * xi.square() - bwd).reshape(batch, -1).sum(dim=1)
            log_alpha = (e - e_y) / temp + log_q_ratio
            u = torch.rand(batch, generator=generator, dtype=x.dtype, device=x.device)
            # a NaN proposal compares False: rejected
            accept = u.log() < log_alpha
            accepted += accept
            mask = accept.reshape(bshape)
            x = torch.where(mask, y, x)
            g = torch.where(mask, g_y, g)
            e = torch.where(accept, e_y, e)
        else:
            x, e, g = y, e_y, g_y
        # a rejected non-finite MALA proposal is harmless; a non-finite current state is not
        update_ok()
        if trace_every and (k + 1) % trace_every == 0:
            trace.append(x)
        if (k + 1) % check_every == 0:
            check(k + 1)
    if last_checked != steps:
        check(steps)

    if method == "mala":
        rate = accepted / max(steps, 1)
    else:
        rate = torch.ones(batch, dtype=x.dtype, device=x.device)
    return LangevinResult(
        x=x.detach(),
        energy=e.detach(),
        acceptance_rate=rate,
        mean_acceptance=float(rate.mean()) if steps > 0 or method == "ula" else float("nan"),
        trace=torch.stack(trace) if trace else None,
    )
