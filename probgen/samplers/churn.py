"""Stochastic "churn" sampling around a deterministic ODE solver (Karras et al. 2022, Algorithm 2).

Between ODE steps the state is moved back to an earlier (noisier) time by a draw that keeps the
marginal exact, then the ODE is solved forward from there: noise is injected and removed within
each step, which corrects errors accumulated by earlier steps. The move back, $x_t \\to x_{\\hat t}$
with $\\hat t \\le t$, depends on the model family and is passed in as ``renoise``; every ODE step is
:func:`probgen.sde.odeint`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from probgen.sde import odeint

__all__ = ["churn_sampler"]


def churn_sampler(
    func: Callable[[Tensor, Tensor], Tensor],
    y0: Tensor,
    times: Sequence[float],
    back_times: Sequence[float],
    renoise: Callable[[Tensor, float, float, torch.Generator | None], Tensor],
    *,
    method: str = "heun",
    generator: torch.Generator | None = None,
) -> tuple[Tensor, int]:
    """Solve ``dy/dt = func(t, y)`` over ``times`` with a churn move before each step.

    For step $i$: if $\\hat t_i <$ ``times[i]``, ``y = renoise(y, times[i], back_times[i], generator)``;
    then one ``method`` step of :func:`~probgen.sde.odeint` from $\\hat t_i$ to ``times[i+1]``.
    With ``back_times == times[:-1]`` this is the plain fixed-grid ODE solve.

    Args:
        func: the ODE right-hand side, ``(0-dim t, (batch, d)) -> (batch, d)``.
        y0: ``(batch, d)`` at ``times[0]``.
        times: increasing grid $t_0 < \\dots < t_N$.
        back_times: $\\hat t_i \\in [t_0, t_i]$ for $i < N$ (length $N$).
        renoise: ``(y, t, t_hat, generator) -> y_hat``, a draw of the state at ``t_hat`` given the state at ``t``.
        method: ODE solver of each step (``"euler"``, ``"heun"``, ``"rk4"``).
        generator: passed to ``renoise``.

    Returns:
        ``(y_N, nfe)``: the state at ``times[-1]`` and the number of ``func`` evaluations.

    Raises:
        ValueError: ``back_times`` of the wrong length or outside $[t_0, t_i]$.
    """
    times = [float(t) for t in times]
    back = [float(t) for t in back_times]
    if len(back) != len(times) - 1:
        raise ValueError(f"back_times must have len(times) - 1 = {len(times) - 1} entries, got {len(back)}")
    for i, (t, tb) in enumerate(zip(times[:-1], back)):
        if not times[0] <= tb <= t:
            raise ValueError(f"back_times[{i}] = {tb} must lie in [times[0], times[{i}]] = [{times[0]}, {t}]")
    y, nfe = y0, 0
    for i in range(len(times) - 1):
        t, tb, t1 = times[i], back[i], times[i + 1]
        if tb < t:
            y = renoise(y, t, tb, generator)
        ys, k = odeint(func, y, [tb, t1], method=method, dt=t1 - tb, return_nfe=True)
        y, nfe = ys[-1], nfe + int(k)
    return y, nfe
