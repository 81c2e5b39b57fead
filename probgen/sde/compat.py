r"""torchsde and torchdiffeq compatibility for :func:`~probgen.sde.sdeint` and :func:`~probgen.sde.odeint`.

The pieces that let code written for ``torchsde.sdeint`` / ``torchdiffeq.odeint`` run
unchanged, kept apart from the fast path in :mod:`probgen.sde.integrate_sde`:

* :func:`default_sde_method`: the method used when ``method=None`` (torchsde picks ``srk``
  for Ito diagonal/additive/scalar noise, ``euler`` for general noise and ``midpoint`` for
  Stratonovich SDEs; probgen picks its fast ``euler`` / ``heun`` and warns once where that
  differs);
* :func:`torchsde_grid`: torchsde's fixed-step grid (steps of exactly ``dt`` from ``ts[0]``,
  accumulated in the dtype of ``ts``, the last one clipped at ``ts[-1]``) and its linear
  interpolation weights at the output times (``sdeint(..., interpolate=True)``);
* :func:`torchdiffeq_grid`: torchdiffeq's fixed-grid options ``step_size``,
  ``grid_constructor`` and ``perturb`` (``odeint(..., options=...)``) with torchdiffeq's
  linear interpolation to ``ts``;
* :class:`RK38`: torchdiffeq's ``"rk4"``, the 3/8-rule Runge-Kutta method (probgen's ``"rk4"``
  is the classical one);
* tuple states (:func:`flatten_tuple_state`) and the methods for which ``odeint`` hands a
  solve to torchdiffeq (``event_fn``, gradients with respect to ``ts``):
  :func:`torchdiffeq_method`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from probgen.sde.ode_solvers import ODESolver

__all__ = [
    "RK38",
    "TORCHSDE_DEFAULT_METHODS",
    "default_sde_method",
    "fixed_grid_options",
    "flatten_tuple_state",
    "perturb_nodes",
    "run_interpolated",
    "torchdiffeq_grid",
    "torchdiffeq_method",
    "torchsde_grid",
]

# torchsde 0.2.6, torchsde/_core/sdeint.py (check_contract)
TORCHSDE_DEFAULT_METHODS: dict[tuple[str, str], str] = {
    ("ito", "diagonal"): "srk",
    ("ito", "additive"): "srk",
    ("ito", "scalar"): "srk",
    ("ito", "general"): "euler",
    ("stratonovich", "diagonal"): "midpoint",
    ("stratonovich", "additive"): "midpoint",
    ("stratonovich", "scalar"): "midpoint",
    ("stratonovich", "general"): "midpoint",
}
_warned: set[tuple[str, str]] = set()


def default_sde_method(sde: Any) -> str:
    """The method ``sdeint`` uses when ``method=None``: ``"euler"`` (Ito) or ``"heun"`` (Stratonovich).

    Both run on the fast fixed-step path. Where torchsde's default differs (``srk`` for Ito
    diagonal/additive/scalar noise, ``midpoint`` for Stratonovich SDEs) a ``UserWarning``
    says so, once per process and (SDE type, noise type); pass ``method=`` to silence it.

    Args:
        sde: a torchsde-protocol SDE (``sde_type`` and ``noise_type`` already checked).

    Returns:
        The method name.
    """
    key = (sde.sde_type, sde.noise_type)
    ours = "euler" if sde.sde_type == "ito" else "heun"
    theirs = TORCHSDE_DEFAULT_METHODS[key]
    if ours != theirs and key not in _warned:
        _warned.add(key)
        warnings.warn(
            f"sdeint(method=None) uses {ours!r} for sde_type={key[0]!r}, noise_type={key[1]!r}; "
            f"torchsde.sdeint would use {theirs!r} (strong order differs). Pass method={ours!r} "
            f"to keep probgen's fast path, or method={theirs!r} for torchsde's choice.",
            UserWarning,
            stacklevel=3,
        )
    return ours


def _scalar(value: float, dtype: torch.dtype) -> Tensor:
    return torch.tensor(value, dtype=dtype)


def torchsde_grid(
    ts: Sequence[float], dt: float, dtype: torch.dtype
) -> tuple[list[float], list[int], list[tuple[float, float] | None]]:
    r"""torchsde's fixed-step grid through ``ts`` and its linear interpolation at the outputs.

    torchsde (``BaseSDESolver.integrate``) steps $t_{k+1} = \min(t_k + dt, t_{T-1})$ from
    $t_0$ = ``ts[0]``, in the dtype of ``ts``, while $t_k <$ the next output time, and returns
    $y(\tau) = \frac{t_{k} - \tau}{t_k - t_{k-1}} y_{k-1} + \frac{\tau - t_{k-1}}{t_k - t_{k-1}} y_k$
    at each output time $\tau \in (t_{k-1}, t_k]$. This reproduces that grid exactly (the
    times are accumulated in ``dtype``), so a solve on it with the same Brownian motion gives
    torchsde's outputs.

    Args:
        ts: strictly increasing output times, length ``T``.
        dt: the step size, ``> 0``.
        dtype: the floating dtype torchsde would hold ``ts`` in.

    Returns:
        ``(times, steps, weights)``: the grid (Python floats, exactly representable in
        ``dtype``); for each output ``i = 1..T-1`` the number of steps taken before it; and
        its interpolation weights ``(w_prev, w_curr)`` on the states before and after the
        last of those steps, or ``None`` where the output time is that grid point.
    """
    t_end = _scalar(ts[-1], dtype)
    curr = prev = _scalar(ts[0], dtype)
    times = [float(curr)]
    steps: list[int] = []
    weights: list[tuple[float, float] | None] = []
    for out in ts[1:]:
        out_t = _scalar(out, dtype)
        while curr < out_t:
            prev, curr = curr, torch.minimum(curr + dt, t_end)
            times.append(float(curr))
        steps.append(len(times) - 1)
        if curr == out_t:
            weights.append(None)
        else:
            span = curr - prev
            weights.append((float((curr - out_t) / span), float((out_t - prev) / span)))
    return times, steps, weights


def fixed_grid_options(options: dict[str, Any]) -> tuple[float | None, Callable | None, bool]:
    """Check torchdiffeq's fixed-grid ``options``: ``step_size``, ``grid_constructor``, ``perturb``, ``interp``.

    Returns:
        ``(step_size, grid_constructor, perturb)``.

    Raises:
        ValueError / TypeError: unknown keys, both ``step_size`` and ``grid_constructor``,
            a non-positive step size, ``interp`` other than ``"linear"``, a non-bool ``perturb``.
    """
    allowed = {"step_size", "grid_constructor", "perturb", "interp"}
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(
            f"options has keys {sorted(unknown)} that the fixed-step methods do not take; "
            f"allowed: {sorted(allowed)} (torchdiffeq's fixed-grid options)"
        )
    interp = options.get("interp", "linear")
    if interp != "linear":
        raise ValueError(f"options['interp']={interp!r} is not supported; allowed: 'linear'")
    perturb = options.get("perturb", False)
    if not isinstance(perturb, bool):
        raise TypeError(f"options['perturb'] must be a bool, got {perturb!r}")
    step_size = options.get("step_size")
    constructor = options.get("grid_constructor")
    if step_size is not None and constructor is not None:
        raise ValueError(
            "options['step_size'] and options['grid_constructor'] are mutually exclusive"
        )
    if step_size is not None:
        if torch.is_tensor(step_size):
            step_size = step_size.item()
        if (
            isinstance(step_size, bool)
            or not isinstance(step_size, (int, float))
            or not step_size > 0
        ):
            raise ValueError(f"options['step_size'] must be a positive float, got {step_size!r}")
        step_size = float(step_size)
    if constructor is not None and not callable(constructor):
        raise TypeError(f"options['grid_constructor'] must be callable, got {constructor!r}")
    return step_size, constructor, perturb


def torchdiffeq_grid(
    func: Callable[[Tensor, Tensor], Tensor],
    y0: Tensor,
    ts: Tensor,
    step_size: float | None,
    grid_constructor: Callable | None,
) -> tuple[list[float], list[int], list[tuple[float, float] | None]]:
    r"""torchdiffeq's fixed grid (``options`` ``step_size`` / ``grid_constructor``) and its interpolation.

    ``step_size=h``: the grid $t_0 + k h$, $k = 0, \dots, \lceil (t_{T-1} - t_0)/h + 1\rceil - 1$,
    with its last point replaced by $t_{T-1}$ (torchdiffeq's ``FixedGridODESolver``);
    ``grid_constructor(func, y0, ts) -> grid``: the user's grid, which must start at ``ts[0]``
    and end at ``ts[-1]``. Decreasing ``ts`` are handled as torchdiffeq does, on $-t$.
    Each output time $\tau \in (t_{k-1}, t_k]$ is linearly interpolated,
    $y_{k-1} + \frac{\tau - t_{k-1}}{t_k - t_{k-1}} (y_k - y_{k-1})$ (exactly $y_k$ at a grid point).

    Args:
        func: the vector field (passed to ``grid_constructor``).
        y0: the initial state.
        ts: the output times as a tensor in the solve's dtype, strictly monotone.
        step_size: the step, or ``None``.
        grid_constructor: the grid callable, or ``None`` (then the grid is ``ts``).

    Returns:
        ``(times, steps, weights)`` as in :func:`torchsde_grid` (``weights[i][1]`` is the slope).

    Raises:
        ValueError: a constructed grid that is not strictly increasing from ``ts[0]`` to ``ts[-1]``.
    """
    reverse = bool(len(ts) > 1 and ts[1] < ts[0])
    t = -ts if reverse else ts
    if step_size is not None:
        n = int(torch.ceil((t[-1] - t[0]) / step_size + 1).item())
        grid = torch.arange(0, n, dtype=t.dtype, device=t.device) * step_size + t[0]
        grid[-1] = t[-1]
    elif grid_constructor is not None:
        f = (lambda s, y: -func(-s, y)) if reverse else func
        grid = torch.as_tensor(grid_constructor(f, y0, t), dtype=t.dtype, device=t.device)
        if (
            grid.dim() != 1
            or bool(grid[0] != t[0])
            or bool(grid[-1] != t[-1])
            or bool((grid[1:] <= grid[:-1]).any())
        ):
            raise ValueError(
                "options['grid_constructor'] must return a strictly increasing 1-D grid from ts[0] "
                f"to ts[-1], got {grid.tolist()[:8]}"
            )
    else:
        grid = t
    g = grid.detach().cpu().to(torch.float64).tolist()
    tt = t.detach().cpu().to(torch.float64).tolist()
    steps: list[int] = []
    weights: list[tuple[float, float] | None] = []
    k = 0
    for i, tau in enumerate(tt[1:], start=1):
        while g[k] < tau:
            k += 1
        steps.append(k)
        if g[k] == tau:
            weights.append(None)
        else:
            slope = float((t[i] - grid[k - 1]) / (grid[k] - grid[k - 1]))
            weights.append((1.0 - slope, slope))
    times = [-x for x in g] if reverse else g
    return times, steps, weights


def perturb_nodes(
    node_t: list[tuple[Tensor, ...]], nodes: tuple[float, ...], grid_t: list[Tensor]
) -> list[tuple[Tensor, ...]]:
    """torchdiffeq's ``perturb=True``: the start node of each step one ulp forward, the end node one back.

    So a vector field with a discontinuity at a grid point is evaluated on the side of the
    step being taken (torchdiffeq's ``Perturb.NEXT`` / ``Perturb.PREV``, towards the direction
    of integration).

    Args:
        node_t: per step, the 0-dim node times (as from the solver's ``nodes``).
        nodes: the solver's node fractions.
        grid_t: the grid as 0-dim tensors (length ``len(node_t) + 1``).
    """
    out = []
    for k, t in enumerate(node_t):
        a, b = grid_t[k], grid_t[k + 1]
        row = list(t)
        for j, c in enumerate(nodes):
            if c == 0.0:
                row[j] = torch.nextafter(a, b)
            elif c == 1.0:
                row[j] = torch.nextafter(b, a)
        out.append(tuple(row))
    return out


def run_interpolated(
    step: Callable,
    y: Tensor,
    steps: list[int],
    weights: list[tuple[float, float] | None],
    nodes: list,
    hs: list[float],
    noise: Any = None,
    *,
    affine: bool = False,
) -> list[Tensor]:
    """The time loop with linearly interpolated outputs (see :func:`torchsde_grid`).

    Output ``i`` is the state after ``steps[i]`` steps, or with ``weights[i] = (w0, w1)`` the
    interpolation ``w0 * y_prev + w1 * y`` (torchsde's form) or, with ``affine``,
    ``y_prev + w1 * (y - y_prev)`` (torchdiffeq's form) between the last two states.
    """
    ys = [y]
    prev = y
    k = 0
    it = zip(nodes, hs) if noise is None else zip(nodes, hs, noise)
    for n, w in zip(steps, weights):
        while k < n:
            prev = y
            y = step(*next(it), y) if noise is None else _noisy(step, next(it), y)
            k += 1
        ys.append(interpolated_output(prev, y, w, affine))
    return ys


def interpolated_output(prev: Tensor, y: Tensor, w: tuple[float, float] | None, affine: bool) -> Tensor:
    """The output between the last two states: ``y`` (``w`` None), ``w0 * prev + w1 * y``
    (torchsde's form) or, with ``affine``, ``prev + w1 * (y - prev)`` (torchdiffeq's form)."""
    if w is None:
        return y
    if affine:
        return torch.add(prev, y - prev, alpha=w[1])
    return torch.add(prev * w[0], y, alpha=w[1])


def _noisy(step: Callable, args: tuple, y: Tensor) -> Tensor:
    t, h, dW = args
    return step(t, h, y, dW)


class RK38(ODESolver):
    r"""The 3/8-rule Runge-Kutta method (Kutta 1901), torchdiffeq's ``"rk4"``; order 4.

    $k_1 = f(t, y)$, $k_2 = f(t + h/3, y + h k_1/3)$, $k_3 = f(t + 2h/3, y + h(k_2 - k_1/3))$,
    $k_4 = f(t + h, y + h(k_1 - k_2 + k_3))$, $y_{k+1} = y_k + \tfrac h8 (k_1 + 3 k_2 + 3 k_3 + k_4)$.
    """

    order = 4
    stages = 4
    nodes = (0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0)

    def step(self, t: tuple[Tensor, ...], h: float, y: Tensor) -> Tensor:
        func = self.func
        k1 = func(t[0], y)
        k2 = func(t[1], y + h * k1 * (1.0 / 3.0))
        k3 = func(t[2], y + h * (k2 - k1 * (1.0 / 3.0)))
        k4 = func(t[3], y + h * (k1 - k2 + k3))
        return y + (k1 + 3 * (k2 + k3) + k4) * h * 0.125


# probgen fixed-step name -> torchdiffeq's, for the solves odeint hands to torchdiffeq.
_TORCHDIFFEQ_FIXED = {"euler": "euler", "heun": "heun2", "rk38": "rk4"}


def torchdiffeq_method(method: Any, why: str) -> str:
    """torchdiffeq's name for ``method`` when ``odeint`` delegates a solve (``why``: the reason).

    Raises:
        ValueError: the classical ``"rk4"`` (torchdiffeq has only the 3/8 rule, ``"rk38"`` here)
            or a solver class, which torchdiffeq cannot run.
    """
    if isinstance(method, str) and method in _TORCHDIFFEQ_FIXED:
        return _TORCHDIFFEQ_FIXED[method]
    if method == "rk4":
        raise ValueError(
            f"{why} is handled by torchdiffeq, which has no classical RK4: its 'rk4' is the 3/8 rule; "
            "pass method='rk38' (the same solve) or an adaptive method such as 'dopri5'"
        )
    if not isinstance(method, str):
        raise TypeError(f"{why} is handled by torchdiffeq and needs a method name, got {method!r}")
    return method


class _FlatTupleFunc(torch.nn.Module):
    """``func`` on a tuple state, seen as a vector field on the flat state (a Module, for the adjoint)."""

    def __init__(self, func: Callable, shapes: list[torch.Size], sizes: list[int]) -> None:
        super().__init__()
        self.func = func  # registered as a submodule when it is one, so .parameters() finds it
        self.shapes, self.sizes = shapes, sizes

    def split(self, flat: Tensor) -> tuple[Tensor, ...]:
        return tuple(p.reshape(s) for p, s in zip(flat.split(self.sizes), self.shapes))

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        out = self.func(t, self.split(y))
        if not isinstance(out, (tuple, list)) or len(out) != len(self.shapes):
            raise ValueError(
                f"func(t, y) must return a tuple of {len(self.shapes)} tensors for a tuple y0, "
                f"got {type(out).__name__}"
            )
        for i, (o, s) in enumerate(zip(out, self.shapes)):
            if not torch.is_tensor(o) or o.shape != s:
                raise ValueError(f"func(t, y)[{i}] must have y0[{i}]'s shape {tuple(s)}")
        return torch.cat([o.reshape(-1) for o in out])


def flatten_tuple_state(
    func: Callable[[Tensor, tuple[Tensor, ...]], tuple[Tensor, ...]], y0: tuple[Tensor, ...]
) -> tuple[_FlatTupleFunc, Tensor, Callable[[Tensor], tuple[Tensor, ...]]]:
    """A tuple state as one flat tensor, as torchdiffeq does (its ``_TupleFunc``).

    Args:
        func: ``func(t, (y_1, ..., y_n)) -> (dy_1, ..., dy_n)``, each ``dy_i`` of ``y_i``'s shape.
        y0: the tuple of initial states (one floating dtype, one device).

    Returns:
        ``(flat_func, flat_y0, unflatten)``: the vector field on the flat state ``(N,)`` (an
        ``nn.Module`` with ``.split(flat)`` back to the tuple), the flat initial state, and
        the map from flat solutions ``(T, N)`` back to the tuple of ``(T, *shape_i)``.

    Raises:
        TypeError / ValueError: an element that is not a floating tensor, or mixed dtypes or
            devices.
    """
    if len(y0) == 0:
        raise ValueError("y0 must not be an empty tuple")
    for i, y in enumerate(y0):
        if not torch.is_tensor(y) or not y.is_floating_point():
            raise TypeError(f"y0[{i}] must be a floating torch.Tensor, got {type(y).__name__}")
        if y.dtype != y0[0].dtype or y.device != y0[0].device:
            raise TypeError(
                f"the tensors of a tuple y0 must share one dtype and device; y0[0] is {y0[0].dtype} on "
                f"{y0[0].device}, y0[{i}] is {y.dtype} on {y.device}"
            )
    shapes = [y.shape for y in y0]
    sizes = [y.numel() for y in y0]

    def unflatten(ys: Tensor) -> tuple[Tensor, ...]:
        return tuple(p.reshape(ys.shape[0], *s) for p, s in zip(ys.split(sizes, dim=1), shapes))

    return _FlatTupleFunc(func, shapes, sizes), torch.cat([y.reshape(-1) for y in y0]), unflatten
