"""Brownian noise for the fixed-step solvers.

A Brownian source answers ``bm(t0, t1) -> W(t1) - W(t0)`` of shape ``(batch, m)``,
the protocol of :class:`torchsde.BrownianInterval`. The solvers in
:mod:`probgen.sde.solvers` ask for every increment of their step grid *before* the
time loop, so the loop itself only indexes a list:

* with ``bm=None`` all increments of the grid are drawn by one ``torch.randn``
  (:func:`brownian_increments`, chunked for very large grids);
* with a :class:`BrownianGrid` (a path pre-sampled on a grid) the increments of any
  coarser grid made of its points are differences of its cumulative sum (one
  indexing op), which is how convergence-order tests share one path across step sizes;
* with any other callable (``torchsde.BrownianInterval``, an fBM-driven source of
  the fractional family, ...) it is called once per step, in time order, so the
  same ``BrownianInterval`` gives the same path in probgen and torchsde.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

__all__ = ["BrownianGrid", "brownian_increments", "grid_increments"]

# Increments are drawn in chunks of at most this many elements (64 MiB in float32), so a
# long solve at a large batch never holds all of its noise at once.
_CHUNK_ELEMENTS = 1 << 24


def _check_generator(generator: torch.Generator | None, device: torch.device) -> None:
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator or None, got {type(generator).__name__}"
        )
    if generator.device.type != torch.device(device).type:
        raise ValueError(
            f"generator is on device {generator.device}, but the noise is drawn on {device}; "
            "pass a generator created with torch.Generator(device=y0.device)"
        )


def brownian_increments(
    dts: Sequence[float],
    size: Sequence[int],
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Brownian increments $W(t_{k+1}) - W(t_k) \sim \mathcal N(0, h_k I)$ on a grid, in one draw.

    Args:
        dts: the step sizes $h_k > 0$ of the grid, length ``n``.
        size: shape of one increment, e.g. ``(batch, m)``.
        dtype: floating dtype (default: torch's default dtype).
        device: device of the result.
        generator: random generator; ``None`` uses the global RNG (``torch.manual_seed``).

    Returns:
        Tensor of shape ``(n, *size)``.

    Raises:
        ValueError: if a step size is not positive and finite.
    """
    dts = [float(h) for h in dts]
    for h in dts:
        if not (h > 0 and math.isfinite(h)):
            raise ValueError(f"dts must be positive and finite, got a step of {h}")
    device = torch.device("cpu") if device is None else torch.device(device)
    _check_generator(generator, device)
    z = torch.randn((len(dts), *size), dtype=dtype, device=device, generator=generator)
    if len(set(dts)) == 1:
        return z.mul_(math.sqrt(dts[0]))
    scale = torch.tensor(dts, dtype=z.dtype, device=device).sqrt_()
    return z.mul_(scale.view(-1, *([1] * len(size))))


def _chunked_increments(
    dts: Sequence[float],
    size: Sequence[int],
    dtype: torch.dtype,
    device: torch.device,
    generator: torch.Generator | None,
) -> Iterator[Tensor]:
    """Yield the increments of the grid one step at a time, drawing them chunk by chunk."""
    per_step = max(1, math.prod(size))
    chunk = max(1, _CHUNK_ELEMENTS // per_step)
    for start in range(0, len(dts), chunk):
        yield from brownian_increments(
            dts[start : start + chunk], size, dtype=dtype, device=device, generator=generator
        ).unbind(0)


def grid_increments(
    times: Sequence[float],
    size: Sequence[int],
    *,
    bm: Callable[[Tensor, Tensor], Tensor] | None = None,
    time_tensors: Sequence[Tensor] | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[Tensor] | list[Tensor]:
    """The increments ``W(times[k+1]) - W(times[k])`` that a fixed-step solver consumes.

    Args:
        times: the strictly increasing step grid as Python floats, length ``n + 1``.
        size: shape of one increment, ``(batch, m)``.
        bm: ``None`` (fresh noise in one draw), a :class:`BrownianGrid` containing every
            grid point, or any callable ``bm(t0, t1)``; it is called with the 0-dim tensors
            ``time_tensors[k], time_tensors[k + 1]`` when given (torchsde passes tensors),
            else with Python floats.
        time_tensors: optional 0-dim tensors of ``times``.
        dtype: dtype of fresh noise.
        device: device of fresh noise.
        generator: random generator of fresh noise (``None``: the global RNG).

    Returns:
        An iterable of ``n`` tensors of shape ``size`` (consumed once, in order).
    """
    dts = [b - a for a, b in itertools.pairwise(times)]
    if bm is None:
        device = torch.device("cpu") if device is None else torch.device(device)
        _check_generator(generator, device)
        if len(dts) * max(1, math.prod(size)) <= _CHUNK_ELEMENTS:  # the usual case: one draw, now
            z = brownian_increments(dts, size, dtype=dtype, device=device, generator=generator)
            return list(z.unbind(0))
        return _chunked_increments(dts, size, dtype, device, generator)
    if isinstance(bm, BrownianGrid):
        return list(bm.increments_on(times).to(device=device, dtype=dtype).unbind(0))
    if time_tensors is None:
        time_tensors = times
    return [bm(t0, t1) for t0, t1 in itertools.pairwise(time_tensors)]


class BrownianGrid:
    r"""A Brownian path sampled on a fixed grid; answers ``bm(t0, t1)`` between grid points.

    The path is stored as $W(t_0) = 0, W(t_1), \dots, W(t_n)$ (cumulative sums of the
    increments), so the increment over any pair of grid points, and all increments of a
    coarser grid made of grid points, are differences of two rows. This is the noise for
    convergence-order studies (one path, many step sizes) and for paths sampled
    elsewhere (pass ``increments``).

    Args:
        times: strictly increasing grid $t_0 < \dots < t_n$ (Python floats or a 1-D tensor).
        size: shape of one increment, e.g. ``(batch, m)``; ignored when ``increments`` is given.
        increments: optional pre-sampled increments of shape ``(n, *size)``.
        dtype: dtype of drawn increments (when ``increments`` is None).
        device: device of drawn increments.
        generator: random generator for drawing them (``None``: the global RNG).

    Raises:
        ValueError: if ``times`` is not strictly increasing, or ``increments`` does not
            have one row per grid step.
    """

    def __init__(
        self,
        times: Sequence[float] | Tensor,
        size: Sequence[int] | None = None,
        *,
        increments: Tensor | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if torch.is_tensor(times):
            times = times.detach().cpu().tolist()
        times = [float(t) for t in times]
        if len(times) < 2 or any(b <= a for a, b in itertools.pairwise(times)):
            raise ValueError(
                f"times must be strictly increasing with at least 2 points, got {times[:6]}..."
            )
        self.times = times
        # query times match grid points up to a small fraction of the finest step (float32 grids)
        self._tol = 1e-4 * min(b - a for a, b in itertools.pairwise(times))
        if increments is None:
            if size is None:
                raise ValueError("size is required when increments is not given")
            dts = [b - a for a, b in itertools.pairwise(times)]
            increments = brownian_increments(
                dts, size, dtype=dtype, device=device, generator=generator
            )
        elif increments.shape[0] != len(times) - 1:
            raise ValueError(
                f"increments must have len(times) - 1 = {len(times) - 1} rows, got shape "
                f"{tuple(increments.shape)}"
            )
        zero = torch.zeros_like(increments[:1])
        self.path = torch.cat([zero, increments.cumsum(0)], dim=0)  # (n + 1, *size)

    # torchsde's solvers check this attribute: increments only, no Levy area, so a
    # BrownianGrid also drives torchsde's euler / milstein / heun / midpoint.
    levy_area_approximation = "none"

    @property
    def shape(self) -> torch.Size:
        """Shape of one increment, ``(batch, m)`` (torchsde's ``bm.shape``)."""
        return self.path.shape[1:]

    @property
    def dtype(self) -> torch.dtype:
        return self.path.dtype

    @property
    def device(self) -> torch.device:
        return self.path.device

    def _index(self, t: float) -> int:
        times = self.times
        tol = self._tol
        i = bisect.bisect_left(times, t - tol)
        if i < len(times) and abs(times[i] - t) <= tol:
            return i
        raise ValueError(
            f"t={t} is not a point of this BrownianGrid (grid from {times[0]} to {times[-1]} with "
            f"{len(times) - 1} steps); query times must be grid points"
        )

    def __call__(self, t0: float | Tensor, t1: float | Tensor) -> Tensor:
        """The increment ``W(t1) - W(t0)``, shape ``(batch, m)``; ``t0, t1`` must be grid points."""
        return self.path[self._index(float(t1))] - self.path[self._index(float(t0))]

    increment = __call__

    def increments_on(self, times: Sequence[float]) -> Tensor:
        """All increments of the grid ``times`` (a subset of this grid's points) in one op.

        Returns:
            Tensor of shape ``(len(times) - 1, *shape)``.
        """
        idx = torch.tensor([self._index(float(t)) for t in times], device=self.path.device)
        w = self.path.index_select(0, idx)
        return w[1:] - w[:-1]

    def __repr__(self) -> str:
        return (
            f"BrownianGrid(t0={self.times[0]}, t1={self.times[-1]}, steps={len(self.times) - 1}, "
            f"shape={tuple(self.shape)}, dtype={self.dtype})"
        )
