"""FractionalSDE with the learnt-variance transition: wiring, the rho guard, and a trained model vs the oracle."""

from __future__ import annotations

import pytest
import torch

from probgen.data.fou import simulate_fou
from probgen.fractional import FractionalSDE
from probgen.fractional.oracle import backward_messages, fou_chain, log_likelihood, prior_start_elbo
from probgen.sde import MarkovFBM


def _data(n=8, hurst=0.3, n_obs=5, horizon=1.0):
    times, paths = simulate_fou(n, hurst, theta=1.0, horizon=horizon, n_obs=n_obs,
                                generator=torch.Generator().manual_seed(0))
    return paths.unsqueeze(-1), times


@pytest.mark.parametrize("context", ["next_obs", "all_obs"])
def test_gaussian_transition_elbo_has_gradients_and_beats_the_girsanov_prior(context):
    values, times = _data()
    torch.manual_seed(0)
    model = FractionalSDE(n_ou=3, gamma_max=10.0, horizon=1.0, hurst=0.3, context=context, transition="gaussian",
                          obs_std=0.05, dt=0.05, control="affine", encoder_hidden=4)
    out = model.elbo(values, times.expand(8, -1))
    assert out["elbo"].shape == (8,) and torch.isfinite(out["elbo"]).all()
    assert torch.allclose(out["elbo"], out["log_lik"] - out["kl"])
    (-out["elbo"].mean()).backward()
    assert model.sde.hurst_raw.grad is not None and model.sde.hurst_raw.grad != 0
    if context == "all_obs":
        assert model.sde.obs_encoder.gru.weight_ih_l0.grad is not None
    # at initialisation the control is zero: the exact update alone already far exceeds the prior's ELBO
    torch.manual_seed(0)
    prior = FractionalSDE(n_ou=3, gamma_max=10.0, horizon=1.0, hurst=0.3, context=context, obs_std=0.05, dt=0.05,
                          control="affine", encoder_hidden=4)
    with pytest.warns(UserWarning, match="rho"):
        girsanov = prior.elbo(values, times)["elbo"]
    assert float(out["elbo"].mean()) > float(girsanov.mean()) + 100
    paths = model.posterior_paths(values[:2], times, torch.linspace(0, 1, 6))
    assert paths.shape == (2, 6, 1)


def test_observation_step_rho_closed_form():
    model = FractionalSDE(n_ou=5, gamma_max=20.0, horizon=2.0, hurst=0.3, obs_std=0.05, dt=0.02)
    ts = torch.cat([torch.zeros(1), torch.linspace(0.1, 2.0, 20)])
    v0 = float(MarkovFBM(0.3, 5, 20.0, 2.0).omegas.sum())
    assert model.sde.observation_step_rho(ts, 0.02, 0.05) == pytest.approx(v0**2 * 0.02 / 0.05**2, rel=1e-4)


def test_bad_transition_and_context():
    with pytest.raises(ValueError, match="transition"):
        FractionalSDE(transition="kappa")
    with pytest.raises(ValueError, match="context"):
        FractionalSDE(context="all")
    with pytest.raises(ValueError, match="encoder_hidden"):
        FractionalSDE(context="all_obs", encoder_hidden=0)


@pytest.mark.slow
@pytest.mark.parametrize("hurst, posterior_y0", [
    (0.3, False),
    # measured 1 Dec 2026: 5.35 nats below the optimum after 150 iterations (0.56 at H = 0.3); this
    # optimisation error is what holds the learnt H low at H >= 0.7 (docs/benchmarks.md)
    pytest.param(0.8, True, marks=pytest.mark.xfail(strict=True, reason="optimisation error at large H (issue #11)")),
])
def test_trained_gaussian_family_is_within_3_nats_of_the_oracle(hurst, posterior_y0):
    # fixed H and theta = 1 (the truth): only the variational family is trained; the oracle is its
    # closed-form optimum: with Y(0) from the prior (posterior_y0=False), else the exact log-likelihood
    # (the Girsanov family's optimum is 300 nats lower at H = 0.3)
    times, paths = simulate_fou(128, hurst, theta=1.0, horizon=2.0, n_obs=20,
                                generator=torch.Generator().manual_seed(0))
    values = paths.unsqueeze(-1)
    torch.manual_seed(0)
    model = FractionalSDE(n_ou=5, gamma_max=20.0, horizon=2.0, hurst=hurst, learn_hurst=False, theta=1.0,
                          context="next_obs", transition="gaussian", obs_std=0.05, dt=0.02, control="affine", lr=0.01,
                          posterior_y0=posterior_y0)
    opt = model.configure_optimizers()
    gen = torch.Generator().manual_seed(1)
    for _ in range(150):
        loss = -model.elbo(values[torch.randint(0, 128, (64,), generator=gen)], times)["elbo"].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        elbo = float(torch.stack([model.elbo(values, times)["elbo"].mean() for _ in range(4)]).mean())
    chain = fou_chain(MarkovFBM(hurst, 5, 20.0, 2.0, dtype=torch.float64), 1.0, 1.0, times, 0.02, 0.05)
    msg = backward_messages(chain, values.double())
    best = float((log_likelihood(chain, values.double(), msg) if posterior_y0 else prior_start_elbo(chain, msg)).mean())
    print(f"H = {hurst}: trained ELBO {elbo:.3f}, family optimum {best:.3f}, gap {best - elbo:.3f} nats per path")
    assert best - 3 < elbo <= best + 0.5  # 0.5: Monte Carlo error of the ELBO estimate over 4 x 128 paths


def test_initial_ou_posterior_kl_is_the_gaussian_kl_and_starts_at_the_prior():
    from probgen.fractional.model import InitialOUPosterior

    gammas = MarkovFBM(0.6, 4, 10.0, 1.0, dtype=torch.float64).gammas
    q = InitialOUPosterior(gammas, horizon=1.0, hidden=8).double()
    times = torch.linspace(0.2, 1.0, 5, dtype=torch.float64)
    values = torch.randn(3, 5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    _, kl0 = q(times, values)
    assert torch.allclose(kl0, torch.zeros(3, dtype=torch.float64), atol=1e-10)  # q = prior at initialisation
    with torch.no_grad():  # move q away from the prior
        for p in q.parameters():
            p.add_(0.3 * torch.randn(p.shape, dtype=p.dtype, generator=torch.Generator().manual_seed(p.numel())))
    y0, kl = q(times, values, x0=0.4)
    assert y0.shape == (3, 2, 4)
    cov = 1.0 / (gammas[:, None] + gammas[None, :]) + 1e-12 * torch.eye(4, dtype=torch.float64)  # q's jitter
    prior = torch.distributions.MultivariateNormal(torch.zeros(4, dtype=torch.float64), cov)
    t = times.unsqueeze(-1)
    a = q.weight_net(torch.cat([t, torch.sin(t), torch.cos(t)], dim=-1))
    mu = q.bias + torch.einsum("bnd,nk->bdk", values - 0.4, a)
    post = torch.distributions.MultivariateNormal(mu, scale_tril=q.factor())
    expected = torch.distributions.kl_divergence(post, prior).sum(-1)
    assert torch.allclose(kl, expected, atol=1e-10, rtol=0)


def test_posterior_y0_enters_the_elbo_and_is_trained():
    values, times = _data()
    torch.manual_seed(0)
    model = FractionalSDE(n_ou=3, gamma_max=10.0, horizon=1.0, hurst=0.6, context="next_obs", transition="gaussian",
                          obs_std=0.05, dt=0.05, control="affine", posterior_y0=True)
    out = model.elbo(values, times)
    assert torch.allclose(out["elbo"], out["log_lik"] - out["kl"])
    (-out["elbo"].mean()).backward()
    assert model.y0_posterior.bias.grad is not None and model.y0_posterior.bias.grad.abs().sum() > 0
    opt = model.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    assert any(p is model.y0_posterior.bias for g in opt.param_groups for p in g["params"])
    with pytest.raises(ValueError, match="posterior_y0"):
        FractionalSDE(kind="type2", posterior_y0=True)


def test_observation_attention_sums_over_the_observations_ahead_only():
    from probgen.fractional.model import ObservationAttention

    torch.manual_seed(0)
    att = ObservationAttention(dim=2, features=3, horizon=1.0).double()
    times = torch.tensor([0.25, 0.5, 0.75, 1.0], dtype=torch.float64)
    values = torch.randn(5, 4, 2, dtype=torch.float64)
    x = torch.randn(5, 2, dtype=torch.float64)
    t = torch.tensor(0.5, dtype=torch.float64)  # t_2 = 0.5 is reached: only 0.75 and 1.0 are ahead
    out = att(times, values, 0.05, t, x)
    expected = torch.zeros(5, 2, 3, dtype=torch.float64)
    for j in (2, 3):
        a = att.weight_net(torch.stack([(times[j] - t) / 1.0, torch.sin(t), torch.cos(t)]))
        expected += (values[:, j] - x).unsqueeze(-1) * a
    assert out.shape == (5, 6) and torch.allclose(out, expected.flatten(1), atol=1e-12)
    model = FractionalSDE(n_ou=3, gamma_max=10.0, horizon=1.0, hurst=0.6, context="attention", encoder_hidden=3,
                          transition="gaussian", obs_std=0.05, dt=0.05, control="affine")
    vals, ts = _data()
    out = model.elbo(vals, ts)
    (-out["elbo"].mean()).backward()
    assert torch.isfinite(out["elbo"]).all()
    opt = model.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    assert any(p is model.obs_attention.weight_net[0].weight for g in opt.param_groups for p in g["params"])
