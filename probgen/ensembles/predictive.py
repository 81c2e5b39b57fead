r"""The Bayesian mixture predictive over posterior samples.

With samples $\theta_1..\theta_S$ (all kept samples of all chains), the predictive is the
posterior average $p(y\mid x, \mathcal D) \approx \frac1S\sum_s p(y \mid x, \theta_s)$:
a Gaussian mixture for regression, averaged class probabilities for classification.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal, StudentT


def gaussian_mixture(means: Tensor, variances: Tensor) -> MixtureSameFamily:
    r"""Equal-weight Gaussian mixture over samples.

    Args:
        means: ``(S, batch, D)`` per-sample predictive means.
        variances: ``(S, batch, D)`` per-sample predictive variances (> 0).

    Returns:
        A ``MixtureSameFamily`` with ``batch_shape (batch,)`` and ``event_shape (D,)``; its
        ``mean`` is $\bar\mu = \frac1S\sum_s\mu_s$ and ``variance`` is
        $\frac1S\sum_s(\sigma_s^2+\mu_s^2)-\bar\mu^2$ (law of total variance).
    """
    if means.shape != variances.shape or means.dim() != 3:
        raise ValueError(f"means and variances must both be (S, batch, D), got {tuple(means.shape)} and {tuple(variances.shape)}")
    if (variances <= 0).any():
        raise ValueError("variances must be positive")
    loc, scale = means.transpose(0, 1), variances.sqrt().transpose(0, 1)  # (batch, S, D)
    mix = Categorical(logits=torch.zeros(loc.shape[:2], dtype=loc.dtype, device=loc.device))
    return MixtureSameFamily(mix, Independent(Normal(loc, scale), 1))


def student_t_mixture(locs: Tensor, scales2: Tensor, df: float) -> MixtureSameFamily:
    """Equal-weight mixture of Student-t samples: ``locs``, ``scales2`` (squared scales) ``(S, batch, D)``."""
    if locs.shape != scales2.shape or locs.dim() != 3:
        raise ValueError(f"locs and scales2 must both be (S, batch, D), got {tuple(locs.shape)} and {tuple(scales2.shape)}")
    loc, scale = locs.transpose(0, 1), scales2.sqrt().transpose(0, 1)
    mix = Categorical(logits=torch.zeros(loc.shape[:2], dtype=loc.dtype, device=loc.device))
    return MixtureSameFamily(mix, Independent(StudentT(torch.as_tensor(df, dtype=loc.dtype, device=loc.device), loc, scale), 1))


def mixture_moments(means: Tensor, variances: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and variance ``(batch, D)`` of the equal-weight mixture of ``(S, batch, D)`` Gaussians."""
    mean = means.mean(0)
    var = (variances + means.square()).mean(0) - mean.square()
    return mean, var.clamp_min(torch.finfo(var.dtype).tiny)


def mixture_nll(means: Tensor, variances: Tensor, y: Tensor) -> Tensor:
    r"""Per-point negative log predictive density $-\log\frac1S\sum_s\mathcal N(y;\mu_s,\sigma_s^2)$.

    Args:
        means, variances: ``(S, batch, D)``.
        y: ``(batch, D)``.

    Returns:
        ``(batch,)`` (summed over the ``D`` target dimensions of each point).
    """
    log_p = (-0.5 * (math.log(2 * math.pi) + variances.log() + (y - means).square() / variances)).sum(-1)
    return -(torch.logsumexp(log_p, 0) - math.log(means.shape[0]))


def categorical_mixture(probs: Tensor) -> Categorical:
    """``Categorical`` with the sample-averaged probabilities of ``probs (S, batch, C)``."""
    if probs.dim() != 3:
        raise ValueError(f"probs must be (S, batch, C), got {tuple(probs.shape)}")
    return Categorical(probs=probs.mean(0))


def predictive_entropy(probs: Tensor) -> Tensor:
    r"""Entropy $H[\bar p]$ of the averaged probabilities, ``probs (S, batch, C) -> (batch,)``."""
    p = probs.mean(0)
    return -(p * p.clamp_min(torch.finfo(p.dtype).tiny).log()).sum(-1)


def mutual_information(probs: Tensor) -> Tensor:
    r"""Epistemic part $H[\bar p] - \frac1S\sum_s H[p_s]$ of the predictive entropy, ``(batch,)``."""
    tiny = torch.finfo(probs.dtype).tiny
    expected = -(probs * probs.clamp_min(tiny).log()).sum(-1).mean(0)
    return predictive_entropy(probs) - expected
