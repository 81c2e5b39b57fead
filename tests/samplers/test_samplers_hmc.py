"""HMC (leapfrog + Metropolis): invariance of a 2-D Gaussian, and AIS with HMC transitions against closed-form log Z."""

import math

import pytest
import torch

from probgen.energy import GaussianNoise, QuadraticEnergy
from probgen.samplers import ais, hmc, reverse_ais, sigmoid_betas

DT = torch.float64
P = torch.tensor([[2.0, 0.6], [0.6, 1.0]], dtype=DT)
MEAN = torch.tensor([1.0, -1.0], dtype=DT)


def _target():
    return QuadraticEnergy(2, mean=MEAN, precision=P).double()


def _exact(n, gen):
    cov = torch.linalg.inv(P)
    return MEAN + torch.randn(n, 2, generator=gen, dtype=DT) @ torch.linalg.cholesky(cov).T


def _assert_gaussian_moments(x):
    """Mean and covariance entries of ``x`` within 4 Monte Carlo s.e. of N(MEAN, P^-1)."""
    n = x.shape[0]
    cov = torch.linalg.inv(P)
    assert bool(((x.mean(0) - MEAN).abs() < 4 * (cov.diagonal() / n).sqrt()).all())
    c = x - MEAN  # second moments about the true mean: unbiased for cov
    for i, j in ((0, 0), (1, 1), (0, 1)):
        prod = c[:, i] * c[:, j]
        assert abs(float(prod.mean() - cov[i, j])) < 4 * float(prod.std()) / math.sqrt(n), (i, j, float(prod.mean()), float(cov[i, j]))


def test_hmc_leaves_a_two_d_gaussian_invariant():
    # h = 0.6 is large for the stiff direction (precision eigenvalue 2.28): the unadjusted leapfrog
    # chain's stationary variance there is ~25% too large, so only the Metropolis test keeps the moments
    gen = torch.Generator().manual_seed(0)
    out = hmc(_target(), _exact(4000, gen), steps=10, step_size=0.6, num_leapfrog=4, generator=gen)
    assert out.x.shape == (4000, 2) and out.x.dtype == DT
    assert 0.5 < out.mean_acceptance < 1.0
    _assert_gaussian_moments(out.x)
    assert torch.allclose(out.energy, _target()(out.x).detach())


def test_hmc_chains_from_one_point_reach_the_gaussian():
    # trajectory time h L = 0.9, away from half a period of either direction (pi / 1.51, pi / 0.85):
    # at h L = 2 the stiff direction turns by 3.02 rad per transition and its offset barely decays
    gen = torch.Generator().manual_seed(1)
    out = hmc(_target(), torch.full((4000, 2), 3.0, dtype=DT), steps=30, step_size=0.3, num_leapfrog=3, generator=gen)
    _assert_gaussian_moments(out.x)


def test_ais_with_hmc_recovers_the_gaussian_pair_log_z():
    energy, q = _target(), GaussianNoise(2, cov=4.0 * torch.eye(2, dtype=DT)).double()
    log_z = float(energy.log_partition().detach())
    gen = torch.Generator().manual_seed(2)
    fwd = ais(energy, q, 1000, sigmoid_betas(40), step_size=0.3, transition="hmc", num_leapfrog=3, generator=gen)
    rev = reverse_ais(energy, q, _exact(1000, gen), sigmoid_betas(40), step_size=0.3, transition="hmc", num_leapfrog=3, generator=gen)
    assert abs(float(fwd.log_z) - log_z) < 4 * float(fwd.std_err)
    assert abs(float(rev.log_z) - log_z) < 4 * float(rev.std_err)
    assert 0.3 < fwd.acceptance < 1.0 and 1 < float(fwd.ess) <= 1000
    _assert_gaussian_moments(fwd.x)


def test_hmc_and_ais_reject_bad_arguments():
    energy, x = _target(), torch.zeros(4, 2, dtype=DT)
    with pytest.raises(ValueError, match="step_size"):
        hmc(energy, x, 1, 0.0)
    with pytest.raises(ValueError, match="num_leapfrog"):
        hmc(energy, x, 1, 0.1, num_leapfrog=0)
    with pytest.raises(ValueError, match="steps"):
        hmc(energy, x, -1, 0.1)
    with pytest.raises(ValueError, match="x0"):
        hmc(energy, torch.full((4, 2), math.nan, dtype=DT), 1, 0.1)
    q = GaussianNoise(2).double()
    with pytest.raises(ValueError, match="transition"):
        ais(energy, q, 10, [0.0, 1.0], transition="nuts")
    with pytest.raises(ValueError, match="num_leapfrog"):
        ais(energy, q, 10, [0.0, 1.0], transition="hmc", num_leapfrog=0)


def test_log_partition_ais_passes_the_hmc_transition_through():
    from probgen.energy import log_partition_ais

    energy, q = _target(), GaussianNoise(2, cov=4.0 * torch.eye(2, dtype=DT)).double()
    log_z = float(energy.log_partition().detach())
    gen = torch.Generator().manual_seed(3)
    br = log_partition_ais(energy, q, 500, 30, x_target=_exact(500, gen), step_size=0.3, generator=gen, transition="hmc", num_leapfrog=3)
    assert abs(float(br.lower) - log_z) < 4 * float(br.lower_std_err)
    assert abs(float(br.upper) - log_z) < 4 * float(br.upper_std_err)
    with pytest.raises(ValueError, match="transition"):
        log_partition_ais(energy, q, 10, 2, transition="ula")
