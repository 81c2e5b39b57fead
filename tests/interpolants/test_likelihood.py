"""log_likelihood(): exact Gaussian log densities by ODE (exact and Hutchinson divergence) and SDE."""

import math

import pytest
import torch

from probgen.data.toy2d import GaussianMixture
from probgen.interpolants import GaussianMixtureFields, Interpolant, bits_per_dim, divergence, log_likelihood, standard_normal

FULL = GaussianMixture([[1.0, -2.0]], covs=[[[2.0, 0.5], [0.5, 1.0]]])
DIAG_STD = torch.tensor([2.0, 0.5], dtype=torch.float64)
DIAG = GaussianMixture([[1.0, -2.0]], covs=torch.diag(DIAG_STD**2)[None])
BASE = standard_normal(2)


def base_lp(x):
    return BASE.log_prob(x)


@pytest.mark.parametrize("solver,steps", [("rk4", 100), ("dopri5", 1)])
def test_ode_exact_divergence_gives_gaussian_log_density(solver, steps):
    F = GaussianMixtureFields(Interpolant("linear", "zero"), BASE, FULL)
    x = FULL.sample(300, torch.Generator().manual_seed(0)).double()
    lp = log_likelihood(F.velocity, x, base_lp, steps=steps, solver=solver, divergence="exact")
    assert (lp - FULL.log_prob(x)).abs().max() < 1e-2


def test_ode_with_latent_noise_and_mixture_target():
    target = GaussianMixture([[0.0, 2.0], [2.0, -1.0]], stds=[0.5, 0.6])
    I = Interpolant("linear", "brownian")
    F = GaussianMixtureFields(I, BASE, target)
    x = target.sample(200, torch.Generator().manual_seed(1)).double()
    lp = log_likelihood(F.velocity, x, base_lp, steps=200, divergence="exact", t_span=I.t_bounds)
    # the solve stops at t_bounds, where rho_t differs from the endpoints by O(t_eps)
    exact = F.log_density(I.t_bounds[1], x) - 0 * x[:, 0]
    lp_start = F.log_density(I.t_bounds[0], torch.zeros(1, 2, dtype=torch.float64))  # not used: base_lp is rho_0
    assert lp_start.shape == (1,)
    assert (lp - exact).abs().max() < 2e-2


def test_hutchinson_rademacher_is_exact_for_diagonal_jacobian():
    F = GaussianMixtureFields(Interpolant("linear", "zero"), BASE, DIAG)
    x = DIAG.sample(300, torch.Generator().manual_seed(2)).double()
    lp = log_likelihood(F.velocity, x, base_lp, steps=100, divergence="hutchinson", num_probes=3,
                        generator=torch.Generator().manual_seed(3))
    assert (lp - DIAG.log_prob(x)).abs().max() < 1e-2


def test_hutchinson_probe_fixed_over_the_solve():
    """With Gaussian probes eps fixed for the whole solve, the divergence integral is exactly
    sum_i (mean_k eps_ki^2) int_0^1 d_ii dt = sum_i (mean_k eps_ki^2) log(sigma_i): the error per
    point is sum_i log(sigma_i) (mean_k eps_ki^2 - 1). A probe redrawn at each evaluation would average
    this error away instead."""
    F = GaussianMixtureFields(Interpolant("linear", "zero"), BASE, DIAG)
    n, K = 200, 4
    x = DIAG.sample(n, torch.Generator().manual_seed(4)).double()
    lp = log_likelihood(F.velocity, x, base_lp, steps=100, divergence="hutchinson", num_probes=K, probe="gaussian",
                        generator=torch.Generator().manual_seed(5))
    probes = torch.randn((K, n, 2), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    # log rho_1 = log rho_0(x0) - int div b; the estimator replaces int div b by sum_i mean eps^2 log sigma_i
    predicted_error = -(torch.log(DIAG_STD)[None] * (probes.pow(2).mean(0) - 1)).sum(-1)
    torch.testing.assert_close(lp - DIAG.log_prob(x), predicted_error, atol=1e-5, rtol=0)


def test_hutchinson_unbiased_for_full_covariance():
    F = GaussianMixtureFields(Interpolant("linear", "zero"), BASE, FULL)
    x = FULL.sample(400, torch.Generator().manual_seed(6)).double()
    lp = log_likelihood(F.velocity, x, base_lp, steps=50, divergence="hutchinson", num_probes=8,
                        generator=torch.Generator().manual_seed(7))
    err = lp - FULL.log_prob(x)
    assert abs(float(err.mean())) < 4 * float(err.std()) / math.sqrt(len(err)) + 1e-3
    assert float(err.abs().max()) > 1e-3  # it is an estimator, not the exact value


def test_sde_estimator_matches_exact_log_density():
    I = Interpolant("linear", "brownian")
    F = GaussianMixtureFields(I, BASE, FULL)
    x = FULL.sample(100, torch.Generator().manual_seed(8)).double()
    est, se = log_likelihood(F.velocity, x, base_lp, steps=300, method="sde", score=F.score, eps=0.5, num_paths=8,
                             t_span=I.t_bounds, generator=torch.Generator().manual_seed(9), return_stderr=True)
    exact = FULL.log_prob(x)
    err = est - exact
    # with the true fields the estimator's spread comes only from time discretisation
    assert est.shape == se.shape == (100,)
    assert float(err.abs().mean()) < 0.05
    assert abs(float(err.mean())) < 0.02


def test_divergence_of_linear_map():
    A = torch.tensor([[1.0, 2.0], [-3.0, 0.5]], dtype=torch.float64)
    x = torch.randn(5, 2, dtype=torch.float64)
    out, div = divergence(lambda y: y @ A.T, x, method="exact")
    torch.testing.assert_close(out, x @ A.T)
    torch.testing.assert_close(div, torch.full((5,), 1.5, dtype=torch.float64))


def test_bits_per_dim():
    lp = torch.tensor([-10.0], dtype=torch.float64)
    torch.testing.assert_close(bits_per_dim(lp, 4), torch.tensor([10 / (4 * math.log(2))], dtype=torch.float64))
    # y = u / 17: log p_u = log p_y - 4 log 17
    torch.testing.assert_close(bits_per_dim(lp, 4, scale=1 / 17), torch.tensor([(10 + 4 * math.log(17)) / (4 * math.log(2))], dtype=torch.float64))


def test_bad_arguments():
    v = lambda t, x: x  # noqa: E731
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="divergence must be"):
        log_likelihood(v, x, base_lp, divergence="trace")
    with pytest.raises(ValueError, match="num_probes"):
        log_likelihood(v, x, base_lp, divergence="hutchinson", num_probes=0)
    with pytest.raises(ValueError, match="needs the score"):
        log_likelihood(v, x, base_lp, method="sde")
    with pytest.raises(ValueError, match="probe must be"):
        log_likelihood(v, x, base_lp, divergence="hutchinson", probe="uniform")
