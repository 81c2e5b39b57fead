"""FractionalSDE(transition="guided") against the closed-form oracle (float64)."""

from __future__ import annotations

import math

import pytest
import torch

from probgen.data.fou import simulate_fou
from probgen.fractional import FractionalSDE
from probgen.fractional.oracle import fou_chain, log_likelihood
from probgen.sde import MarkovFBM

D = torch.float64


def _data(n=8, hurst=0.3, n_obs=10, horizon=2.0, dim=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    cols = []
    for _ in range(dim):
        times, paths = simulate_fou(n, hurst, theta=1.0, horizon=horizon, n_obs=n_obs, generator=g)
        cols.append(paths + 0.05 * torch.randn(paths.shape, generator=g))
    return torch.stack(cols, -1).to(D), times.to(D)


def _model(hurst, n_ou=5, kind="type1", dim=1, **kw):
    return FractionalSDE(dim=dim, n_ou=n_ou, gamma_max=12.0, horizon=2.0, kind=kind, hurst=hurst, theta=1.0,
                         context="next_obs", transition="guided", obs_std=0.05, dt=0.04, control="affine", **kw).double()


def _oracle(hurst, values, times, n_ou=5, kind="type1", theta=1.0, sigma=1.0):
    m = MarkovFBM(hurst, n_ou, 12.0, 2.0, kind, dtype=D)
    chain = fou_chain(m, theta, sigma, times, 0.04, 0.05)
    return log_likelihood(chain, values)


@pytest.mark.parametrize("kind", ["type1", "type2"])
def test_guided_elbo_at_zero_residual_is_the_exact_log_likelihood(kind):
    # every path, every H: the ELBO of the guided family at initialisation telescopes to log p(y)
    for hurst in (0.2, 0.35, 0.5, 0.65, 0.8):
        values, times = _data(hurst=hurst)
        torch.manual_seed(1)
        elbo = _model(hurst, kind=kind).elbo(values, times)["elbo"]
        exact = _oracle(hurst, values, times, kind=kind)
        assert torch.allclose(elbo, exact, atol=1e-6, rtol=0), (hurst, (elbo - exact).abs().max())


def test_guided_elbo_of_independent_dimensions_sums_the_oracle():
    values, times = _data(dim=2, hurst=0.6)
    elbo = _model(0.6, dim=2, n_ou=4).elbo(values, times)["elbo"]
    exact = sum(_oracle(0.6, values[..., i:i + 1], times, n_ou=4) for i in range(2))
    assert torch.allclose(elbo, exact, atol=1e-6, rtol=0)


def test_guided_elbo_gradient_is_the_log_likelihood_gradient():
    # d ELBO / d(H, theta, sigma) = d log p / d(H, theta, sigma) for every sample (autograd of the oracle)
    values, times = _data(hurst=0.7)
    model = _model(0.55, n_ou=8, learn_theta=True, learn_sigma=True)
    with torch.no_grad():
        model.sde.theta.fill_(0.8)
    model.elbo(values, times)["elbo"].sum().backward()
    h = torch.tensor(0.55, dtype=D, requires_grad=True)
    th = torch.tensor(0.8, dtype=D, requires_grad=True)
    sig = torch.tensor(1.0, dtype=D, requires_grad=True)
    m = MarkovFBM(h, 8, 12.0, 2.0, "type1", dtype=D)
    log_likelihood(fou_chain(m, th, sig, times, 0.04, 0.05), values).sum().backward()
    sde = model.sde
    d_hraw = h.grad * 0.55 * 0.45  # H = sigmoid(h_raw)
    d_sraw = sig.grad * torch.sigmoid(sde.sigma_raw.detach())  # sigma = softplus(s_raw)
    assert torch.allclose(sde.hurst_raw.grad, d_hraw, rtol=1e-6)
    assert torch.allclose(sde.theta.grad, th.grad.reshape(1), rtol=1e-6)
    assert torch.allclose(sde.sigma_raw.grad, d_sraw.reshape(1), rtol=1e-6)
    # the residual's gradient vanishes where the guide is exact (sticking the landing)
    assert float(sde.control.net[-1].weight.grad.abs().max()) < 1e-9


def _euler_bridge_std(m, ts_steps, dt, obs_std):
    """Closed form: the std of X on the Euler grid of the K-term prior given X(T) + N(0, s^2) (theta = 0)."""
    g, w = m.gammas, m.omegas
    k = len(g)
    F = torch.zeros(k + 1, k + 1, dtype=D)
    F[1:, 1:] = torch.diag(-g)
    F[0, 1:] = -g * w
    M = torch.eye(k + 1, dtype=D) + dt * F
    v = torch.cat([w.sum().view(1), torch.ones(k, dtype=D)])
    S = torch.zeros(k + 1, k + 1, dtype=D)
    S[1:, 1:] = 1 / (g[:, None] + g[None, :])
    covs = [S]
    for _ in range(ts_steps):
        covs.append(M @ covs[-1] @ M.T + dt * torch.outer(v, v))
    cross, R = [], torch.eye(k + 1, dtype=D)
    for n in range(ts_steps, -1, -1):  # Cov(X_T, X_n) = (M^{N-n} S_n)[0, 0]
        cross.append((R @ covs[n])[0, 0])
        R = R @ M
    cross = torch.stack(cross[::-1])
    var = torch.stack([c[0, 0] for c in covs])
    return (var - cross**2 / (cross[-1] + obs_std**2)).clamp_min(0).sqrt()


def test_guided_bridge_paths_have_the_euler_bridge_std():
    # the fBM bridge (theta = 0): guided posterior paths' std against the closed-form bridge of the same chain
    model = FractionalSDE(n_ou=6, gamma_max=12.0, horizon=2.0, hurst=0.3, learn_hurst=False, theta=0.0,
                          context="next_obs", transition="guided", obs_std=0.1, dt=0.04, sample_points=51,
                          sample_condition=[2.0, 0.0]).double()
    torch.manual_seed(0)
    n = 4000
    xs = model.sample(n)[..., 0]
    exact = _euler_bridge_std(MarkovFBM(0.3, 6, 12.0, 2.0, dtype=D), 50, 0.04, 0.1)
    se = exact / math.sqrt(2 * n)  # std of a Gaussian sample std
    assert (xs[:, 0] == 0).all()
    assert ((xs.std(0)[1:] - exact[1:]).abs() < 4 * se[1:]).all()
    assert (xs.mean(0).abs()[1:] < 4 * exact[1:] / math.sqrt(n)).all()


def test_guided_rejects_posterior_y0():
    with pytest.raises(ValueError, match="posterior_y0"):
        FractionalSDE(transition="guided", posterior_y0=True)
    with pytest.raises(ValueError, match="transition"):
        FractionalSDE(transition="guide")


@pytest.mark.slow
def test_learnt_hurst_is_the_maximum_likelihood_hurst_of_the_k_term_model():
    # full batch, so every gradient is d log p / dH exactly: training is gradient ascent on the exact
    # likelihood, and the learnt H must be its argmax (golden-section search of the closed form)
    g = torch.Generator().manual_seed(0)
    times, paths = simulate_fou(64, 0.8, theta=1.0, horizon=2.0, n_obs=20, generator=g)
    values = (paths + 0.05 * torch.randn(paths.shape, generator=g)).unsqueeze(-1)

    def ll(h):
        m = MarkovFBM(h, 10, 20.0, 2.0, dtype=D)
        return float(log_likelihood(fou_chain(m, 1.0, 1.0, times.to(D), 0.02, 0.05), values.to(D)).mean())

    lo, hi, r = 0.5, 0.95, (math.sqrt(5) - 1) / 2
    while hi - lo > 1e-4:
        a, b = hi - r * (hi - lo), lo + r * (hi - lo)
        lo, hi = (lo, b) if ll(a) > ll(b) else (a, hi)
    mle = 0.5 * (lo + hi)
    torch.manual_seed(0)
    model = FractionalSDE(n_ou=10, gamma_max=20.0, horizon=2.0, hurst=0.5, theta=1.0, context="next_obs",
                          transition="guided", obs_std=0.05, dt=0.02, control="affine", control_hidden=16,
                          control_depth=1, lr=0.01, hurst_lr=0.05)
    opt = model.configure_optimizers()
    trace = []
    for _ in range(80):
        loss = -model.elbo(values, times)["elbo"].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        trace.append(float(model.sde.hurst))
    learnt = sum(trace[-16:]) / 16
    print(f"learnt H {learnt:.4f}, closed-form MLE {mle:.4f} (true 0.8)")
    assert abs(learnt - mle) < 0.01


def test_guided_with_a_neural_drift_guides_the_model_and_trains_the_residual():
    # drift="ou+mlp": the auxiliary is the OU part; at the zero-initialised MLP the model is still linear, so the
    # ELBO is exact; once the MLP moves, the guide is only a proposal and the residual gets a gradient
    values, times = _data(hurst=0.4)
    model = _model(0.4, drift="ou+mlp", diffusion="constant")
    assert torch.allclose(model.elbo(values, times)["elbo"], _oracle(0.4, values, times), atol=1e-6, rtol=0)
    with torch.no_grad():
        model.sde.drift_net[-1].weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    out = model.elbo(values, times)
    out["elbo"].sum().backward()
    assert torch.isfinite(out["elbo"]).all()
    assert float(model.sde.control.net[-1].weight.grad.abs().max()) > 1e-3
    assert float(model.sde.drift_net[-1].weight.grad.abs().max()) > 1e-3
