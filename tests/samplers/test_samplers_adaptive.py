"""Scale-adapted SGHMC and Gamma-hyperprior Gibbs steps against closed forms.

The frozen (post-burn-in) scale-adapted SGHMC on a Gaussian target is a linear recursion, so
its exact stationary law follows from `samplers_exact.stationary_moments`; independent chains
are compared with it within Monte Carlo error, and the law itself with the posterior as the
step shrinks. SGHMC on the weights alternated with Gibbs draws of the noise precision samples
the Normal-Gamma posterior of Bayesian linear regression.
"""

import math

import numpy as np
import pytest
import scipy.stats
import torch

from probgen.samplers import (
    AdaptiveSGHMC,
    adaptive_sghmc_init,
    adaptive_sghmc_step,
    gamma_precision_gibbs,
    sample_gamma,
)
from samplers_exact import stationary_moments

F64 = torch.float64


def _regression(n=40, d=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=F64) * torch.tensor([1.0, 3.0], dtype=F64)
    y = x @ torch.tensor([0.7, -0.4], dtype=F64) + 0.5 * torch.randn(n, generator=g, dtype=F64)
    return x, y


@pytest.mark.parametrize("a", [0.3, 1.0, 7.5])
def test_sample_gamma_matches_scipy(a):
    g = torch.Generator().manual_seed(1)
    x = sample_gamma(torch.full((20_000,), a, dtype=F64), g)
    ks = scipy.stats.kstest(x.numpy(), scipy.stats.gamma(a).cdf)
    assert ks.statistic < 1.95 / math.sqrt(len(x))  # 0.1% level
    # same generator state, same draws
    assert torch.equal(sample_gamma(torch.full((5,), a), torch.Generator().manual_seed(3)),
                       sample_gamma(torch.full((5,), a), torch.Generator().manual_seed(3)))


def test_gibbs_bad_input():
    with pytest.raises(ValueError, match="concentration"):
        gamma_precision_gibbs(1.0, 3, concentration=0.0, rate=1.0)
    with pytest.raises(ValueError, match="rate"):
        gamma_precision_gibbs(1.0, 3, concentration=1.0, rate=-1.0)
    with pytest.raises(ValueError, match="sum_sq"):
        gamma_precision_gibbs(torch.tensor([1.0, float("nan")]), 3, 1.0, 1.0)
    with pytest.raises(ValueError, match="concentration"):
        sample_gamma(torch.tensor([1.0, 0.0]))


def _frozen_law(A, b, lr, friction, minv, temperature=1.0):
    """Exact stationary mean/cov of theta for the frozen chain on U = 1/2 t'At - b't."""
    d = len(b)
    M = np.diag(minv)
    var = np.clip(temperature * (2 * lr * friction * minv - lr * lr), 0, None)
    D = np.diag(np.sqrt(var))
    F = np.block([[np.eye(d) - lr * M @ A, (1 - friction) * np.eye(d)],
                  [-lr * M @ A, (1 - friction) * np.eye(d)]])
    c = np.concatenate([lr * M @ b, lr * M @ b])
    mu, cov = stationary_moments(F, c, np.vstack([D, D]), np.zeros((1, 2 * d, 2 * d)), np.zeros((1, 2 * d)), 1)
    return mu[:d], cov[:d, :d], max(abs(np.linalg.eigvals(F)))


def test_adaptive_sghmc_frozen_chain_exact_law_and_posterior():
    x, y = _regression()
    n, d = x.shape
    sigma2, lam0 = 0.25, 1.0
    A = (x.T @ x / sigma2 + lam0 * torch.eye(d, dtype=F64)).numpy()
    b = (x.T @ y / sigma2).numpy()
    post_cov = np.linalg.inv(A)
    post_mean = post_cov @ b

    def grads(w):  # gradient of the per-point mean loss: grad U / N
        return {"w": (w @ torch.from_numpy(A) - torch.from_numpy(b)) / n}

    lr, friction, chains, steps = 1e-3, 0.2, 4000, 1500
    g = torch.Generator().manual_seed(0)
    # burn-in: one chain adapts its moments on full-batch gradients
    w = {"w": torch.zeros(1, d, dtype=F64)}
    state = adaptive_sghmc_init(w)
    for _ in range(300):
        xi = {"w": torch.randn(1, d, generator=g, dtype=F64)}
        w, state = adaptive_sghmc_step(w, grads(w["w"]), state, lr, n, friction=friction, adapt=True, noise=xi)
    minv = (1.0 / (state["square_avg"]["w"][0].sqrt() + 1e-8)).numpy()
    mean, cov, rho = _frozen_law(A, b, lr, friction, minv)
    assert rho ** steps < 1e-4, f"chains would not have forgotten their start (rho={rho})"
    # then many independent chains with the frozen moments
    w = {"w": w["w"].expand(chains, d).clone()}
    state = {k: {"w": v["w"].expand(chains, d).clone()} for k, v in state.items()}
    for _ in range(steps):
        xi = {"w": torch.randn(chains, d, generator=g, dtype=F64)}
        w, state = adaptive_sghmc_step(w, grads(w["w"]), state, lr, n, friction=friction, noise=xi)
    draws = w["w"].numpy()
    se_mean = np.sqrt(np.diag(cov) / chains)
    assert np.all(np.abs(draws.mean(0) - mean) < 4 * se_mean)
    emp = np.cov(draws.T)
    se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / chains)
    assert np.all(np.abs(emp - cov) < 4 * se_cov)
    # the exact law is the posterior up to a discretisation error that falls with the step
    np.testing.assert_allclose(mean, post_mean, rtol=1e-10)  # linear drift: the mean is exact
    errs = [np.abs(_frozen_law(A, b, h, friction, minv)[1] - post_cov).max() / np.abs(post_cov).max()
            for h in (lr, lr / 4)]
    assert errs[0] < 0.1 and errs[1] < errs[0] / 2.5


def test_adaptive_sghmc_with_gibbs_noise_precision_samples_normal_gamma_posterior():
    # y | w, tau ~ N(xw, 1/tau); w | tau ~ N(0, 1/(tau lam0)); tau ~ Gamma(a0, b0)
    x, y = _regression(n=30, seed=2)
    n, d = x.shape
    lam0, a0, b0 = 1.0, 2.0, 1.0
    lam_n = x.T @ x + lam0 * torch.eye(d, dtype=F64)
    mu_n = torch.linalg.solve(lam_n, x.T @ y)
    a_n = a0 + n / 2
    b_n = b0 + 0.5 * (y @ y - mu_n @ lam_n @ mu_n)
    tau_mean, w_cov = a_n / b_n, (b_n / (a_n - 1)) * torch.linalg.inv(lam_n)

    chains, lr, friction = 3000, 2e-3, 0.2
    g = torch.Generator().manual_seed(5)

    def step(w, state, tau, adapt):
        resid = y - w["w"] @ x.T
        grad = tau * (-(resid @ x) + lam0 * w["w"]) / n
        xi = {"w": torch.randn(len(tau), d, generator=g, dtype=F64)}
        w, state = adaptive_sghmc_step(w, {"w": grad}, state, lr, n, friction=friction, adapt=adapt, noise=xi)
        sum_sq = (y - w["w"] @ x.T).square().sum(1) + lam0 * w["w"].square().sum(1)
        return w, state, gamma_precision_gibbs(sum_sq, n + d, a0, b0, generator=g)[:, None]

    # burn-in of one chain adapts the moments, which every chain then uses frozen (per-chain
    # adaptation from a common start can leave a chain with a collapsed window: see the module)
    w, tau = {"w": torch.zeros(1, d, dtype=F64)}, torch.ones(1, 1, dtype=F64)
    state = adaptive_sghmc_init(w)
    for _ in range(600):
        w, state, tau = step(w, state, tau, adapt=True)
    w = {"w": w["w"].expand(chains, d).clone()}
    state = {k: {"w": v["w"].expand(chains, d).clone()} for k, v in state.items()}
    tau = tau.expand(chains, 1).clone()
    for _ in range(1500):
        w, state, tau = step(w, state, tau, adapt=False)
    t = tau[:, 0]
    assert abs(t.mean() - tau_mean) < 4 * t.std() / math.sqrt(chains)
    wm = w["w"]
    se = (torch.diagonal(w_cov) / chains).sqrt()
    assert torch.all((wm.mean(0) - mu_n).abs() < 4 * se)
    # marginal posterior of w is a multivariate t with covariance b_n/(a_n-1) Lambda_n^-1
    emp = torch.cov(wm.T)
    assert torch.allclose(emp, w_cov, rtol=0.1, atol=0.1 * w_cov.abs().max().item())


def test_adaptive_sghmc_optimizer_equals_functional_and_resumes():
    torch.manual_seed(0)
    x, y = _regression()
    n = len(y)

    def loss_fn(p):
        return 0.5 * ((y - x @ p).square().mean() / 0.25) + 0.5 * p.square().sum() / n

    p = torch.zeros(2, dtype=F64, requires_grad=True)
    opt = AdaptiveSGHMC([p], lr=1e-2, num_data=n, num_burn_in_steps=5, generator=torch.Generator().manual_seed(3))
    ref = {"w": torch.zeros(2, dtype=F64)}
    st = adaptive_sghmc_init(ref)
    g_ref = torch.Generator().manual_seed(3)
    for step in range(12):
        opt.zero_grad()
        loss_fn(p).backward()
        opt.step()
        w = ref["w"].clone().requires_grad_(True)
        (gr,) = torch.autograd.grad(loss_fn(w), w)
        xi = {"w": torch.randn(2, generator=g_ref, dtype=F64)}
        ref, st = adaptive_sghmc_step(ref, {"w": gr}, st, 1e-2, n, adapt=step < 5, noise=xi)
        torch.testing.assert_close(p.detach(), ref["w"], rtol=1e-12, atol=1e-12)
    # state_dict round trip continues the same chain
    saved = opt.state_dict()
    q = p.detach().clone().requires_grad_(True)
    opt2 = AdaptiveSGHMC([q], lr=1e-2, num_data=n, num_burn_in_steps=5, generator=torch.Generator())
    opt2.load_state_dict(saved)
    for o, param in ((opt, p), (opt2, q)):
        o.zero_grad()
        loss_fn(param).backward()
        o.step()
    assert torch.equal(p, q)
    with pytest.raises(ValueError, match="num_burn_in_steps"):
        AdaptiveSGHMC([p], lr=1e-2, num_data=n, num_burn_in_steps=0)
    with pytest.raises(ValueError, match="friction"):
        AdaptiveSGHMC([p], lr=1e-2, num_data=n, friction=1.5)
