"""The optimised interpolant (max-min / Schrodinger bridge) against closed forms."""

import math

import pytest
import torch

from probgen.interpolants import BrownianGamma, Interpolant, LinearPath
from probgen.interpolants.optimize import (
    AffineDrift,
    LearnedGamma,
    LearnedPath,
    forward_bridge,
    gaussian_schrodinger_bridge,
    maxmin_objective,
    optimize_interpolant,
)

A, B, M1, EPS = 1.0, 0.5, 2.0, 0.5  # rho0 = N(0, A^2), rho1 = N(M1, B^2), reference sqrt(2 EPS) W


def _spd(d, g):
    Q = torch.randn(d, d, generator=g, dtype=torch.float64)
    return Q @ Q.T + 0.5 * torch.eye(d, dtype=torch.float64)


def test_gaussian_sb_cross_covariance_closed_form():
    """The SB coupling density is f(x0) g(x1) exp(-|x1 - x0|^2 / (4 eps)): its joint precision has
    off-diagonal block -I / (2 eps); checked for non-commuting covariances, and the 1-D formula."""
    g = torch.Generator().manual_seed(0)
    for d, eps in ((1, 0.3), (3, 0.7), (3, 0.05)):
        S0, S1 = _spd(d, g), _spd(d, g)
        C = gaussian_schrodinger_bridge(S0, S1, eps)
        joint = torch.cat([torch.cat([S0, C], 1), torch.cat([C.T, S1], 1)], 0)
        assert torch.linalg.eigvalsh(joint).min() > 0
        P = torch.linalg.inv(joint)
        torch.testing.assert_close(P[:d, d:], -torch.eye(d, dtype=torch.float64) / (2 * eps), atol=1e-9, rtol=1e-9)
    c = gaussian_schrodinger_bridge(torch.tensor([[A**2]], dtype=torch.float64), torch.tensor([[B**2]], dtype=torch.float64), EPS)
    assert abs(float(c) - (math.sqrt(EPS**2 + A**2 * B**2) - EPS)) < 1e-12
    with pytest.raises(ValueError, match="eps"):
        gaussian_schrodinger_bridge(torch.eye(2), torch.eye(2), 0.0)


def test_learned_path_and_gamma_ends_and_derivatives():
    g = torch.Generator().manual_seed(1)
    path, gam = LearnedPath(degree=3), LearnedGamma(degree=3, init_scale=0.7)
    with torch.no_grad():
        for p in (path.p, path.q, gam.h):
            p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    ends = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(path.alpha(ends), torch.tensor([1.0, 0.0], dtype=torch.float64))
        torch.testing.assert_close(path.beta(ends), torch.tensor([0.0, 1.0], dtype=torch.float64))
        torch.testing.assert_close(gam.gamma(ends), torch.zeros(2, dtype=torch.float64))
    t = torch.rand(50, generator=g, dtype=torch.float64).clamp(0.01, 0.99).requires_grad_(True)
    for f, df in ((path.alpha, path.dalpha), (path.beta, path.dbeta), (lambda s: 0.5 * gam.gamma(s) ** 2, gam.gamma_dgamma), (gam.gamma, gam.dgamma)):
        (auto,) = torch.autograd.grad(f(t).sum(), t)
        torch.testing.assert_close(df(t).detach(), auto, atol=1e-10, rtol=1e-10)
    with pytest.raises(ValueError, match="degree"):
        LearnedPath(degree=-1)
    with pytest.raises(ValueError, match="init_scale"):
        LearnedGamma(init_scale=0.0)


def _profile(S, dS):
    """1-D Gaussian path with variance S(t): b_F = mu' + k (x - mu) with k = (S'/2 - eps) / S."""
    return (dS / 2 - EPS) / S


def test_maxmin_objective_matches_closed_form():
    """For u(t, x) = a x + c the objective is int E[u^2/2 - b_F u] dt, with b_F = mu' + k (x - mu) in closed
    form for the linear path and gamma = sqrt(t(1-t)) between 1-D Gaussians (Stein's identity in the estimator)."""
    I = Interpolant(LinearPath(), BrownianGamma(scale=1.0))
    a_, c_ = 0.7, -0.4

    class U(torch.nn.Module):
        def forward(self, t, x):
            return a_ * x + c_

        def divergence(self, t, x):
            return torch.full_like(t, a_)

    g = torch.Generator().manual_seed(2)
    n = 400_000
    x0 = A * torch.randn(n, 1, generator=g, dtype=torch.float64)
    x1 = M1 + B * torch.randn(n, 1, generator=g, dtype=torch.float64)
    t = torch.rand(n, generator=g, dtype=torch.float64)
    z = torch.randn(n, 1, generator=g, dtype=torch.float64)
    est = float(maxmin_objective(I, U(), x0, x1, EPS, t=t, z=z))
    # per-sample values for the standard error
    tt = torch.linspace(0, 1, 20001, dtype=torch.float64)
    S = (1 - tt) ** 2 * A**2 + tt**2 * B**2 + tt * (1 - tt)
    dS = -2 * (1 - tt) * A**2 + 2 * tt * B**2 + (1 - 2 * tt)
    mu, dmu, k = tt * M1, torch.full_like(tt, M1), _profile(S, dS)
    Eu2 = a_**2 * (S + mu**2) + 2 * a_ * c_ * mu + c_**2
    Ebu = dmu * (a_ * mu + c_) + k * a_ * S
    exact = float(torch.trapezoid(0.5 * Eu2 - Ebu, tt))
    xt = (1 - t[:, None]) * x0 + t[:, None] * x1 + torch.sqrt(t * (1 - t))[:, None] * z
    u = a_ * xt + c_
    per = 0.5 * u**2 - (-x0 + x1) * u + (EPS - 0.5 * (1 - 2 * t[:, None])) * a_
    se = float(per.std()) / math.sqrt(n)
    assert abs(est - exact) < 4 * se, (est, exact, se)


def test_maxmin_objective_bad_input():
    I = Interpolant(LinearPath(), BrownianGamma())
    x = torch.zeros(4, 1)
    with pytest.raises(ValueError, match="two-sided"):
        maxmin_objective(Interpolant("one_sided_linear", "zero"), AffineDrift(1), x, x, 0.1)
    with pytest.raises(ValueError, match="eps"):
        maxmin_objective(I, AffineDrift(1), x, x, -1.0)
    with pytest.raises(ValueError, match="no trainable"):
        optimize_interpolant(I, AffineDrift(1), lambda n: torch.zeros(n, 1), lambda n: torch.zeros(n, 1), 0.1, steps=1)


def _coupling_error(drift, seed, n=20_000):
    """Monte Carlo Cov(X0, X1) and Var(X1) of dX = u dt + sqrt(2 eps) dW from rho0, with standard errors."""
    g = torch.Generator().manual_seed(seed)
    x0 = A * torch.randn(n, 1, generator=g, dtype=torch.float64)
    with torch.no_grad():
        x1 = forward_bridge(drift, x0, EPS, steps=200, solver="heun", generator=g)
    d0, d1 = (x0 - x0.mean())[:, 0], (x1 - x1.mean())[:, 0]
    cov, var1 = float((d0 * d1).mean()), float((d1 * d1).mean())
    return cov, float((d0 * d1).std()) / math.sqrt(n), var1, float((d1 * d1).std()) / math.sqrt(n)


def test_optimised_interpolant_recovers_gaussian_schrodinger_bridge():
    """max_gamma min_u recovers the SB between N(0, 1) and N(2, 0.25): the forward SDE's coupling
    Cov(X0, X1) matches the closed form sqrt(eps^2 + a^2 b^2) - eps within 4 Monte Carlo s.e.; the
    un-optimised start (Brownian gamma of scale 0.5, coupling 0.16 in closed form) is rejected by the same check."""
    c_sb = math.sqrt(EPS**2 + A**2 * B**2) - EPS
    torch.manual_seed(0)
    gam = LearnedGamma(degree=0, init_scale=0.5)
    I = Interpolant(LinearPath(), gam)
    drift = AffineDrift(1, width=32, diagonal=True).double()
    sample_base = lambda n: A * torch.randn(n, 1, dtype=torch.float64)
    sample_target = lambda n: M1 + B * torch.randn(n, 1, dtype=torch.float64)
    # the start gamma = 0.5 sqrt(t(1-t)): its coupling a^2 exp(int k dt) in closed form is rejected by the same check
    tt = torch.linspace(0, 1, 20001, dtype=torch.float64)
    S = (1 - tt) ** 2 * A**2 + tt**2 * B**2 + 0.25 * tt * (1 - tt)
    dS = -2 * (1 - tt) * A**2 + 2 * tt * B**2 + 0.25 * (1 - 2 * tt)
    cov0 = A**2 * math.exp(float(torch.trapezoid(_profile(S, dS), tt)))
    optimize_interpolant(I, drift, sample_base, sample_target, EPS, steps=400, inner_steps=4, batch_size=512, lr_drift=1e-2, lr_interpolant=3e-2)
    cov, se, var1, se_v = _coupling_error(drift, seed=5)
    assert abs(cov0 - c_sb) > 4 * se, (cov0, c_sb, se)
    assert abs(cov - c_sb) < 4 * se, (cov, c_sb, se)
    assert abs(var1 - B**2) < 4 * se_v, (var1, B**2, se_v)


def test_maxmin_objective_network_drift_backward_through_autograd_divergence():
    """A drift without ``.divergence`` takes the exact autograd divergence; a backward pass through it
    must work (it crashed: the basis vector was reused in place) and give the gradients of the
    closed-form divergence of u = tanh(W x + c): sum_i W_ii (1 - u_i^2), to float64 round-off."""

    class Tanh(torch.nn.Module):
        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(1)
            self.W = torch.nn.Parameter(torch.randn(2, 2, generator=g, dtype=torch.float64))
            self.c = torch.nn.Parameter(torch.randn(2, generator=g, dtype=torch.float64))

        def forward(self, t, x):
            return torch.tanh(x @ self.W.T + self.c * t[:, None])

        def divergence(self, t, x):
            return ((1 - self(t, x) ** 2) * torch.diagonal(self.W)).sum(-1)

    drift = Tanh()
    net_only = lambda t, x: drift(t, x)  # noqa: E731  (no .divergence: autograd, exact_batch)
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(64, 2, generator=g, dtype=torch.float64)
    x1 = torch.randn(64, 2, generator=g, dtype=torch.float64) + 2.0
    t = 0.05 + 0.9 * torch.rand(64, generator=g, dtype=torch.float64)
    z = torch.randn(64, 2, generator=g, dtype=torch.float64)
    grads = []
    for u in (drift, net_only):
        gamma = LearnedGamma(1, init_scale=0.7)
        I = Interpolant(LearnedPath(1), gamma)
        drift.zero_grad()
        loss = maxmin_objective(I, u, x0, x1, EPS, t=t, z=z)
        loss.backward()
        grads.append([drift.W.grad.clone(), drift.c.grad.clone(), gamma.h.grad.clone(), I.path.p.grad.clone()])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
