"""The augmented fractional SDE and its ELBO against closed forms (linear-Gaussian cases)."""

from __future__ import annotations

import math

import pytest
import torch

from probgen.fractional.augmented import AugmentedFractionalSDE, split_state
from probgen.fractional.model import (
    NeuralFractionalSDE,
    gaussian_log_likelihood,
    next_observation_context,
)
from probgen.sde import sdeint
from probgen.sde.fbm import MarkovFBM

D = torch.float64


def _const(value):
    return lambda t, x: torch.full_like(x, value)


def _zero(t, x):
    return torch.zeros_like(x)


@pytest.mark.parametrize("kind", ["type1", "type2"])
def test_prior_paths_have_the_closed_form_markov_covariance(kind):
    m = MarkovFBM(0.3, n_ou=3, gamma_max=5.0, horizon=1.0, kind=kind, dtype=D)
    sigma = 0.7
    sde = AugmentedFractionalSDE(_zero, _const(sigma), m.gammas, m.omegas, dim=1)
    n, dt = 4000, 0.004
    gen = torch.Generator().manual_seed(0)
    z0 = sde.initial_state(torch.zeros(n, 1, dtype=D), m.initial_state((n, 1), generator=gen))
    ts = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=D)
    with torch.no_grad():
        zs = sdeint(sde, z0, ts, dt=dt, generator=gen)
    x, _, kl = split_state(zs, 1, 3)
    x = x[..., 0]
    cov = sigma**2 * m.covariance(ts)
    emp = x @ x.T / n
    se = torch.sqrt((cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov**2) / n)
    # Euler's bias on a linear SDE is O(gamma_max dt) relative (2% here)
    bias = 5.0 * dt * cov.diagonal().max()
    assert ((emp - cov).abs() <= 4 * se + bias).all()
    assert torch.equal(kl, torch.zeros_like(kl))  # no control, no KL


def test_white_noise_baseline_is_brownian():
    sde = AugmentedFractionalSDE(_zero, _const(0.5), torch.zeros(0, dtype=D), torch.zeros(0, dtype=D), dim=2)
    n = 4000
    z0 = sde.initial_state(torch.zeros(n, 2, dtype=D))
    ts = torch.tensor([0.0, 0.5, 2.0], dtype=D)
    zs = sdeint(sde, z0, ts, dt=0.05, generator=torch.Generator().manual_seed(1))
    assert zs.shape == (3, n, 3)
    var = zs[..., :2].pow(2).mean(1)  # (3, 2)
    exact = 0.25 * ts[:, None].expand(3, 2)
    se = exact * math.sqrt(2 / n)
    assert ((var - exact).abs() <= 4 * se + 1e-12).all()


def _type2_system(hurst=0.3, k=3, gamma_max=5.0, T=1.0):
    m = MarkovFBM(hurst, n_ou=k, gamma_max=gamma_max, horizon=T, kind="type2", dtype=D)
    return m, m.gammas, m.omegas


def test_elbo_with_constant_control_matches_closed_form():
    # prior dX = sigma dBhat (type II, Y(0) = 0), obs y = X(T) + N(0, s^2); control u = c.
    m, g, w = _type2_system()
    sigma, s, y, c, T = 0.8, 0.3, 0.9, 0.6, 1.0
    ctrl = lambda t, x, yy, ctx: torch.full_like(x, c)
    sde = AugmentedFractionalSDE(_zero, _const(sigma), g, w, dim=1, control=ctrl)
    n = 4000
    z0 = sde.initial_state(torch.zeros(n, 1, dtype=D))
    zs = sdeint(sde, z0, torch.tensor([0.0, T], dtype=D), dt=0.002, generator=torch.Generator().manual_seed(2))
    x, _, kl = split_state(zs[-1], 1, 3)
    ll = gaussian_log_likelihood(torch.full_like(x, y), x, s)
    elbo = ll - kl
    # closed form: X(T) ~ N(mu, v), mu = sigma sum_k w_k c (1 - e^{-g_k T}) / g_k, KL = c^2 T / 2
    v = sigma**2 * float(m.covariance(torch.tensor([T], dtype=D))[0, 0])
    mu = sigma * float((w * c * (1 - torch.exp(-g * T)) / g).sum())
    exact = -0.5 * math.log(2 * math.pi * s**2) - ((y - mu) ** 2 + v) / (2 * s**2) - 0.5 * c**2 * T
    assert torch.allclose(kl, torch.full_like(kl, 0.5 * c**2 * T), rtol=1e-10)
    se = float(elbo.std()) / math.sqrt(n)
    assert abs(float(elbo.mean()) - exact) < 4 * se + 0.01 * abs(exact)


def test_elbo_with_optimal_control_equals_log_evidence():
    # The h-transform control u* = v^T grad_z log p(y | z_t) is linear in (x, y); with it the
    # ELBO equals log p(y) = log N(y; 0, Var X(T) + s^2).
    m, g, w = _type2_system()
    sigma, s, yobs, T = 0.8, 0.3, 0.9, 1.0
    sw = sigma * w

    def ctrl(t, x, yy, ctx):
        tau = T - t
        e = torch.exp(-g * tau)  # (K,)
        a_y = sw * (e - 1)  # dX(T)/dY_k(t)
        mean = x[:, 0] + (yy[:, 0, :] * a_y).sum(-1)
        gi, gj = g[:, None], g[None, :]
        rest = (sw[:, None] * sw[None, :] * (1 - torch.exp(-(gi + gj) * tau)) / (gi + gj)).sum()
        gain = (sw * e).sum()  # g^T grad of the mean
        return (gain * (yobs - mean) / (rest + s**2)).unsqueeze(-1)

    sde = AugmentedFractionalSDE(_zero, _const(sigma), g, w, dim=1, control=ctrl)
    n = 4000
    z0 = sde.initial_state(torch.zeros(n, 1, dtype=D))
    zs = sdeint(sde, z0, torch.tensor([0.0, T], dtype=D), dt=0.002, generator=torch.Generator().manual_seed(3))
    x, _, kl = split_state(zs[-1], 1, 3)
    elbo = gaussian_log_likelihood(torch.full_like(x, yobs), x, s) - kl
    v = sigma**2 * float(m.covariance(torch.tensor([T], dtype=D))[0, 0])
    log_evidence = -0.5 * math.log(2 * math.pi * (v + s**2)) - yobs**2 / (2 * (v + s**2))
    se = float(elbo.std()) / math.sqrt(n)
    assert abs(float(elbo.mean()) - log_evidence) < 4 * se + 0.01
    # and the prior (zero control) gives a strictly lower bound
    prior_elbo = -0.5 * math.log(2 * math.pi * s**2) - (yobs**2 + v) / (2 * s**2)
    assert prior_elbo < log_evidence - 0.05


def test_neural_sde_zero_control_has_zero_kl_and_hurst_gets_gradients():
    model = NeuralFractionalSDE(dim=2, n_ou=3, gamma_max=10.0, horizon=1.0, hurst=0.3).double()
    x0 = torch.zeros(16, 2, dtype=D)
    ts = torch.tensor([0.0, 0.5, 1.0], dtype=D)
    xs, ys, kl = model.simulate(x0, ts, dt=0.02, generator=torch.Generator().manual_seed(0))
    assert xs.shape == (3, 16, 2) and ys.shape == (3, 16, 2, 3)
    assert torch.equal(kl, torch.zeros(16, dtype=D))  # zero-initialised control
    ll = gaussian_log_likelihood(torch.ones(16, 2, dtype=D), xs[-1], 0.1)
    (grad,) = torch.autograd.grad((ll - kl).mean(), model.hurst_raw)
    assert torch.isfinite(grad) and grad != 0
    with pytest.raises(ValueError, match="gamma_max \\* dt"):
        model.simulate(x0, ts, dt=0.1)


def test_white_model_has_no_ou_state():
    model = NeuralFractionalSDE(dim=1, white=True)
    assert model.n_ou == 0 and float(model.hurst) == 0.5
    xs, ys, kl = model.simulate(torch.zeros(4, 1), torch.tensor([0.0, 1.0]), dt=0.1)
    assert ys.shape == (2, 4, 1, 0) and xs.shape == (2, 4, 1) and kl.shape == (4,)


def test_next_observation_context():
    times = torch.tensor([0.1, 0.2, 0.3])
    values = torch.arange(6.0).reshape(2, 3, 1)
    ctx = next_observation_context(times, values, dt=0.01)
    x = torch.zeros(2, 1)
    c = ctx(torch.tensor(0.1), x)  # at an observation time the next one is the target
    assert torch.allclose(c[:, 0], values[:, 1, 0]) and torch.allclose(c[:, 1], torch.full((2,), 0.1))
    assert torch.allclose(c[:, 2], values[:, 1, 0] / 0.11)
    c = ctx(torch.tensor(0.35), x)  # past the last: keep the last
    assert torch.allclose(c[:, 0], values[:, 2, 0])


def test_bad_arguments():
    with pytest.raises(ValueError, match="hurst"):
        NeuralFractionalSDE(hurst=1.5)
    with pytest.raises(ValueError, match="drift"):
        NeuralFractionalSDE(drift="linear")
    with pytest.raises(ValueError, match="kind"):
        NeuralFractionalSDE(kind="typeI")
