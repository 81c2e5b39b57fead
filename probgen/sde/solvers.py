r"""Fixed-step SDE and ODE solvers: ``sdeint`` and ``odeint``.

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
import math
from collections.abc import Callable, Sequence
from itertools import islice, pairwise
from typing import Any, ClassVar

import torch
from torch import Tensor

from probgen.exceptions import SolverDivergedError
from probgen import validation
from probgen.sde.noise import grid_increments

__all__ = [
    "NOISE_TYPES",
    "ODE_METHODS",
    "RK4",
    "SDE_METHODS",
    "SDE_TYPES",
    "Euler",
    "EulerMaruyama",
    "Heun",
    "ItoMilstein",
    "ODESolver",
    "SDESolver",
    "StratonovichHeun",
    "StratonovichMilstein",
    "odeint",
    "sdeint",
    "step_grid",
]

NOISE_TYPES = ("diagonal", "additive", "scalar", "general")
SDE_TYPES = ("ito", "stratonovich")
_TORCHSDE_METHODS = (
    "srk",
    "midpoint",
    "reversible_heun",
    "adjoint_reversible_heun",
    "euler_heun",
    "log_ode",
)


# ---------------------------------------------------------------------------------------------
# Noise-type specific products, chosen once per solve.
#   diffuse(y, g, dW) = y + g dW        prod(g, dW) = g dW        vec(g) = g as (batch, d) (m == 1)
# diagonal: g (batch, d), dW (batch, d); scalar: g (batch, d, 1), dW (batch, 1);
# additive / general: g (batch, d, m), dW (batch, m).
# ---------------------------------------------------------------------------------------------


def _diffuse_diagonal(y: Tensor, g: Tensor, dW: Tensor) -> Tensor:
    return torch.addcmul(y, g, dW)


def _diffuse_scalar(y: Tensor, g: Tensor, dW: Tensor) -> Tensor:
    return torch.addcmul(y, g.squeeze(-1), dW)


def _diffuse_matrix(y: Tensor, g: Tensor, dW: Tensor) -> Tensor:
    return torch.baddbmm(y.unsqueeze(-1), g, dW.unsqueeze(-1)).squeeze(-1)


def _prod_diagonal(g: Tensor, dW: Tensor) -> Tensor:
    return g * dW


def _prod_scalar(g: Tensor, dW: Tensor) -> Tensor:
    return g.squeeze(-1) * dW


def _prod_matrix(g: Tensor, dW: Tensor) -> Tensor:
    return torch.bmm(g, dW.unsqueeze(-1)).squeeze(-1)


_DIFFUSE = {
    "diagonal": _diffuse_diagonal,
    "scalar": _diffuse_scalar,
    "additive": _diffuse_matrix,
    "general": _diffuse_matrix,
}
_PROD = {
    "diagonal": _prod_diagonal,
    "scalar": _prod_scalar,
    "additive": _prod_matrix,
    "general": _prod_matrix,
}


class _SDETerms:
    """The SDE's callables, resolved once: ``f_and_g``, ``g`` and the noise-type products."""

    def __init__(self, sde: Any) -> None:
        self.noise_type = sde.noise_type
        f_and_g = getattr(sde, "f_and_g", None)
        if f_and_g is None:
            f, g = sde.f, sde.g

            def f_and_g(t: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
                return f(t, y), g(t, y)

        self.f_and_g = f_and_g
        g = getattr(sde, "g", None)
        if g is None:

            def g(t: Tensor, y: Tensor) -> Tensor:
                return f_and_g(t, y)[1]

        self.g = g
        self.diffuse = _DIFFUSE[sde.noise_type]
        self.prod = _PROD[sde.noise_type]


# ---------------------------------------------------------------------------------------------
# SDE solvers
# ---------------------------------------------------------------------------------------------


class SDESolver:
    r"""A fixed-step SDE solver: declares its orders, SDE type and noise types; one ``step``.

    Attributes:
        strong_order: strong (pathwise) order of convergence; :meth:`strong_order_for` gives it
            per noise type.
        strong_order_by_noise: the noise types whose strong order differs from ``strong_order``
            (Euler-Maruyama: 1.0 for additive noise; Heun: 0.5 for general noise).
        weak_order: weak order (of expectations of smooth functionals).
        sde_type: the calculus the SDE must be written in, ``"ito"`` or ``"stratonovich"``.
        noise_types: the noise types it solves correctly.
        nodes: fractions $c$ of a step at which the solver evaluates the SDE; ``step``
            receives the times $t_k + c h$ as 0-dim tensors in this order.

    A subclass writes ``step`` with the callables bound at construction:
    ``self.f_and_g(t, y) -> (f, g)``, ``self.g(t, y)``, ``self.diffuse(y, g, dW)`` $= y + g\,dW$
    (one fused op for the SDE's noise type), ``self.prod(g, dW)`` $= g\,dW$; and
    ``self.noise_type``, ``self.options``. Pass the class as ``sdeint(..., method=MySolver)``.
    """

    strong_order: float
    weak_order: float
    sde_type: str
    noise_types: tuple[str, ...]
    nodes: tuple[float, ...] = (0.0,)
    strong_order_by_noise: dict[str, float] = {}  # noqa: RUF012 (read-only class table)

    @classmethod
    def strong_order_for(cls, noise_type: str) -> float:
        """Strong order of the method on an SDE of ``noise_type``."""
        if noise_type not in cls.noise_types:
            raise ValueError(f"{cls.__name__} does not solve noise type {noise_type!r}; it supports {cls.noise_types}")
        return cls.strong_order_by_noise.get(noise_type, cls.strong_order)

    def __init__(self, terms: _SDETerms, options: dict[str, Any] | None = None) -> None:
        self.f_and_g = terms.f_and_g
        self.g = terms.g
        self.diffuse = terms.diffuse
        self.prod = terms.prod
        self.noise_type = terms.noise_type
        self.options = dict(options or {})

    def step(self, t: tuple[Tensor, ...], h: float, y: Tensor, dW: Tensor) -> Tensor:
        """Advance ``y: (batch, d)`` over one step of size ``h`` driven by ``dW: (batch, m)``."""
        raise NotImplementedError

    def bind_grid(self, times: list[float]) -> None:
        """Called once before the loop with the step grid (Python floats); ``step`` is then
        called once per grid step, in order. A no-op here; solvers whose step depends on
        where it lands (e.g. :class:`probgen.sde.variational.VariationalEuler`) override it."""

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(sde_type={self.sde_type!r}, strong_order={self.strong_order}, "
            f"weak_order={self.weak_order})"
        )


class EulerMaruyama(SDESolver):
    r"""Euler-Maruyama, $y_{k+1} = y_k + f(t_k, y_k) h + g(t_k, y_k) \Delta W_k$ (Kloeden-Platen 10.2.1).

    Strong order 0.5 (1.0 for additive noise), weak order 1.0; Ito; every noise type.
    """

    strong_order = 0.5
    strong_order_by_noise = {"additive": 1.0}  # noqa: RUF012
    weak_order = 1.0
    sde_type = "ito"
    noise_types = NOISE_TYPES

    def step(self, t: tuple[Tensor, ...], h: float, y: Tensor, dW: Tensor) -> Tensor:
        f, g = self.f_and_g(t[0], y)
        return torch.add(self.diffuse(y, g, dW), f, alpha=h)


class ItoMilstein(SDESolver):
    r"""Milstein for Ito SDEs with commutative (diagonal, scalar, additive) noise (Kloeden-Platen 10.3.1).

    $y_{k+1} = y_k + f h + g \Delta W + \tfrac12 (\partial g\, g)(\Delta W^2 - h)$, where
    $(\partial g\, g)_i = \sum_j g_j \partial_j g_i$ is the Jacobian of the diffusion (as a
    vector; for diagonal noise $g_i$ should depend on $y$ only through $y_i$, as in torchsde)
    applied to the diffusion. By default it comes from autograd: one vector-Jacobian product
    for diagonal noise (the Jacobian is diagonal), a Jacobian-vector product by two reverse-mode
    passes for scalar noise (forward-mode AD is far slower on CPU). ``options={"grad_free": True}``
    uses the difference quotient $(g(y + f h + g \sqrt h) - g(y)) / \sqrt h$ instead
    (torchsde's derivative-free variant). Strong order 1.0, weak order 1.0.
    """

    strong_order = 1.0
    weak_order = 1.0
    sde_type = "ito"
    noise_types = ("diagonal", "scalar", "additive")
    _ito = True

    def __init__(self, terms: _SDETerms, options: dict[str, Any] | None = None) -> None:
        super().__init__(terms, options)
        self.grad_free = bool(self.options.get("grad_free", False))
        self.vec = (lambda g: g.squeeze(-1)) if self.noise_type == "scalar" else (lambda g: g)
        if self.noise_type == "additive":  # dg = 0: Milstein is Euler-Maruyama
            self.step = self._step_additive

    def _step_additive(self, t: tuple[Tensor, ...], h: float, y: Tensor, dW: Tensor) -> Tensor:
        f, g = self.f_and_g(t[0], y)
        return torch.add(self.diffuse(y, g, dW), f, alpha=h)

    def _g_dg(self, t: Tensor, h: float, y: Tensor, f: Tensor, g: Tensor) -> Tensor:
        """$(\\partial g)\\, g$ as a ``(batch, d)`` tensor."""
        gv = self.vec(g)
        if self.grad_free:
            sqrt_h = math.sqrt(h)
            y_shift = torch.add(y, gv, alpha=sqrt_h)
            if self._ito:
                y_shift = torch.add(y_shift, f, alpha=h)
            return (self.vec(self.g(t, y_shift)) - gv) / sqrt_h
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            z = y if y.requires_grad else y.detach().requires_grad_(True)
            gz = self.vec(self.g(t, z))
            if not gz.requires_grad:  # g does not depend on y (nor on parameters)
                return torch.zeros_like(gv)
            if self.noise_type == "diagonal":
                # J is diagonal for diagonal noise, so J g = J^T g: one vjp (as torchsde).
                (vjp,) = torch.autograd.grad(
                    gz, z, gv, create_graph=create_graph, allow_unused=True
                )
                return torch.zeros_like(gv) if vjp is None else vjp
            # Scalar noise: J g by the double-vjp trick (reverse mode twice; forward-mode AD is far
            # slower on CPU for small tensors). u is a dummy cotangent; d/du <J^T u, gv> = J gv.
            u = torch.zeros_like(gz, requires_grad=True)
            (vjp,) = torch.autograd.grad(gz, z, u, create_graph=True, allow_unused=True)
            if vjp is None or not vjp.requires_grad:  # g does not depend on y
                return torch.zeros_like(gv)
            (jvp,) = torch.autograd.grad(vjp, u, gv, create_graph=create_graph, allow_unused=True)
        return torch.zeros_like(gv) if jvp is None else jvp

    def step(self, t: tuple[Tensor, ...], h: float, y: Tensor, dW: Tensor) -> Tensor:
        f, g = self.f_and_g(t[0], y)
        y1 = torch.add(self.diffuse(y, g, dW), f, alpha=h)
        v = dW * dW - h if self._ito else dW * dW
        return torch.addcmul(y1, self._g_dg(t[0], h, y, f, g), v, value=0.5)


class StratonovichMilstein(ItoMilstein):
    r"""Milstein for Stratonovich SDEs: as :class:`ItoMilstein` with $\tfrac12(\partial g\, g)\Delta W^2$.

    Strong order 1.0 for commutative noise; the grad-free variant shifts by $g\sqrt h$ only.
    """

    sde_type = "stratonovich"
    _ito = False


class StratonovichHeun(SDESolver):
    r"""Stochastic Heun (predictor-corrector) for Stratonovich SDEs (Burrage et al. 2004).

    $\tilde y = y_k + f_k h + g_k \Delta W$,
    $y_{k+1} = y_k + \tfrac12 (f_k + f(t_{k+1}, \tilde y)) h + \tfrac12 (g_k + g(t_{k+1}, \tilde y)) \Delta W$.
    Strong order 1.0 for commutative noise (0.5 for general), weak order 1.0.
    """

    strong_order = 1.0
    # without the Levy areas of non-commuting noise, one order is lost (Burrage et al. 2004)
    strong_order_by_noise = {"general": 0.5}  # noqa: RUF012
    weak_order = 1.0
    sde_type = "stratonovich"
    noise_types = NOISE_TYPES
    nodes = (0.0, 1.0)

    def step(self, t: tuple[Tensor, ...], h: float, y: Tensor, dW: Tensor) -> Tensor:
        f0, g0 = self.f_and_g(t[0], y)
        y_pred = torch.add(self.diffuse(y, g0, dW), f0, alpha=h)
        f1, g1 = self.f_and_g(t[1], y_pred)
        # y + (f0 + f1) h / 2 + (g0 + g1) dW / 2 = (y + y_pred + f1 h + g1 dW) / 2: six ops.
        return torch.add(self.diffuse(y + y_pred, g1, dW), f1, alpha=h) * 0.5


SDE_METHODS: dict[str, dict[str, type[SDESolver]]] = {
    "euler": {"ito": EulerMaruyama},
    "milstein": {"ito": ItoMilstein, "stratonovich": StratonovichMilstein},
    "heun": {"stratonovich": StratonovichHeun},
}


# ---------------------------------------------------------------------------------------------
# ODE solvers
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Grid, validation and the loop
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# SDE protocol helpers
# ---------------------------------------------------------------------------------------------


class _RenamedSDE:
    """torchsde's ``names={"drift": ..., "diffusion": ..., "prior_drift": ...}``."""

    _keys: ClassVar[dict[str, str]] = {
        "drift": "f",
        "diffusion": "g",
        "prior_drift": "h",
        "drift_and_diffusion": "f_and_g",
        "diffusion_prod": "g_prod",
        "drift_and_diffusion_prod": "f_and_g_prod",
    }

    def __init__(self, sde: Any, names: dict[str, str]) -> None:
        unknown = set(names) - set(self._keys)
        if unknown:
            raise ValueError(
                f"names has unknown keys {sorted(unknown)}; allowed: {sorted(self._keys)}"
            )
        self.noise_type = getattr(sde, "noise_type", None)
        self.sde_type = getattr(sde, "sde_type", None)
        for attr in self._keys.values():
            if hasattr(sde, attr):
                setattr(self, attr, getattr(sde, attr))
        for key, attr in names.items():
            setattr(self, self._keys[key], getattr(sde, attr))


def _stable_division(a: Tensor, b: Tensor, eps: float = 1e-7) -> Tensor:
    b = torch.where(b.abs().detach() > eps, b, torch.full_like(b, eps) * b.sign())
    return a / b


class _LogqpSDE:
    r"""Augments the state with $\int_0^t \tfrac12 |u|^2 ds$, $u = g^{-1}(f - h)$ (Li et al. 2020, eq. 10).

    The extra coordinate has zero diffusion, so every method integrates it with its own
    drift rule, exactly as torchsde does. $g^{-1}$ is the elementwise inverse for diagonal
    noise and the pseudo-inverse otherwise.
    """

    def __init__(self, sde: Any) -> None:
        self.noise_type, self.sde_type = sde.noise_type, sde.sde_type
        if not hasattr(sde, "h"):
            raise ValueError(
                "logqp=True needs the SDE to define the prior drift h(t, y) (torchsde's latent SDE)"
            )
        terms = _SDETerms(sde)
        self._f, self._h = terms.f_and_g, sde.h
        self.diagonal = sde.noise_type == "diagonal"

    def f_and_g(self, t: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        x = y[:, :-1]
        f, g = self._f(t, x)
        h = self._h(t, x)
        if self.diagonal:
            u = _stable_division(f - h, g)
            g_aug = torch.cat([g, g.new_zeros(g.shape[0], 1)], dim=1)
        else:
            u = torch.linalg.pinv(g).matmul((f - h).unsqueeze(-1)).squeeze(-1)
            g_aug = torch.cat([g, g.new_zeros(g.shape[0], 1, g.shape[2])], dim=1)
        kl_rate = 0.5 * (u * u).sum(dim=1, keepdim=True)
        return torch.cat([f, kl_rate], dim=1), g_aug

    def g(self, t: Tensor, y: Tensor) -> Tensor:
        return self.f_and_g(t, y)[1]


def _check_sde(sde: Any) -> None:
    for attr, allowed in (("noise_type", NOISE_TYPES), ("sde_type", SDE_TYPES)):
        value = getattr(sde, attr, None)
        if value is None:
            raise TypeError(
                f"sde must have the attribute {attr} (one of {allowed}), as torchsde SDEs do"
            )
        if value not in allowed:
            raise ValueError(f"sde.{attr}={value!r} is not one of {allowed}")
    if not (hasattr(sde, "f_and_g") or hasattr(sde, "f") or hasattr(sde, "f_and_g_prod")):
        raise TypeError("sde must define f(t, y) (or f_and_g / f_and_g_prod)")
    if not (
        hasattr(sde, "f_and_g")
        or hasattr(sde, "g")
        or hasattr(sde, "g_prod")
        or hasattr(sde, "f_and_g_prod")
    ):
        raise TypeError("sde must define g(t, y) (or f_and_g / g_prod / f_and_g_prod)")


def _check_sde_shapes(f: Tensor, g: Tensor, noise_type: str, batch: int, d: int) -> int:
    """Check the first drift/diffusion evaluation; return the noise dimension m."""
    if not (torch.is_tensor(f) and torch.is_tensor(g)):
        raise TypeError(
            f"the drift and diffusion must return tensors, got {type(f).__name__}, {type(g).__name__}"
        )
    if tuple(f.shape) != (batch, d):
        raise ValueError(
            f"the drift f(t, y) must have shape (batch, d) = {(batch, d)}, got {tuple(f.shape)}"
        )
    if noise_type == "diagonal":
        if tuple(g.shape) != (batch, d):
            raise ValueError(
                f"with noise_type='diagonal' the diffusion g(t, y) must have shape (batch, d) = {(batch, d)}, "
                f"got {tuple(g.shape)}"
            )
        return d
    if g.dim() != 3 or tuple(g.shape[:2]) != (batch, d):
        raise ValueError(
            f"with noise_type={noise_type!r} the diffusion g(t, y) must have shape (batch, d, m) = "
            f"({batch}, {d}, m), got {tuple(g.shape)}"
        )
    if noise_type == "scalar" and g.shape[2] != 1:
        raise ValueError(
            f"with noise_type='scalar' the diffusion must have m = 1, got shape {tuple(g.shape)}"
        )
    return int(g.shape[2])


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
    on the fast fixed-step path described in :mod:`probgen.sde.solvers`; any other method,
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
        from probgen.sde import compiled

        chunk = compiled.DEFAULT_CHUNK
        key = (solver_cls, repr(sorted((options or {}).items())), logqp, chunk, repr(names))

        def chunk_fn(h: float) -> Callable:
            return compiled.cached_chunk(
                owner, (*key, h), lambda: solver_cls(terms, options).step
            )

        ends = out_steps if interpolate else list(itertools.accumulate(counts))
        noise_t = torch.stack(list(noise)) if len(hs) else None
        nodes = compiled.node_tensor(node_t, len(solver_cls.nodes), y)
        ys = compiled.run_compiled(
            chunk_fn, solver.step, y, ends, weights if interpolate else None, nodes, hs, noise_t, chunk
        )
        ys = torch.stack(ys, dim=0)
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
            from probgen.sde import compiled

            chunk = compiled.DEFAULT_CHUNK

            def chunk_fn(h: float) -> Callable:
                return compiled.cached_chunk(func, (solver_cls, chunk, h), lambda: solver_cls(func).step)

            ends = out_steps if interpolated else list(itertools.accumulate(counts))
            nodes = compiled.node_tensor(node_t, len(solver_cls.nodes), y0)
            ys = compiled.run_compiled(
                chunk_fn, solver.step, y0, ends, weights if interpolated else None, nodes, hs,
                None, chunk, affine=True,
            )
            ys = torch.stack(ys, dim=0)
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
        nfe = nfe_box[0]
    if check_finite:
        _raise_if_diverged(ys, ts_list, f"odeint(method={method!r})", dt)
    return (ys, nfe) if return_nfe else ys


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
