r"""``sdeint``: the fixed-step fast path and the dispatch to torchsde.

``sdeint`` takes torchsde-protocol SDE objects and returns what ``torchsde.sdeint``
returns, so switching is a change of import. Its own methods (``euler``, ``milstein``,
``heun``) run on a fast path:

* the step grid is computed once as Python floats; every output time in ``ts`` is a grid
  point (between two output times the grid has ``ceil(span / dt)`` equal steps, so when
  ``dt`` divides the spacing of ``ts`` the grid is torchsde's);
* all Brownian increments of the grid are drawn before the loop (one ``randn``), or taken
  from ``bm`` (see :mod:`probgen.sde.noise`);
* the loop holds no tensor comparison, no host-device sync and no branching on the noise
  type: the solver class and the noise-type specific products are chosen before it; the
  state is stored only at ``ts``; finiteness is checked once, after the loop;
* the first drift/diffusion evaluation doubles as the shape check.

Solvers are small classes that *declare* what they are (``strong_order``, ``weak_order``,
``sde_type``, ``noise_types``), checked against the SDE once before the loop. Other methods
(``srk``, ``midpoint``, ``reversible_heun``, ``euler_heun``, ``log_ode``), adaptive
stepping and the stochastic adjoint are delegated to torchsde; ``odeint``'s adaptive
methods (``dopri5``, ...) to torchdiffeq.

References:
    P. E. Kloeden and E. Platen, *Numerical Solution of Stochastic Differential Equations*
    (1992): Euler-Maruyama (eq. 10.2.1), Milstein (eq. 10.3.1).
    K. Burrage, P. M. Burrage and T. Tian, "Numerical methods for strong solutions of
    stochastic differential equations: an overview", Proc. R. Soc. A 460 (2004): Stratonovich Heun.
    X. Li, T.-K. L. Wong, R. T. Q. Chen and D. Duvenaud, "Scalable gradients for stochastic
    differential equations", AISTATS 2020: the latent-SDE KL term (``logqp``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any

import torch
from torch import Tensor

from probgen.sde.delegated import _TORCHSDE_METHODS, _sdeint_torchsde
from probgen.sde.grid import _check_dt, _check_times, _node_times, step_grid
from probgen.sde.loop import _check_state, _prime, _raise_if_diverged, _run
from probgen.sde.noise import grid_increments
from probgen.sde.protocol import (
    _check_sde,
    _check_sde_shapes,
    _LogqpSDE,
    _RenamedSDE,
    _SDETerms,
)
from probgen.sde.sde_solvers import SDE_METHODS, SDESolver

__all__ = ["sdeint"]


def _select_sde_solver(method: Any, sde: Any) -> type[SDESolver] | None:
    """The own solver class for ``method`` (checked against the SDE), or None for torchsde."""
    if isinstance(method, type) and issubclass(method, SDESolver):
        solver_cls, name = method, method.__name__
        if sde.sde_type != solver_cls.sde_type:
            raise ValueError(
                f"{name} solves {solver_cls.sde_type} SDEs but sde.sde_type={sde.sde_type!r}"
            )
    elif isinstance(method, str):
        if method in _TORCHSDE_METHODS:
            return None
        if method not in SDE_METHODS:
            raise ValueError(
                f"method={method!r} is unknown; allowed: "
                f"{sorted(SDE_METHODS) + list(_TORCHSDE_METHODS)} or an SDESolver subclass"
            )
        solver_cls, name = SDE_METHODS[method].get(sde.sde_type), repr(method)
        if solver_cls is None:
            other = [m for m, v in SDE_METHODS.items() if sde.sde_type in v]
            alt = "midpoint/euler_heun/reversible_heun" if sde.sde_type == "stratonovich" else "srk"
            raise ValueError(
                f"method={method!r} solves {'/'.join(SDE_METHODS[method])} SDEs but "
                f"sde.sde_type={sde.sde_type!r}; use one of {other} (or torchsde's {alt}), "
                "or convert the drift to the other calculus"
            )
    else:
        raise TypeError(f"method must be a method name or an SDESolver subclass, got {method!r}")
    if sde.noise_type not in solver_cls.noise_types:
        raise ValueError(
            f"method {name} ({solver_cls.__name__}) supports noise types {solver_cls.noise_types}, "
            f"but sde.noise_type={sde.noise_type!r}; use 'euler' (Ito) or 'heun' (Stratonovich)"
        )
    return solver_cls


# ---------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------


def sdeint(
    sde: Any,
    y0: Tensor,
    ts: Tensor | Sequence[float],
    bm: Callable[[Tensor, Tensor], Tensor] | None = None,
    method: str | type[SDESolver] | None = None,
    dt: float = 1e-3,
    adaptive: bool = False,
    rtol: float = 1e-5,
    atol: float = 1e-4,
    dt_min: float = 1e-5,
    options: dict[str, Any] | None = None,
    names: dict[str, str] | None = None,
    logqp: bool = False,
    extra: bool = False,
    extra_solver_state: tuple[Tensor, ...] | None = None,
    *,
    generator: torch.Generator | None = None,
    interpolate: bool = False,
    adjoint: bool = False,
    adjoint_method: str | None = None,
    adjoint_params: Sequence[Tensor] | None = None,
    adjoint_options: dict[str, Any] | None = None,
    check_finite: bool = True,
    y0_name: str = "y0",
    compile: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Solve $dy = f(t, y)\,dt + g(t, y)\,dW$ from ``y0`` at ``ts[0]``; the state at every ``ts``.

    Drop-in for ``torchsde.sdeint``: torchsde's positional order (``sde, y0, ts, bm, method,
    dt, adaptive, rtol, atol, dt_min, options, names, logqp, extra, extra_solver_state``),
    SDE protocol and returns; probgen's own arguments are keyword-only. The own methods run
    on the fast fixed-step path described in :mod:`probgen.sde.integrate_sde`; any other method,
    ``adaptive=True`` and ``adjoint=True`` call torchsde. Differences from torchsde:
    ``method=None`` picks ``"euler"`` (Ito) or ``"heun"`` (Stratonovich) and warns where
    torchsde would pick ``srk`` or ``midpoint`` (:func:`probgen.sde.compat.default_sde_method`);
    where ``dt`` does not divide the spacing of ``ts`` the grid differs unless
    ``interpolate=True`` (see ``dt``); ``ts`` must be strictly increasing.

    Args:
        sde: a torchsde-protocol object: ``f(t, y)`` and ``g(t, y)`` or a fused
            ``f_and_g(t, y)``, ``noise_type`` in ``{"diagonal", "additive", "scalar",
            "general"}``, ``sde_type`` in ``{"ito", "stratonovich"}``; ``h(t, y)`` (the
            prior drift) for ``logqp``. ``t`` is passed as a 0-dim tensor. ``f`` returns
            ``(batch, d)``; ``g`` returns ``(batch, d)`` (diagonal) or ``(batch, d, m)``.
        y0: initial state ``(batch, d)``; its dtype and device are the solve's.
        ts: strictly increasing output times ``(T,)``; ``ys[0] = y0``.
        bm: Brownian source ``bm(t0, t1) -> (batch, m)``: a ``torchsde.BrownianInterval``,
            a :class:`~probgen.sde.noise.BrownianGrid` (grid must contain the step grid) or
            any callable. ``None``: fresh increments in one draw from ``generator``.
        method: ``"euler"`` (Ito), ``"milstein"`` (Ito or Stratonovich, commutative noise),
            ``"heun"`` (Stratonovich); torchsde's ``"srk"``, ``"midpoint"``,
            ``"reversible_heun"``, ``"euler_heun"``, ``"log_ode"`` are delegated. A subclass
            of :class:`SDESolver` runs on the fast path like the built-in ones. ``None``:
            ``"euler"`` for Ito, ``"heun"`` for Stratonovich SDEs (a one-time warning where
            torchsde's default differs).
        dt: the step size. Each output interval is cut into ``ceil(span / dt)`` equal steps
            (torchsde instead keeps ``dt`` and interpolates linearly to ``ts``; the two agree
            whenever ``dt`` divides the spacing of ``ts``; ``interpolate=True`` does what
            torchsde does).
        adaptive: adaptive stepping (delegated to torchsde).
        rtol: relative tolerance of adaptive stepping.
        atol: absolute tolerance of adaptive stepping.
        dt_min: smallest step of adaptive stepping.
        logqp: also return the KL rate integral between outputs,
            $\int_{t_{i-1}}^{t_i} \tfrac12 |u|^2 ds$ with $g u = f - h$ (Li et al. 2020).
            With diagonal noise ``bm`` may have shape ``(batch, d)`` or, as torchsde requires
            for its augmented state, ``(batch, d + 1)``.
        options: method options; ``{"grad_free": True}`` for derivative-free Milstein.
        names: torchsde's renaming of the SDE methods, e.g. ``{"drift": "drift_net"}``.
        extra: also return the solver's extra state (torchsde's ``extra``): ``()`` for the
            own methods, which keep none; torchsde's for delegated ones (e.g. the
            ``(f, g, z)`` of ``reversible_heun``).
        extra_solver_state: the extra state to start from (torchsde's; passed through to
            delegated methods; the own methods accept only ``None`` or ``()``).
        generator: random generator for the increments (``None``: the global RNG).
        interpolate: torchsde's fixed grid: steps of exactly ``dt`` from ``ts[0]``
            (accumulated in the dtype of ``ts``, the last clipped at ``ts[-1]``) and outputs
            interpolated linearly between the two grid points around each ``ts[i]``
            (:func:`probgen.sde.compat.torchsde_grid`); with the same ``bm`` the result is
            torchsde's. ``bm`` must then answer arbitrary times (not a ``BrownianGrid``
            unless it holds that grid).
        adjoint: use the stochastic adjoint (``torchsde.sdeint_adjoint``; the SDE must be
            an ``nn.Module``).
        adjoint_method: torchsde method of the adjoint SDE.
        adjoint_params: parameters to differentiate with the adjoint.
        adjoint_options: torchsde options of the adjoint method.
        check_finite: raise :class:`~probgen.exceptions.SolverDivergedError` if an output is
            NaN/inf (checked once, after the loop).
        y0_name: what error messages call ``y0``: a caller passes the name its own user
            knows (e.g. ``generate`` passes ``"x0"``).
        compile: run the fixed-step solve in ``torch.compile``-d chunks of steps
            (:mod:`probgen.sde.compiled`): the same results to float tolerance; the first call
            per SDE object, shape, dtype and grad mode pays the compilation (cached after).
            Own methods only.

    Returns:
        ``ys: (T, batch, d)``; with ``logqp`` the pair ``(ys, log_ratio)``, ``log_ratio:
        (T - 1, batch)``; with ``extra`` the extra solver state last, as torchsde:
        ``(ys, extra_solver_state)`` or ``(ys, log_ratio, extra_solver_state)``.

    Raises:
        TypeError / ValueError: bad ``sde``, ``y0``, ``ts``, ``dt``, ``bm`` shape, an unknown
            method, or a method that does not solve the SDE's type or noise type.
        SolverDivergedError: the state became non-finite.
    """
    owner = sde
    if names:
        sde = _RenamedSDE(sde, dict(names))
    _check_sde(sde)
    _check_state(y0, y0_name, matrix=True)
    ts_list = _check_times(ts, increasing_only=True)
    dt = _check_dt(dt, allow_none=False)
    if method is None:
        from probgen.sde.compat import default_sde_method

        method = default_sde_method(sde)
    solver_cls = _select_sde_solver(method, sde)
    own = solver_cls is not None
    has_g = hasattr(sde, "g") or hasattr(sde, "f_and_g")
    if own and not isinstance(method, str) and (adaptive or adjoint or not has_g):
        raise ValueError(
            f"a solver class ({method.__name__}) runs fixed steps on an SDE with g or f_and_g; "
            "adaptive=True, adjoint=True and g_prod-only SDEs need a torchsde method name"
        )
    if not own or adaptive or adjoint or not has_g:
        if compile:
            raise ValueError(
                f"compile=True runs probgen's fixed-step methods {sorted(SDE_METHODS)}; "
                f"method={method!r} (adaptive={adaptive}, adjoint={adjoint}) is handled by torchsde"
            )
        ys = _sdeint_torchsde(
            sde,
            y0,
            ts_list,
            bm,
            method,
            dt,
            logqp=logqp,
            generator=generator,
            adaptive=adaptive,
            rtol=rtol,
            atol=atol,
            dt_min=dt_min,
            options=options,
            adjoint=adjoint,
            adjoint_method=adjoint_method,
            adjoint_params=adjoint_params,
            adjoint_options=adjoint_options,
            extra=extra,
            extra_solver_state=extra_solver_state,
        )
        if check_finite:
            _raise_if_diverged(
                ys[0] if logqp or extra else ys,
                ts_list,
                f"sdeint(method={method!r}) [torchsde]",
                dt,
            )
        return ys
    if extra_solver_state is not None and len(tuple(extra_solver_state)) != 0:
        raise ValueError(
            f"extra_solver_state must be None or () for method={method!r}, which keeps no extra "
            f"state; got {len(tuple(extra_solver_state))} tensors (torchsde's reversible_heun "
            "state goes with method='reversible_heun')"
        )

    batch, d = y0.shape
    if interpolate:
        from probgen.sde.compat import torchsde_grid

        ts_dtype = ts.dtype if torch.is_tensor(ts) else y0.dtype
        times, out_steps, weights = torchsde_grid(ts_list, dt, ts_dtype)
    else:
        times, counts = step_grid(ts_list, dt)
    grid_t, node_t = _node_times(times, solver_cls.nodes, y0.dtype, y0.device)

    terms = _SDETerms(sde)
    f0, g0 = terms.f_and_g(grid_t[0], y0)
    m = _check_sde_shapes(f0, g0, sde.noise_type, batch, d)
    # With logqp and diagonal noise the augmented state (y, KL) has d + 1 noise channels, the
    # last multiplied by a zero diffusion; torchsde wants bm of shape (batch, d + 1) then, we take both.
    pad_noise = False
    allowed = [(batch, m)]
    if logqp and sde.noise_type == "diagonal":
        allowed.append((batch, m + 1))
    if bm is not None and hasattr(bm, "shape"):
        if tuple(bm.shape) not in allowed:
            raise ValueError(
                f"bm.shape must be (batch, m) = {allowed[0]} for this SDE, got {tuple(bm.shape)}"
            )
        pad_noise = len(allowed) == 2 and tuple(bm.shape) == allowed[0]
    elif bm is not None:
        pad_noise = len(allowed) == 2
    if logqp and sde.noise_type == "diagonal" and bm is None:
        m = d + 1
    if logqp:
        terms = _SDETerms(_LogqpSDE(sde))
        y = torch.cat([y0, y0.new_zeros(batch, 1)], dim=1)
    else:
        y = y0
    solver = solver_cls(terms, options)
    solver.bind_grid(times)
    if not logqp and not compile:
        _prime(solver, "f_and_g", (f0, g0))

    hs = [b - a for a, b in pairwise(times)]
    noise = grid_increments(
        times,
        (batch, m),
        bm=bm,
        time_tensors=grid_t,
        dtype=y0.dtype,
        device=y0.device,
        generator=generator,
    )
    if bm is not None and not hasattr(bm, "shape") and isinstance(noise, list) and noise:
        # a plain callable: check what it returned (a wrong shape would broadcast silently)
        got = tuple(noise[0].shape) if torch.is_tensor(noise[0]) else type(noise[0]).__name__
        if got not in allowed:
            raise ValueError(
                f"bm(t0, t1) must return increments of shape (batch, m) = {allowed[0]} for this "
                f"SDE, got {got}"
            )
        pad_noise = len(allowed) == 2 and got == allowed[0]
    if pad_noise:
        noise = [torch.cat([dW, dW.new_zeros(batch, 1)], dim=1) for dW in noise]
    if compile:
        from probgen.sde.compiled import solve_sde

        ends = out_steps if interpolate else list(itertools.accumulate(counts))
        ys = solve_sde(
            owner, solver_cls, terms, options, (logqp, repr(names)), solver.step, y, ends,
            weights if interpolate else None, node_t, hs, noise,
        )
    elif interpolate:
        from probgen.sde.compat import run_interpolated

        ys = torch.stack(
            run_interpolated(solver.step, y, out_steps, weights, node_t, hs, noise), dim=0
        )
    else:
        ys = torch.stack(_run(solver.step, y, counts, node_t, hs, noise), dim=0)
    if check_finite:
        _raise_if_diverged(ys, ts_list, f"sdeint(method={method!r})", dt)
    if logqp:
        ys, kl = ys[..., :-1], ys[..., -1]
        return (ys, kl[1:] - kl[:-1], ()) if extra else (ys, kl[1:] - kl[:-1])
    return (ys, ()) if extra else ys
