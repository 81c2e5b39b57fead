"""Classification with the paper's Gaussian likelihood on one-hot labels (Lee et al. 2022, sec. 5.2).

The $C$ one-hot columns are regressed jointly with one shared readout scale $\\sigma^2$ (so the
Student-t process has $2\\alpha + nC$ degrees of freedom). Class probabilities are those of the
predictive latent being largest, $p(c \\mid x) = P(\\arg\\max_k f_k(x) = c)$, estimated by Monte
Carlo from the predictive marginals.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Distribution

__all__ = ["class_probabilities", "one_hot_targets"]


def one_hot_targets(labels: Tensor, num_classes: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """``(n,)`` integer labels to ``(n, num_classes)`` one-hot regression targets."""
    if labels.dim() != 1:
        raise ValueError(f"labels must be 1-D, got shape {tuple(labels.shape)}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got range "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    return torch.nn.functional.one_hot(labels.long(), num_classes).to(dtype)


def class_probabilities(
    predictive: Distribution, num_samples: int = 512, generator: torch.Generator | None = None,
    smoothing: float = 1e-3,
) -> Tensor:
    """$P(\\arg\\max_k f_k = c)$ under a predictive with batch shape ``(m, C)``.

    Args:
        predictive: marginal predictive over the ``C`` latent outputs at ``m`` inputs.
        num_samples: Monte Carlo draws.
        generator: seeds the draws (the global RNG is left untouched).
        smoothing: probability mass spread uniformly so that log-probabilities stay finite
            (an add-$\\epsilon$ estimate: ``(counts + smoothing) / (num_samples + C smoothing)``).

    Returns:
        ``(m, C)`` class probabilities.
    """
    if len(predictive.batch_shape) != 2:
        raise ValueError(f"predictive must have batch shape (m, C), got {tuple(predictive.batch_shape)}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    num_classes = predictive.batch_shape[-1]
    with torch.random.fork_rng(devices=[]):
        if generator is not None:
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        draws = predictive.sample((num_samples,))  # (S, m, C)
    counts = torch.nn.functional.one_hot(draws.argmax(-1), num_classes).sum(0).to(draws.dtype)
    return (counts + smoothing) / (num_samples + num_classes * smoothing)
