"""Sample-quality and predictive metrics shared by all families.

All functions take tensors, follow their dtype and device, and return 0-d tensors.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from probgen.validation import check_finite, check_int


def _check_pair(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    check_finite("x", x)
    check_finite("y", y)
    if x.dim() == 1:
        x = x[:, None]
    if y.dim() == 1:
        y = y[:, None]
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must be (n, d) and (m, d) with the same d, got {tuple(x.shape)} and {tuple(y.shape)}")
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"x and y need at least 2 points each, got {len(x)} and {len(y)}")
    return x, y.to(x)


def median_bandwidth(x: Tensor, y: Tensor, max_points: int = 2000) -> Tensor:
    """Median heuristic: the median pairwise distance in the pooled sample (subsampled)."""
    x, y = _check_pair(x, y)
    z = torch.cat([x[:max_points], y[:max_points]])
    d = torch.cdist(z, z)
    return d[torch.triu_indices(len(z), len(z), 1, device=z.device).unbind()].median()


def mmd2(x: Tensor, y: Tensor, bandwidth: float | Tensor | None = None, biased: bool = True) -> Tensor:
    r"""Squared maximum mean discrepancy with the RBF kernel $k(a,b)=\exp(-|a-b|^2 / (2h^2))$.

    Args:
        x: ``(n, d)`` samples.
        y: ``(m, d)`` samples.
        bandwidth: $h$ > 0; ``None`` uses the median heuristic on the pooled sample.
        biased: the V-statistic (includes the diagonal) if True, else the unbiased U-statistic.

    Returns:
        The 0-d MMD$^2$ estimate.
    """
    x, y = _check_pair(x, y)
    h = median_bandwidth(x, y) if bandwidth is None else torch.as_tensor(bandwidth, dtype=x.dtype, device=x.device)
    if not h > 0:
        raise ValueError(f"bandwidth must be > 0, got {float(h)}")

    def k_mean(a: Tensor, b: Tensor, same: bool) -> Tensor:
        k = torch.exp(-torch.cdist(a, b).square() / (2 * h**2))
        if same and not biased:
            n = len(a)
            return (k.sum() - k.diagonal().sum()) / (n * (n - 1))
        return k.mean()

    return k_mean(x, x, True) + k_mean(y, y, True) - 2 * k_mean(x, y, False)


def energy_distance(x: Tensor, y: Tensor) -> Tensor:
    r"""Energy distance $2E|X-Y| - E|X-X'| - E|Y-Y'|$ (V-statistic).

    Args:
        x: ``(n, d)`` samples.
        y: ``(m, d)`` samples.
    """
    x, y = _check_pair(x, y)
    return 2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean()


def w2_exact(x: Tensor, y: Tensor) -> Tensor:
    """Exact 2-Wasserstein distance between two equal-size empirical measures (assignment).

    Solved with scipy's Hungarian algorithm: O(n^3), meant for n up to a few thousand.

    Args:
        x: ``(n, d)`` samples.
        y: ``(n, d)`` samples.
    """
    from scipy.optimize import linear_sum_assignment

    x, y = _check_pair(x, y)
    if len(x) != len(y):
        raise ValueError(f"w2_exact needs equal sample sizes, got {len(x)} and {len(y)}")
    cost = torch.cdist(x, y).square()
    rows, cols = linear_sum_assignment(cost.detach().cpu().double().numpy())
    return cost[torch.as_tensor(rows), torch.as_tensor(cols)].mean().sqrt()


def gaussian_nll(mean: Tensor, var: Tensor, y: Tensor) -> Tensor:
    r"""Mean Gaussian negative log-likelihood $\frac12\log(2\pi\sigma^2) + (y-\mu)^2/(2\sigma^2)$.

    Args:
        mean: predictive means, broadcastable with ``y``.
        var: predictive variances > 0, broadcastable with ``y``.
        y: targets.
    """
    for name, value in (("mean", mean), ("var", var), ("y", y)):
        check_finite(name, value)
    if (var <= 0).any():
        raise ValueError(f"var must be > 0 everywhere, got min {float(var.min()):g}")
    return (0.5 * torch.log(2 * math.pi * var) + (y - mean).square() / (2 * var)).mean()


def _check_probs(probs: Tensor, labels: Tensor) -> None:
    if probs.dim() != 2 or labels.shape != probs.shape[:1]:
        raise ValueError(f"probs must be (n, classes) and labels (n,), got {tuple(probs.shape)} and {tuple(labels.shape)}")
    check_finite("probs", probs)
    if bool((probs < 0).any()) or bool(((probs.sum(1) - 1).abs() > 1e-3).any()):
        raise ValueError(
            f"probs must be probabilities: entries >= 0 and rows summing to 1, got entries in "
            f"[{float(probs.min()):g}, {float(probs.max()):g}] and row sums in "
            f"[{float(probs.sum(1).min()):g}, {float(probs.sum(1).max()):g}]"
        )
    if labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= probs.shape[1]):
        raise ValueError(f"labels must lie in [0, {probs.shape[1] - 1}] (one per class of probs), "
                         f"got values in [{int(labels.min())}, {int(labels.max())}]")


def ece(probs: Tensor, labels: Tensor, n_bins: int = 15) -> Tensor:
    """Expected calibration error of the top-class confidence, equal-width bins.

    Args:
        probs: ``(n, classes)`` predictive probabilities.
        labels: ``(n,)`` integer labels.
        n_bins: number of confidence bins, > 0.
    """
    _check_probs(probs, labels)
    check_int("n_bins", n_bins, ge=1)
    conf, pred = probs.max(dim=1)
    correct = (pred == labels).to(probs.dtype)
    bins = torch.clamp((conf * n_bins).long(), max=n_bins - 1)
    gap = torch.zeros(n_bins, dtype=probs.dtype, device=probs.device).index_add(0, bins, conf - correct)
    return gap.abs().sum() / len(conf)


def brier(probs: Tensor, labels: Tensor) -> Tensor:
    """Multi-class Brier score: mean squared error between probabilities and one-hot labels."""
    _check_probs(probs, labels)
    onehot = torch.nn.functional.one_hot(labels.long(), probs.shape[1]).to(probs.dtype)
    return (probs - onehot).square().sum(dim=1).mean()


def auroc(scores_neg: Tensor, scores_pos: Tensor) -> Tensor:
    """Area under the ROC curve for separating positives (higher score) from negatives.

    Equals P(score_pos > score_neg) + 0.5 P(tie) (the Mann-Whitney statistic), computed
    from average ranks.

    Args:
        scores_neg: ``(n,)`` scores of the negative class (e.g. in-distribution).
        scores_pos: ``(m,)`` scores of the positive class (e.g. out-of-distribution).
    """
    scores_neg, scores_pos = scores_neg.reshape(-1), scores_pos.reshape(-1)
    if len(scores_neg) == 0 or len(scores_pos) == 0:
        raise ValueError("auroc needs at least one score in each class")
    check_finite("scores_neg", scores_neg)
    check_finite("scores_pos", scores_pos)
    s = torch.cat([scores_neg, scores_pos.to(scores_neg)]).double()
    order = s.argsort()
    ranks = torch.empty_like(s)
    ranks[order] = torch.arange(1, len(s) + 1, dtype=s.dtype, device=s.device)
    # average ranks over ties
    uniq, inv = torch.unique(s, return_inverse=True)
    mean_rank = torch.zeros_like(uniq).index_add(0, inv, ranks) / torch.zeros_like(uniq).index_add(0, inv, torch.ones_like(s))
    ranks = mean_rank[inv]
    n, m = len(scores_neg), len(scores_pos)
    return ((ranks[n:].sum() - m * (m + 1) / 2) / (n * m)).to(scores_neg.dtype if scores_neg.is_floating_point() else torch.float64)
