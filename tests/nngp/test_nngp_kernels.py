"""NNGPKernel against wide random networks, closed forms and gpytorch's kernel contract."""

import math
import pickle
import unittest

import pytest
import torch
from gpytorch.test.base_kernel_test_case import BaseKernelTestCase
from scipy import integrate

from probgen.nngp import NNGPKernel
from probgen.nngp import kernels as kernels_module
from probgen.nngp.kernels import ACTIVATIONS, CLOSED_FORMS, nngp_covariance, quadrature_expectation


class TestNNGPKernelGpytorchContract(BaseKernelTestCase, unittest.TestCase):
    """gpytorch's own shipped base test case (batch shapes, diag, getitem, pickling, dtype)."""

    def create_kernel_no_ard(self, **kwargs):
        return NNGPKernel(depth=2, activation="relu", weight_var=1.5, bias_var=0.2, **kwargs)


class TestNNGPKernelGpytorchContractErf(BaseKernelTestCase, unittest.TestCase):
    def create_kernel_no_ard(self, **kwargs):
        return NNGPKernel(depth=1, activation="erf", weight_var=[1.0, 2.0], bias_var=0.1, **kwargs)


def _wide_network_kernel(x, depth, phi, weight_var, bias_var, width, num_nets, generator):
    """Empirical readout covariance of ``num_nets`` random networks of the given width.

    Given the last hidden layer, the readout is Gaussian with covariance
    ``bias_var + weight_var * mean_i phi(z_i(x)) phi(z_i(x'))``; averaging this over networks
    estimates the readout covariance without the readout's own sampling noise.

    The first layer draws its weight matrix explicitly. A deeper layer's ``width`` units are
    independent given the previous layer ``h`` (n points), each ``N(0, bias_var + weight_var
    h h^T / fan_in)`` over the n points: drawing them through the Cholesky factor of that n x n
    matrix is the same distribution as drawing the ``fan_in x width`` weight matrix, at a
    fraction of the cost.
    Returns (mean, standard error), both (n, n).
    """
    n, d = x.shape
    estimates = []
    for _ in range(num_nets):
        w = torch.randn(d, width, generator=generator, dtype=x.dtype) * math.sqrt(weight_var / d)
        b = torch.randn(width, generator=generator, dtype=x.dtype) * math.sqrt(bias_var)
        h = phi(x @ w + b)
        for _layer in range(depth - 1):
            cov = bias_var + weight_var * (h @ h.T) / width
            chol = torch.linalg.cholesky(cov + 1e-12 * torch.eye(n, dtype=x.dtype))
            h = phi(chol @ torch.randn(n, width, generator=generator, dtype=x.dtype))
        estimates.append(bias_var + weight_var * (h @ h.T) / width)
    est = torch.stack(estimates)
    return est.mean(0), est.std(0) / math.sqrt(num_nets)


@pytest.mark.parametrize("activation", ["relu", "erf", "tanh"])
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_kernel_matches_wide_random_networks(activation, depth):
    gen = torch.Generator().manual_seed(100 * depth + len(activation))
    x = torch.randn(5, 3, generator=gen, dtype=torch.float64) * 1.3
    weight_var, bias_var = 1.6, 0.1
    mean, se = _wide_network_kernel(x, depth, ACTIVATIONS[activation], weight_var, bias_var,
                                    width=4096, num_nets=100, generator=gen)
    kernel = NNGPKernel(depth, activation, weight_var=weight_var, bias_var=bias_var,
                        num_quadrature_points=64).double()
    exact = kernel(x).to_dense().detach()
    assert torch.all((mean - exact).abs() <= 4 * se + 1e-12), ((mean - exact) / se).abs().max()


def test_closed_forms_match_quadrature():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(12, 4, generator=gen, dtype=torch.float64)
    kw = dict(weight_var=2.0, bias_var=0.1)
    # erf is smooth: Gauss-Hermite converges fast
    erf = NNGPKernel(3, "erf", **kw).double()(x).to_dense()
    erf_q = NNGPKernel(3, "erf", method="quadrature", num_quadrature_points=200, **kw).double()(x).to_dense()
    assert torch.allclose(erf, erf_q, atol=1e-5, rtol=0)
    # relu has a kink: the quadrature error falls like 1/points; check the rate and the limit
    # (max_quadrature_points = num_quadrature_points: a fixed rule, not raised with the variance)
    relu = NNGPKernel(3, "relu", **kw).double()(x).to_dense()
    errs = [
        (NNGPKernel(3, "relu", method="quadrature", num_quadrature_points=q, max_quadrature_points=q, **kw)
         .double()(x).to_dense() - relu)
        .abs().max().item()
        for q in (32, 64, 128)
    ]
    assert errs[2] < 2e-3 * relu.abs().max().item()
    assert 1.7 < errs[0] / errs[1] < 2.3 and 1.7 < errs[1] / errs[2] < 2.3


def test_identity_activation_is_exact_linear_kernel():
    # quadrature is exact for polynomials: identity gives the linear-kernel recursion in closed form
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    wv, bv = [1.5, 0.7, 2.0], [0.3, 0.2, 0.1]
    kernel = NNGPKernel(2, "identity", per_layer=True, num_quadrature_points=8).double()
    kernel.weight_var = torch.tensor(wv, dtype=torch.float64)  # set in float64: no float32 rounding
    kernel.bias_var = torch.tensor(bv, dtype=torch.float64)
    k = kernel(x).to_dense()
    lin = bv[0] + wv[0] * (x @ x.T) / 3
    lin = bv[1] + wv[1] * lin
    lin = bv[2] + wv[2] * lin
    assert torch.allclose(k, lin, atol=1e-10, rtol=1e-10)


def test_relu_depth_one_closed_form_value():
    # two orthogonal unit-norm inputs (x.x'/d = 0): K = wv^2/(2 pi) * (sin(pi/2) + (pi - pi/2) * 0) * (1/d)... exact:
    d = 2
    x = torch.tensor([[math.sqrt(d), 0.0], [0.0, math.sqrt(d)]], dtype=torch.float64)  # x.x/d = 1, x.x'/d = 0
    wv = 2.0
    k = NNGPKernel(1, "relu", weight_var=wv, bias_var=0.0).double()(x).to_dense()
    # layer 0: k11 = k22 = wv, k12 = 0; E[relu relu] = wv/(2 pi) * (1 + 0) ; diagonal wv/2
    assert torch.allclose(k[0, 1], torch.tensor(wv * wv / (2 * math.pi), dtype=torch.float64), atol=1e-15)
    assert torch.allclose(k[0, 0], torch.tensor(wv * wv / 2, dtype=torch.float64), atol=1e-15)


def test_diag_float64_blocks_and_gradients_at_the_diagonal():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(30, 5, generator=gen, dtype=torch.float64)
    for act in ("relu", "erf", "tanh"):
        # max_quadrature_points=64: these variances would take the raised rule to its cap of 256
        kernel = NNGPKernel(4, act, weight_var=50.0, bias_var=1.0, per_layer=True, max_quadrature_points=64).double()
        full = kernel(x).to_dense()
        assert full.dtype == torch.float64
        assert torch.allclose(kernel(x, diag=True), full.diagonal(), rtol=1e-12, atol=1e-10)
        kernel.block_size = 7
        assert torch.allclose(kernel(x).to_dense(), full, rtol=1e-12, atol=0)
        xr = x.clone().requires_grad_(True)
        kernel(xr, xr).to_dense().sum().backward()
        assert torch.isfinite(xr.grad).all()
        assert torch.isfinite(kernel.raw_weight_var.grad).all() and torch.isfinite(kernel.raw_bias_var.grad).all()
        assert kernel.raw_weight_var.shape == (5,)


def test_kernel_gradient_matches_finite_differences():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    # closed forms: exact autograd; tanh: the exact gradient of the computed quadrature sum
    for act, points, depth in (("relu", 64, 3), ("erf", 64, 3), ("tanh", 128, 2)):
        kernel = NNGPKernel(depth, act, weight_var=[1.0, 1.5, 2.0, 0.7][: depth + 1], bias_var=0.2,
                            num_quadrature_points=points).double()

        def f(raw_w, raw_b, xx):
            params = {"raw_weight_var": raw_w, "raw_bias_var": raw_b}
            return torch.func.functional_call(kernel, params, (xx,)).to_dense()

        raw_w = kernel.raw_weight_var.detach().clone().requires_grad_(True)
        raw_b = kernel.raw_bias_var.detach().clone().requires_grad_(True)
        assert torch.autograd.gradcheck(f, (raw_w, raw_b, x.clone().requires_grad_(True)), atol=1e-6)


def test_pickle_and_invalid_arguments():
    kernel = NNGPKernel(2, "erf", weight_var=[1.0, 2.0, 3.0])
    clone = pickle.loads(pickle.dumps(kernel))
    x = torch.randn(4, 2)
    assert torch.allclose(clone(x).to_dense(), kernel(x).to_dense())
    with pytest.raises(ValueError, match="depth"):
        NNGPKernel(-1)
    with pytest.raises(ValueError, match="activation"):
        NNGPKernel(1, "swish2")
    with pytest.raises(ValueError, match="weight_var"):
        NNGPKernel(2, weight_var=[1.0, 2.0])
    with pytest.raises(ValueError, match="weight_var"):
        NNGPKernel(1, weight_var=0.0)
    with pytest.raises(ValueError, match="bias_var"):
        NNGPKernel(1, bias_var=-1.0)
    with pytest.raises(ValueError, match="method"):
        NNGPKernel(1, method="mc")


def _functional_kernel(kernel):
    def fn(raw_w, raw_b, xx):
        params = {"raw_weight_var": raw_w, "raw_bias_var": raw_b}
        return torch.func.functional_call(kernel, params, (xx,)).to_dense()

    return fn


def _gradcheck_kernel(kernel, x):
    inputs = (kernel.raw_weight_var.detach().clone().requires_grad_(True),
              kernel.raw_bias_var.detach().clone().requires_grad_(True), x.clone().requires_grad_(True))
    return torch.autograd.gradcheck(_functional_kernel(kernel), inputs, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_quadrature_gradients_pass_gradcheck_for_every_activation(activation):
    # the gradient is that of the computed sum, at any number of points (24 to 32 here), including
    # the diagonal (rho = 1) of K(x, x); the old Price's-theorem backward failed this for tanh,
    # GELU, SiLU, softplus, sigmoid and sin (benchmarks/nngp_gradients.py)
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    kernel = NNGPKernel(2, activation, weight_var=2.5, bias_var=0.1, method="quadrature",
                        num_quadrature_points=24, max_quadrature_points=32).double()
    assert _gradcheck_kernel(kernel, x)


@pytest.mark.parametrize("activation", sorted(CLOSED_FORMS))
def test_closed_form_gradients_pass_gradcheck(activation):
    gen = torch.Generator().manual_seed(5)
    x = 1.5 * torch.randn(4, 3, generator=gen, dtype=torch.float64)
    kernel = NNGPKernel(2, activation, weight_var=[2.5, 1.5, 1.0], bias_var=0.1).double()
    assert _gradcheck_kernel(kernel, x)


def test_quadrature_backward_recomputes_large_inner_sums(monkeypatch):
    # above a size the forward keeps nothing of size pairs * Q and the backward recomputes it
    monkeypatch.setattr(kernels_module, "_QUADRATURE_CHUNK", 64)
    gen = torch.Generator().manual_seed(6)
    x = 1.5 * torch.randn(4, 3, generator=gen, dtype=torch.float64)
    kernel = NNGPKernel(2, "tanh", weight_var=2.5, bias_var=0.1, num_quadrature_points=16,
                        max_quadrature_points=16).double()
    assert _gradcheck_kernel(kernel, x)


def test_summed_kernel_weight_var_gradient_has_the_right_sign():
    # issue 14's case: 20 points in 3-d (scale 2), weight_var 3, bias_var 0.1, tanh, depth 2, 64
    # points per layer; the old backward gave -7.78 against a finite difference of +8.90 (seed 0)
    gen = torch.Generator().manual_seed(0)
    x = 2.0 * torch.randn(20, 3, generator=gen, dtype=torch.float64)
    bv = torch.full((3,), 0.1, dtype=torch.float64)

    def total(w):
        return nngp_covariance(x, x, w.expand(3), bv, activation="tanh", num_points=[64, 64]).sum()

    wv = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(total(wv), wv)
    h = 1e-5
    with torch.no_grad():
        fd = (total(wv + h) - total(wv - h)) / (2 * h)
    assert fd > 1.0
    assert abs(grad.item() - fd.item()) < 1e-6 * abs(fd.item())


def _gauss_expectation(fn, var):
    """1-D E[fn(u)], u ~ N(0, var), by adaptive quadrature (an oracle independent of Gauss-Hermite)."""
    sd = math.sqrt(var)
    return integrate.quad(lambda u: fn(u) * math.exp(-0.5 * u * u / var) / (sd * math.sqrt(2 * math.pi)),
                          -40 * sd, 40 * sd, points=[0.0], limit=400, epsabs=1e-13)[0]


def test_raised_points_give_the_accurate_derivative_at_large_variance():
    # d/dk11 E[tanh u tanh v] at k11 = k12 = k22 = 9 is 0.5 E[tanh''(u) tanh(u)] (Price's theorem):
    # 64 fixed points give -0.0899 (the old default, 11% off); the variance rule (256 points) is
    # 2.5e-4 off (the Gauss-Hermite error of this derivative at 256 points, -0.08062 vs -0.08060)
    exact = 0.5 * _gauss_expectation(lambda u: -2 * math.tanh(u) ** 2 * (1 - math.tanh(u) ** 2), 9.0)
    k = torch.tensor([[9.0]], dtype=torch.float64)
    q = kernels_module.quadrature_points(9.0)
    assert q == 256
    errors = {}
    for points in (64, q):
        k11 = k.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(quadrature_expectation("tanh", k11, k, k, num_points=points).sum(), k11)
        errors[points] = abs(grad.item() / exact - 1)
    assert errors[64] > 0.05 and errors[q] < 1e-3, errors
    # and the value E[tanh(u)^2]: the 256-point Gauss-Hermite error is 1.4e-6 relative here
    # (64 points: 3e-3), see quadrature_points
    value = quadrature_expectation("tanh", k, k, k, num_points=q).item()
    assert abs(value / _gauss_expectation(lambda u: math.tanh(u) ** 2, 9.0) - 1) < 2e-6


_COVARIANCES = [(1.3, 0.9, 0.3), (0.4, 1.5, -0.6), (2.0, 2.0, 0.97), (0.7, 0.7, 1.0), (3.0, 0.5, 0.0)]


@pytest.mark.parametrize("activation", ["gelu", "sin", "leaky_relu", "abs"])
def test_new_closed_forms_match_monte_carlo(activation):
    # independent of the quadrature: 400,000 draws of (u, v), tolerance 4 standard errors
    gen = torch.Generator().manual_seed(7)
    phi = ACTIVATIONS[activation]
    for k11, k22, rho in _COVARIANCES:
        k12 = rho * math.sqrt(k11 * k22)
        z = torch.randn(2, 400_000, generator=gen, dtype=torch.float64)
        u = math.sqrt(k11) * z[0]
        v = k12 / math.sqrt(k11) * z[0] + math.sqrt(max(k22 - k12 * k12 / k11, 0.0)) * z[1]
        prod = phi(u) * phi(v)
        se = prod.std().item() / math.sqrt(prod.numel())
        t = lambda a: torch.tensor(a, dtype=torch.float64)
        closed = CLOSED_FORMS[activation](t(k11), t(k12), t(k22)).item()
        assert abs(prod.mean().item() - closed) < 4 * se, (k11, k22, rho, prod.mean().item(), closed, se)


@pytest.mark.parametrize("activation", ["gelu", "sin"])
def test_smooth_closed_forms_match_quadrature(activation):
    # smooth activations: 2-D Gauss-Hermite with 128 points is accurate to ~1e-12 at these variances
    for k11, k22, rho in _COVARIANCES:
        k12 = rho * math.sqrt(k11 * k22)
        t = lambda a: torch.tensor([[a]], dtype=torch.float64)
        closed = CLOSED_FORMS[activation](t(k11), t(k12), t(k22))
        quad = quadrature_expectation(activation, t(k11), t(k12), t(k22), num_points=128)
        assert torch.allclose(closed, quad, atol=1e-10, rtol=0), (k11, k22, rho)


def test_abrelu_closed_forms_reduce_to_known_kernels():
    # |x|: E|u||v| = (2 sqrt(k11 k22) / pi)(sqrt(1 - rho^2) + rho arcsin rho); leaky slope 1 = linear
    k11, k22, rho = 1.3, 0.8, 0.35
    k12 = rho * math.sqrt(k11 * k22)
    t = lambda a: torch.tensor(a, dtype=torch.float64)
    expected = 2 * math.sqrt(k11 * k22) / math.pi * (math.sqrt(1 - rho * rho) + rho * math.asin(rho))
    assert abs(CLOSED_FORMS["abs"](t(k11), t(k12), t(k22)).item() - expected) < 1e-14
    lin = kernels_module.abrelu_expectation(t(k11), t(k12), t(k22), 1.0, 1.0)
    assert abs(lin.item() - k12) < 1e-14
    # diagonal: E[phi(u)^2] = (a^2 + b^2) k / 2
    for name, a in (("leaky_relu", kernels_module.LEAKY_RELU_SLOPE), ("abs", -1.0)):
        var = kernels_module._variance_step(name, ACTIVATIONS[name], t(k11), 0)
        assert abs(var.item() - (a * a + 1) * k11 / 2) < 1e-14


def test_quadrature_points_grow_with_the_variance():
    q = kernels_module.quadrature_points
    assert q(1.0) == 64 and q(2.0) == 64
    assert q(4.0) == 128 and q(9.0) == 256 and q(100.0) == 256
    assert q(9.0, num_points=32, max_points=512) == 144
    # the same rule for every block: blocks of rows give the same matrix as one block (a rule per
    # block, from that block's own largest variance, would differ by the quadrature error ~1e-6)
    gen = torch.Generator().manual_seed(8)
    x = 2.0 * torch.randn(9, 3, generator=gen, dtype=torch.float64)
    kernel = NNGPKernel(2, "tanh", weight_var=2.0, bias_var=0.1).double()
    full = kernel(x).to_dense()
    kernel.block_size = 2
    assert torch.allclose(kernel(x).to_dense(), full, rtol=1e-12, atol=0)


def test_blocks_are_recomputed_in_the_backward():
    # with gradients on, each block of rows is checkpointed: the same gradient as one block, and
    # the graph saves no n x n intermediate of the layer recursion (only the output is n x n)
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(40, 3, generator=gen, dtype=torch.float64)
    grads = []
    for block_size in (None, 7):
        kernel = NNGPKernel(3, "relu", weight_var=2.0, bias_var=0.1, block_size=block_size).double()
        saved = []

        def pack(t):
            saved.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            k = kernel(x).to_dense()
        k.pow(2).sum().backward()
        grads.append((kernel.raw_weight_var.grad.clone(), kernel.raw_bias_var.grad.clone()))
        big = sum(n for n in saved if n >= 7 * 40)
        if block_size is None:
            assert big > 10 * 40 * 40  # one block: every layer's n x n intermediates are saved
        else:
            assert big == 0  # blocks: only their (7 x 3) inputs and the layer variances
    assert torch.allclose(grads[0][0], grads[1][0], rtol=1e-12) and torch.allclose(grads[0][1], grads[1][1],
                                                                                   rtol=1e-12)


@pytest.mark.parametrize("activation, depth", [("relu", 2), ("tanh", 1)])
def test_recomputed_kernel_matrix_derivative_matches_autograd_of_the_dense_kernel(activation, depth):
    # RecomputedKernelMatrix keeps K without a graph; its bilinear derivative (what
    # inv_quad_logdet's backward asks for) recomputes row blocks and must equal autograd of
    # sum((L R^T) * K) through the ordinary kernel call, and its pivot rows carry the same graph
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(30, 3, generator=gen, dtype=torch.float64)
    left, right = torch.randn(30, 4, generator=gen, dtype=torch.float64), torch.randn(30, 4, generator=gen,
                                                                                      dtype=torch.float64)
    kernel = NNGPKernel(depth, activation, weight_var=1.7, bias_var=0.2, block_size=7).double()
    raws = [kernel.raw_weight_var, kernel.raw_bias_var]
    dense = kernel(x).to_dense()
    expected = torch.autograd.grad(((left @ right.T) * dense).sum(), raws, retain_graph=True)
    op = kernel.matrix_operator(x)
    assert op.tensor.grad_fn is None and torch.allclose(op.to_dense(), dense, rtol=1e-13, atol=0)
    none, g_w, g_b = op._bilinear_derivative(left, right)
    assert none is None
    got = torch.autograd.grad([op.weight_var, op.bias_var], raws, [g_w, g_b], retain_graph=True)
    for a, b in zip(got, expected):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    rows, cols = torch.tensor([[4], [0], [17]]), torch.arange(30)[None]
    picked = op[rows, cols]  # the pivoted Cholesky's rows
    (g,) = torch.autograd.grad(picked.sum(), kernel.raw_weight_var)
    (g_dense,) = torch.autograd.grad(dense[[4, 0, 17]].sum(), kernel.raw_weight_var)
    assert torch.allclose(picked, dense[[4, 0, 17]], rtol=1e-13) and torch.allclose(g, g_dense, rtol=1e-10)
