"""The solves handed to torchsde (other methods, adaptive stepping, the adjoint) and torchdiffeq.

torchsde: ``srk``, ``midpoint``, ``reversible_heun``, ``euler_heun``, ``log_ode``,
``adaptive=True`` and ``adjoint=True`` (:func:`_sdeint_torchsde`). torchdiffeq: the adaptive
``odeint`` methods (``dopri5``, ...), ``event_fn`` and gradients with respect to ``ts``
(:func:`_odeint_torchdiffeq`, :func:`_odeint_torchdiffeq_only`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from probgen.exceptions import SolverDivergedError
from probgen.sde.grid import _check_dt
from probgen.sde.loop import _raise_if_diverged
from probgen.sde.ode_solvers import ODE_METHODS, ODESolver

_TORCHSDE_METHODS = (
    "srk",
    "midpoint",
    "reversible_heun",
    "adjoint_reversible_heun",
    "euler_heun",
    "log_ode",
)


def _torchsde_entropy(generator: torch.Generator | None) -> int:
    device = generator.device if generator is not None else "cpu"
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=device).item())


def _sdeint_torchsde(
    sde,
    y0,
    ts,
    bm,
    method,
    dt,
    *,
    logqp,
    generator,
    adaptive,
    rtol,
    atol,
    dt_min,
    options,
    adjoint,
    adjoint_method,
    adjoint_params,
    adjoint_options,
    extra=False,
    extra_solver_state=None,
):
    import torchsde

    ts_t = torch.as_tensor(ts, dtype=y0.dtype, device=y0.device)
    if bm is None:
        if sde.noise_type == "diagonal":
            # with logqp torchsde integrates (y, KL) with diagonal noise of size d + 1
            m = y0.shape[1] + (1 if logqp else 0)
        elif sde.noise_type == "scalar":
            m = 1
        elif hasattr(sde, "g") or hasattr(sde, "f_and_g"):
            g0 = sde.g(ts_t[0], y0) if hasattr(sde, "g") else sde.f_and_g(ts_t[0], y0)[1]
            m = g0.shape[-1]
        else:
            raise ValueError("pass bm: the noise dimension of a g_prod-only SDE cannot be inferred")
        methods = {method, adjoint_method}
        levy = "foster" if "log_ode" in methods else "space-time" if "srk" in methods else "none"
        bm = torchsde.BrownianInterval(
            t0=ts[0],
            t1=ts[-1],
            size=(y0.shape[0], m),
            dtype=y0.dtype,
            device=y0.device,
            levy_area_approximation=levy,
            entropy=_torchsde_entropy(generator),
        )
    kwargs = {
        "bm": bm,
        "method": method,
        "dt": dt,
        "adaptive": adaptive,
        "rtol": rtol,
        "atol": atol,
        "dt_min": dt_min,
        "options": options,
        "logqp": logqp,
        "extra": extra,
        "extra_solver_state": extra_solver_state,
    }
    if adjoint:
        if not isinstance(sde, torch.nn.Module):
            raise TypeError(
                "adjoint=True needs the SDE to be a torch.nn.Module (torchsde.sdeint_adjoint)"
            )
        return torchsde.sdeint_adjoint(
            sde,
            y0,
            ts_t,
            adjoint_method=adjoint_method,
            adjoint_params=adjoint_params,
            adjoint_options=adjoint_options,
            **kwargs,
        )
    return torchsde.sdeint(sde, y0, ts_t, **kwargs)


def _odeint_torchdiffeq(
    func, y0, ts_list, method, dt, *, rtol, atol, options, adjoint, adjoint_params
) -> tuple[Tensor, int]:
    """An adaptive ``odeint`` method (``dopri5``, ...) by torchdiffeq; ``(ys, nfe)``."""
    import torchdiffeq

    try:
        from torchdiffeq._impl.odeint import SOLVERS as torchdiffeq_methods
    except ImportError:  # pragma: no cover - private name moved: let torchdiffeq check
        torchdiffeq_methods = None
    if torchdiffeq_methods is not None and method not in torchdiffeq_methods:
        raise ValueError(
            f"method={method!r} is unknown; allowed: {sorted([*ODE_METHODS, 'rk38'])} (fixed step) or a "
            f"torchdiffeq method such as 'dopri5' ({sorted(torchdiffeq_methods)})"
        )
    nfe_box = [0]

    def counted(t: Tensor, y: Tensor) -> Tensor:
        nfe_box[0] += 1
        return func(t, y)

    opts = dict(options or {})
    if dt is not None:
        opts.setdefault("first_step", _check_dt(dt, allow_none=False))
    ts_t = torch.as_tensor(ts_list, dtype=y0.dtype, device=y0.device)
    try:
        if adjoint:
            if not isinstance(func, torch.nn.Module):
                raise TypeError("adjoint=True needs func to be a torch.nn.Module")
            module = _CountedModule(func, nfe_box)
            params = (
                tuple(func.parameters()) if adjoint_params is None else tuple(adjoint_params)
            )
            ys = torchdiffeq.odeint_adjoint(
                module,
                y0,
                ts_t,
                rtol=rtol,
                atol=atol,
                method=method,
                options=opts,
                adjoint_params=params,
            )
        else:
            ys = torchdiffeq.odeint(
                counted, y0, ts_t, rtol=rtol, atol=atol, method=method, options=opts
            )
    except AssertionError as e:
        if "underflow" in str(e):
            raise SolverDivergedError(
                f"odeint(method={method!r}): the adaptive step size underflowed ({e}); the ODE is stiff or "
                "blows up: loosen rtol/atol or check func"
            ) from e
        raise
    return ys, nfe_box[0]

def _odeint_torchdiffeq_only(
    func, y0, ts, method, solver_cls, dt, event_fn, *, rtol, atol, options, adjoint,
    adjoint_params, return_nfe, check_finite,
):
    """The solves that only torchdiffeq does: ``event_fn`` and gradients with respect to ``ts``."""
    import torchdiffeq

    from probgen.sde.compat import torchdiffeq_method

    why = "event_fn" if event_fn is not None else "a solve with ts.requires_grad"
    opts = dict(options or {})
    if solver_cls is not None:
        if solver_cls not in (ODE_METHODS.get(method), _compat_rk38()):
            raise TypeError(
                f"{why} is handled by torchdiffeq and needs a method name, got {method!r}"
            )
        name = torchdiffeq_method(method, why)
        if dt is not None:
            if "step_size" in opts:
                raise ValueError(f"pass either dt={dt} or options['step_size'], not both")
            opts["step_size"] = _check_dt(dt, allow_none=False)
    else:
        name = method
        if dt is not None:
            opts.setdefault("first_step", _check_dt(dt, allow_none=False))
    if not torch.is_tensor(ts):
        ts = torch.as_tensor([float(t) for t in ts], dtype=y0.dtype, device=y0.device)
    if ts.dim() != 1 or len(ts) < 1:
        raise ValueError(f"ts must be a non-empty 1-D tensor, got shape {tuple(ts.shape)}")
    if event_fn is not None and len(ts) == 1:  # torchdiffeq wants (t0, t0 + 1): forward in time
        ts = torch.cat([ts, ts.detach() + 1.0])
    nfe_box = [0]

    def counted(t: Tensor, y: Tensor) -> Tensor:
        nfe_box[0] += 1
        return func(t, y)

    if adjoint:
        if not isinstance(func, torch.nn.Module):
            raise TypeError("adjoint=True needs func to be a torch.nn.Module")
        params = tuple(func.parameters()) if adjoint_params is None else tuple(adjoint_params)
        out = torchdiffeq.odeint_adjoint(
            _CountedModule(func, nfe_box), y0, ts, rtol=rtol, atol=atol, method=name,
            options=opts, event_fn=event_fn, adjoint_params=params,
        )
    else:
        out = torchdiffeq.odeint(
            counted, y0, ts, rtol=rtol, atol=atol, method=name, options=opts, event_fn=event_fn
        )
    ys = out if event_fn is None else out[1]
    if check_finite:
        times = ts.detach().cpu().tolist() if event_fn is None else [float(ts[0]), float(out[0])]
        _raise_if_diverged(ys, times, f"odeint(method={method!r}) [torchdiffeq]", dt)
    if event_fn is None:
        return (ys, nfe_box[0]) if return_nfe else ys
    return (out[0], ys, nfe_box[0]) if return_nfe else (out[0], ys)


def _compat_rk38() -> type[ODESolver]:
    from probgen.sde.compat import RK38

    return RK38


class _CountedModule(torch.nn.Module):
    """Wraps an ODE ``nn.Module`` to count its evaluations (for the adjoint path)."""

    def __init__(self, func: torch.nn.Module, box: list[int]) -> None:
        super().__init__()
        self.func = func
        self.box = box

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        self.box[0] += 1
        return self.func(t, y)
