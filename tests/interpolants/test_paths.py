"""Interpolant coefficients: boundary values, closed-form derivatives vs autograd, stability."""

import math

import pytest
import torch

from probgen.interpolants import (
    GAMMAS,
    PATHS,
    BrownianGamma,
    CustomGamma,
    CustomPath,
    Interpolant,
    SigmoidGamma,
    VPPath,
)

T_INNER = torch.linspace(0.01, 0.99, 41, dtype=torch.float64)


def autograd_derivative(fn, t):
    t = t.clone().requires_grad_(True)
    (d,) = torch.autograd.grad((fn(t) + 0 * t).sum(), t)
    return d


@pytest.mark.parametrize("name", sorted(PATHS))
def test_path_derivatives_match_autograd(name):
    path = PATHS[name]()
    t = T_INNER[(T_INNER != 0.5)]  # the encoder-decoder indicator switches at 1/2
    lo, hi = path.t_bounds
    t = t[(t >= lo) & (t <= hi)]
    torch.testing.assert_close(path.dalpha(t), autograd_derivative(path.alpha, t), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(path.dbeta(t), autograd_derivative(path.beta, t), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", sorted(PATHS))
def test_path_boundary_values(name):
    path = PATHS[name]()
    ends = torch.tensor([0.0, 1.0], dtype=torch.float64)
    a, b = path.alpha(ends), path.beta(ends)
    if path.kind == "mirror":
        torch.testing.assert_close(b, torch.ones(2, dtype=torch.float64))
        return
    if isinstance(path, VPPath):  # alpha(0) = sqrt(1 - exp(-(bmin + bmax)/2)), as in diffusion models
        assert abs(float(a[0]) - math.sqrt(1 - math.exp(-(0.1 + 20.0) / 2))) < 1e-12
        assert float(b[0]) == pytest.approx(math.exp(-(0.1 + 20.0) / 4), rel=1e-12)
        assert float(a[1]) == 0.0 and float(b[1]) == 1.0
        return
    torch.testing.assert_close(a, torch.tensor([1.0, 0.0], dtype=torch.float64), atol=1e-15, rtol=0)
    torch.testing.assert_close(b, torch.tensor([0.0, 1.0], dtype=torch.float64), atol=1e-15, rtol=0)


@pytest.mark.parametrize("name", sorted(GAMMAS))
@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_gamma_derivatives_and_stable_product(name, scale):
    g = GAMMAS[name](scale=scale)
    torch.testing.assert_close(g.dgamma(T_INNER), autograd_derivative(g.gamma, T_INNER), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(g.gamma_dgamma(T_INNER), g.gamma(T_INNER) * g.dgamma(T_INNER), rtol=1e-9, atol=1e-12)
    ends = torch.tensor([0.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(g.gamma(ends), torch.zeros(2, dtype=torch.float64), atol=1e-12, rtol=0)
    gdg = g.gamma_dgamma(ends)
    assert torch.isfinite(gdg).all()
    # the limit of gamma * gamma' at the ends, from inside
    near = torch.tensor([1e-9, 1 - 1e-9], dtype=torch.float64)
    torch.testing.assert_close(gdg, g.gamma(near) * g.dgamma(near), atol=1e-4, rtol=0)


def test_brownian_closed_forms():
    g = BrownianGamma(scale=2.0)
    t = torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64)
    torch.testing.assert_close(g.gamma_dgamma(t), 4.0 * 0.5 * (1 - 2 * t))
    assert torch.isinf(g.dgamma(torch.tensor([0.0], dtype=torch.float64))).all()
    assert g.t_bounds == (1e-3, 1 - 1e-3)


def test_sigmoid_gamma_symmetric_and_positive():
    g = SigmoidGamma()
    t = T_INNER
    torch.testing.assert_close(g.gamma(t), g.gamma(1 - t))
    assert (g.gamma(t) > 0).all()


def test_sample_matches_definition_and_time_derivative():
    torch.manual_seed(0)
    I = Interpolant("trig", "brownian")
    x0, x1, z = (torch.randn(5, 3, dtype=torch.float64) for _ in range(3))
    t = torch.rand(5, dtype=torch.float64) * 0.9 + 0.05
    s = I.sample(x0, x1, t, z=z)
    g = torch.sqrt(t * (1 - t))[:, None]
    # the paper's trigonometric interpolant: sqrt(1 - gamma^2) (cos, sin)
    c = torch.sqrt(1 - g**2) * torch.cos(math.pi * t / 2)[:, None]
    sn = torch.sqrt(1 - g**2) * torch.sin(math.pi * t / 2)[:, None]
    torch.testing.assert_close(s.xt, c * x0 + sn * x1 + g * z)
    # dxt is the time derivative of xt along the fixed (x0, x1, z)
    tt = t.clone().requires_grad_(True)
    xt = I.sample(x0, x1, tt, z=z).xt
    jac = torch.stack([torch.autograd.grad(xt[:, k].sum(), tt, retain_graph=True)[0] for k in range(3)], -1)
    torch.testing.assert_close(s.dxt, jac)


def test_one_sided_and_mirror_sampling():
    torch.manual_seed(0)
    x1 = torch.randn(4, 2, dtype=torch.float64)
    x0 = torch.randn(4, 2, dtype=torch.float64)
    t = torch.full((4,), 0.3, dtype=torch.float64)
    one = Interpolant("one_sided_linear", "zero").sample(x0, x1, t)
    torch.testing.assert_close(one.xt, 0.7 * x0 + 0.3 * x1)
    torch.testing.assert_close(one.z, x0)
    z = torch.randn(4, 2, dtype=torch.float64)
    mir = Interpolant("mirror", "brownian").sample(x0 * 100, x1, t, z=z)
    torch.testing.assert_close(mir.xt, x1 + math.sqrt(0.21) * z)


def test_custom_path_and_gamma():
    path = CustomPath(alpha=lambda t: 1 - t**2, beta=lambda t: t**2)
    torch.testing.assert_close(path.dalpha(T_INNER), -2 * T_INNER)
    gam = CustomGamma(gamma=lambda t: t * (1 - t))
    torch.testing.assert_close(gam.dgamma(T_INNER), 1 - 2 * T_INNER)
    I = Interpolant(path, gam)
    assert I.kind == "two_sided"
    with pytest.raises(ValueError, match="alpha\\(0\\)=1"):
        CustomPath(alpha=lambda t: t, beta=lambda t: t)
    with pytest.raises(ValueError, match="gamma\\(0\\) = gamma\\(1\\) = 0"):
        CustomGamma(gamma=lambda t: t + 1)


def test_bad_arguments():
    with pytest.raises(ValueError, match="path must be one of"):
        Interpolant("spline", "zero")
    with pytest.raises(ValueError, match="gamma must be one of"):
        Interpolant("linear", "cosine")
    with pytest.raises(ValueError, match="one-sided"):
        Interpolant("one_sided_linear", "brownian")
    with pytest.raises(ValueError, match="mirror"):
        Interpolant("mirror", "zero")
    with pytest.raises(ValueError, match="gamma\\(1/2\\) > 0"):
        Interpolant("encoder_decoder", "zero")
    with pytest.raises(TypeError):
        Interpolant(3, "zero")
    I = Interpolant("linear", "brownian")
    with pytest.raises(ValueError, match="t must have shape"):
        I.sample(torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(2))
    with pytest.raises(ValueError, match="same shape"):
        I.sample(torch.zeros(3, 1), torch.zeros(3, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="scale"):
        BrownianGamma(scale=-1.0)
