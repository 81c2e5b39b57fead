r"""Priors $p(\theta)$ over network weights, evaluated on stacked chains ``{name: (S, ...)}``."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from probgen.samplers.gibbs import gamma_precision_gibbs

PRIOR_NAMES = ("gaussian", "laplace", "student_t")
PRECISION_GROUPS = ("global", "tensor")


class GaussianPrior:
    r"""Independent $\mathcal N(0, s^2)$ on every weight; with ``fan_in`` the variance is $s^2/\text{fan-in}$.

    Args:
        scale: prior standard deviation $s$ > 0.
        fan_in: divide the variance of each weight matrix by its fan-in (the NNGP
            parametrisation); biases keep $s^2$.
    """

    def __init__(self, scale: float = 1.0, fan_in: bool = False) -> None:
        if not scale > 0:
            raise ValueError(f"prior scale must be > 0, got {scale}")
        self.scale, self.fan_in = float(scale), fan_in

    def _std(self, v: Tensor) -> float:
        if self.fan_in and v.dim() >= 3:
            return self.scale / math.sqrt(math.prod(v.shape[2:]))
        return self.scale

    def log_prob(self, params: dict[str, Tensor]) -> Tensor:
        """``(S,)`` log-density of each parameter set (stacked along dim 0)."""
        total = 0.0
        for v in params.values():
            s = self._std(v)
            n = v[0].numel()
            total = total - 0.5 * v.flatten(1).square().sum(1) / s**2 - n * (math.log(s) + 0.5 * math.log(2 * math.pi))
        return total

    def sample_like(self, params: dict[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """A draw from the prior with the shapes of ``params``."""
        return {
            k: self._std(v) * torch.randn(v.shape, generator=generator, dtype=v.dtype, device=v.device)
            for k, v in params.items()
        }


class HierarchicalGaussianPrior(nn.Module):
    r"""Gaussian prior on the weights with a Gamma hyperprior on its precision, per chain.

    $$w_j \mid \lambda \sim \mathcal N\big(0, (\lambda_{g(j)}\, c_j)^{-1}\big), \qquad
    \lambda_g \sim \mathrm{Gamma}(a, b)\ \text{(shape, rate)},$$

    with one precision $\lambda_g$ per chain and group (``"global"``: one group; ``"tensor"``:
    every parameter tensor, i.e. each layer's weight matrix and bias vector, its own, as in
    Neal's hierarchical networks) and $c_j$ the fan-in of weight matrices when ``fan_in`` is
    set (1 otherwise). The precisions are not moved by the SG-MCMC step: :meth:`gibbs_update`
    draws them from their conditional (:func:`~probgen.samplers.gamma_precision_gibbs`)

    $$\lambda_g \mid w \sim \mathrm{Gamma}\Big(a + \frac{n_g}2,\; b + \frac12\sum_{j\in g} c_j w_j^2\Big),$$

    exact (it needs no data), so alternating it with the weights' SG-MCMC steps samples the joint
    posterior of weights and precisions. The precisions are a buffer ``precision (K, G)``, so
    they are in the module's ``state_dict`` (and a Lightning checkpoint).

    Args:
        concentration: $a > 0$.
        rate: $b > 0$.
        groups: ``"global"`` or ``"tensor"``.
        fan_in: scale each weight matrix's precision by its fan-in (the NNGP parametrisation).
        scale: initial prior std $\lambda^{-1/2}$ of every group, before the first Gibbs draw
            (also the std of ``init="prior"`` draws).
    """

    def __init__(self, concentration: float = 1.0, rate: float = 1.0, groups: str = "tensor",
                 fan_in: bool = False, scale: float = 1.0) -> None:
        super().__init__()
        for name, v in (("concentration", concentration), ("rate", rate), ("scale", scale)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
        if groups not in PRECISION_GROUPS:
            raise ValueError(f"groups must be one of {PRECISION_GROUPS}, got {groups!r}")
        self.a, self.b, self.groups, self.fan_in = float(concentration), float(rate), groups, bool(fan_in)
        self.scale = float(scale)
        self.names: list[str] = []
        self.register_buffer("precision", torch.empty(0, 0))

    def _c(self, v: Tensor) -> float:
        return float(math.prod(v.shape[2:])) if self.fan_in and v.dim() >= 3 else 1.0

    def _group(self, i: int) -> int:
        return 0 if self.groups == "global" else i

    def bind(self, params: dict[str, Tensor]) -> None:
        """Size the precisions for stacked chains ``{name: (K, *shape)}``: ``(K, G)``, all $1/s^2$."""
        self.names = list(params)
        first = next(iter(params.values()))
        k, g = first.shape[0], 1 if self.groups == "global" else len(self.names)
        self.precision = torch.full((k, g), self.scale**-2, dtype=first.dtype, device=first.device)

    def _check(self, params: dict[str, Tensor]) -> None:
        if not self.names:
            raise RuntimeError("HierarchicalGaussianPrior is not bound to chains: BayesianEnsemble binds it")
        if list(params) != self.names or next(iter(params.values())).shape[0] != self.precision.shape[0]:
            raise ValueError(f"params must be the {self.precision.shape[0]} bound chains' {self.names}, got "
                             f"{list(params)} with {next(iter(params.values())).shape[0]} sets")

    def log_prob(self, params: dict[str, Tensor]) -> Tensor:
        """``(K,)`` log-density of each chain's weights under its own precisions."""
        self._check(params)
        total = 0.0
        for i, v in enumerate(params.values()):
            lam = self.precision[:, self._group(i)] * self._c(v)
            n = v[0].numel()
            total = total - 0.5 * lam * v.flatten(1).square().sum(1) + 0.5 * n * (lam.log() - math.log(2 * math.pi))
        return total

    def hyper_log_prob(self) -> Tensor:
        """``(K,)`` log-density of the precisions under their Gamma$(a, b)$ hyperprior."""
        lam = self.precision
        return (self.a * math.log(self.b) - math.lgamma(self.a) + (self.a - 1) * lam.log() - self.b * lam).sum(1)

    @torch.no_grad()
    def gibbs_update(self, params: dict[str, Tensor], generator: torch.Generator | None = None) -> Tensor:
        """Draw every chain's precisions from their Gamma conditional given ``params``; returns them ``(K, G)``."""
        self._check(params)
        k, g = self.precision.shape
        sum_sq = torch.zeros(k, g, dtype=self.precision.dtype, device=self.precision.device)
        count = torch.zeros(g, dtype=self.precision.dtype, device=self.precision.device)
        for i, v in enumerate(params.values()):
            j = self._group(i)
            sum_sq[:, j] += self._c(v) * v.detach().flatten(1).square().sum(1).to(sum_sq.dtype)
            count[j] += v[0].numel()
        self.precision = gamma_precision_gibbs(sum_sq, count, self.a, self.b, generator)
        return self.precision

    def sample_like(self, params: dict[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """A draw from $\mathcal N(0, s^2 / c_j)$ (the initial precisions) with the shapes of ``params``."""
        return {
            k: self.scale / math.sqrt(self._c(v)) * torch.randn(v.shape, generator=generator, dtype=v.dtype, device=v.device)
            for k, v in params.items()
        }


class DistributionPrior:
    """Any scalar ``torch.distributions`` / ``pyro.distributions`` law, i.i.d. on every weight.

    Args:
        distribution: a distribution with ``event_shape == ()`` and ``batch_shape == ()``
            (e.g. ``Laplace(0., 0.5)``, ``StudentT(3., 0., 1.)``).
    """

    def __init__(self, distribution: Distribution) -> None:
        if not isinstance(distribution, Distribution):
            raise TypeError(f"distribution must be a torch Distribution, got {type(distribution).__name__}")
        if distribution.event_shape != () or distribution.batch_shape != ():
            raise ValueError(
                "distribution must be scalar (batch_shape () and event_shape ()), got "
                f"{tuple(distribution.batch_shape)} / {tuple(distribution.event_shape)}"
            )
        self.distribution = distribution

    def log_prob(self, params: dict[str, Tensor]) -> Tensor:
        """``(S,)`` summed log-density of each parameter set."""
        return sum(self.distribution.log_prob(v).flatten(1).sum(1) for v in params.values())

    def sample_like(self, params: dict[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """A draw from the prior with the shapes of ``params`` (global RNG; ``generator`` unused)."""
        return {k: self.distribution.sample(v.shape).to(v) for k, v in params.items()}


def make_prior(name: str = "gaussian", scale: float = 1.0, df: float = 3.0, fan_in: bool = False):
    """Prior by name: ``"gaussian"`` (scale = std), ``"laplace"`` (scale = b), ``"student_t"`` (df, scale)."""
    if name not in PRIOR_NAMES:
        raise ValueError(f"prior must be one of {PRIOR_NAMES}, got {name!r}")
    if not scale > 0:
        raise ValueError(f"prior scale must be > 0, got {scale}")
    if name == "gaussian":
        return GaussianPrior(scale, fan_in=fan_in)
    if name == "laplace":
        return DistributionPrior(torch.distributions.Laplace(0.0, scale))
    if not df > 0:
        raise ValueError(f"student_t df must be > 0, got {df}")
    return DistributionPrior(torch.distributions.StudentT(df, 0.0, scale))
