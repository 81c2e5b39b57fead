"""The eager fixed-step time loop, and the checks on its way in and out.

The loop holds no tensor comparison, no host-device sync and no branching on the noise
type; the state is stored only at the output times; finiteness is checked once, after the
loop (:func:`_raise_if_diverged`); the first drift/diffusion evaluation doubles as the shape
check (:func:`_prime` hands it to the first step). The compiled loop is
:mod:`probgen.sde.compiled`; the interpolated one (torchsde's / torchdiffeq's grids)
:func:`probgen.sde.compat.run_interpolated`.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice
from typing import Any

import torch
from torch import Tensor

from probgen import validation
from probgen.exceptions import SolverDivergedError


def _check_state(y0: Any, name: str = "y0", *, matrix: bool) -> None:
    if not torch.is_tensor(y0):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(y0).__name__}")
    if not y0.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {y0.dtype}")
    if matrix and y0.dim() != 2:
        raise ValueError(f"{name} must have shape (batch, d), got {tuple(y0.shape)}")
    validation.check_finite(name, y0)


def _raise_if_diverged(ys: Tensor, ts: list[float], where: str, dt: float | None) -> None:
    finite = torch.isfinite(ys.detach().reshape(ys.shape[0], -1)).all(dim=1)
    if bool(finite.all()):
        return
    i = int((~finite).nonzero()[0, 0])
    raise SolverDivergedError(
        f"{where}: the state became NaN/inf between t={ts[i - 1]:g} and t={ts[i]:g} "
        f"(output {i} of {len(ts)}). Try a smaller dt (now {dt}), check the drift/diffusion for "
        "overflow at large states, or use an implicit/stabler method."
    )


def _prime(obj: Any, name: str, value: Any) -> None:
    """Make ``obj.<name>`` return ``value`` once (the validated first evaluation), then itself."""
    real = getattr(obj, name)
    pending = [True]

    def first_call(*args: Any) -> Any:
        if pending[0]:  # a step that bound the method to a local keeps calling this closure
            pending[0] = False
            setattr(obj, name, real)
            return value
        return real(*args)

    setattr(obj, name, first_call)


def _run(
    step: Callable, y: Tensor, counts: list[int], nodes: list, hs: list[float], noise: Any = None
) -> list[Tensor]:
    """The time loop: ``counts[i]`` steps, then store the state (output ``i + 1``)."""
    ys = [y]
    if noise is None:
        it = zip(nodes, hs)
        for n in counts:
            for t, h in islice(it, n):
                y = step(t, h, y)
            ys.append(y)
    else:
        it = zip(nodes, hs, noise)
        for n in counts:
            for t, h, dW in islice(it, n):
                y = step(t, h, y, dW)
            ys.append(y)
    return ys
