"""Backward filter and guided Euler step against closed forms (float64)."""

from __future__ import annotations

import math

import pytest
import torch

from probgen.sde import sdeint, step_grid
from probgen.sde.guided import GuidedEuler, LinearGaussianChain, backward_filter, guided_initial_state

D = torch.float64


def _chain(F, v, times, dt, obs_var, z0_mean, z0_factor, index=(0,)):
    grid, counts = step_grid([0.0, *times], dt)
    obs_steps = [sum(counts[: i + 1]) for i in range(len(counts))]
    return LinearGaussianChain(F, v, grid, obs_steps, list(index), obs_var, z0_mean, z0_factor)


def _random_case(seed=0, B=3):
    g = torch.Generator().manual_seed(seed)
    F = -0.5 * torch.eye(3, dtype=D) + 0.3 * torch.randn(3, 3, generator=g, dtype=D)
    v = torch.randn(3, 2, generator=g, dtype=D)
    times = [0.13, 0.3, 0.5]  # unequal steps at dt = 0.05
    chain = _chain(F, v, times, 0.05, torch.tensor([0.04, 0.09], dtype=D),
                   torch.tensor([0.2, -0.1, 0.0], dtype=D), 0.5 * torch.randn(3, 2, generator=g, dtype=D), index=(0, 2))
    values = torch.randn(B, len(times), 2, generator=g, dtype=D)
    return chain, values


def _dense_log_likelihood(chain, values):
    """log N(y; C mean, C cov C^T + R) of the stacked observations: moments of the chain, then a joint Gaussian."""
    Dz = chain.drift.shape[0]
    mean, cov = chain.z0_mean, chain.z0_factor @ chain.z0_factor.T
    means, covs, trans = [mean], [cov], []
    for k in range(len(chain.grid) - 1):
        M, h = chain.step_matrix(k)
        trans.append(M)
        means.append(M @ means[-1])
        covs.append(M @ covs[-1] @ M.T + h * chain.noise @ chain.noise.T)
    idx, p = chain.obs_steps, len(chain.index)
    n = len(idx)
    C = torch.zeros(n * p, n * p, dtype=D)
    for a in range(n):
        for b in range(a, n):
            R = torch.eye(Dz, dtype=D)
            for k in range(idx[a], idx[b]):
                R = trans[k] @ R
            block = (R @ covs[idx[a]])[chain.index][:, chain.index]  # Cov(z_b, z_a)
            C[b * p:(b + 1) * p, a * p:(a + 1) * p] = block
            C[a * p:(a + 1) * p, b * p:(b + 1) * p] = block.T
    C = C + torch.diag(chain.obs_var.repeat(n))
    mu = torch.cat([means[j][chain.index] for j in idx])
    return torch.distributions.MultivariateNormal(mu, C).log_prob(values.flatten(1))


def _exact_log_likelihood(chain, msg):
    """log E_{z0}[exp V_0(z0)] from the messages (a Gaussian integral)."""
    P, q, c = msg.P[0], msg.q[0], msg.c[0]
    mean, L = chain.z0_mean, chain.z0_factor
    lam = torch.eye(L.shape[1], dtype=D) + L.T @ P @ L
    b = (q - mean @ P) @ L
    v0 = c + q @ mean - 0.5 * mean @ P @ mean
    return v0 + 0.5 * (b * torch.linalg.solve(lam, b.T).T).sum(-1) - 0.5 * torch.logdet(lam)


def test_backward_filter_gives_the_dense_gaussian_likelihood():
    chain, values = _random_case()
    msg = backward_filter(chain, values)
    assert torch.allclose(_exact_log_likelihood(chain, msg), _dense_log_likelihood(chain, values), atol=1e-10)


def test_backward_filter_gradcheck():
    chain, values = _random_case(B=2)

    def fn(F, v, y):
        c = LinearGaussianChain(F, v, chain.grid, chain.obs_steps, chain.index, chain.obs_var, chain.z0_mean,
                                chain.z0_factor)
        msg = backward_filter(c, y)
        return msg.P[0], msg.q[0], msg.c[0], msg.WP[3], msg.Wq[3]

    args = (chain.drift.clone().requires_grad_(), chain.noise.clone().requires_grad_(), values.clone().requires_grad_())
    assert torch.autograd.gradcheck(fn, args)


class _LinearSDE(torch.nn.Module):
    """dz = F z dt + v dW on the first D coordinates; the last (the accumulator) stays put."""

    noise_type, sde_type = "general", "ito"

    def __init__(self, F, v):
        super().__init__()
        self.F, self.v = F, v

    def f(self, t, z):
        x = z[:, :-1]
        fx = x @ self.F.T
        return torch.cat([fx, torch.zeros_like(z[:, -1:])], -1)

    def g(self, t, z):
        G = torch.cat([self.v, torch.zeros(1, self.v.shape[1], dtype=z.dtype)], 0)
        return G.expand(z.shape[0], -1, -1)


def _guided_elbo(chain, values, sde, transition=None, seed=0):
    msg = backward_filter(chain, values)
    gen = torch.Generator().manual_seed(seed)
    z0, log_ratio0 = guided_initial_state(chain, msg, gen)
    state = torch.cat([z0, torch.zeros(z0.shape[0], 1, dtype=D)], -1)
    ts = torch.tensor([chain.grid[0]] + [chain.grid[j] for j in chain.obs_steps], dtype=D)
    zs = sdeint(sde, state, ts, method=GuidedEuler, dt=0.05, generator=gen,
                options={"guide": msg, "transition": transition})
    obs = zs[1:, :, chain.index].transpose(0, 1)  # (B, n, p)
    log_lik = torch.distributions.Normal(obs, chain.obs_var.sqrt()).log_prob(values).sum((-1, -2))
    return log_lik - zs[-1, :, -1] + log_ratio0, zs


def test_guided_step_with_zero_residual_gives_the_exact_log_likelihood_for_every_path():
    # the model is its own auxiliary: the guided chain is the exact posterior, and the per-path ELBO
    # (log p(w)/q(w) summed over the steps, the observations' log-lik, z0's log ratio) telescopes to log p(y)
    chain, values = _random_case(B=4)
    values = values.repeat(8, 1, 1)  # 8 independent paths per observation set
    elbo, _ = _guided_elbo(chain, values, _LinearSDE(chain.drift, chain.noise))
    exact = _dense_log_likelihood(chain, values)
    assert torch.allclose(elbo, exact, atol=1e-9)


def test_guided_step_with_a_residual_is_a_valid_proposal():
    # a residual gives a proper proposal:
    # the ELBO stays below log p(y) (Jensen) and the importance weights exp(ELBO - log p) average to 1
    chain, values = _random_case(B=1)
    values = values.expand(4000, -1, -1)

    def residual(t, z):
        u = 0.8 * torch.tanh(z[:, :2]) + 0.3
        return u, torch.full_like(u, -0.4)

    elbo, _ = _guided_elbo(chain, values, _LinearSDE(chain.drift, chain.noise), residual, seed=1)
    exact = _dense_log_likelihood(chain, values[:1])
    w = torch.exp(elbo - exact)
    assert float(elbo.mean()) < float(exact) - 0.05
    assert abs(float(w.mean()) - 1) < 4 * float(w.std()) / math.sqrt(w.numel())


def test_guided_initial_state_is_the_gaussian_posterior():
    chain, values = _random_case(B=1)
    msg = backward_filter(chain, values)
    z0, log_ratio = guided_initial_state(chain, msg.__class__(msg.P, [q.expand(20000, -1) for q in msg.q], msg.c,
                                                                  msg.WP, msg.Wq, msg.Wc, msg.gap, msg.grid),
                                         torch.Generator().manual_seed(0))
    # closed form: p(z0) ∝ N(mean, LL^T) exp(-z^T P z / 2 + q^T z), in covariance form
    S0 = chain.z0_factor @ chain.z0_factor.T
    P, q = msg.P[0], msg.q[0][0]
    K = S0 @ torch.linalg.inv(torch.eye(3, dtype=D) + P @ S0)
    post_mean = chain.z0_mean + K @ (q - P @ chain.z0_mean)
    post_cov = S0 - K @ P @ S0
    n = z0.shape[0]
    se = torch.sqrt(torch.diagonal(post_cov) / n)
    assert ((z0.mean(0) - post_mean).abs() < 4 * se + 1e-12).all()
    emp = torch.cov(z0.T)
    assert torch.allclose(emp, post_cov, atol=4 * float(torch.diagonal(post_cov).max()) * math.sqrt(2 / n))
    # log p(z0) - log q(z0) + V_0(z0) is log E_p[exp V_0] for every draw
    V0 = msg.c[0] + z0 @ q - 0.5 * ((z0 @ P) * z0).sum(-1)
    assert torch.allclose(log_ratio + V0, _exact_log_likelihood(chain, msg).expand(n), atol=1e-10)


def test_guided_euler_rejects_bad_options():
    chain, values = _random_case(B=2)
    msg = backward_filter(chain, values)
    sde = _LinearSDE(chain.drift, chain.noise)
    z = torch.zeros(2, 4, dtype=D)
    ts = torch.tensor([0.0, 0.13, 0.3, 0.5], dtype=D)
    with pytest.raises(TypeError, match="guide"):
        sdeint(sde, z, ts, method=GuidedEuler, dt=0.05, options={})
    with pytest.raises(ValueError, match="grid"):
        sdeint(sde, z, ts, method=GuidedEuler, dt=0.02, options={"guide": msg})
    with pytest.raises(ValueError, match="options"):
        sdeint(sde, z, ts, method=GuidedEuler, dt=0.05, options={"guide": msg, "kappa": 1})
    with pytest.raises(ValueError, match=r"values must be \(B, 3, 2\)"):
        backward_filter(chain, values[:, :2])
    with pytest.raises(ValueError, match="obs_steps"):
        LinearGaussianChain(chain.drift, chain.noise, chain.grid, [0, 3], chain.index, chain.obs_var,
                            chain.z0_mean, chain.z0_factor)
