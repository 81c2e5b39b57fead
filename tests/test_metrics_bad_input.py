"""Metrics refuse NaN/inf samples and non-probabilities instead of returning NaN or garbage."""

import math

import pytest
import torch

from probgen.metrics import auroc, brier, ece, energy_distance, gaussian_nll, mmd2, w2_exact

G = torch.Generator().manual_seed(0)
X, Y = torch.randn(20, 2, generator=G), torch.randn(20, 2, generator=G)
XN = X.clone()
XN[3, 1] = math.nan
P = torch.softmax(torch.randn(10, 3, generator=G), 1)
L = torch.randint(0, 3, (10,), generator=G)


@pytest.mark.parametrize("call, error, match", [
    (lambda: mmd2(XN, Y), ValueError, r"^x contains NaN \(1 of 40 entries, first at index \(3, 1\)\)"),
    (lambda: mmd2(X, XN), ValueError, r"^y contains NaN"),
    (lambda: energy_distance(XN, Y), ValueError, r"^x contains NaN"),
    (lambda: w2_exact(X, XN), ValueError, r"^y contains NaN"),
    (lambda: mmd2(X, Y, bandwidth=0.0), ValueError, "bandwidth must be > 0, got 0.0"),
    (lambda: gaussian_nll(torch.zeros(3), torch.tensor([1.0, math.nan, 1.0]), torch.zeros(3)), ValueError, "^var contains NaN"),
    (lambda: gaussian_nll(torch.zeros(3), torch.ones(3), torch.tensor([0.0, math.inf, 0.0])), ValueError, "^y contains inf"),
    (lambda: gaussian_nll(torch.zeros(3), torch.tensor([1.0, 0.0, 1.0]), torch.zeros(3)), ValueError, "var must be > 0 everywhere, got min 0"),
    (lambda: ece(P.index_fill(0, torch.tensor([0]), math.nan), L), ValueError, "^probs contains NaN"),
    (lambda: ece(P * 3, L), ValueError, "probs must be probabilities: entries >= 0 and rows summing to 1"),
    (lambda: brier(-P, L), ValueError, "probs must be probabilities"),
    (lambda: ece(P, L + 5), ValueError, r"labels must lie in \[0, 2\]"),
    (lambda: brier(P, L.float()), TypeError, "labels must be an integer tensor"),
    (lambda: ece(P, L, n_bins=0), ValueError, "n_bins must be an integer >= 1, got 0"),
    (lambda: ece(P, L, n_bins=1.5), TypeError, "n_bins must be an integer"),
    (lambda: auroc(torch.tensor([0.1, math.nan]), torch.tensor([0.3])), ValueError, "^scores_neg contains NaN"),
    (lambda: auroc(torch.tensor([0.1]), torch.tensor([math.inf])), ValueError, "^scores_pos contains inf"),
])
def test_metrics_reject_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_valid_input_still_scores():
    assert float(ece(P, L)) >= 0 and float(brier(P, L)) >= 0
    assert float(auroc(torch.tensor([0.0, 0.1]), torch.tensor([0.5, 0.6]))) == 1.0
