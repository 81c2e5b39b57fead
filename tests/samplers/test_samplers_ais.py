"""AIS and reverse AIS against closed-form log Z: a Gaussian pair and a 2-D Gaussian mixture."""

import math

import pytest
import torch

from probgen.energy import GaussianNoise, QuadraticEnergy, SoftMinEnergy
from probgen.samplers import ais, geometric_betas, reverse_ais, sigmoid_betas

DT = torch.float64
P = torch.tensor([[2.0, 0.6], [0.6, 1.0]], dtype=DT)
MEAN = torch.tensor([1.0, -1.0], dtype=DT)


def _gaussian_target():
    return QuadraticEnergy(2, mean=MEAN, precision=P).double()


def _q():
    return GaussianNoise(2, cov=4.0 * torch.eye(2, dtype=DT)).double()


def _mixture_target():
    e1 = QuadraticEnergy(2, mean=torch.tensor([-2.0, 0.0], dtype=DT), precision=4.0).double()
    e2 = QuadraticEnergy(2, mean=torch.tensor([2.0, 1.0], dtype=DT), precision=torch.tensor([[1.0, 0.3], [0.3, 2.0]], dtype=DT)).double()
    w = (0.3, 0.7)
    log_z = math.log(sum(wi * math.exp(float(e.log_partition().detach())) for wi, e in zip(w, (e1, e2))))
    return SoftMinEnergy([e1, e2], weights=list(w)).double(), (e1, e2), w, log_z


def _sample_quadratic(e, n, gen):
    cov = torch.linalg.inv(e.precision.detach())
    return e.mean.detach() + torch.randn(n, 2, generator=gen, dtype=DT) @ torch.linalg.cholesky(cov).T


def test_ais_and_reverse_ais_bracket_the_gaussian_log_z():
    energy, q = _gaussian_target(), _q()
    log_z = float(energy.log_partition().detach())
    gen = torch.Generator().manual_seed(0)
    fwd = ais(energy, q, 1000, sigmoid_betas(40), step_size=0.3, generator=gen)
    rev = reverse_ais(energy, q, _sample_quadratic(energy, 1000, gen), sigmoid_betas(40), step_size=0.3, generator=gen)
    assert abs(float(fwd.log_z) - log_z) < 4 * float(fwd.std_err)
    assert abs(float(rev.log_z) - log_z) < 4 * float(rev.std_err)
    assert 0.3 < fwd.acceptance < 0.95 and 1 < float(fwd.ess) <= 1000
    assert fwd.x.shape == (1000, 2) and fwd.log_w.dtype == DT
    # a coarse schedule opens the bracket: the lower bound below, the upper bound above log Z
    fwd, rev = (f(energy, q, *a, geometric_betas(3), step_size=0.3, generator=gen)
                for f, a in ((ais, (1000,)), (reverse_ais, (_sample_quadratic(energy, 1000, gen),))))
    assert float(fwd.log_z) < log_z + 4 * float(fwd.std_err)
    assert float(rev.log_z) > log_z - 4 * float(rev.std_err)
    assert float(rev.log_z) > float(fwd.log_z)


def test_ais_recovers_a_two_d_mixture_log_z_and_reverse_lies_above():
    energy, comps, w, log_z = _mixture_target()
    q = _q()
    gen = torch.Generator().manual_seed(1)
    fwd = ais(energy, q, 1000, sigmoid_betas(60), step_size=0.3, generator=gen)
    assert abs(float(fwd.log_z) - log_z) < 4 * float(fwd.std_err)
    # exp(-E) = sum_i w_i Z_i N_i: component i has probability w_i Z_i / Z
    probs = torch.tensor([wi * math.exp(float(e.log_partition().detach()) - log_z) for wi, e in zip(w, comps)], dtype=DT)
    k = torch.multinomial(probs, 1000, replacement=True, generator=gen)
    x = torch.where((k == 0)[:, None], _sample_quadratic(comps[0], 1000, gen), _sample_quadratic(comps[1], 1000, gen))
    rev = reverse_ais(energy, q, x, sigmoid_betas(60), step_size=0.3, generator=gen)
    assert float(rev.log_z) > log_z - 4 * float(rev.std_err)
    assert abs(float(rev.log_z) - log_z) < 4 * float(rev.std_err) + 4 * float(fwd.std_err)


def test_ais_rejects_bad_schedules_and_arguments():
    energy, q = _gaussian_target(), _q()
    with pytest.raises(ValueError, match="betas"):
        ais(energy, q, 10, [0.0, 0.5, 0.4, 1.0])
    with pytest.raises(ValueError, match="betas"):
        ais(energy, q, 10, [0.1, 1.0])
    with pytest.raises(ValueError, match="num_chains"):
        ais(energy, q, 1, [0.0, 1.0])
    with pytest.raises(ValueError, match="step_size"):
        ais(energy, q, 10, [0.0, 1.0], step_size=0.0)
    with pytest.raises(ValueError, match="x_target"):
        reverse_ais(energy, q, torch.zeros(2), [0.0, 1.0])
    with pytest.raises(ValueError, match="num_levels"):
        sigmoid_betas(0)
    b = sigmoid_betas(10)
    assert b[0] == 0 and b[-1] == 1 and bool((b[1:] > b[:-1]).all())
