"""Infinite-width (NNGP) kernels of fully connected networks as gpytorch kernels.

A network with ``depth`` hidden layers of width $n \\to \\infty$,

$$z^{(1)} = W^{(1)} x + b^{(1)}, \\qquad z^{(l+1)} = W^{(l+1)} \\phi(z^{(l)}) + b^{(l+1)},$$

with $W^{(l)}_{ij} \\sim \\mathcal N(0, \\sigma_w^2 / n_{l-1})$ and $b^{(l)}_i \\sim \\mathcal N(0, \\sigma_b^2)$,
has a Gaussian-process readout $z^{(L+1)}$ whose covariance follows the recursion
(Neal 1996; Lee et al. 2018, eq. 4; Lee, Yun, Yang, Lee 2022, eq. 2)

$$K^{(0)}(x, x') = \\sigma_b^2 + \\sigma_w^2 \\, x^\\top x' / d, \\qquad
K^{(l)}(x, x') = \\sigma_b^2 + \\sigma_w^2 \\, \\mathbb E_{(u, v) \\sim \\mathcal N(0, \\Lambda^{(l-1)})}
[\\phi(u) \\phi(v)],$$

where $\\Lambda^{(l-1)}$ is the 2x2 covariance of $K^{(l-1)}$ at $(x, x')$. The readout covariance is
$K^{(L)}$. The expectation is in closed form for ReLU (the arc-cosine kernel of Cho & Saul 2009)
and erf (Williams 1997); any other elementwise activation uses Gauss-Hermite quadrature of the
2-D Gaussian expectation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from gpytorch.constraints import Positive
from gpytorch.kernels import Kernel
from torch import Tensor

__all__ = ["ACTIVATIONS", "NNGPKernel", "erf_expectation", "nngp_covariance", "relu_expectation"]

#: Activations available by name for the quadrature path (``relu`` and ``erf`` also have closed forms).
ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": torch.relu,
    "erf": torch.erf,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "gelu": torch.nn.functional.gelu,
    "silu": torch.nn.functional.silu,
    "softplus": torch.nn.functional.softplus,
    "sin": torch.sin,
    "identity": lambda x: x,
}
_CLOSED_FORMS = ("relu", "erf")


class _ArcCosJ1(torch.autograd.Function):
    """$J_1(\\rho) = \\sqrt{1 - \\rho^2} + (\\pi - \\arccos \\rho)\\rho$ with the stable derivative.

    $dJ_1/d\\rho = \\pi - \\arccos\\rho$ is bounded on $[-1, 1]$, although autograd through
    ``arccos`` would give $0 \\cdot \\infty$ at $\\rho = \\pm 1$ (the diagonal of $K(x, x)$).
    """

    @staticmethod
    def forward(ctx, rho: Tensor) -> Tensor:
        theta = torch.arccos(rho)
        ctx.save_for_backward(theta)
        return torch.sqrt((1.0 - rho * rho).clamp_min(0.0)) + (math.pi - theta) * rho

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (theta,) = ctx.saved_tensors
        return grad * (math.pi - theta)


def relu_expectation(k11: Tensor, k12: Tensor, k22: Tensor) -> Tensor:
    """$\\mathbb E[\\mathrm{relu}(u)\\mathrm{relu}(v)]$ for $(u, v) \\sim \\mathcal N(0, [[k_{11}, k_{12}], [k_{12}, k_{22}]])$.

    Arc-cosine kernel of degree 1 (Cho & Saul 2009):
    $\\frac{\\sqrt{k_{11} k_{22}}}{2\\pi}(\\sin\\theta + (\\pi - \\theta)\\cos\\theta)$,
    $\\cos\\theta = k_{12}/\\sqrt{k_{11} k_{22}}$; NaN-free at $\\theta = 0$ (and its gradient too).

    Args:
        k11, k12, k22: broadcastable tensors, $k_{11}, k_{22} \\ge 0$.

    Returns:
        The expectation, broadcast shape.
    """
    norm = torch.sqrt((k11 * k22).clamp_min(torch.finfo(k12.dtype).tiny))
    rho = (k12 / norm).clamp(-1.0, 1.0)
    return norm * _ArcCosJ1.apply(rho) / (2.0 * math.pi)


def erf_expectation(k11: Tensor, k12: Tensor, k22: Tensor) -> Tensor:
    """$\\mathbb E[\\mathrm{erf}(u)\\mathrm{erf}(v)] = \\frac{2}{\\pi}\\arcsin\\frac{2k_{12}}{\\sqrt{(1+2k_{11})(1+2k_{22})}}$ (Williams 1997).

    Args:
        k11, k12, k22: broadcastable tensors, $k_{11}, k_{22} \\ge 0$.

    Returns:
        The expectation, broadcast shape.
    """
    arg = 2.0 * k12 / torch.sqrt((1.0 + 2.0 * k11) * (1.0 + 2.0 * k22))
    return (2.0 / math.pi) * torch.asin(arg.clamp(-1.0, 1.0))


def _hermgauss(num_points: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """Nodes and weights of $\\mathbb E_{z \\sim \\mathcal N(0, 1)}[f(z)] \\approx \\sum_i w_i f(z_i)$."""
    x, w = np.polynomial.hermite.hermgauss(num_points)
    z = torch.as_tensor(x * math.sqrt(2.0), dtype=dtype, device=device)
    w = torch.as_tensor(w / math.sqrt(math.pi), dtype=dtype, device=device)
    return z, w


def _derivative(phi: Callable[[Tensor], Tensor], order: int) -> Callable[[Tensor], Tensor]:
    """Elementwise derivative (``order`` 1 or 2) of an elementwise function, by autograd."""

    def deriv(t: Tensor) -> Tensor:
        with torch.enable_grad():
            t = t.detach().requires_grad_(True)
            d = phi(t)
            for _ in range(order):
                if not d.requires_grad:
                    return torch.zeros_like(t).detach()
                (d,) = torch.autograd.grad(d.sum(), t, create_graph=True, allow_unused=True)
                if d is None:
                    return torch.zeros_like(t).detach()
            return d.detach()

    return deriv


def _gh_pair(f, g, k11: Tensor, k12: Tensor, k22: Tensor, z: Tensor, w: Tensor) -> Tensor:
    r"""$\mathbb E[f(u) g(v)]$ by 2-D Gauss-Hermite (no autograd through the square roots)."""
    s11 = torch.sqrt(k11.clamp_min(0.0))
    s22 = torch.sqrt(k22.clamp_min(0.0))
    norm = (s11 * s22).clamp_min(torch.finfo(k12.dtype).tiny)
    rho = (k12 / norm).clamp(-1.0, 1.0)
    comp = torch.sqrt((1.0 - rho * rho).clamp_min(0.0))
    a = f(s11.unsqueeze(-1) * z)  # (..., n, 1, Q)
    # v_ij = s22 (rho z_i + comp z_j): (..., n, m, Q_i, Q_j)
    v = s22[..., None, None] * (rho[..., None, None] * z[:, None] + comp[..., None, None] * z[None, :])
    inner = (g(v) * w).sum(-1)  # (..., n, m, Q_i)
    return (a * inner * w).sum(-1)


def _reduce_to(grad: Tensor, shape: torch.Size) -> Tensor:
    while grad.dim() > len(shape):
        grad = grad.sum(0)
    for i, size in enumerate(shape):
        if size == 1 and grad.shape[i] != 1:
            grad = grad.sum(i, keepdim=True)
    return grad


class _QuadratureExpectation(torch.autograd.Function):
    """$\\mathbb E[\\phi(u)\\phi(v)]$ with gradients from Price's theorem.

    $\\partial_{k_{12}} \\mathbb E[\\phi(u)\\phi(v)] = \\mathbb E[\\phi'(u)\\phi'(v)]$ and
    $\\partial_{k_{11}} = \tfrac12 \\mathbb E[\\phi''(u)\\phi(v)]$, each by the same quadrature: unlike
    autograd through $\\sqrt{1 - \rho^2}$, these stay finite at $\rho = 1$ (the diagonal).
    """

    @staticmethod
    def forward(ctx, k11, k12, k22, phi, num_points):
        z, w = _hermgauss(num_points, k12.dtype, k12.device)
        ctx.save_for_backward(k11, k12, k22)
        ctx.phi, ctx.num_points = phi, num_points
        return _gh_pair(phi, phi, k11, k12, k22, z, w)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        k11, k12, k22 = ctx.saved_tensors
        phi = ctx.phi
        z, w = _hermgauss(ctx.num_points, k12.dtype, k12.device)
        d1, d2 = _derivative(phi, 1), _derivative(phi, 2)
        g11 = g12 = g22 = None
        if ctx.needs_input_grad[1]:
            g12 = grad * _gh_pair(d1, d1, k11, k12, k22, z, w)
        if ctx.needs_input_grad[0]:
            g11 = _reduce_to(grad * 0.5 * _gh_pair(d2, phi, k11, k12, k22, z, w), k11.shape)
        if ctx.needs_input_grad[2]:
            g22 = _reduce_to(grad * 0.5 * _gh_pair(phi, d2, k11, k12, k22, z, w), k22.shape)
        return g11, g12, g22, None, None


def quadrature_expectation(
    phi: Callable[[Tensor], Tensor], k11: Tensor, k12: Tensor, k22: Tensor, num_points: int = 64
) -> Tensor:
    """$\\mathbb E[\\phi(u)\\phi(v)]$ by 2-D Gauss-Hermite quadrature (``num_points`` per dimension).

    Writes $u = \\sqrt{k_{11}} z_1$, $v = \\sqrt{k_{22}}(\rho z_1 + \\sqrt{1-\rho^2} z_2)$ with
    $z_1, z_2$ independent standard normals. Exact for polynomials of degree $< 2\\,$``num_points``;
    converges slowly for non-smooth $\\phi$ (ReLU: use the closed form) and for saturating
    activations at large variances. Gradients use Price's theorem (see
    :class:`_QuadratureExpectation`) and need a twice-differentiable $\\phi$.

    Args:
        phi: elementwise activation.
        k11: ``(..., n, 1)``; k12: ``(..., n, m)``; k22: ``(..., 1, m)``.
        num_points: Gauss-Hermite points per dimension.

    Returns:
        ``(..., n, m)``; memory ``n * m * num_points**2``.
    """
    batch = torch.broadcast_shapes(k11.shape, k12.shape, k22.shape)
    return _QuadratureExpectation.apply(k11, k12.expand(batch), k22, phi, num_points)


def _variance_step(phi_name: str | None, phi: Callable, k: Tensor, num_points: int) -> Tensor:
    """$\\mathbb E[\\phi(u)^2]$ for $u \\sim \\mathcal N(0, k)$ (the diagonal of the recursion)."""
    if phi_name == "relu":
        return 0.5 * k
    if phi_name == "erf":
        return (2.0 / math.pi) * torch.asin(2.0 * k / (1.0 + 2.0 * k))
    z, w = _hermgauss(num_points, k.dtype, k.device)
    return (phi(torch.sqrt(k.clamp_min(0.0)).unsqueeze(-1) * z) ** 2 * w).sum(-1)


def nngp_covariance(
    x1: Tensor,
    x2: Tensor,
    weight_var: Tensor,
    bias_var: Tensor,
    activation: str | Callable[[Tensor], Tensor] = "relu",
    diag: bool = False,
    method: str = "auto",
    num_points: int = 64,
) -> Tensor:
    """The NNGP readout covariance of a fully connected network (module docstring recursion).

    Args:
        x1: ``(..., n, d)``; x2: ``(..., m, d)`` (``m == n`` when ``diag``).
        weight_var: ``(..., L + 1)`` variances $\\sigma_w^2$ of the ``L`` hidden layers and the
            readout (``L = depth``), broadcastable against the batch shape of ``x1``.
        bias_var: ``(..., L + 1)`` bias variances $\\sigma_b^2$, same layout.
        activation: ``"relu"``, ``"erf"``, another key of :data:`ACTIVATIONS` or a callable.
        diag: return only $K(x1_i, x2_i)$, shape ``(..., n)``.
        method: ``"auto"`` (closed form where one exists) or ``"quadrature"``.
        num_points: Gauss-Hermite points per dimension for the quadrature path.

    Returns:
        ``(..., n, m)``, or ``(..., n)`` if ``diag``.
    """
    if callable(activation):
        phi_name, phi = None, activation
    else:
        phi_name, phi = activation, ACTIVATIONS[activation]
    closed = method == "auto" and phi_name in _CLOSED_FORMS
    depth = weight_var.shape[-1] - 1
    d = x1.shape[-1]
    wv = [weight_var[..., i] for i in range(depth + 1)]
    bv = [bias_var[..., i] for i in range(depth + 1)]

    sq1 = x1.pow(2).sum(-1) / d  # (..., n)
    sq2 = x2.pow(2).sum(-1) / d  # (..., m)
    k11 = bv[0].unsqueeze(-1) + wv[0].unsqueeze(-1) * sq1
    k22 = bv[0].unsqueeze(-1) + wv[0].unsqueeze(-1) * sq2
    if diag:
        k12 = bv[0].unsqueeze(-1) + wv[0].unsqueeze(-1) * (x1 * x2).sum(-1) / d
    else:
        k12 = bv[0][..., None, None] + wv[0][..., None, None] * (x1 @ x2.transpose(-1, -2)) / d

    for layer in range(1, depth + 1):
        if diag:
            a, c = k11, k22
        else:
            a, c = k11.unsqueeze(-1), k22.unsqueeze(-2)
        if closed and phi_name == "relu":
            e12 = relu_expectation(a, k12, c)
        elif closed and phi_name == "erf":
            e12 = erf_expectation(a, k12, c)
        elif diag:
            e12 = quadrature_expectation(phi, a[..., None, None], k12[..., None, None], c[..., None, None],
                                         num_points)[..., 0, 0]
        else:
            e12 = quadrature_expectation(phi, a, k12, c, num_points)
        name = phi_name if closed else None
        e11 = _variance_step(name, phi, k11, num_points)
        e22 = _variance_step(name, phi, k22, num_points)
        w_l, b_l = wv[layer], bv[layer]
        if diag:
            k12 = b_l.unsqueeze(-1) + w_l.unsqueeze(-1) * e12
        else:
            k12 = b_l[..., None, None] + w_l[..., None, None] * e12
        k11 = b_l.unsqueeze(-1) + w_l.unsqueeze(-1) * e11
        k22 = b_l.unsqueeze(-1) + w_l.unsqueeze(-1) * e22
    return k12


def _as_layer_tensor(value, name: str, num_layers: int) -> Tensor:
    t = torch.as_tensor(value, dtype=torch.get_default_dtype()).flatten()
    if t.numel() not in (1, num_layers):
        raise ValueError(
            f"{name} must be a positive scalar or a sequence of depth + 1 = {num_layers} values, "
            f"got {t.numel()} values"
        )
    return t


class NNGPKernel(Kernel):
    """Infinite-width kernel of a fully connected network: the readout's covariance.

    ``depth`` hidden layers, then the readout; every layer has $W \\sim \\mathcal N(0,
    \\sigma_w^2/\\mathrm{fan\\_in})$ and $b \\sim \\mathcal N(0, \\sigma_b^2)$, so
    ``kernel(x1, x2).to_dense()`` is the covariance of that network's readout at infinite width
    (module docstring; Lee, Yun, Yang, Lee 2022, eq. 2). A scale prior on the readout (the scale
    mixture) multiplies this kernel by $\\sigma^2$: see :class:`~probgen.nngp.StudentTProcess`.

    Args:
        depth: number of hidden layers, >= 0 (``0`` gives the linear kernel).
        activation: ``"relu"`` (arc-cosine closed form), ``"erf"`` (closed form), another key of
            :data:`ACTIVATIONS` (Gauss-Hermite quadrature), or a callable (quadrature; such a
            kernel cannot be pickled unless the callable can).
        weight_var: $\\sigma_w^2 > 0$: a scalar shared by all layers, or ``depth + 1`` values
            (hidden layers first, readout last).
        bias_var: $\\sigma_b^2 \\ge 0$, same layout as ``weight_var``.
        per_layer: learn one variance per layer (``depth + 1``) instead of one shared value;
            implied when ``weight_var`` or ``bias_var`` is given per layer.
        method: ``"auto"`` (closed form where available) or ``"quadrature"`` (force quadrature).
        num_quadrature_points: Gauss-Hermite points per dimension.
        block_size: rows of ``x1`` per block; ``None`` chooses blocks that keep intermediates at
            about ``2**24`` elements (the quadrature path holds ``n * m * points**2`` values).
        batch_shape: gpytorch batch shape of the hyperparameters.
        **kwargs: passed to :class:`gpytorch.kernels.Kernel` (e.g. ``active_dims``).

    Shapes:
        ``x1: (*batch, n, d)``, ``x2: (*batch, m, d)`` give ``(*batch, n, m)``; ``diag=True`` gives
        ``(*batch, n)``.
    """

    has_lengthscale = False

    def __init__(
        self,
        depth: int = 1,
        activation: str | Callable[[Tensor], Tensor] = "relu",
        weight_var: float | Sequence[float] = 2.0,
        bias_var: float | Sequence[float] = 0.0,
        per_layer: bool = False,
        method: str = "auto",
        num_quadrature_points: int = 64,
        block_size: int | None = None,
        batch_shape: torch.Size | None = None,
        **kwargs,
    ) -> None:
        super().__init__(batch_shape=batch_shape, **kwargs)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise ValueError(f"depth must be an integer >= 0, got {depth!r}")
        if isinstance(activation, str) and activation not in ACTIVATIONS:
            raise ValueError(f"activation must be a callable or one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if not isinstance(activation, str) and not callable(activation):
            raise TypeError(f"activation must be a string or a callable, got {type(activation).__name__}")
        if method not in ("auto", "quadrature"):
            raise ValueError(f"method must be 'auto' or 'quadrature', got {method!r}")
        if num_quadrature_points < 2:
            raise ValueError(f"num_quadrature_points must be >= 2, got {num_quadrature_points}")
        if block_size is not None and block_size < 1:
            raise ValueError(f"block_size must be a positive integer or None, got {block_size}")
        num_layers = depth + 1
        wv = _as_layer_tensor(weight_var, "weight_var", num_layers)
        bv = _as_layer_tensor(bias_var, "bias_var", num_layers)
        if (wv <= 0).any() or not torch.isfinite(wv).all():
            raise ValueError(f"weight_var must be positive and finite, got {wv.tolist()}")
        if (bv < 0).any() or not torch.isfinite(bv).all():
            raise ValueError(f"bias_var must be >= 0 and finite, got {bv.tolist()}")
        per_layer = per_layer or wv.numel() > 1 or bv.numel() > 1
        width = num_layers if per_layer else 1
        wv, bv = wv.expand(width).clone(), bv.expand(width).clone()
        self.depth = depth
        self.activation = activation
        self.per_layer = per_layer
        self.method = method
        self.num_quadrature_points = num_quadrature_points
        self.block_size = block_size
        self.register_parameter("raw_weight_var", torch.nn.Parameter(torch.zeros(*self.batch_shape, width)))
        self.register_parameter("raw_bias_var", torch.nn.Parameter(torch.zeros(*self.batch_shape, width)))
        self.register_constraint("raw_weight_var", Positive())
        self.register_constraint("raw_bias_var", Positive())
        self.weight_var = wv
        self.bias_var = bv

    # -- hyperparameters ----------------------------------------------------------------
    @property
    def weight_var(self) -> Tensor:
        """$\\sigma_w^2$, shape ``(*batch_shape, 1 or depth + 1)``."""
        return self.raw_weight_var_constraint.transform(self.raw_weight_var)

    @weight_var.setter
    def weight_var(self, value) -> None:
        value = torch.as_tensor(value, dtype=self.raw_weight_var.dtype, device=self.raw_weight_var.device)
        self.initialize(raw_weight_var=self.raw_weight_var_constraint.inverse_transform(
            value.expand_as(self.raw_weight_var)))

    @property
    def bias_var(self) -> Tensor:
        """$\\sigma_b^2$, shape ``(*batch_shape, 1 or depth + 1)``."""
        return self.raw_bias_var_constraint.transform(self.raw_bias_var)

    @bias_var.setter
    def bias_var(self, value) -> None:
        value = torch.as_tensor(value, dtype=self.raw_bias_var.dtype, device=self.raw_bias_var.device)
        if (value < 0).any():
            raise ValueError(f"bias_var must be >= 0, got {value.tolist()}")
        # softplus(-50) ~ 2e-22: "no bias" keeps a finite raw value
        raw = self.raw_bias_var_constraint.inverse_transform(value.expand_as(self.raw_bias_var))
        self.initialize(raw_bias_var=raw.clamp_min(-50.0))

    def layer_variances(self) -> tuple[Tensor, Tensor]:
        """Per-layer ``(weight_var, bias_var)``, each ``(*batch_shape, depth + 1)``."""
        shape = (*self.batch_shape, self.depth + 1)
        return self.weight_var.expand(shape), self.bias_var.expand(shape)

    # -- kernel ---------------------------------------------------------------------------
    def forward(self, x1: Tensor, x2: Tensor, diag: bool = False, last_dim_is_batch: bool = False,
                **params) -> Tensor:
        if last_dim_is_batch:
            x1 = x1.transpose(-1, -2).unsqueeze(-1)
            x2 = x2.transpose(-1, -2).unsqueeze(-1)
        wv, bv = self.layer_variances()
        wv, bv = wv.to(x1.dtype), bv.to(x1.dtype)
        if last_dim_is_batch:
            wv, bv = wv.unsqueeze(-2), bv.unsqueeze(-2)
        batch = torch.broadcast_shapes(x1.shape[:-2], x2.shape[:-2], wv.shape[:-1])
        x1 = x1.expand(*batch, *x1.shape[-2:])
        x2 = x2.expand(*batch, *x2.shape[-2:])
        wv = wv.expand(*batch, wv.shape[-1])
        bv = bv.expand(*batch, bv.shape[-1])
        kw = dict(activation=self.activation, method=self.method, num_points=self.num_quadrature_points)
        if diag:
            return nngp_covariance(x1, x2, wv, bv, diag=True, **kw)
        n, m = x1.shape[-2], x2.shape[-2]
        rows = self.block_size or self._auto_block_rows(m, batch)
        if rows >= n:
            return nngp_covariance(x1, x2, wv, bv, **kw)
        blocks = [nngp_covariance(x1[..., i : i + rows, :], x2, wv, bv, **kw) for i in range(0, n, rows)]
        return torch.cat(blocks, dim=-2)

    def _auto_block_rows(self, m: int, batch: torch.Size) -> int:
        closed = self.method == "auto" and isinstance(self.activation, str) and self.activation in _CLOSED_FORMS
        per_row = m * max(1, math.prod(batch)) * (8 if closed else 2 * self.num_quadrature_points**2)
        return max(1, (1 << 24) // per_row)
