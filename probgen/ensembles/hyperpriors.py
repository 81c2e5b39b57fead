r"""Gibbs updates of Gamma hyperpriors inside an ensemble (plain torch).

Beside the SG-MCMC step on the weights, every chain's weight precisions (a
:class:`~probgen.ensembles.priors.HierarchicalGaussianPrior`) and its homoscedastic noise
precision (``GaussianLikelihood(noise="gibbs")``) are drawn from their Gamma full
conditionals (:func:`probgen.samplers.gamma_precision_gibbs`):

$$\lambda_g \mid \theta \sim \mathrm{Gamma}\Big(a_w + \frac{n_g}2,\ b_w + \frac12\sum_{j\in g} c_j\theta_j^2\Big),
\qquad
\tau \mid \theta, \mathcal D \sim \mathrm{Gamma}\Big(a + \frac{ND}2,\ b + \frac12\sum_{i=1}^N \lVert y_i - f_\theta(x_i)\rVert^2\Big).$$

Given the weights the two are independent, so one call draws both (a blocked Gibbs step);
alternating it with SG-MCMC steps on the weights samples the joint posterior of weights and
precisions (Springenberg et al. 2016 resample theirs every few steps). The draws of call
``step`` come from a generator seeded by ``(seed, step)``, so a resumed run repeats them.

**Full data, not a minibatch, for the noise precision.** The residual sum is over the data
passed in, scaled by $N/n$ when $n < N$ rows are given. A minibatch estimate is unbiased
for the sum but its relative spread, about $\sqrt{2/B}$ for Gaussian residuals, is
$\sqrt{N/B}$ times the conditional's own ($\sqrt{2/N}$), and it passes straight into the
draw: with $N = 500$, $B = 32$ the sampled noise precision would spread ~4x too wide. One
no-grad forward over the training set every ``gibbs_every`` steps is cheap at UCI sizes,
so :class:`~probgen.ensembles.SGLDEnsemble` always passes the full training split.
"""

from __future__ import annotations

import torch
from torch import Tensor

from probgen.ensembles.ensemble import LIKELIHOOD_PREFIX, BayesianEnsemble
from probgen.ensembles.priors import HierarchicalGaussianPrior

__all__ = ["gibbs_hyperpriors", "has_gibbs_updates"]

_GIBBS_STRIDE, _GIBBS_OFFSET = 1_000_003, 0x5EED_61BB5


def has_gibbs_updates(ensemble: BayesianEnsemble) -> tuple[bool, bool]:
    """``(weight precisions, noise precision)``: which of the ensemble's precisions Gibbs draws."""
    return (isinstance(ensemble.prior, HierarchicalGaussianPrior),
            getattr(ensemble.likelihood, "noise", None) == "gibbs")


@torch.no_grad()
def gibbs_hyperpriors(ensemble: BayesianEnsemble, x: Tensor | None = None, y: Tensor | None = None,
                      step: int = 0, seed: int = 0, chunk_size: int = 4096) -> dict[str, Tensor]:
    r"""One Gibbs draw of every chain's precisions given its current weights (module docstring).

    Args:
        ensemble: a :class:`BayesianEnsemble` with a :class:`HierarchicalGaussianPrior` and/or
            ``GaussianLikelihood(noise="gibbs")``.
        x, y: the data of the noise precision's residual sum, ``(n, ...)`` and ``(n, D)``
            (``(n,)`` is read as ``D = 1``): the full training set (exact), or $n < N$ rows whose
            sum is scaled by $N/n$ (unbiased, but see the module docstring). Needed only for
            Gibbs noise.
        step: the step index that seeds this call's draws (with ``seed``).
        seed: seed of the draws.
        chunk_size: data rows evaluated at once.

    Returns:
        The new draws: ``{"weight_precision": (K, G)}`` and/or ``{"noise_precision": (K,)}``.

    Raises:
        ValueError: the ensemble has no Gibbs-sampled precision, or Gibbs noise without data.
    """
    weights, noise = has_gibbs_updates(ensemble)
    if not (weights or noise):
        raise ValueError("the ensemble has no Gibbs-sampled precision: use a HierarchicalGaussianPrior "
                         "and/or GaussianLikelihood(noise='gibbs')")
    theta = ensemble.params()
    net, lik = ensemble.split(theta)
    device = next(iter(net.values())).device
    g = torch.Generator(device=device).manual_seed(seed * _GIBBS_STRIDE + step + _GIBBS_OFFSET)
    out: dict[str, Tensor] = {}
    if weights:
        out["weight_precision"] = ensemble.prior.gibbs_update(net, g)
    if noise:
        if x is None or y is None:
            raise ValueError("Gibbs noise needs the data x, y for its residual sum of squares")
        if len(x) != len(y) or len(x) == 0:
            raise ValueError(f"x and y must have the same number of rows > 0, got {len(x)} and {len(y)}")
        y = y.reshape(len(y), -1)
        sum_sq = 0.0
        for i in range(0, len(x), chunk_size):
            mean, _ = ensemble.likelihood.moments(ensemble.forward_chains(net, x[i : i + chunk_size]), lik)
            if mean.shape[-1] != y.shape[-1]:
                raise ValueError(f"y has {y.shape[-1]} target dims but the network predicts {mean.shape[-1]}")
            sum_sq = sum_sq + (y[i : i + chunk_size] - mean).square().flatten(1).sum(1)
        n = ensemble.num_data
        sum_sq = sum_sq * (n / len(x))
        log_scale = ensemble.likelihood.gibbs_log_scale(sum_sq, n * y.shape[-1], g)
        theta[LIKELIHOOD_PREFIX + "log_scale"].copy_(log_scale)
        out["noise_precision"] = torch.exp(-2 * log_scale)
    return out
