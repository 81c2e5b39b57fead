"""Metrics against closed forms and known values."""

import math

import pytest
import torch

from probgen.metrics import auroc, brier, ece, energy_distance, gaussian_nll, mmd2, w2_exact


def test_mmd2_matches_gaussian_closed_form():
    # For N(0, s^2 I) vs N(m, s^2 I) with RBF bandwidth h in d dims:
    # E k(x, x') = (h^2 / (h^2 + 2 s^2))^(d/2); E k(x, y) = same * exp(-|m|^2 / (2 (h^2 + 2 s^2)))
    g = torch.Generator().manual_seed(0)
    d, h, n = 2, 1.0, 4000
    m = torch.tensor([1.0, 0.0], dtype=torch.float64)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, d, generator=g, dtype=torch.float64) + m
    c = (h**2 / (h**2 + 2)) ** (d / 2)
    exact = 2 * c - 2 * c * math.exp(-m.square().sum().item() / (2 * (h**2 + 2)))
    est = mmd2(x, y, bandwidth=h, biased=False)
    assert abs(est.item() - exact) < 0.01  # U-statistic s.e. ~ 2e-3 at n = 4000
    same = mmd2(x, torch.randn(n, d, generator=g, dtype=torch.float64), bandwidth=h, biased=False)
    assert abs(same.item()) < 0.005


def test_energy_distance_1d_closed_form():
    # two point masses at 0 and a: 2a - 0 - 0
    x = torch.zeros(10, 1)
    y = torch.full((10, 1), 3.0)
    assert energy_distance(x, y).item() == pytest.approx(6.0)


def test_w2_exact_shift():
    x = torch.randn(200, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    shift = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    assert w2_exact(x, x + shift).item() == pytest.approx(shift.norm().item(), rel=1e-10)
    with pytest.raises(ValueError, match="equal sample sizes"):
        w2_exact(x, x[:10])


def test_gaussian_nll_standard_normal():
    y = torch.zeros(5)
    assert gaussian_nll(torch.zeros(5), torch.ones(5), y).item() == pytest.approx(0.5 * math.log(2 * math.pi))
    with pytest.raises(ValueError, match="var"):
        gaussian_nll(torch.zeros(5), torch.zeros(5), y)


def test_classification_metrics_known_values():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    labels = torch.tensor([0, 1, 1, 1])
    # bins of confidences 0.9, 0.8, 0.6, 0.7 are distinct: ECE = mean |conf - correct|
    assert ece(probs, labels).item() == pytest.approx((0.1 + 0.2 + 0.6 + 0.3) / 4)
    assert brier(probs, labels).item() == pytest.approx((0.02 + 0.08 + 0.72 + 0.18) / 4)
    assert auroc(torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.4, 0.5])).item() == 1.0
    assert auroc(torch.tensor([0.5, 0.1]), torch.tensor([0.5, 0.2])).item() == pytest.approx(0.625)
    with pytest.raises(ValueError, match="probs"):
        ece(probs[:, 0], labels)
