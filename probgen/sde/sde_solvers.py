r"""Fixed-step SDE solvers: small classes that *declare* what they are, one ``step`` each.

Each declares ``strong_order``, ``weak_order``, ``sde_type`` and ``noise_types``, checked
against the SDE once before the loop (:func:`probgen.sde.integrate_sde.sdeint`).

References:
    P. E. Kloeden and E. Platen, *Numerical Solution of Stochastic Differential Equations*
    (1992): Euler-Maruyama (eq. 10.2.1), Milstein (eq. 10.3.1).
    K. Burrage, P. M. Burrage and T. Tian, "Numerical methods for strong solutions of
    stochastic differential equations: an overview", Proc. R. Soc. A 460 (2004): Stratonovich Heun.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from probgen.sde.protocol import NOISE_TYPES, _SDETerms

__all__ = [
    "SDE_METHODS",
    "EulerMaruyama",
    "ItoMilstein",
    "SDESolver",
    "StratonovichHeun",
    "StratonovichMilstein",
]


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
        return self.diffuse(y, g, dW).add_(f, alpha=h)


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
        return self.diffuse(y, g, dW).add_(f, alpha=h)

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
        y1 = self.diffuse(y, g, dW).add_(f, alpha=h)
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
        y_pred = self.diffuse(y, g0, dW).add_(f0, alpha=h)
        f1, g1 = self.f_and_g(t[1], y_pred)
        # y + (f0 + f1) h / 2 + (g0 + g1) dW / 2 = (y + y_pred + f1 h + g1 dW) / 2: six ops.
        return self.diffuse(y + y_pred, g1, dW).add_(f1, alpha=h).mul_(0.5)


SDE_METHODS: dict[str, dict[str, type[SDESolver]]] = {
    "euler": {"ito": EulerMaruyama},
    "milstein": {"ito": ItoMilstein, "stratonovich": StratonovichMilstein},
    "heun": {"stratonovich": StratonovichHeun},
}
