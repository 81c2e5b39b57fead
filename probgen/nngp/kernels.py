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
$K^{(L)}$. The expectation is in closed form for ReLU (the arc-cosine kernel of Cho & Saul 2009),
leaky ReLU and $|x|$ (ABReLU), erf (Williams 1997), GELU (Tsuchida et al. 2020) and sin; any other
elementwise activation uses Gauss-Hermite quadrature of the 2-D Gaussian expectation, with as many
points as the layer's variance needs and the exact gradient of the computed sum.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.utils.checkpoint
from gpytorch.constraints import Positive
from gpytorch.kernels import Kernel
from linear_operator.operators import DenseLinearOperator, LinearOperator
from torch import Tensor

__all__ = [
    "ACTIVATIONS",
    "CLOSED_FORMS",
    "NNGPKernel",
    "RecomputedKernelMatrix",
    "abrelu_expectation",
    "erf_expectation",
    "gelu_expectation",
    "layer_quadrature_points",
    "nngp_covariance",
    "quadrature_expectation",
    "quadrature_points",
    "relu_expectation",
    "sin_expectation",
]

def _leaky_relu(x: Tensor) -> Tensor:
    return torch.nn.functional.leaky_relu(x, LEAKY_RELU_SLOPE)


#: Negative slope of the ``"leaky_relu"`` activation (torch's default).
LEAKY_RELU_SLOPE = 0.01

#: Activations available by name. ``relu``, ``leaky_relu``, ``abs``, ``erf``, ``gelu`` and ``sin``
#: have closed forms (:data:`CLOSED_FORMS`); the others use Gauss-Hermite quadrature.
ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": torch.relu,
    "leaky_relu": _leaky_relu,
    "abs": torch.abs,
    "erf": torch.erf,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "gelu": torch.nn.functional.gelu,
    "silu": torch.nn.functional.silu,
    "softplus": torch.nn.functional.softplus,
    "sin": torch.sin,
    "identity": lambda x: x,
}


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


def abrelu_expectation(k11: Tensor, k12: Tensor, k22: Tensor, a: float, b: float) -> Tensor:
    """$\\mathbb E[\\phi(u)\\phi(v)]$ for $\\phi(x) = a \\min(x, 0) + b \\max(x, 0)$ (ABReLU).

    $\\phi(x) = b\\,\\mathrm{relu}(x) - a\\,\\mathrm{relu}(-x)$ and $(-u, -v)$ has the law of $(u, v)$, so
    $\\mathbb E = (a^2 + b^2) R(k_{12}) - 2ab\\, R(-k_{12})$ with $R$ the arc-cosine kernel
    (:func:`relu_expectation`). Leaky ReLU is $(a, b) = (\\alpha, 1)$, $|x|$ is $(-1, 1)$
    (neural-tangents' ``ABRelu``).

    Args:
        k11, k12, k22: broadcastable tensors, $k_{11}, k_{22} \\ge 0$.
        a, b: slopes for $x < 0$ and $x > 0$.

    Returns:
        The expectation, broadcast shape.
    """
    return (a * a + b * b) * relu_expectation(k11, k12, k22) - 2.0 * a * b * relu_expectation(k11, -k12, k22)


def erf_expectation(k11: Tensor, k12: Tensor, k22: Tensor) -> Tensor:
    """$\\mathbb E[\\mathrm{erf}(u)\\mathrm{erf}(v)] = \\frac{2}{\\pi}\\arcsin\\frac{2k_{12}}{\\sqrt{(1+2k_{11})(1+2k_{22})}}$ (Williams 1997).

    Args:
        k11, k12, k22: broadcastable tensors, $k_{11}, k_{22} \\ge 0$.

    Returns:
        The expectation, broadcast shape.
    """
    arg = 2.0 * k12 / torch.sqrt((1.0 + 2.0 * k11) * (1.0 + 2.0 * k22))
    return (2.0 / math.pi) * torch.asin(arg.clamp(-1.0, 1.0))


def gelu_expectation(k11: Tensor, k12: Tensor, k22: Tensor) -> Tensor:
    """$\\mathbb E[\\mathrm{gelu}(u)\\mathrm{gelu}(v)]$, $\\mathrm{gelu}(x) = x\\Phi(x)$ (Tsuchida et al. 2020, arXiv:2002.08517).

    With $P = (1 + k_{11})(1 + k_{22})$ and $\\delta = \\sqrt{P - k_{12}^2} > 0$:
    $\\frac{k_{12}}4 + \\frac{k_{12}^2 + k_{11}k_{22}\\delta^2}{2\\pi P \\delta}
    + \\frac{k_{12}}{2\\pi}\\arctan\\frac{k_{12}}{\\delta}$ (smooth everywhere, also at $\\rho = 1$).

    Args:
        k11, k12, k22: broadcastable tensors, $k_{11}, k_{22} \\ge 0$.

    Returns:
        The expectation, broadcast shape.
    """
    prod_plus_1 = (1.0 + k11) * (1.0 + k22)
    delta2 = prod_plus_1 - k12 * k12
    delta = torch.sqrt(delta2)
    out = (k12 * k12 + k11 * k22 * delta2) / (prod_plus_1 * delta) + k12 * torch.atan2(k12, delta)
    return out / (2.0 * math.pi) + 0.25 * k12


def sin_expectation(k11: Tensor, k12: Tensor, k22: Tensor) -> Tensor:
    """$\\mathbb E[\\sin u \\sin v] = e^{-(k_{11} + k_{22})/2}\\sinh k_{12}$ (neural-tangents' ``Sin``).

    From $\\sin u \\sin v = \\tfrac12(\\cos(u - v) - \\cos(u + v))$ and $\\mathbb E\\cos w = e^{-\\mathrm{Var}\\,w/2}$.

    Args:
        k11, k12, k22: broadcastable tensors, $k_{11}, k_{22} \\ge 0$.

    Returns:
        The expectation, broadcast shape.
    """
    half_sum = 0.5 * (k11 + k22)
    return 0.5 * (torch.exp(k12 - half_sum) - torch.exp(-k12 - half_sum))


#: Closed-form $\\mathbb E[\\phi(u)\\phi(v)]$ by activation name, each ``fn(k11, k12, k22)``.
CLOSED_FORMS: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "relu": relu_expectation,
    "leaky_relu": lambda k11, k12, k22: abrelu_expectation(k11, k12, k22, LEAKY_RELU_SLOPE, 1.0),
    "abs": lambda k11, k12, k22: abrelu_expectation(k11, k12, k22, -1.0, 1.0),
    "erf": erf_expectation,
    "gelu": gelu_expectation,
    "sin": sin_expectation,
}


def _std_normal_pdf(x: Tensor) -> Tensor:
    return torch.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _jet_tanh(x, order):
    t = torch.tanh(x)
    d1 = 1.0 - t * t
    return (t, d1) if order == 1 else (t, d1, -2.0 * t * d1)


def _jet_sigmoid(x, order):
    s = torch.sigmoid(x)
    d1 = s * (1.0 - s)
    return (s, d1) if order == 1 else (s, d1, d1 * (1.0 - 2.0 * s))


def _jet_softplus(x, order):
    s = torch.sigmoid(x)
    out = (torch.nn.functional.softplus(x), s)
    return out if order == 1 else (*out, s * (1.0 - s))


def _jet_silu(x, order):
    s = torch.sigmoid(x)
    d = s * (1.0 - s)
    out = (x * s, s + x * d)
    return out if order == 1 else (*out, d * (2.0 + x * (1.0 - 2.0 * s)))


def _jet_gelu(x, order):
    pdf = _std_normal_pdf(x)
    cdf = 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))
    out = (x * cdf, cdf + x * pdf)
    return out if order == 1 else (*out, pdf * (2.0 - x * x))


def _jet_erf(x, order):
    d1 = (2.0 / math.sqrt(math.pi)) * torch.exp(-x * x)
    out = (torch.erf(x), d1)
    return out if order == 1 else (*out, -2.0 * x * d1)


def _jet_sin(x, order):
    s = torch.sin(x)
    return (s, torch.cos(x)) if order == 1 else (s, torch.cos(x), -s)


def _jet_identity(x, order):
    out = (x, torch.ones_like(x))
    return out if order == 1 else (*out, torch.zeros_like(x))


def _jet_piecewise_linear(a: float, b: float):
    def jet(x, order):
        slope = torch.where(x > 0, b, a).to(x.dtype)
        out = (slope * x, slope)
        return out if order == 1 else (*out, torch.zeros_like(x))

    return jet


#: $(\phi, \phi'[, \phi''])$ of the named activations, ``jet(x, order)`` with order 1 or 2
#: (exact; the piecewise-linear ones have $\phi'' = 0$ almost everywhere).
_JETS: dict[str, Callable[[Tensor, int], tuple[Tensor, ...]]] = {
    "relu": _jet_piecewise_linear(0.0, 1.0),
    "leaky_relu": _jet_piecewise_linear(LEAKY_RELU_SLOPE, 1.0),
    "abs": _jet_piecewise_linear(-1.0, 1.0),
    "erf": _jet_erf,
    "tanh": _jet_tanh,
    "sigmoid": _jet_sigmoid,
    "gelu": _jet_gelu,
    "silu": _jet_silu,
    "softplus": _jet_softplus,
    "sin": _jet_sin,
    "identity": _jet_identity,
}


def _autograd_jet(phi: Callable[[Tensor], Tensor]) -> Callable[[Tensor, int], tuple[Tensor, ...]]:
    """$(\\phi, \\phi'[, \\phi''])$ of an elementwise callable by autograd (zeros where it is piecewise linear)."""

    def jet(t: Tensor, order: int) -> tuple[Tensor, ...]:
        with torch.enable_grad():
            t = t.detach().requires_grad_(True)
            out = phi(t)
            zeros = torch.zeros_like(t)
            d1 = d2 = None
            if out.requires_grad:
                (d1,) = torch.autograd.grad(out.sum(), t, create_graph=order > 1, allow_unused=True)
            if order > 1 and d1 is not None and d1.requires_grad:
                (d2,) = torch.autograd.grad(d1.sum(), t, allow_unused=True)
            d1 = zeros if d1 is None else d1.detach()
            if order == 1:
                return out.detach(), d1
            return out.detach(), d1, zeros if d2 is None else d2.detach()

    return jet


@functools.lru_cache(maxsize=64)
def _hermgauss_np(num_points: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.hermite.hermgauss(num_points)
    return x * math.sqrt(2.0), w / math.sqrt(math.pi)


def _hermgauss(num_points: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """Nodes and weights of $\\mathbb E_{z \\sim \\mathcal N(0, 1)}[f(z)] \\approx \\sum_i w_i f(z_i)$."""
    z, w = _hermgauss_np(num_points)
    return torch.as_tensor(z, dtype=dtype, device=device), torch.as_tensor(w, dtype=dtype, device=device)


def quadrature_points(max_variance: float, num_points: int = 64, max_points: int = 256) -> int:
    """Gauss-Hermite points per dimension for pre-activation variances up to ``max_variance``.

    A saturating activation such as tanh is analytic in a strip of half-width $\\propto 1/\\sqrt k$
    around the real axis of $z$ (for $u = \\sqrt k z$), so the Gauss-Hermite error falls like
    $\\exp(-c\\sqrt{Q / k})$: the points must grow linearly with the variance $k$ to keep the error.
    The rule is $Q = \\max(Q_0, Q_0 k / 2)$ rounded up to a multiple of 16 and capped at
    ``max_points`` (tanh: relative error of $\\mathbb E[\\tanh^2 u]$ about $10^{-6}$ up to $k = 8$
    with $Q_0 = 64$; at the cap of 256 it is $3 \\cdot 10^{-4}$ at $k = 25$).

    Args:
        max_variance: largest $k_{11}$ or $k_{22}$ entering the layer.
        num_points: $Q_0$, the points used for $k \\le 2$.
        max_points: upper bound (memory and time grow like $Q^2$).

    Returns:
        The number of points.
    """
    if not math.isfinite(max_variance):
        return max(num_points, max_points)
    q = max(num_points, math.ceil(num_points * max_variance / 2.0))
    return max(num_points, min(16 * math.ceil(q / 16), max_points))


#: Elements of the ``(pairs, Q, Q)`` quadrature intermediates processed at once.
_QUADRATURE_CHUNK = 1 << 22


def _quadrature_coordinates(k11: Tensor, k12: Tensor, k22: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """$u = a z_1$, $v = b z_1 + s z_2$ with $a = \\sqrt{k_{11}}$, $b = k_{12}/a$, $s = \\sqrt{k_{22} - b^2}$."""
    a = torch.sqrt(k11.clamp_min(torch.finfo(k11.dtype).tiny))
    b = k12 / a
    s = torch.sqrt((k22 - b * b).clamp_min(0.0))
    return a, b, s


class _QuadratureExpectation(torch.autograd.Function):
    """$\\mathbb E[\\phi(u)\\phi(v)]$ by 2-D Gauss-Hermite, with the exact derivative of that sum.

    The computed value is $Q = \\sum_i w_i \\phi(a z_i) G_i$, $G_i = \\sum_j w_j \\phi(b z_i + s z_j)$
    (:func:`_quadrature_coordinates`). Its derivative follows from
    $\\partial_m G_i = \\sum_j w_j \\phi'(v_{ij})$ and $\\partial_{s^2} G_i = \\frac1{2s}\\sum_j w_j z_j
    \\phi'(v_{ij})$; the nodes are symmetric, so $G_i$ is a smooth function of $s^2$ and at
    $s \\to 0$ (the diagonal, $\\rho = 1$) the latter tends to $\\tfrac12\\phi''(b z_i)$, used below
    $s = \\varepsilon^{1/3}$ (the error of either form is then about $\\varepsilon^{2/3}$). So the
    backward is the gradient of the forward's own value (as neural-tangents' ``ElementwiseNumerical``
    differentiates its quadrature), not a separate quadrature of Price's theorem, whose
    quadrature error differs from the forward's and flipped the sign of $\\partial \\sum K /
    \\partial \\sigma_w^2$ for tanh. Both passes run in chunks of :data:`_QUADRATURE_CHUNK` elements,
    and at most the ``(pairs, Q)`` inner sums $G_i$ (when small) are saved for the backward.
    """

    @staticmethod
    def forward(ctx, k11, k12, k22, phi, jet, num_points):
        shape = torch.broadcast_shapes(k11.shape, k12.shape, k22.shape)
        ctx.phi, ctx.jet, ctx.num_points, ctx.shape = phi, jet, num_points, shape
        z, w = _hermgauss(num_points, k12.dtype, k12.device)
        a, b, s = (t.expand(shape).reshape(-1) for t in _quadrature_coordinates(k11, k12, k22))
        out = torch.empty(a.shape, dtype=k12.dtype, device=k12.device)
        keep = a.numel() * num_points <= _QUADRATURE_CHUNK * 4  # else the backward recomputes G_i
        inner = torch.empty(*a.shape, num_points, dtype=k12.dtype, device=k12.device) if keep else None
        step = max(1, _QUADRATURE_CHUNK // num_points**2)
        for i in range(0, a.numel(), step):
            ai, bi, si = a[i : i + step, None], b[i : i + step, None, None], s[i : i + step, None, None]
            g = phi(bi * z[:, None] + si * z) @ w  # (chunk, Q): G_i
            out[i : i + step] = (phi(ai * z) * g) @ w
            if keep:
                inner[i : i + step] = g
        ctx.save_for_backward(k11, k12, k22, inner)
        return out.view(shape)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        k11, k12, k22, inner = ctx.saved_tensors
        jet, shape = ctx.jet, ctx.shape
        z, w = _hermgauss(ctx.num_points, k12.dtype, k12.device)
        a, b, s = (t.expand(shape).reshape(-1) for t in _quadrature_coordinates(k11, k12, k22))
        grad = grad.expand(shape).reshape(-1)
        tau = torch.finfo(k12.dtype).eps ** (1.0 / 3.0)
        g11, g12, g22 = (torch.empty_like(a) for _ in range(3))
        step = max(1, _QUADRATURE_CHUNK // ctx.num_points**2)
        w_wz = torch.stack([w, w * z], -1)  # (Q, 2)
        for i in range(0, a.numel(), step):
            sl = slice(i, i + step)
            ai, bi, si = a[sl, None], b[sl, None], s[sl, None]
            p1, d1u = jet(ai * z, 1)  # (chunk, Q)
            centre = bi * z  # v at s = 0
            phi_v, d1v = jet(centre[..., None] + si[..., None] * z, 1)  # (chunk, Q, Q)
            sums = d1v @ w_wz  # (chunk, Q, 2)
            dm, dz = sums[..., 0], sums[..., 1]
            g = inner[sl] if inner is not None else phi_v @ w
            small = si < tau
            ds = torch.where(small, 0.5 * jet(centre, 2)[2], dz / (2.0 * torch.where(small, 1.0, si)))  # dG/ds^2
            gi, ai = grad[sl], ai[:, 0]
            g22[sl] = gi * ((p1 * ds) @ w)
            g12[sl] = gi * ((p1 * (z * dm - 2.0 * bi * ds)) @ w) / ai
            g11[sl] = gi * (((z * d1u * g) @ w) / (2.0 * ai)
                            + ((p1 * (-0.5 * bi * z * dm + bi * bi * ds)) @ w) / (ai * ai))
        out = []
        for t, gt, need in ((k11, g11, 0), (k12, g12, 1), (k22, g22, 2)):
            out.append(_reduce_to(gt.view(shape), t.shape) if ctx.needs_input_grad[need] else None)
        return out[0], out[1], out[2], None, None, None


def _reduce_to(grad: Tensor, shape: torch.Size) -> Tensor:
    while grad.dim() > len(shape):
        grad = grad.sum(0)
    for i, size in enumerate(shape):
        if size == 1 and grad.shape[i] != 1:
            grad = grad.sum(i, keepdim=True)
    return grad


def _activation(activation: str | Callable[[Tensor], Tensor]):
    """``(name or None, phi, jet)`` of an activation given by name or callable."""
    if callable(activation):
        return None, activation, _autograd_jet(activation)
    return activation, ACTIVATIONS[activation], _JETS[activation]


def quadrature_expectation(
    phi: str | Callable[[Tensor], Tensor], k11: Tensor, k12: Tensor, k22: Tensor, num_points: int = 64
) -> Tensor:
    """$\\mathbb E[\\phi(u)\\phi(v)]$ by 2-D Gauss-Hermite quadrature (``num_points`` per dimension).

    Writes $u = \\sqrt{k_{11}} z_1$, $v = b z_1 + \\sqrt{k_{22} - b^2} z_2$, $b = k_{12}/\\sqrt{k_{11}}$,
    with $z_1, z_2$ independent standard normals. Exact for polynomials of degree $< 2\\,$``num_points``;
    converges slowly for non-smooth $\\phi$ (ReLU: use the closed form) and for saturating
    activations at large variances (see :func:`quadrature_points`). The gradient is the exact
    gradient of the computed sum (:class:`_QuadratureExpectation`), finite at $\\rho = 1$.

    Args:
        phi: an activation name (key of :data:`ACTIVATIONS`) or an elementwise callable
            (its derivatives then come from autograd).
        k11: ``(..., n, 1)``; k12: ``(..., n, m)``; k22: ``(..., 1, m)`` (any broadcastable shapes).
        num_points: Gauss-Hermite points per dimension.

    Returns:
        The broadcast shape; intermediates are processed in chunks of about ``2**22`` elements.
    """
    _, fn, jet = _activation(phi)
    return _QuadratureExpectation.apply(k11, k12, k22, fn, jet, num_points)


def _variance_step(phi_name: str | None, phi: Callable, k: Tensor, num_points: int) -> Tensor:
    """$\\mathbb E[\\phi(u)^2]$ for $u \\sim \\mathcal N(0, k)$ (the diagonal of the recursion).

    ``phi_name`` names a closed form (``None``: 1-D Gauss-Hermite with ``num_points``, which
    equals the 2-D rule at $\\rho = 1$, so the diagonal of the full matrix and ``diag=True`` agree).
    """
    if phi_name == "relu":
        return 0.5 * k
    if phi_name == "erf":
        return (2.0 / math.pi) * torch.asin(2.0 * k / (1.0 + 2.0 * k))
    if phi_name is not None:
        return CLOSED_FORMS[phi_name](k, k, k)
    z, w = _hermgauss(num_points, k.dtype, k.device)
    return (phi(torch.sqrt(k.clamp_min(0.0)).unsqueeze(-1) * z) ** 2) @ w


def layer_quadrature_points(
    x: Sequence[Tensor],
    weight_var: Tensor,
    bias_var: Tensor,
    activation: str | Callable[[Tensor], Tensor],
    num_points: int = 64,
    max_points: int = 256,
) -> list[int]:
    """Gauss-Hermite points for each hidden layer (:func:`quadrature_points`), from the largest
    pre-activation variance over all inputs in ``x`` (the diagonal recursion, $O(n)$).

    Choosing them once per kernel call keeps every block of a blocked kernel matrix on the same rule.

    Returns:
        ``depth`` integers.
    """
    _, phi, _ = _activation(activation)
    depth = weight_var.shape[-1] - 1
    with torch.no_grad():
        ks = [bias_var[..., 0].unsqueeze(-1) + weight_var[..., 0].unsqueeze(-1) * t.pow(2).sum(-1) / t.shape[-1]
              for t in x]
        points = []
        for layer in range(1, depth + 1):
            kmax = max(float(k.max()) if k.numel() else 0.0 for k in ks)
            q = quadrature_points(kmax, num_points, max_points)
            points.append(q)
            ks = [bias_var[..., layer].unsqueeze(-1) + weight_var[..., layer].unsqueeze(-1)
                  * _variance_step(None, phi, k, q) for k in ks]
    return points


def nngp_covariance(
    x1: Tensor,
    x2: Tensor,
    weight_var: Tensor,
    bias_var: Tensor,
    activation: str | Callable[[Tensor], Tensor] = "relu",
    diag: bool = False,
    method: str = "auto",
    num_points: int | Sequence[int] = 64,
    max_points: int = 256,
) -> Tensor:
    """The NNGP readout covariance of a fully connected network (module docstring recursion).

    Args:
        x1: ``(..., n, d)``; x2: ``(..., m, d)`` (``m == n`` when ``diag``).
        weight_var: ``(..., L + 1)`` variances $\\sigma_w^2$ of the ``L`` hidden layers and the
            readout (``L = depth``), broadcastable against the batch shape of ``x1``.
        bias_var: ``(..., L + 1)`` bias variances $\\sigma_b^2$, same layout.
        activation: a key of :data:`ACTIVATIONS` or a callable.
        diag: return only $K(x1_i, x2_i)$, shape ``(..., n)``.
        method: ``"auto"`` (closed form where one exists) or ``"quadrature"``.
        num_points: Gauss-Hermite points per dimension for the quadrature path: an integer $Q_0$
            (raised with the layer's largest variance, :func:`layer_quadrature_points`, up to
            ``max_points``), or one integer per hidden layer (used as given).
        max_points: cap of the raised rule.

    Returns:
        ``(..., n, m)``, or ``(..., n)`` if ``diag``.
    """
    if method not in ("auto", "quadrature"):
        raise ValueError(f"method must be 'auto' or 'quadrature', got {method!r}")
    phi_name, phi, jet = _activation(activation)
    closed = CLOSED_FORMS.get(phi_name) if method == "auto" else None
    depth = weight_var.shape[-1] - 1
    if closed is None and isinstance(num_points, int):
        num_points = layer_quadrature_points((x1, x2), weight_var, bias_var, activation, num_points, max_points)
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
        a, c = (k11, k22) if diag else (k11.unsqueeze(-1), k22.unsqueeze(-2))
        if closed is not None:
            e12 = closed(a, k12, c)
            e11 = _variance_step(phi_name, phi, k11, 0)
            e22 = _variance_step(phi_name, phi, k22, 0)
        else:
            q = num_points[layer - 1]
            e12 = _QuadratureExpectation.apply(a, k12, c, phi, jet, q)
            e11 = _variance_step(None, phi, k11, q)
            e22 = _variance_step(None, phi, k22, q)
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
        activation: a key of :data:`ACTIVATIONS` (closed forms for those in
            :data:`CLOSED_FORMS`, Gauss-Hermite quadrature for the others), or a callable
            (quadrature with autograd derivatives; such a kernel cannot be pickled unless the
            callable can).
        weight_var: $\\sigma_w^2 > 0$: a scalar shared by all layers, or ``depth + 1`` values
            (hidden layers first, readout last).
        bias_var: $\\sigma_b^2 \\ge 0$, same layout as ``weight_var``.
        per_layer: learn one variance per layer (``depth + 1``) instead of one shared value;
            implied when ``weight_var`` or ``bias_var`` is given per layer.
        method: ``"auto"`` (closed form where available) or ``"quadrature"`` (force quadrature).
        num_quadrature_points: Gauss-Hermite points per dimension for pre-activation variances
            up to 2; more are used for larger variances (:func:`quadrature_points`).
        max_quadrature_points: cap on the raised number of points (cost grows like its square).
        block_size: rows of ``x1`` per block; ``None`` chooses blocks that keep intermediates at
            about ``2**24`` elements (the quadrature's ``(pairs, Q, Q)`` values are chunked inside).
            With gradients on, each block is recomputed in the backward
            (``torch.utils.checkpoint``), so the autograd graph holds the ``n x m`` output and no
            per-layer ``n x m`` intermediates.
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
        max_quadrature_points: int = 256,
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
        if max_quadrature_points < num_quadrature_points:
            raise ValueError(f"max_quadrature_points must be >= num_quadrature_points = {num_quadrature_points}, "
                             f"got {max_quadrature_points}")
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
        self.max_quadrature_points = max_quadrature_points
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
        points = self.num_quadrature_points
        if not self._closed_form():
            # one rule for every block (and for diag) of this call
            points = layer_quadrature_points((x1, x2), wv, bv, self.activation, points, self.max_quadrature_points)
        kw = dict(activation=self.activation, method=self.method, num_points=points)
        if diag:
            return nngp_covariance(x1, x2, wv, bv, diag=True, **kw)
        n, m = x1.shape[-2], x2.shape[-2]
        grad = torch.is_grad_enabled() and any(t.requires_grad for t in (x1, x2, wv, bv))
        rows = self.block_size or self._auto_block_rows(m, batch, grad)
        if rows >= n:
            return nngp_covariance(x1, x2, wv, bv, **kw)

        if not grad:  # write the blocks into one buffer (a cat would hold the matrix twice)
            out = torch.empty(*batch, n, m, dtype=x1.dtype, device=x1.device)
            for i in range(0, n, rows):
                out[..., i : i + rows, :] = nngp_covariance(x1[..., i : i + rows, :], x2, wv, bv, **kw)
            return out

        def block(i: int) -> Tensor:
            # recompute the block's layer recursion in the backward: the graph keeps no n x m
            # intermediates of the elementwise layers, only the output (block recomputation)
            return torch.utils.checkpoint.checkpoint(
                functools.partial(nngp_covariance, **kw), x1[..., i : i + rows, :], x2, wv, bv, use_reentrant=False)

        return torch.cat([block(i) for i in range(0, n, rows)], dim=-2)

    def matrix_operator(self, x: Tensor) -> "RecomputedKernelMatrix":
        """$K(X, X)$ as a linear operator that holds one ``n x n`` buffer and no autograd graph.

        The matrix is computed once without a graph; the derivative of any scalar of it with
        respect to the layer variances, which linear_operator's ``inv_quad_logdet`` asks for as
        $\sum_{ij} (L R^\top)_{ij} \, \partial K_{ij}$ with ``n x t`` factors $L, R$, recomputes
        $K$ row block by row block and contracts each block with its rows of $L R^\top$
        (:class:`RecomputedKernelMatrix`). So the evidence and its gradient on the iterative path
        need about one ``n x n`` buffer, not the matrix plus its ``n x n`` gradient.

        Args:
            x: ``(n, d)`` inputs (no batch; ``x`` itself gets no gradient).

        Returns:
            :class:`RecomputedKernelMatrix` of shape ``(n, n)``.

        Raises:
            ValueError: ``x`` is not 2-D or the kernel has a batch shape.
        """
        if x.dim() != 2 or self.batch_shape != torch.Size() or self.active_dims is not None:
            raise ValueError(f"matrix_operator needs x of shape (n, d), an unbatched kernel and no active_dims; "
                             f"got x {tuple(x.shape)}, batch_shape {tuple(self.batch_shape)}")
        wv, bv = self.layer_variances()
        wv, bv = wv.to(x.dtype), bv.to(x.dtype)
        points = self.num_quadrature_points
        if not self._closed_form():
            points = layer_quadrature_points((x, x), wv, bv, self.activation, points, self.max_quadrature_points)
        kw = dict(activation=self.activation, method=self.method, num_points=points)
        n = x.shape[0]
        x = x.detach()

        def entries(rows, cols, weight_var: Tensor, bias_var: Tensor, diag: bool = False) -> Tensor:
            return nngp_covariance(x[rows], x[cols], weight_var, bias_var, diag=diag, **kw)

        with torch.no_grad():
            dense = self.forward(x, x)
        rows = self.block_size or self._auto_block_rows(n, torch.Size(), grad=True)
        return RecomputedKernelMatrix(dense, wv, bv, entries=entries, rows=rows)

    def _closed_form(self) -> bool:
        return self.method == "auto" and isinstance(self.activation, str) and self.activation in CLOSED_FORMS

    def _auto_block_rows(self, m: int, batch: torch.Size, grad: bool = False) -> int:
        # the quadrature chunks its (pairs, Q, Q) intermediates itself; a layer holds ~16 n x m
        # buffers, and a block recomputed for the backward keeps ~10 per layer in its graph
        per_row = m * max(1, math.prod(batch)) * (8 if self._closed_form() else 16)
        if grad:
            per_row *= 4 * (self.depth + 1)
        return max(1, (1 << 24) // per_row)


class RecomputedKernelMatrix(DenseLinearOperator):
    """A dense kernel matrix without an autograd graph whose derivative recomputes row blocks.

    linear_operator differentiates ``inv_quad_logdet`` (and solves) through
    ``_bilinear_derivative(L, R)``, the gradient of $\sum_{ij} (L R^\top)_{ij} K_{ij}$ with respect
    to the operator's representation. A :class:`DenseLinearOperator` returns the ``n x n`` matrix
    $L R^\top$ as the gradient of $K$; here the representation is ``(K, weight_var, bias_var)`` and
    the gradient goes straight to the layer variances: for each block of rows,
    $K_{[b]}$ is recomputed with a graph and back-propagated with $L_{[b]} R^\top$ (``rows x n``).

    Args:
        tensor: ``(n, n)`` the kernel matrix (computed without a graph).
        weight_var, bias_var: ``(L + 1,)`` layer variances it was computed from (may require grad).
        entries: ``entries(rows, cols, weight_var, bias_var, diag=False)``: the submatrix
            ``K[rows][:, cols]`` (``rows``, ``cols`` slices or index vectors), or with ``diag`` the
            entries ``K[rows[k], cols[k]]``, as a differentiable function of the variances.
        rows: rows per recomputed block.

    The pivoted-Cholesky preconditioner differentiates the rows it selected (``_get_indices``
    with index vectors): they are recomputed with a graph too, so the preconditioner's
    control variate in linear_operator's log-det gradient is kept (without it the gradient
    stays unbiased but is several times noisier).
    """

    def __init__(self, tensor: Tensor, weight_var: Tensor, bias_var: Tensor, *, entries: Callable, rows: int) -> None:
        LinearOperator.__init__(self, tensor, weight_var, bias_var, entries=entries, rows=rows)
        self.tensor = tensor
        self.weight_var = weight_var
        self.bias_var = bias_var
        self.entries = entries
        self.rows = rows

    def _bilinear_derivative(self, left_vecs: Tensor, right_vecs: Tensor) -> tuple[Tensor | None, ...]:
        variances = (self.weight_var, self.bias_var)
        wanted = [v.requires_grad for v in variances]
        if not any(wanted):
            return (None, None, None)
        leaves = [v.detach().requires_grad_(w) for v, w in zip(variances, wanted)]
        inputs = [leaf for leaf, w in zip(leaves, wanted) if w]
        total = [torch.zeros_like(leaf) for leaf in inputs]
        n = self.tensor.shape[-1]
        with torch.enable_grad():
            for i in range(0, n, self.rows):
                block = self.entries(slice(i, i + self.rows), slice(None), *leaves)
                weight = left_vecs[..., i : i + self.rows, :] @ right_vecs.mT
                for acc, g in zip(total, torch.autograd.grad(block, inputs, weight)):
                    acc.add_(g)
        grads = iter(total)
        return (None, *(next(grads) if w else None for w in wanted))

    def _check_args(self, tensor, weight_var, bias_var, entries=None, rows=None):
        if not torch.is_tensor(tensor) or tensor.dim() != 2 or tensor.shape[0] != tensor.shape[1]:
            return f"RecomputedKernelMatrix needs an (n, n) tensor, got {getattr(tensor, 'shape', tensor)}"
        if not callable(entries) or not isinstance(rows, int) or rows < 1:
            return "RecomputedKernelMatrix needs a callable entries and a positive integer rows"

    def _transpose_nonbatch(self) -> LinearOperator:
        return self  # a kernel matrix is symmetric

    def _get_indices(self, row_index, col_index, *batch_indices) -> Tensor:
        grad = torch.is_grad_enabled() and (self.weight_var.requires_grad or self.bias_var.requires_grad)
        if grad and not batch_indices and torch.is_tensor(row_index) and torch.is_tensor(col_index):
            # the pivoted Cholesky's rows, with their graph: one kernel value per index pair
            rows, cols = torch.broadcast_tensors(row_index, col_index)
            values = self.entries(rows.reshape(-1), cols.reshape(-1), self.weight_var, self.bias_var, diag=True)
            return values.reshape(rows.shape)
        return self.tensor[(*batch_indices, row_index, col_index)]

    # results of indexing and batch operations are plain dense operators (no gradient path)
    def _getitem(self, row_index, col_index, *batch_indices) -> LinearOperator:
        return DenseLinearOperator(self.tensor[(*batch_indices, row_index, col_index)])

    def _expand_batch(self, batch_shape) -> LinearOperator:
        return DenseLinearOperator(self.tensor.expand(*batch_shape, *self.matrix_shape))

    def _prod_batch(self, dim: int) -> LinearOperator:
        return DenseLinearOperator(self.tensor.prod(dim))

    def _sum_batch(self, dim: int) -> LinearOperator:
        return DenseLinearOperator(self.tensor.sum(dim))
