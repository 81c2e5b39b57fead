"""Fixed-step explicit Runge-Kutta ODE solvers (``odeint``'s ``euler``, ``heun``, ``rk4``).

torchdiffeq's ``"rk4"`` (the 3/8 rule) is :class:`probgen.sde.compat.RK38`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["ODE_METHODS", "RK4", "Euler", "Heun", "ODESolver"]


class ODESolver:
    """A fixed-step explicit Runge-Kutta ODE solver for ``dy/dt = func(t, y)``.

    Attributes:
        order: global order of convergence.
        stages: function evaluations per step.
        nodes: fractions $c$ of a step at which ``func`` is evaluated (as for :class:`SDESolver`).
    """

    order: int
    stages: int
    nodes: tuple[float, ...] = (0.0,)

    def __init__(self, func: Callable[[Tensor, Tensor], Tensor]) -> None:
        self.func = func

    def step(self, t: tuple[Tensor, ...], h: float, y: Tensor) -> Tensor:
        raise NotImplementedError


class Euler(ODESolver):
    """Explicit Euler, $y_{k+1} = y_k + h f(t_k, y_k)$; order 1."""

    order = 1
    stages = 1

    def step(self, t: tuple[Tensor, ...], h: float, y: Tensor) -> Tensor:
        return torch.add(y, self.func(t[0], y), alpha=h)


class Heun(ODESolver):
    r"""Heun's method (explicit trapezoid), $y_{k+1} = y_k + \tfrac h2 (k_1 + k_2)$; order 2."""

    order = 2
    stages = 2
    nodes = (0.0, 1.0)

    def step(self, t: tuple[Tensor, ...], h: float, y: Tensor) -> Tensor:
        k1 = self.func(t[0], y)
        k2 = self.func(t[1], torch.add(y, k1, alpha=h))
        return torch.add(y, k1 + k2, alpha=0.5 * h)


class RK4(ODESolver):
    """The classical fourth-order Runge-Kutta method; order 4."""

    order = 4
    stages = 4
    nodes = (0.0, 0.5, 1.0)

    def step(self, t: tuple[Tensor, ...], h: float, y: Tensor) -> Tensor:
        func = self.func
        k1 = func(t[0], y)
        k2 = func(t[1], torch.add(y, k1, alpha=0.5 * h))
        k3 = func(t[1], torch.add(y, k2, alpha=0.5 * h))
        k4 = func(t[2], torch.add(y, k3, alpha=h))
        return torch.add(y, k1 + 2.0 * (k2 + k3) + k4, alpha=h / 6.0)


ODE_METHODS: dict[str, type[ODESolver]] = {"euler": Euler, "heun": Heun, "rk4": RK4}
