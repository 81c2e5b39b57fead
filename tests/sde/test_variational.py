"""VariationalEuler and the observation-step update against closed forms (float64)."""

from __future__ import annotations

import math

import pytest
import torch

from probgen.data.fou import simulate_fou
from probgen.fractional.augmented import AugmentedFractionalSDE, split_state
from probgen.fractional.oracle import (
    backward_messages,
    fou_chain,
    girsanov_gap,
    log_likelihood,
    optimal_transition,
)
from probgen.sde import MarkovFBM, sdeint
from probgen.sde.solvers import step_grid
from probgen.sde.variational import (
    LinearGaussianObservations,
    VariationalEuler,
    condition_on_observation,
    gaussian_transition_kl,
)

D = torch.float64


def test_step_grid_of_float32_observation_times_is_uniform():
    # the fOU benchmark's times in float32: 20 intervals of 0.1 at dt = 0.02 are 100 steps, not 111
    times, _ = simulate_fou(2, 0.3, horizon=2.0, n_obs=20, generator=torch.Generator().manual_seed(0))
    assert times.dtype == torch.float32
    grid, counts = step_grid([0.0, *times.tolist()], 0.02)
    assert counts == [5] * 20 and len(grid) == 101
    times40, _ = simulate_fou(2, 0.7, horizon=2.0, n_obs=40, generator=torch.Generator().manual_seed(0))
    assert step_grid([0.0, *times40.tolist()], 0.01)[1] == [5] * 40  # the shipped fou_hurst.yaml
    # a span that is truly longer than n steps still gets ceil(span / dt) steps
    assert step_grid([0.0, 0.1003], 0.02)[1] == [6]
    assert step_grid([0.0, 1.0], 1e-5)[1] == [100000]


def test_transition_kl_closed_form():
    u = torch.tensor([[0.3, -1.2]], dtype=D)
    log_var = torch.tensor([[-0.5, -2.0]], dtype=D)
    h = 0.05
    kl = gaussian_transition_kl(u, log_var, h)
    q = torch.distributions.Normal(u * h, torch.sqrt(h * log_var.exp()))
    p = torch.distributions.Normal(torch.zeros_like(u), math.sqrt(h))
    assert torch.allclose(kl, torch.distributions.kl_divergence(q, p).sum(-1), atol=1e-14)
    assert torch.allclose(gaussian_transition_kl(u, None, h), 0.5 * h * (u * u).sum(-1), atol=1e-15)


def _joint_conditional(mean, gain, mu_r, var_r, y, obs_var):
    """Covariance-form Gaussian conditioning of w given y = mean + G w + eps (Schur complement)."""
    S_w = torch.diag_embed(var_r)
    S_yw = gain @ S_w
    S_yy = S_yw @ gain.transpose(1, 2) + torch.diag_embed(obs_var.expand_as(y))
    my = mean + (gain @ mu_r.unsqueeze(-1)).squeeze(-1)
    K = torch.linalg.solve(S_yy, S_yw).transpose(1, 2)
    cond_mean = mu_r + (K @ (y - my).unsqueeze(-1)).squeeze(-1)
    cond_cov = S_w - K @ S_yw
    log_z = torch.distributions.MultivariateNormal(my, S_yy).log_prob(y)
    return cond_mean, cond_cov, log_z


def test_observation_update_equals_gaussian_conditional():
    gen = torch.Generator().manual_seed(0)
    B, p, m, h = 5, 2, 3, 0.02
    mean = torch.randn(B, p, generator=gen, dtype=D)
    gain = torch.randn(B, p, m, generator=gen, dtype=D)
    mu_r = torch.randn(B, m, generator=gen, dtype=D) * 0.1
    var_r = h * torch.rand(B, m, generator=gen, dtype=D).add(0.2)
    y = torch.randn(B, p, generator=gen, dtype=D)
    obs_var = torch.tensor([0.05**2, 0.2**2], dtype=D)
    mu_q, factor, log_z, elbo = condition_on_observation(mean, gain, mu_r, var_r, y, obs_var, h)
    cm, cc, lz = _joint_conditional(mean, gain, mu_r, var_r, y, obs_var)
    assert torch.allclose(mu_q, cm, atol=1e-10, rtol=0)
    assert torch.allclose(factor @ factor.transpose(1, 2), cc, atol=1e-10, rtol=0)
    assert torch.allclose(log_z, lz, atol=1e-10, rtol=0)
    # ELBO term: E_q[log p(w) + log N(y | w) - log q(w)] with q the conditional, in closed form
    q = torch.distributions.MultivariateNormal(cm, cc)
    prior = torch.distributions.MultivariateNormal(torch.zeros(m, dtype=D), h * torch.eye(m, dtype=D))
    ll = (-0.5 * (((y - mean - (gain @ cm.unsqueeze(-1)).squeeze(-1)) ** 2) / obs_var).sum(-1)
          - 0.5 * ((gain.transpose(1, 2) / obs_var) @ gain * cc).sum((-1, -2))
          - 0.5 * torch.log(2 * math.pi * obs_var).sum())
    assert torch.allclose(elbo, ll - torch.distributions.kl_divergence(q, prior), atol=1e-10, rtol=0)
    # with r = p the term is the step's log evidence N(y; mean, h G G^T + R)
    _, _, lz_p, elbo_p = condition_on_observation(mean, gain, torch.zeros_like(mu_r), torch.full_like(var_r, h),
                                                  y, obs_var, h)
    ev = torch.distributions.MultivariateNormal(mean, h * gain @ gain.transpose(1, 2) + torch.diag(obs_var)).log_prob(y)
    assert torch.allclose(elbo_p, ev, atol=1e-10, rtol=0) and torch.allclose(lz_p, ev, atol=1e-10, rtol=0)


def _fou_case(hurst=0.3, n=64, n_obs=5, dt=0.02, horizon=1.0):
    m = MarkovFBM(hurst, n_ou=3, gamma_max=5.0, horizon=horizon, kind="type1", dtype=D)
    times, paths = simulate_fou(n, hurst, theta=1.0, sigma=1.0, horizon=horizon, n_obs=n_obs,
                                generator=torch.Generator().manual_seed(1), dtype=D)
    return m, times, paths.unsqueeze(-1), fou_chain(m, 1.0, 1.0, times, dt, 0.05)


def _prior_sde(m):
    return AugmentedFractionalSDE(lambda t, x: -x, lambda t, x: torch.ones_like(x), m.gammas, m.omegas, dim=1,
                                  constant_diffusion=True)


class _GridTransition:
    """The oracle's optimal transition, looked up by the step the solver is on."""

    def __init__(self, chain, msg, girsanov):
        self.chain, self.msg, self.girsanov, self.k = chain, msg, girsanov, 0

    def __call__(self, t, z):
        out = optimal_transition(self.chain, self.msg, self.k, z[:, :-1], girsanov=self.girsanov)
        self.k += 1
        return out


def test_exact_posterior_transitions_reach_the_exact_log_likelihood():
    # The learnt-variance family with the exact update contains the posterior: with the oracle's
    # transitions the ELBO's expectation is log p(y | z0) (Monte Carlo over paths, 4 s.e.), far
    # above the best Girsanov ELBO; per path the Rao-Blackwellised terms still vary with z_k.
    n = 4000
    m, times, values, chain = _fou_case(n=1)
    values = values.expand(n, -1, -1)
    msg = backward_messages(chain, values)
    sde = _prior_sde(m)
    z0 = sde.initial_state(torch.zeros(n, 1, dtype=D),
                           m.initial_state((1, 1), generator=torch.Generator().manual_seed(2)).expand(n, 1, -1))
    obs = LinearGaussianObservations(times, values, 0.05, index=[0])
    ts = torch.cat([times.new_zeros(1), times])
    zs = sdeint(sde, z0, ts, method=VariationalEuler, dt=0.02, generator=torch.Generator().manual_seed(3),
                options={"transition": _GridTransition(chain, msg, False), "observations": obs})
    elbo = -zs[-1, :, -1]
    exact = log_likelihood(chain, values, msg, z0=z0[:, :-1])[0]
    se = float(elbo.std()) / math.sqrt(n)
    assert abs(float(elbo.mean() - exact)) < 4 * se
    assert 4 * se < 0.01 * float(girsanov_gap(msg))  # the check separates the two families


def test_girsanov_optimum_is_the_log_likelihood_minus_the_closed_form_gap():
    m, times, values, chain = _fou_case(n=2000)
    msg = backward_messages(chain, values[:1].expand(2000, -1, -1))
    sde = _prior_sde(m)
    z0 = sde.initial_state(torch.zeros(2000, 1, dtype=D))
    z0[:, 1:-1] = 0.0
    ts = torch.cat([times.new_zeros(1), times])
    zs = sdeint(sde, z0, ts, method=VariationalEuler, dt=0.02, generator=torch.Generator().manual_seed(4),
                options={"transition": _GridTransition(chain, msg, True)})
    x = zs[1:, :, 0].T
    ll = (-0.5 * (x - values[0, :, 0]) ** 2 / 0.05**2 - math.log(0.05 * math.sqrt(2 * math.pi))).sum(-1)
    elbo = ll - zs[-1, :, -1]
    target = log_likelihood(chain, values[:1].expand(2000, -1, -1), msg, z0=z0[:, :-1])[0] - girsanov_gap(msg)
    se = float(elbo.std()) / math.sqrt(elbo.numel())
    assert abs(float(elbo.mean() - target)) < 4 * se
    assert float(girsanov_gap(msg)) > 20 * se  # the gap is far above the Monte Carlo error


def test_unit_kappa_reproduces_the_girsanov_euler_elbo_exactly():
    m = MarkovFBM(0.3, n_ou=3, gamma_max=5.0, horizon=1.0, kind="type1", dtype=D)
    ctrl = lambda t, x, y, c: torch.sin(3 * t) + 0.5 * x - 0.2 * y.sum(-1)  # noqa: E731
    controlled = AugmentedFractionalSDE(lambda t, x: -x, lambda t, x: torch.ones_like(x), m.gammas, m.omegas, 1,
                                        control=ctrl, constant_diffusion=True)
    prior = _prior_sde(m)
    z0 = prior.initial_state(torch.zeros(8, 1, dtype=D), m.initial_state((8, 1), generator=torch.Generator().manual_seed(0)))
    ts = torch.linspace(0, 1, 6, dtype=D)
    a = sdeint(controlled, z0, ts, dt=0.01, generator=torch.Generator().manual_seed(5))

    def transition(t, z):
        x, y, _ = split_state(z, 1, 3)
        return ctrl(t, x, y, None), None

    b = sdeint(prior, z0, ts, method=VariationalEuler, dt=0.01, generator=torch.Generator().manual_seed(5),
               options={"transition": transition})
    assert torch.allclose(a, b, atol=1e-12, rtol=0)


def test_bad_options():
    m = MarkovFBM(0.3, n_ou=2, gamma_max=5.0, horizon=1.0, dtype=D)
    sde = _prior_sde(m)
    z0 = sde.initial_state(torch.zeros(2, 1, dtype=D))
    with pytest.raises(TypeError, match="transition"):
        sdeint(sde, z0, [0.0, 1.0], method=VariationalEuler, dt=0.1)
    obs = LinearGaussianObservations([0.55], torch.zeros(2, 1, 1, dtype=D), 0.1)
    with pytest.raises(ValueError, match="not a point of the step grid"):
        sdeint(sde, z0, [0.0, 1.0], method=VariationalEuler, dt=0.1,
               options={"transition": lambda t, z: (torch.zeros(2, 1, dtype=D), None), "observations": obs})
    with pytest.raises(ValueError, match="std"):
        LinearGaussianObservations([0.5], torch.zeros(2, 1, 1), -1.0)


def test_hurst_gradient_under_the_optimal_transitions_is_that_of_the_exact_likelihood():
    # Envelope theorem: with the transitions fixed at the optimum for H0, ELBO(H) <= log p(y | z0; H)
    # with equality at H0, so the ELBO's reparameterised H-gradient at H0 is d log p(y | z0) / dH
    # (Monte Carlo over paths, 4 s.e.): the learnt H is not biased by the gradient path itself.
    h0, n, reps = 0.7, 500, 4
    gen = torch.Generator().manual_seed(0)
    times, paths = simulate_fou(1, 0.8, theta=1.0, horizon=2.0, n_obs=20, generator=gen, dtype=D)
    values = (paths + 0.05 * torch.randn(paths.shape, generator=gen, dtype=D)).unsqueeze(-1)
    m0 = MarkovFBM(h0, 5, 20.0, 2.0, dtype=D)
    chain0 = fou_chain(m0, 1.0, 1.0, times, 0.02, 0.05)
    vals = values.expand(n, -1, -1)
    msg0 = backward_messages(chain0, vals)
    y0 = m0.initial_state((1, 1), generator=torch.Generator().manual_seed(2))
    ts = torch.cat([times.new_zeros(1), times])
    grads = []
    for r in range(reps):
        h = torch.tensor(h0, dtype=D, requires_grad=True)
        m = MarkovFBM(h, 5, 20.0, 2.0, dtype=D)
        sde = _prior_sde(m)
        z0 = sde.initial_state(torch.zeros(n, 1, dtype=D), y0.expand(n, 1, -1))
        zs = sdeint(sde, z0, ts, method=VariationalEuler, dt=0.02, generator=torch.Generator().manual_seed(10 + r),
                    options={"transition": _GridTransition(chain0, msg0, False),
                             "observations": LinearGaussianObservations(times, vals, 0.05, index=[0])})
        grads.append(torch.autograd.grad(-zs[-1, :, -1].mean(), h)[0])
    h = torch.tensor(h0, dtype=D, requires_grad=True)
    exact = log_likelihood(fou_chain(MarkovFBM(h, 5, 20.0, 2.0, dtype=D), 1.0, 1.0, times, 0.02, 0.05), values,
                           z0=torch.cat([torch.zeros(1, 1, dtype=D), y0[:, 0]], -1))[0]
    target = float(torch.autograd.grad(exact, h)[0])
    g = torch.stack(grads)
    se = float(g.std()) / math.sqrt(reps)
    assert abs(float(g.mean()) - target) < 4 * se
    assert 4 * se < 0.5 * abs(target)  # the check separates the gradient from zero
