"""The fixed step grid: step times as Python floats, node times as 0-dim tensors, checks of ``ts`` and ``dt``.

Every output time in ``ts`` is a grid point: between two output times the grid has
``ceil(span / dt)`` equal steps, so when ``dt`` divides the spacing of ``ts`` the grid is
torchsde's. (torchsde's own grid, steps of exactly ``dt`` with interpolated outputs, is
:func:`probgen.sde.compat.torchsde_grid`.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import torch
from torch import Tensor

__all__ = ["step_grid"]


def step_grid(ts: Sequence[float], dt: float | None) -> tuple[list[float], list[int]]:
    """The fixed step grid through the output times ``ts``.

    Between consecutive output times the span is cut into ``ceil(|span| / dt)`` equal steps;
    when ``|span| / dt`` lies within a relative 1e-4 of an integer, that integer is taken, so
    times stored in float32 (0.1 is 0.10000000149) still give exactly ``span / dt`` steps and
    no step exceeds ``dt (1 + 1e-4)``. ``dt=None`` steps from output time to output time.

    Args:
        ts: strictly monotone output times (Python floats), length ``T``.
        dt: the (largest) step size, ``> 0``, or ``None``.

    Returns:
        ``(times, counts)``: the grid as Python floats (starting at ``ts[0]``, containing
        every ``ts[i]``) and the number of steps in each of the ``T - 1`` output intervals.
    """
    times = [ts[0]]
    counts = []
    for a, b in pairwise(ts):
        n = 1 if dt is None else _steps_in(abs(b - a) / dt)
        times.extend(a + (b - a) * (j / n) for j in range(1, n))
        times.append(b)
        counts.append(n)
    return times, counts


def _steps_in(ratio: float) -> int:
    """``ceil(ratio)``, or the nearest integer when ``ratio`` is within a relative 1e-4 of it."""
    nearest = round(ratio)
    if nearest >= 1 and abs(ratio - nearest) <= 1e-4 * nearest:
        return nearest
    return max(1, math.ceil(ratio))


def _node_times(
    times: list[float], nodes: tuple[float, ...], dtype: torch.dtype, device: torch.device
) -> tuple[list[Tensor], list[tuple[Tensor, ...]]]:
    """0-dim time tensors: the grid, and per step the tuple ``(t_k + c h_k for c in nodes)``."""
    grid = list(torch.tensor(times, dtype=dtype, device=device).unbind(0))
    columns = []
    for c in nodes:
        if c == 0.0:
            columns.append(grid[:-1])
        elif c == 1.0:
            columns.append(grid[1:])
        else:
            mid = [a + c * (b - a) for a, b in pairwise(times)]
            columns.append(list(torch.tensor(mid, dtype=dtype, device=device).unbind(0)))
    return grid, list(zip(*columns))


def _check_times(ts: Any, *, increasing_only: bool) -> list[float]:
    if torch.is_tensor(ts):
        if ts.requires_grad:
            raise ValueError("ts must not require grad: the step grid is fixed before the solve")
        if ts.dim() != 1:
            raise ValueError(f"ts must be 1-D, got shape {tuple(ts.shape)}")
        ts_list = ts.detach().cpu().tolist()
    elif isinstance(ts, (list, tuple)):
        ts_list = [float(t) for t in ts]
    else:
        raise TypeError(
            f"ts must be a 1-D tensor or a list/tuple of floats, got {type(ts).__name__}"
        )
    if len(ts_list) < 1:
        raise ValueError("ts must hold at least one time")
    if not all(math.isfinite(t) for t in ts_list):
        raise ValueError(f"ts must be finite, got {ts_list}")
    diffs = [b - a for a, b in pairwise(ts_list)]
    if increasing_only:
        if any(d <= 0 for d in diffs):
            raise ValueError(
                f"ts must be strictly increasing, got {ts_list[:8]}{'...' if len(ts_list) > 8 else ''}"
            )
    elif not (all(d > 0 for d in diffs) or all(d < 0 for d in diffs)):
        raise ValueError(
            f"ts must be strictly increasing or strictly decreasing, got {ts_list[:8]}"
            f"{'...' if len(ts_list) > 8 else ''}"
        )
    return ts_list


def _check_dt(dt: Any, *, allow_none: bool) -> float | None:
    if dt is None and allow_none:
        return None
    if torch.is_tensor(dt):
        if dt.requires_grad:
            raise ValueError("dt must not require grad")
        dt = dt.item()
    if isinstance(dt, bool) or not isinstance(dt, (int, float)):
        raise TypeError(f"dt must be a positive float, got {dt!r}")
    dt = float(dt)
    if not (dt > 0 and math.isfinite(dt)):
        raise ValueError(f"dt must be positive and finite, got dt={dt}")
    return dt
