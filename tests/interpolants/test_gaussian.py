"""The closed-form mixture fields themselves: checked against identities and the transport equation."""

import pytest
import torch

from probgen.data.toy2d import GaussianMixture
from probgen.interpolants import GaussianMixtureFields, Interpolant, standard_normal


def mixtures():
    base = GaussianMixture([[-1.0, 0.0], [1.0, 0.5]], covs=[[[0.3, 0.1], [0.1, 0.2]], [[0.2, 0.0], [0.0, 0.4]]], weights=[0.4, 0.6])
    target = GaussianMixture([[0.0, 2.0], [2.0, -1.0], [-2.0, -1.0]], stds=[0.3, 0.5, 0.4], weights=[0.2, 0.5, 0.3])
    return base, target


@pytest.mark.parametrize("path,gamma", [("linear", "brownian"), ("trig", "brownian"), ("trig", "quadratic"), ("cos_sin", "sin2"), ("encoder_decoder", "sin2")])
def test_transport_equation(path, gamma):
    """d/dt rho_t + div(b rho_t) = 0, i.e. d/dt log rho = -div b - b . grad log rho (finite differences in t)."""
    base, target = mixtures()
    F = GaussianMixtureFields(Interpolant(path, gamma), base, target)
    x = target.sample(20, torch.Generator().manual_seed(0)).double()
    for t in (0.2, 0.45, 0.7):
        h = 1e-5
        dlogp = (F.log_density(t + h, x) - F.log_density(t - h, x)) / (2 * h)
        xx = x.clone().requires_grad_(True)
        b = F.velocity(t, xx)
        div = sum(torch.autograd.grad(b[:, k].sum(), xx, retain_graph=True)[0][:, k] for k in range(2))
        rhs = -div - (b * F.score(t, x)).sum(-1)
        torch.testing.assert_close(dlogp, rhs.detach(), atol=1e-5, rtol=1e-5)


def test_endpoints_and_score_identities():
    base, target = mixtures()
    I = Interpolant("linear", "brownian")
    F = GaussianMixtureFields(I, base, target)
    x = torch.randn(30, 2, dtype=torch.float64)
    torch.testing.assert_close(F.log_density(0.0, x), base.log_prob(x))
    torch.testing.assert_close(F.log_density(1.0, x), target.log_prob(x))
    t = 0.3
    xx = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.log_density(t, xx).sum(), xx)
    torch.testing.assert_close(F.score(t, x), g)
    gamma = I.gamma(torch.tensor(t, dtype=torch.float64))
    torch.testing.assert_close(F.eta_z(t, x), -gamma * F.score(t, x))
    torch.testing.assert_close(F.velocity(t, x), F.mean_velocity(t, x) - I.gamma_dgamma(torch.tensor(t)).double() * F.score(t, x))
    # x = alpha eta0 + beta eta1 + gamma eta_z (conditional expectation of the definition)
    a, b = 0.7, 0.3
    torch.testing.assert_close(a * F.eta0(t, x) + b * F.eta1(t, x) + gamma * F.eta_z(t, x), x)


def test_sample_moments():
    base, target = mixtures()
    F = GaussianMixtureFields(Interpolant("linear", "brownian"), base, target)
    n = 40000
    x = F.sample(0.5, n, torch.Generator().manual_seed(0))
    # E[x_t] = alpha E[x0] + beta E[x1]
    m = 0.5 * (base.weights[:, None] * base.means).sum(0) + 0.5 * (target.weights[:, None] * target.means).sum(0)
    se = x.std(0) / n**0.5
    assert ((x.mean(0) - m).abs() < 4 * se).all()


def test_one_sided_and_mirror_kinds():
    _, target = mixtures()
    one = GaussianMixtureFields(Interpolant("one_sided_linear", "zero"), standard_normal(2), target)
    x = torch.randn(10, 2, dtype=torch.float64)
    # one-sided: eta0 = E[z | x_t] and s = -eta0 / alpha
    t = 0.4
    torch.testing.assert_close(one.score(t, x), -one.eta0(t, x) / 0.6)
    mir = GaussianMixtureFields(Interpolant("mirror", "brownian"), standard_normal(2), target)
    # mirror: rho_t = target convolved with N(0, gamma^2 I); the velocity is -gamma gamma' s
    t = torch.tensor(0.3, dtype=torch.float64)
    gdg = 0.5 * (1 - 2 * 0.3)
    torch.testing.assert_close(mir.velocity(0.3, x), -gdg * mir.score(0.3, x))
    wide = GaussianMixture(target.means, covs=target.covs + 0.21 * torch.eye(2), weights=target.weights)
    torch.testing.assert_close(mir.log_density(0.3, x), wide.log_prob(x))
    assert t.dtype == torch.float64
