"""Importance-weighted dequantisation against a closed-form discrete likelihood."""

import math

import pytest
import torch

from probgen.interpolants import dequantized_log_likelihood

SCALE, SHIFT = 0.5, -1.0  # y = 0.5 (k + u) - 1 modelled by N(0, 1) per dimension


def _log_prob(y):
    return (-0.5 * y**2 - 0.5 * math.log(2 * math.pi)).sum(-1)


def _exact(k):
    """log P(k) = sum_i log(Phi(0.5 (k_i + 1) - 1) - Phi(0.5 k_i - 1)) for the Gaussian model."""
    n = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0)
    return torch.log(n.cdf(SCALE * (k + 1) + SHIFT) - n.cdf(SCALE * k + SHIFT)).sum(-1)


def test_importance_weighted_dequantization_converges_to_the_discrete_likelihood():
    k = torch.tensor([[0, 2], [5, -3], [1, 1]], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    exact = _exact(k)
    est, se = dequantized_log_likelihood(_log_prob, k, num_samples=4000, scale=SCALE, shift=SHIFT, generator=g)
    assert ((est - exact).abs() < 4 * se + 1e-12).all(), (est, exact, se)
    # K = 1 is uniform dequantisation: its mean over draws is the closed-form ELBO E_u log p_u, below log P (Jensen)
    one = torch.stack([dequantized_log_likelihood(_log_prob, k, 1, SCALE, SHIFT, generator=g)[0] for _ in range(1000)])
    y0, y1 = SCALE * k + SHIFT, SCALE * (k + 1) + SHIFT
    ey2 = (y1**3 - y0**3) / (3 * (y1 - y0))
    elbo = (-0.5 * ey2 - 0.5 * math.log(2 * math.pi)).sum(-1) + 2 * math.log(SCALE)
    assert ((one.mean(0) - elbo).abs() < 4 * one.std(0) / math.sqrt(1000)).all(), (one.mean(0), elbo)
    assert (exact - elbo > 1e-3).all()
    # a non-uniform proposal (Beta(2, 2) per dimension) estimates the same quantity
    beta = torch.distributions.Beta(torch.tensor(2.0, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64))

    def proposal(x, K, generator):
        u = beta.sample((K, *x.shape))
        return u, beta.log_prob(u).sum(-1)

    torch.manual_seed(1)
    est_b, se_b = dequantized_log_likelihood(_log_prob, k, 4000, SCALE, SHIFT, proposal=proposal)
    assert ((est_b - exact).abs() < 4 * se_b).all(), (est_b, exact, se_b)


def test_dequantization_bad_input():
    k = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="num_samples"):
        dequantized_log_likelihood(_log_prob, k, num_samples=0)
    with pytest.raises(ValueError, match="scale"):
        dequantized_log_likelihood(_log_prob, k, scale=0.0)
    with pytest.raises(ValueError, match="proposal"):
        dequantized_log_likelihood(_log_prob, k, 2, proposal=lambda x, K, g: (torch.rand(K, 2, 3), torch.zeros(K)))
