"""NNGPKernel against wide random networks, closed forms and gpytorch's kernel contract."""

import math
import pickle
import unittest

import pytest
import torch
from gpytorch.test.base_kernel_test_case import BaseKernelTestCase

from probgen.nngp import NNGPKernel
from probgen.nngp.kernels import ACTIVATIONS


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
    relu = NNGPKernel(3, "relu", **kw).double()(x).to_dense()
    errs = [
        (NNGPKernel(3, "relu", method="quadrature", num_quadrature_points=q, **kw).double()(x).to_dense() - relu)
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
        kernel = NNGPKernel(4, act, weight_var=50.0, bias_var=1.0, per_layer=True).double()
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
    # closed forms: exact autograd; tanh: Price's-theorem gradients, equal to the derivative of
    # the quadrature forward up to the quadrature error (128 points: < 1e-7 here)
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
