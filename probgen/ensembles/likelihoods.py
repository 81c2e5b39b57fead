r"""Observation models $p(y \mid f_\theta(x))$ for stacked chains.

Every method works on a leading sample axis ``S`` (chains while training, stored samples
when predicting): network outputs are ``(S, batch, out)`` and the likelihood's own
parameters (a learnt noise scale) are ``{name: (S, ...)}``, sampled with the network
weights. The loss convention is the one of :mod:`probgen.samplers`: the minibatch mean of
$-\log p(y_i\mid\theta)$ plus $-\frac1N \log p(\theta)$.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from probgen.samplers.gibbs import gamma_precision_gibbs

NOISE_MODES = ("fixed", "learnt", "gibbs", "heteroscedastic")
WARM_START_OBJECTIVES = ("mean_first", "beta_nll")


class GaussianLikelihood:
    r"""Gaussian regression $y \sim \mathcal N(\mu_\theta(x), \sigma^2)$.

    Args:
        noise: ``"fixed"`` ($\sigma$ = ``scale``), ``"learnt"`` (one $\log\sigma$ per sample,
            drawn by the sampler with the weights under a Gamma prior on the precision
            $\sigma^{-2}$), ``"gibbs"`` (the same homoscedastic model and prior, but the
            precision is drawn from its Gamma conditional by :meth:`gibbs_log_scale` instead of
            being moved by the SG-MCMC step: the sampler sees no gradient on it), or
            ``"heteroscedastic"`` (the network outputs $2D$ values: the
            mean and a raw scale, $\sigma = \mathrm{softplus}(\cdot) + $ ``min_scale``, as in
            deep ensembles, Lakshminarayanan et al. 2017, Sec. 2.2.1).
        scale: the fixed $\sigma$, or the initial $\sigma$ when learnt or Gibbs-sampled; > 0.
        precision_concentration: shape $a$ of the Gamma prior on $\sigma^{-2}$ (learnt noise).
        precision_rate: rate $b$ of that prior.
        min_scale: floor of the heteroscedastic $\sigma$, > 0.
        warm_start_objective: what ``log_prob(..., mean_first=True)`` (the warm-start steps of
            a heteroscedastic run) scores: ``"mean_first"`` (the mean under the fixed std
            ``scale``, the variance head on its residuals) or ``"beta_nll"``
            (:meth:`beta_log_prob`, Seitzer et al. 2022).
        beta: $\beta \in [0, 1]$ of beta-NLL (0: the exact NLL; 1: the mean's gradient is that
            of a squared error).
    """

    def __init__(
        self,
        noise: str = "learnt",
        scale: float = 1.0,
        precision_concentration: float = 1.0,
        precision_rate: float = 0.1,
        min_scale: float = 1e-3,
        warm_start_objective: str = "mean_first",
        beta: float = 0.5,
    ) -> None:
        if noise not in NOISE_MODES:
            raise ValueError(f"noise must be one of {NOISE_MODES}, got {noise!r}")
        for name, v in (("scale", scale), ("precision_concentration", precision_concentration),
                        ("precision_rate", precision_rate), ("min_scale", min_scale)):
            if not v > 0:
                raise ValueError(f"{name} must be > 0, got {v}")
        if warm_start_objective not in WARM_START_OBJECTIVES:
            raise ValueError(f"warm_start_objective must be one of {WARM_START_OBJECTIVES}, got {warm_start_objective!r}")
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be a number in [0, 1], got {beta!r}")
        self.noise, self.scale, self.min_scale = noise, float(scale), float(min_scale)
        self.a, self.b = float(precision_concentration), float(precision_rate)
        self.warm_start_objective, self.beta = warm_start_objective, float(beta)

    def output_dim(self, target_dim: int) -> int:
        """Network outputs needed for ``target_dim`` targets."""
        return 2 * target_dim if self.noise == "heteroscedastic" else target_dim

    def init_params(self, num_samples: int, dtype: torch.dtype, device: torch.device | None = None) -> dict[str, Tensor]:
        """Initial likelihood parameters, ``{"log_scale": (S,)}`` when learnt or Gibbs-sampled, else empty."""
        if self.noise not in ("learnt", "gibbs"):
            return {}
        return {"log_scale": torch.full((num_samples,), math.log(self.scale), dtype=dtype, device=device)}

    def moments(self, output: Tensor, params: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        r"""Mean and variance of $p(y\mid\theta_s, x)$.

        Args:
            output: ``(S, batch, out)`` network outputs.
            params: likelihood parameters ``{name: (S, ...)}``.

        Returns:
            ``mean, var``, each ``(S, batch, D)``.
        """
        if self.noise == "heteroscedastic":
            if output.shape[-1] % 2:
                raise ValueError(f"heteroscedastic noise needs an even number of outputs, got {output.shape[-1]}")
            mean, raw = output.chunk(2, dim=-1)
            return mean, (F.softplus(raw) + self.min_scale).square()
        if self.noise in ("learnt", "gibbs"):
            log_scale = params["log_scale"]
            if self.noise == "gibbs":  # moved by Gibbs draws only, never by a gradient step
                log_scale = log_scale.detach()
            log_scale = log_scale.reshape(-1, *([1] * (output.dim() - 1)))
            return output, torch.exp(2 * log_scale).expand_as(output)
        return output, torch.full_like(output, self.scale**2)

    def log_prob(self, output: Tensor, y: Tensor, params: dict[str, Tensor], mean_first: bool = False) -> Tensor:
        r"""$\log p(y_i \mid \theta_s)$ per sample and data point: ``(S, batch)``.

        Args:
            output: ``(S, batch, out)``.
            y: ``(batch, D)`` targets (``(batch,)`` is read as ``D = 1``).
            params: likelihood parameters.
            mean_first: heteroscedastic warm start (ignored unless heteroscedastic). With
                ``warm_start_objective="beta_nll"`` it returns :meth:`beta_log_prob`. Otherwise
                the mean is scored under the fixed variance
                ``scale**2`` (a homoscedastic fit, so a large variance cannot excuse a poor
                mean), and the variance head under the Gaussian likelihood of the mean's
                detached residuals:
                $-\frac{(y-\mu)^2}{2 s^2} - \frac12\big(\log 2\pi\sigma^2 + (y-\mathrm{sg}[\mu])^2/\sigma^2\big)$.
                Its gradients are those of two separate Gaussian fits; it is not a log density
                of the model, so only burn-in steps should use it. Ignored unless heteroscedastic.
        """
        mean, var = self.moments(output, params)
        y = y.reshape(y.shape[0], -1)
        if y.shape[-1] != mean.shape[-1]:
            raise ValueError(f"y has {y.shape[-1]} target dims but the network predicts {mean.shape[-1]}")
        if mean_first and self.noise == "heteroscedastic" and self.warm_start_objective == "beta_nll":
            return self.beta_log_prob(output, y, params, self.beta)
        if mean_first and self.noise == "heteroscedastic":
            fit = -0.5 * (y - mean).square() / self.scale**2
            head = -0.5 * (math.log(2 * math.pi) + var.log() + (y - mean.detach()).square() / var)
            return (fit + head).sum(-1)
        return (-0.5 * (math.log(2 * math.pi) + var.log() + (y - mean).square() / var)).sum(-1)

    def beta_log_prob(self, output: Tensor, y: Tensor, params: dict[str, Tensor], beta: float) -> Tensor:
        r"""Negative beta-NLL (Seitzer et al. 2022, eq. 5): $\mathrm{sg}[\sigma^{2\beta}]\log\mathcal N(y;\mu,\sigma^2)$, ``(S, batch)``.

        Each point's log density is weighted by its predicted variance to the power $\beta$,
        held constant under differentiation (stop-gradient), so the mean's gradient is
        $\sigma^{2\beta}(y-\mu)/\sigma^2$: points the network calls noisy no longer stop the
        mean from fitting them. $\beta = 0$ is the exact log density; for $\beta > 0$ it is a
        training objective, **not a log density** (its value and gradients are not those of any
        model), so it is only used in warm-start steps, which lie inside burn-in (no kept sample
        sees it), and never for predictive densities or NLL.

        Args:
            output: ``(S, batch, out)``.
            y: ``(batch, D)`` targets.
            params: likelihood parameters.
            beta: $\beta \in [0, 1]$.
        """
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be a number in [0, 1], got {beta!r}")
        mean, var = self.moments(output, params)
        y = y.reshape(y.shape[0], -1)
        if y.shape[-1] != mean.shape[-1]:
            raise ValueError(f"y has {y.shape[-1]} target dims but the network predicts {mean.shape[-1]}")
        log_p = -0.5 * (math.log(2 * math.pi) + var.log() + (y - mean).square() / var)
        return (var.detach().pow(beta) * log_p).sum(-1)

    def prior_log_prob(self, params: dict[str, Tensor]) -> Tensor | float:
        r"""$\log p(\log\sigma)$ per sample ``(S,)`` (Gamma$(a, b)$ on $\tau=\sigma^{-2}$, Jacobian $2\tau$).

        0 for ``"gibbs"`` noise: its prior enters through the Gibbs conditional, not the loss.
        """
        if self.noise != "learnt":
            return 0.0
        tau = torch.exp(-2 * params["log_scale"])
        return self.a * tau.log() - self.b * tau + math.log(2.0) + self.a * math.log(self.b) - math.lgamma(self.a)

    @torch.no_grad()
    def gibbs_log_scale(self, sum_sq: Tensor, count: float | Tensor,
                        generator: torch.Generator | None = None) -> Tensor:
        r"""A Gibbs draw of $\log\sigma$ per sample from the precision's Gamma conditional.

        With residuals $r_i = y_i - \mu_\theta(x_i)$ over $n$ target values,
        $\tau = \sigma^{-2} \mid \theta, \mathcal D \sim \mathrm{Gamma}(a + n/2,\ b + \frac12\sum_i r_i^2)$.

        Args:
            sum_sq: ``(S,)`` residual sums of squares $\sum_i r_i^2$ (over the full data; see
                :func:`~probgen.ensembles.gibbs_hyperpriors` for a minibatch estimate).
            count: $n$, the number of residuals (data points times target dims).
            generator: optional ``torch.Generator``.

        Returns:
            ``(S,)`` new $\log\sigma = -\frac12\log\tau$.
        """
        if self.noise != "gibbs":
            raise ValueError(f"gibbs_log_scale needs noise='gibbs', got noise={self.noise!r}")
        return -0.5 * gamma_precision_gibbs(sum_sq, count, self.a, self.b, generator).log()


class StudentTLikelihood(GaussianLikelihood):
    r"""Student-t regression $y \sim \mathrm{St}_\nu(\mu_\theta(x), \sigma^2)$ for outlier-heavy data.

    The scale $\sigma$ follows the same ``noise`` modes as :class:`GaussianLikelihood`
    (fixed, learnt with a Gamma prior on $\sigma^{-2}$, or heteroscedastic); the degrees of
    freedom $\nu$ are fixed. Per point
    $\log p = \log\Gamma(\frac{\nu+1}2) - \log\Gamma(\frac\nu2) - \frac12\log(\nu\pi\sigma^2)
    - \frac{\nu+1}2\log(1 + \frac{(y-\mu)^2}{\nu\sigma^2})$.
    The predictive is the mixture of these per-sample densities (not a Gaussian mixture).

    Args:
        df: $\nu > 0$.
        noise, scale, precision_concentration, precision_rate, min_scale: as for
            :class:`GaussianLikelihood` ($\sigma$ is the t scale, not its std).
    """

    def __init__(self, df: float = 4.0, noise: str = "learnt", scale: float = 1.0,
                 precision_concentration: float = 1.0, precision_rate: float = 0.1, min_scale: float = 1e-3) -> None:
        if isinstance(df, bool) or not isinstance(df, (int, float)) or not df > 0 or not math.isfinite(df):
            raise ValueError(f"df must be a finite number > 0, got {df!r}")
        if noise == "gibbs":
            raise ValueError("StudentTLikelihood does not support noise='gibbs' (its scale has no conjugate "
                             "Gamma conditional); use noise='learnt' (sampled with the weights) or 'fixed'")
        super().__init__(noise, scale, precision_concentration, precision_rate, min_scale)
        self.df = float(df)

    def scales(self, output: Tensor, params: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Location and squared scale $(\mu, \sigma^2)$, each ``(S, batch, D)``."""
        return super().moments(output, params)

    def moments(self, output: Tensor, params: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Mean $\mu$ and variance $\sigma^2\nu/(\nu-2)$ (inf for $\nu \le 2$; the mean needs $\nu > 1$)."""
        loc, scale2 = self.scales(output, params)
        factor = self.df / (self.df - 2) if self.df > 2 else math.inf
        return loc, scale2 * factor

    def log_prob(self, output: Tensor, y: Tensor, params: dict[str, Tensor], mean_first: bool = False) -> Tensor:
        """``(S, batch)`` Student-t log density (``mean_first`` is for the Gaussian only and is ignored)."""
        loc, scale2 = self.scales(output, params)
        y = y.reshape(y.shape[0], -1)
        if y.shape[-1] != loc.shape[-1]:
            raise ValueError(f"y has {y.shape[-1]} target dims but the network predicts {loc.shape[-1]}")
        nu = self.df
        const = math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi)
        z2 = (y - loc).square() / scale2
        return (const - 0.5 * scale2.log() - 0.5 * (nu + 1) * torch.log1p(z2 / nu)).sum(-1)


class CategoricalLikelihood:
    """Classification $y \\sim \\mathrm{Categorical}(\\mathrm{softmax}(f_\\theta(x)))$."""

    noise = "none"

    def output_dim(self, num_classes: int) -> int:
        return num_classes

    def init_params(self, num_samples: int, dtype: torch.dtype, device: torch.device | None = None) -> dict[str, Tensor]:
        return {}

    def probs(self, output: Tensor) -> Tensor:
        """``(S, batch, C)`` class probabilities of each sample."""
        return output.softmax(-1)

    def log_prob(self, output: Tensor, y: Tensor, params: dict[str, Tensor], mean_first: bool = False) -> Tensor:
        """``(S, batch)`` log-probability of the labels ``y (batch,)`` under each sample."""
        if y.dtype.is_floating_point:
            raise TypeError(f"categorical labels must be integers, got dtype {y.dtype}")
        logp = output.log_softmax(-1)
        return logp.gather(-1, y.reshape(1, -1, 1).expand(output.shape[0], -1, 1)).squeeze(-1)

    def prior_log_prob(self, params: dict[str, Tensor]) -> float:
        return 0.0
