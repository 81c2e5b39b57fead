"""Conditional fields and classifier-free guidance (Ho & Salimans 2022) for interpolant models.

A conditional network ``net(t, x, cond, drop)`` learns the fields of $\\rho_1(\\cdot \\mid c)$;
training drops the condition of a random fraction of samples (``drop = True``: a learnt null
condition), so the same network also learns the unconditional fields. At sampling time the
guided field of weight $w$ is

$$f_w(t, x \\mid c) = (1 - w)\\, f(t, x \\mid \\varnothing) + w\\, f(t, x \\mid c),$$

applied to every learnt field ($b$, $s$, $\\eta$, $v$): $w = 0$ is the unconditional model,
$w = 1$ the conditional one, $w > 1$ over-weights the condition (for the score this is the
score of $\\rho_t(x)^{1-w}\\rho_t(x \\mid c)^w$ up to normalisation). Every field is linear in
the network output, so guiding the outputs guides $b$ and $s$ alike.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["guided_fields", "guide"]

ConditionalFields = Callable[[Tensor, Tensor, Tensor | None, Tensor | None], dict[str, Tensor]]


def guide(unconditional: Tensor, conditional: Tensor, weight: float) -> Tensor:
    """$(1 - w)\\, f_\\varnothing + w\\, f_c$."""
    return unconditional + weight * (conditional - unconditional)


def guided_fields(fields: ConditionalFields, cond: Tensor | None, weight: float = 1.0) -> Callable[[Tensor, Tensor], dict[str, Tensor]]:
    """The guided fields ``(t, x) -> {name: (batch, *event)}`` of a conditional network.

    Args:
        fields: ``fields(t, x, cond, drop)`` with ``cond`` aligned with the batch of ``x`` and
            ``drop`` a boolean ``(batch,)`` mask (True: condition replaced by the null one) or None.
        cond: the condition per sample, ``(batch,)`` labels or ``(batch, *cond_shape)``; None
            for the unconditional fields (then ``weight`` is ignored).
        weight: the guidance weight $w \\ge 0$ (0: unconditional, 1: conditional). For $w$ not in
            {0, 1} both fields come from one network call on the doubled batch.

    Returns:
        A fields callable for :mod:`probgen.interpolants.objectives`, :func:`generate` and
        :func:`log_likelihood`. The condition is matched to ``x`` by batch position, so every
        call must carry the whole batch (Hutchinson or ``"exact_batch"`` divergence, not ``vmap``).

    Raises:
        ValueError: a negative or non-finite ``weight``.
    """
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0 or weight == float("inf"):
        raise ValueError(f"guidance weight must be a finite number >= 0, got {weight!r}")
    w = float(weight)
    if cond is None or w == 0.0:
        return lambda t, x: fields(t, x, None, None)
    if w == 1.0:
        return lambda t, x: fields(t, x, cond, None)

    def call(t: Tensor, x: Tensor) -> dict[str, Tensor]:
        n = x.shape[0]
        if cond.shape[0] != n:
            raise ValueError(f"the condition has {cond.shape[0]} rows but x has {n}: pass the whole batch")
        tt = t.expand(n) if t.dim() == 0 else t
        drop = torch.cat([torch.zeros(n, dtype=torch.bool, device=x.device), torch.ones(n, dtype=torch.bool, device=x.device)])
        out = fields(torch.cat([tt, tt]), torch.cat([x, x]), torch.cat([cond, cond]), drop)
        return {k: guide(v[n:], v[:n], w) for k, v in out.items()}

    return call
