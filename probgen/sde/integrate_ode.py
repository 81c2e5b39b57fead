"""``odeint``: fixed-step Runge-Kutta on ``sdeint``'s loop; adaptive methods via torchdiffeq.

References:
    E. Hairer, S. P. Norsett and G. Wanner, *Solving Ordinary Differential Equations I*
    (2nd ed., 1993): explicit Runge-Kutta methods (Sec. II.1), the classical RK4 and the 3/8 rule
    (Table 1.2).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any

import torch
from torch import Tensor

from probgen.sde.delegated import _odeint_torchdiffeq, _odeint_torchdiffeq_only
from probgen.sde.grid import _check_dt, _check_times, _node_times, step_grid
from probgen.sde.loop import _check_state, _prime, _raise_if_diverged, _run
from probgen.sde.ode_solvers import ODE_METHODS, ODESolver

__all__ = ["odeint"]


def odeint(
    func: Callable[[Tensor, Tensor], Tensor],
    y0: Tensor,
    ts: Tensor | Sequence[float],
    method: str | type[ODESolver] = "rk4",
    dt: float | None = None,
    *,
    rtol: float = 1e-7,
    atol: float = 1e-9,
    options: dict[str, Any] | None = None,
    event_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    adjoint: bool = False,
    adjoint_params: Sequence[Tensor] | None = None,
    return_nfe: bool = False,
    check_finite: bool = True,
    y0_name: str = "y0",
    compile: bool = False,
) -> Any:
    r"""Solve $dy/dt = \mathrm{func}(t, y)$ from ``y0`` at ``ts[0]``; the state at every ``ts``.

    Fixed-step ``euler`` / ``heun`` / ``rk4`` / ``rk38`` share ``sdeint``'s loop (grid as
    Python floats, outputs stored only at ``ts``); ``dopri5`` and torchdiffeq's other methods
    (``bosh3``, ``dopri8``, ``adaptive_heun``, ...) are delegated to torchdiffeq. For code
    written for ``torchdiffeq.odeint``: tuple states, ``options`` (also the fixed-grid
    ``step_size``, ``grid_constructor``, ``perturb``) and ``event_fn`` have torchdiffeq's
    meaning; probgen's ``"rk4"`` is the classical method and torchdiffeq's ``"rk4"`` (the 3/8
    rule) is ``"rk38"`` here; the default method is ``"rk4"`` (torchdiffeq's: ``"dopri5"``).
    Gradients with respect to ``ts`` (``ts.requires_grad``) are computed by handing the solve
    to torchdiffeq, which differentiates through its time grid.

    Args:
        func: the vector field ``func(t, y)``, ``t`` a 0-dim tensor, returning ``y``'s shape.
        y0: initial state of any shape ``S`` (e.g. ``(batch, d)``), or a tuple of such
            tensors (one dtype and device; ``func`` then takes and returns tuples, and so
            does the solve, as in torchdiffeq).
        ts: strictly increasing or strictly decreasing output times ``(T,)`` (decreasing
            integrates backwards in time). If ``ts.requires_grad``, the solve is handed to
            torchdiffeq (fixed-step ``"rk4"`` is not available there: use ``"rk38"``).
        method: ``"euler"``, ``"heun"``, ``"rk4"`` (classical), ``"rk38"`` (3/8 rule,
            torchdiffeq's ``"rk4"``) (fixed step), ``"dopri5"`` (adaptive), or a subclass of
            :class:`ODESolver`.
        dt: step size of the fixed-step methods (``None``: one step per output interval); for
            adaptive methods the first step (optional).
        rtol: relative tolerance of the adaptive methods.
        atol: absolute tolerance of the adaptive methods.
        options: torchdiffeq options. For the adaptive methods they are passed on; the
            fixed-step methods take torchdiffeq's ``step_size`` (a grid of equal steps from
            ``ts[0]``, the last one shortened; outputs interpolated linearly, as torchdiffeq)
            or ``grid_constructor(func, y0, ts) -> grid`` (the same with the user's grid),
            ``perturb`` (evaluate at the start and end of each step one ulp inside it), and
            ``interp="linear"``; see :func:`probgen.sde.compat.torchdiffeq_grid`.
        event_fn: ``event_fn(t, y) -> Tensor``: solve until it crosses zero; handed to
            torchdiffeq with its meaning (``ts[0]`` is the start; fixed-step methods need
            ``options={"step_size": ...}`` or ``dt``). Returns ``(event_t, ys)``.
        adjoint: adaptive methods only: ``torchdiffeq.odeint_adjoint`` (``func`` an ``nn.Module``).
        adjoint_params: parameters for the adjoint (default ``func.parameters()``).
        return_nfe: also return the number of ``func`` evaluations (for the adaptive methods
            counted during the solve; evaluations made later by an adjoint backward pass are
            not included).
        check_finite: raise :class:`~probgen.exceptions.SolverDivergedError` on NaN/inf outputs.
        y0_name: what error messages call ``y0`` (a caller passes its own argument's name).
        compile: run a fixed-step solve in ``torch.compile``-d chunks of steps (as ``sdeint``'s
            ``compile``; :mod:`probgen.sde.compiled`); same results to float tolerance.

    Returns:
        ``ys: (T, *S)`` (a tuple for a tuple ``y0``), or ``(ys, nfe)`` with
        ``return_nfe=True``; with ``event_fn``, ``(event_t, ys)`` or ``(event_t, ys, nfe)``.

    Raises:
        TypeError / ValueError: bad ``y0``, ``ts``, ``dt``, method or output shape.
        SolverDivergedError: the state became non-finite, or the adaptive step size underflowed.
    """
    kwargs = {
        "rtol": rtol,
        "atol": atol,
        "options": options,
        "adjoint": adjoint,
        "adjoint_params": adjoint_params,
        "return_nfe": return_nfe,
        "check_finite": check_finite,
    }
    if compile and (event_fn is not None or (torch.is_tensor(ts) and ts.requires_grad)):
        raise ValueError("compile=True is for the fixed-step solves probgen runs itself, not event_fn "
                         "or ts.requires_grad (handled by torchdiffeq)")
    if isinstance(y0, tuple):
        from probgen.sde.compat import flatten_tuple_state

        flat_func, flat_y0, unflatten = flatten_tuple_state(func, y0)
        flat_event = None if event_fn is None else (lambda t, y: event_fn(t, flat_func.split(y)))
        out = odeint(flat_func, flat_y0, ts, method, dt, event_fn=flat_event, compile=compile, y0_name=y0_name, **kwargs)
        if event_fn is not None:
            return (out[0], unflatten(out[1]), *out[2:])
        return (unflatten(out[0]), out[1]) if return_nfe else unflatten(out)
    _check_state(y0, y0_name, matrix=False)
    if isinstance(method, type) and issubclass(method, ODESolver):
        solver_cls = method
    elif isinstance(method, str):
        solver_cls = ODE_METHODS.get(method)
        if solver_cls is None and method == "rk38":
            from probgen.sde.compat import RK38 as solver_cls
    else:
        raise TypeError(f"method must be a method name or an ODESolver subclass, got {method!r}")
    if event_fn is not None or (torch.is_tensor(ts) and ts.requires_grad):
        return _odeint_torchdiffeq_only(func, y0, ts, method, solver_cls, dt, event_fn, **kwargs)
    ts_list = _check_times(ts, increasing_only=False)
    if solver_cls is not None:
        if adjoint:
            raise ValueError(
                f"adjoint=True is only for the adaptive methods, not method={method!r}"
            )
        dt = _check_dt(dt, allow_none=True)
        opts = dict(options or {})
        perturb = False
        if opts:
            from probgen.sde.compat import fixed_grid_options, torchdiffeq_grid

            step_size, constructor, perturb = fixed_grid_options(opts)
            if dt is not None and (step_size is not None or constructor is not None):
                raise ValueError(
                    f"pass either dt={dt} or options['step_size'] / options['grid_constructor'], "
                    "not both"
                )
        interpolated = bool(opts) and (step_size is not None or constructor is not None)
        if interpolated:
            ts_t = torch.as_tensor(ts, dtype=y0.dtype, device=y0.device)
            times, out_steps, weights = torchdiffeq_grid(func, y0, ts_t, step_size, constructor)
        else:
            times, counts = step_grid(ts_list, dt)
        grid_t, node_t = _node_times(times, solver_cls.nodes, y0.dtype, y0.device)
        if perturb:
            from probgen.sde.compat import perturb_nodes

            node_t = perturb_nodes(node_t, solver_cls.nodes, grid_t)
        k1 = func(node_t[0][0] if node_t else grid_t[0], y0)
        if not torch.is_tensor(k1) or k1.shape != y0.shape:
            raise ValueError(
                f"func(t, y) must return a tensor of y0's shape {tuple(y0.shape)}, got "
                f"{tuple(k1.shape) if torch.is_tensor(k1) else type(k1).__name__}"
            )
        solver = solver_cls(func)
        hs = [b - a for a, b in pairwise(times)]
        if compile:
            from probgen.sde.compiled import solve_ode

            ends = out_steps if interpolated else list(itertools.accumulate(counts))
            ys = solve_ode(
                func, solver_cls, solver.step, y0, ends, weights if interpolated else None, node_t, hs
            )
        elif interpolated:
            from probgen.sde.compat import run_interpolated

            _prime(solver, "func", k1)
            ys = run_interpolated(solver.step, y0, out_steps, weights, node_t, hs, affine=True)
            ys = torch.stack(ys, dim=0)
        else:
            _prime(solver, "func", k1)
            ys = torch.stack(_run(solver.step, y0, counts, node_t, hs), dim=0)
        nfe = solver_cls.stages * (len(times) - 1)
    else:
        ys, nfe = _odeint_torchdiffeq(
            func, y0, ts_list, method, dt, rtol=rtol, atol=atol, options=options,
            adjoint=adjoint, adjoint_params=adjoint_params,
        )
    if check_finite:
        _raise_if_diverged(ys, ts_list, f"odeint(method={method!r})", dt)
    return (ys, nfe) if return_nfe else ys
