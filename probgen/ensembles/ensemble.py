r"""A Bayesian ensemble of SG-MCMC chains and its mixture predictive (plain torch).

:class:`BayesianEnsemble` holds ``K`` chains of one network as stacked parameters, the
likelihood and the prior, and a bounded store of posterior samples. Per step, every chain's
loss (DESIGN.md's convention)

$$\ell_k(\theta_k) = -\frac1B\sum_{i\in\mathcal B}\log p(y_i\mid\theta_k) - \frac1N\log p(\theta_k)$$

is evaluated with one vmapped forward; the gradient of $\sum_k \ell_k$ is the stack of the
chains' gradients, and :class:`~probgen.ensembles.sampler.EnsembleSampler` moves every chain
with the shared functional SGLD / pSGLD / SGHMC step. The predictive is the Bayesian
mixture over all kept samples of all chains (the posterior average that the "Bayesian
mixture learner" of the universality argument predicts with).

Deep ensembles are the same object with ``temperature = 0`` (no noise: each chain is an
independent MAP run) and a store keeping the last iterate; a single SGLD chain is ``K = 1``.

Chains may also see different data (``per_chain=True``: minibatches ``x (K, B, ...)``,
``y (K, B, ...)``, chain ``k`` scores ``x[k], y[k]``): bootstrap ensembles, cross-validation
folds, or ``R`` independent data sets (e.g. the 20 UCI splits) each with its own group of
chains, run as one vmapped ensemble of ``R * K`` chains (:func:`stack_ensembles` builds one
from ``R`` ensembles; ``chains=`` selects a group's samples for prediction). Every chain's
likelihood term is a mean over its own minibatch and its prior is weighted by the one
``num_data``, so the groups' data sets must have the same size $N$.
"""

from __future__ import annotations

import math
import warnings

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import vmap

from probgen.ensembles.chains import ChainForward, check_per_chain, init_chains
from probgen.ensembles.likelihoods import CategoricalLikelihood, GaussianLikelihood, StudentTLikelihood
from probgen.ensembles.predictive import categorical_mixture, gaussian_mixture, student_t_mixture
from probgen.ensembles.priors import GaussianPrior, HierarchicalGaussianPrior
from probgen.ensembles.sampler import EnsembleSampler
from probgen.ensembles.store import SampleStore
from probgen.samplers.schedules import cyclical_phase, cyclical_schedule, polynomial_schedule

SCHEDULES = ("constant", "polynomial", "cyclical")
LIKELIHOOD_PREFIX = "likelihood."


def run_length(num_data: int, batch_size: int, num_epochs: float, min_steps: int = 0) -> int:
    """Sampler updates of a run: ``num_epochs`` passes over the data, at least ``min_steps``.

    Small data sets need many more epochs than large ones to mix (an epoch of 300 points is
    10 updates), so the run is ``max(min_steps, ceil(num_epochs * ceil(N / B)))`` updates.

    Args:
        num_data: $N$ > 0 training points.
        batch_size: $B$ > 0.
        num_epochs: passes over the data, >= 0.
        min_steps: floor in updates, >= 0.
    """
    for name, v in (("num_data", num_data), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if not num_epochs >= 0:
        raise ValueError(f"num_epochs must be >= 0, got {num_epochs!r}")
    if isinstance(min_steps, bool) or not isinstance(min_steps, int) or min_steps < 0:
        raise ValueError(f"min_steps must be an integer >= 0, got {min_steps!r}")
    per_epoch = math.ceil(num_data / batch_size)
    return max(min_steps, math.ceil(num_epochs * per_epoch), 1)


def steps_of(name: str, value: int | float, total_steps: int) -> int:
    """A step count given as an integer, or as a fraction in ``[0, 1)`` of ``total_steps`` (float).

    Raises:
        TypeError: neither an int nor a float. ValueError: a negative int or a float outside [0, 1).
    """
    allowed = "an integer number of steps >= 0 or a float fraction of the run in [0, 1)"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        err: Exception = TypeError(f"{name} must be {allowed}, got {value!r}")
    elif (isinstance(value, float) and not 0.0 <= value < 1.0) or (isinstance(value, int) and value < 0):
        err = ValueError(f"{name} must be {allowed}, got {value!r}")
    else:
        return int(round(value * total_steps)) if isinstance(value, float) else int(value)
    err.argument = name  # the CLI turns this into the flag's name
    raise err


@dataclass
class SamplingSchedule:
    r"""Step size, noise and sample collection as functions of the step index.

    Args:
        lr: step size $h$ at step 0 (the cycle's initial $\alpha_0$ for ``"cyclical"``).
        schedule: ``"constant"``; ``"polynomial"``: $h_t = $ ``lr`` $\cdot (b/(b+t))^\gamma$
            (Welling & Teh 2011; :func:`~probgen.samplers.polynomial_schedule`);
            ``"cyclical"``: the cosine cycles of cSG-MCMC (Zhang et al. 2020, eq. 1), with no
            noise and no collection in the exploration stage of each cycle.
        burn_in: steps before the first sample is collected.
        thin: collect every ``thin``-th step after burn-in (and, for cyclical, only in the
            sampling stage).
        total_steps: $K$ of the cyclical schedule (the run's length).
        num_cycles: $M$ of the cyclical schedule.
        exploration_fraction: $\beta$ of the cyclical schedule.
        poly_b, poly_gamma: $b > 0$ and $\gamma \ge 0$ of the polynomial schedule.
        warm_start: steps at the start of the run in which a heteroscedastic likelihood fits
            the mean first (see :meth:`GaussianLikelihood.log_prob`); at most ``burn_in``.
    """

    lr: float = 1e-4
    schedule: str = "constant"
    burn_in: int = 0
    thin: int = 1
    total_steps: int = 1000
    num_cycles: int = 4
    exploration_fraction: float = 0.5
    poly_b: float = 100.0
    poly_gamma: float = 0.55
    warm_start: int = 0

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.burn_in < 0:
            raise ValueError(f"burn_in must be >= 0, got {self.burn_in}")
        if self.thin < 1:
            raise ValueError(f"thin must be >= 1, got {self.thin}")
        if not 0 <= self.warm_start <= self.burn_in:
            raise ValueError(f"warm_start must be in [0, burn_in={self.burn_in}] (no kept sample may see "
                             f"the warm-start likelihood), got {self.warm_start}")
        if self.schedule == "cyclical":
            cyclical_phase(0, self.total_steps, self.num_cycles, self.exploration_fraction)  # validates

    def mean_first(self, step: int) -> bool:
        """Whether 0-based ``step`` is in the heteroscedastic mean-first warm start."""
        return step < self.warm_start

    def at(self, step: int) -> tuple[float, bool, bool]:
        """``(lr, noise_on, collect)`` for 0-based ``step``."""
        after = step >= self.burn_in and (step - self.burn_in) % self.thin == 0
        if self.schedule == "constant":
            return self.lr, True, after
        if self.schedule == "polynomial":
            a = self.lr * self.poly_b**self.poly_gamma
            return polynomial_schedule(step, a, self.poly_b, self.poly_gamma), True, after
        k = step % self.total_steps if step >= self.total_steps else step  # keep cycling past K
        lr = cyclical_schedule(k, self.total_steps, self.num_cycles, self.lr)
        _, sampling = cyclical_phase(k, self.total_steps, self.num_cycles, self.exploration_fraction)
        return lr, sampling, after and sampling


class BayesianEnsemble(nn.Module):
    """``K`` SG-MCMC chains of one network, their likelihood, prior and sample store.

    Args:
        network: the architecture (an ``nn.Module``; its own weights are not used).
        likelihood: :class:`GaussianLikelihood` or :class:`CategoricalLikelihood`.
        prior: an object with ``log_prob({name: (S, ...)}) -> (S,)`` (e.g.
            :class:`~probgen.ensembles.priors.GaussianPrior`,
            :class:`~probgen.ensembles.priors.DistributionPrior`).
        num_chains: ``K`` > 0.
        num_data: $N$, the number of training points.
        store_size: samples kept per chain.
        store_policy: ``"reservoir"`` or ``"last"`` (see :class:`SampleStore`).
        vectorize: ``"vmap"``, ``"sequential"`` or ``"auto"`` (see :class:`ChainForward`).
        seed: seed of the chains' initialisation (and of the store's reservoir).
        init: ``"network"`` (each chain is the network's own initialisation under its own
            seed) or ``"prior"`` (each chain is a draw from ``prior``).
        recent_size: if > 0, a second store ``recent`` (policy ``"last"``) keeps the most recent
            ``recent_size`` collected draws, evenly spaced in steps (every ``thin`` steps of a
            constant or polynomial schedule) as ESS needs, for run-control diagnostics; the
            reservoir store's draws are a random, unevenly spaced subsample of the run.
    """

    def __init__(
        self,
        network: nn.Module,
        likelihood: GaussianLikelihood | CategoricalLikelihood,
        prior=None,
        num_chains: int = 8,
        num_data: int = 1,
        store_size: int = 100,
        store_policy: str = "reservoir",
        vectorize: str = "vmap",
        seed: int = 0,
        init: str = "network",
        recent_size: int = 0,
    ) -> None:
        super().__init__()
        if init not in ("network", "prior"):
            raise ValueError(f"init must be 'network' or 'prior', got {init!r}")
        if not num_data > 0:
            raise ValueError(f"num_data must be > 0, got {num_data}")
        self.network = network.requires_grad_(False)
        self.likelihood = likelihood
        self.prior = prior if prior is not None else GaussianPrior(1.0)
        self.num_data = num_data
        self.forward_chains = ChainForward(network, "auto" if vectorize == "auto" else vectorize)
        g = torch.Generator().manual_seed(seed)
        if init == "network":
            init = init_chains(network, num_chains, g)
        else:
            template = {k: v.detach().unsqueeze(0).expand(num_chains, *v.shape) for k, v in network.named_parameters()}
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                init = self.prior.sample_like(template, generator=g)
        if isinstance(self.prior, HierarchicalGaussianPrior):  # per-chain precisions: a buffer (state)
            self.prior.bind(init)
        dtype = next(iter(init.values())).dtype
        lik = likelihood.init_params(num_chains, dtype)
        init.update({LIKELIHOOD_PREFIX + k: v for k, v in lik.items()})
        self.names = list(init)
        self.chains = nn.ParameterList([nn.Parameter(v.clone()) for v in init.values()])
        self.store = SampleStore({k: tuple(v.shape[1:]) for k, v in init.items()}, num_chains, store_size,
                                 store_policy, seed, dtype)
        if not isinstance(recent_size, int) or isinstance(recent_size, bool) or recent_size < 0:
            raise ValueError(f"recent_size must be an integer >= 0, got {recent_size!r}")
        self.recent = (SampleStore({k: tuple(v.shape[1:]) for k, v in init.items()}, num_chains, recent_size,
                                   "last", seed, dtype) if recent_size else None)

    @property
    def num_chains(self) -> int:
        return self.chains[0].shape[0]

    def params(self) -> dict[str, Tensor]:
        """Current chain states ``{name: (K, *shape)}`` (the live Parameters)."""
        return dict(zip(self.names, self.chains))

    @staticmethod
    def split(theta: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """``(network params, likelihood params)`` of a stacked parameter dict."""
        net = {k: v for k, v in theta.items() if not k.startswith(LIKELIHOOD_PREFIX)}
        lik = {k[len(LIKELIHOOD_PREFIX):]: v for k, v in theta.items() if k.startswith(LIKELIHOOD_PREFIX)}
        return net, lik

    def chain_losses(self, x: Tensor, y: Tensor, mean_first: bool = False,
                     per_chain: bool = False) -> tuple[Tensor, Tensor]:
        """Each chain's minibatch loss $\\ell_k$ and its network outputs.

        Args:
            x: ``(batch, ...)`` inputs shared by all chains, or ``(K, batch, ...)`` with
                ``per_chain=True``.
            y: ``(batch, D)`` targets or ``(batch,)`` labels, or ``(K, batch, D)`` /
                ``(K, batch)`` with ``per_chain=True``.
            mean_first: score with the likelihood's warm-start objective (heteroscedastic only).
            per_chain: chain ``k`` scores its own minibatch ``x[k], y[k]``.

        Returns:
            ``losses (K,)`` and ``outputs (K, batch, out)``.

        Raises:
            ValueError: ``per_chain`` and ``x`` or ``y`` lacks the leading chain axis ``K``,
                or their batch sizes differ.
        """
        net, lik = self.split(self.params())
        if per_chain:
            k = self.num_chains
            check_per_chain("x", x, k)
            check_per_chain("y", y, k)
            if x.shape[1] != y.shape[1]:
                raise ValueError(f"x and y must hold the same per-chain batch, got x {tuple(x.shape)} "
                                 f"and y {tuple(y.shape)}")
        out = self.forward_chains(net, x, per_chain=per_chain)
        if per_chain:  # each chain's outputs against its own targets: the likelihood sees one chain at a time
            def one(o: Tensor, t: Tensor, p: dict[str, Tensor]) -> Tensor:
                return self.likelihood.log_prob(o[None], t, {n: v[None] for n, v in p.items()},
                                                mean_first=mean_first)[0]
            log_lik = vmap(one)(out, y, lik).mean(1)
        else:
            log_lik = self.likelihood.log_prob(out, y, lik, mean_first=mean_first).mean(1)
        log_prior = self.prior.log_prob(net) + self.likelihood.prior_log_prob(lik)
        return -log_lik - log_prior / self.num_data, out

    def make_sampler(self, method: str = "sgld", lr: float = 1e-4, temperature: float = 1.0,
                     seed: int = 0, **kwargs) -> EnsembleSampler:
        """An :class:`EnsembleSampler` over this ensemble's chains (same ``vectorize`` mode)."""
        vec = "sequential" if self.forward_chains.vectorize == "sequential" else "vmap"
        return EnsembleSampler(list(self.chains), method=method, lr=lr, num_data=self.num_data,
                               temperature=temperature, vectorize=vec, seed=seed, **kwargs)

    def train_step(self, x: Tensor, y: Tensor, sampler, schedule: SamplingSchedule,
                   backward=None, per_chain: bool = False) -> Tensor:
        """One sampler step of every chain, then collect the new states if the schedule says so.

        Args:
            x, y: a training minibatch (shared), or one per chain ``(K, batch, ...)`` with
                ``per_chain=True`` (see :meth:`chain_losses`).
            sampler: the :class:`EnsembleSampler` (or Lightning's wrapper of it).
            schedule: step size, noise and collection rule.
            backward: how to backpropagate (default ``Tensor.backward``; Lightning passes
                ``manual_backward``).
            per_chain: whether ``x`` and ``y`` have a leading chain axis.

        Returns:
            ``(K,)`` losses of the chains before the step (detached).
        """
        step = sampler.param_groups[0]["num_steps"]
        lr, noise_on, collect = schedule.at(step)
        temperature = sampler.param_groups[0]["temperature"] if noise_on else 0.0
        for p in self.chains:
            p.grad = None
        losses, _ = self.chain_losses(x, y, mean_first=schedule.mean_first(step), per_chain=per_chain)
        (backward or Tensor.backward)(losses.sum())
        sampler.step(lr=lr, temperature=temperature)
        if collect:
            draw = {k: v.detach() for k, v in self.params().items()}
            self.store.add(draw, step)
            if self.recent is not None:
                self.recent.add(draw, step)
        return losses.detach()

    def chain_index(self, chains) -> Tensor:
        """``chains`` (None, an int, a slice, or a sequence / 1-D tensor of chain indices) as a
        ``(k,)`` long tensor of chain indices; ValueError naming ``chains`` if any is out of range."""
        k = self.num_chains
        if chains is None:
            return torch.arange(k)
        if isinstance(chains, slice):
            return torch.arange(k)[chains]
        if isinstance(chains, bool) or not isinstance(chains, (int, list, tuple, range, Tensor)):
            raise TypeError(f"chains must be None, an int, a slice or a sequence of chain indices, got {chains!r}")
        idx = torch.as_tensor([chains] if isinstance(chains, int) else list(chains) if not isinstance(chains, Tensor)
                              else chains, dtype=torch.long).reshape(-1)
        if idx.numel() == 0 or (idx < 0).any() or (idx >= k).any():
            raise ValueError(f"chains must be non-empty indices in [0, {k}) (num_chains={k}), got {chains!r}")
        return idx

    def sample_set(self, source: str = "store", chains=None) -> dict[str, Tensor]:
        """Parameter sets the predictive averages over, ``{name: (S, ...)}``.

        Args:
            source: ``"store"`` (all kept samples of the chains; the current states, with a
                warning, if the store is still empty) or ``"chains"`` (the current states only).
            chains: only these chains' samples (None: all chains; an int, a slice, or a
                sequence of indices), e.g. one data set's group of a stacked ensemble.

        Warns:
            UserWarning: ``source="store"`` but no sample has been kept yet (before the end of
                burn-in, or an untrained model): the current chain states stand in for the
                posterior samples.
        """
        if source not in ("store", "chains"):
            raise ValueError(f"source must be 'store' or 'chains', got {source!r}")
        idx = None if chains is None else self.chain_index(chains)
        if source == "store":
            if len(self.store) > 0:
                if idx is None:
                    return self.store.flat_samples()
                return {k: v[idx].reshape(-1, *v.shape[2:]) for k, v in self.store.samples().items()}
            warnings.warn(
                f"no posterior sample has been kept yet (the store is empty: burn-in not over, "
                f"or the model is untrained); predicting from the {self.num_chains} current chain "
                f"states instead. Train past burn_in, or pass source='chains' to silence this.",
                UserWarning,
                stacklevel=3,
            )
        return {k: (v if idx is None else v[idx]).detach() for k, v in self.params().items()}

    @torch.no_grad()
    def predict_outputs(self, x: Tensor, source: str = "store", chunk_size: int | None = 512,
                        chains=None) -> tuple[Tensor, dict]:
        """Network outputs ``(S, batch, out)`` of every sample and the samples' likelihood params
        (``chains``: only those chains' samples, see :meth:`sample_set`)."""
        net, lik = self.split(self.sample_set(source, chains))
        return self.forward_chains(net, x, chunk_size=chunk_size), lik

    @torch.no_grad()
    def per_sample_predictions(self, x: Tensor, source: str = "store", chunk_size: int | None = 512, chains=None):
        """Per-sample predictive: ``(mean, var)`` each ``(S, batch, D)`` for regression, or
        ``probs (S, batch, C)`` for classification (``chains``: see :meth:`sample_set`)."""
        out, lik = self.predict_outputs(x, source, chunk_size, chains)
        if isinstance(self.likelihood, CategoricalLikelihood):
            return self.likelihood.probs(out)
        return self.likelihood.moments(out, lik)

    @torch.no_grad()
    def predictive_log_prob(self, x: Tensor, y: Tensor, source: str = "store", chunk_size: int | None = 512,
                            chains=None) -> Tensor:
        r"""Log density of the mixture predictive, $\log\frac1S\sum_s p(y_i\mid x_i,\theta_s)$, ``(batch,)``.

        Uses the likelihood's own per-sample ``log_prob``, so it holds for any observation model
        (Gaussian, Student-t, categorical), not only for Gaussian mixtures. ``chains``: only
        those chains' samples (see :meth:`sample_set`).
        """
        out, lik = self.predict_outputs(x, source, chunk_size, chains)
        log_p = self.likelihood.log_prob(out, y, lik)
        return torch.logsumexp(log_p, 0) - math.log(log_p.shape[0])

    @torch.no_grad()
    def predictive(self, x: Tensor, source: str = "store", chunk_size: int | None = 512, chains=None):
        """The Bayesian mixture predictive at ``x (batch, ...)`` (``chains``: see :meth:`sample_set`).

        Returns:
            Regression: ``MixtureSameFamily`` (batch_shape ``(batch,)``, event ``(D,)``) with
            ``mean``, ``variance``, ``log_prob``. Classification: ``Categorical`` with the
            sample-averaged probabilities.
        """
        if isinstance(self.likelihood, StudentTLikelihood):
            out, lik = self.predict_outputs(x, source, chunk_size, chains)
            return student_t_mixture(*self.likelihood.scales(out, lik), self.likelihood.df)
        pred = self.per_sample_predictions(x, source, chunk_size, chains)
        if isinstance(self.likelihood, CategoricalLikelihood):
            return categorical_mixture(pred)
        return gaussian_mixture(*pred)


def stack_ensembles(ensembles: list[BayesianEnsemble]) -> BayesianEnsemble:
    """One ensemble whose chains are those of ``ensembles``, in order (group ``r`` holds chains
    ``sum(K_0..K_{r-1})`` to ``sum(K_0..K_r) - 1``).

    The groups are meant to see their own data (``per_chain=True`` minibatches) in one vmapped
    run; each keeps its initial states, so a stacked deterministic run (temperature 0) equals
    the separate runs. The network, likelihood, prior and store settings (capacity, policy,
    seed, ``recent_size``) are those of the first ensemble; the stores start empty.

    Raises:
        ValueError: no ensemble, trained ones (non-empty stores), or ensembles that differ in
            ``num_data`` or in their parameter names and shapes.
    """
    if not ensembles:
        raise ValueError("ensembles must hold at least one BayesianEnsemble, got none")
    first = ensembles[0]
    for i, e in enumerate(ensembles):
        if e.num_data != first.num_data:
            raise ValueError(f"ensembles must share num_data (one N weights every chain's prior), "
                             f"got {first.num_data} and {e.num_data} (ensembles[{i}])")
        shapes = [(n, tuple(p.shape[1:])) for n, p in e.params().items()]
        if shapes != [(n, tuple(p.shape[1:])) for n, p in first.params().items()]:
            raise ValueError(f"ensembles[{i}] has other parameters than ensembles[0]: {shapes}")
        if len(e.store) > 0:
            raise ValueError(f"ensembles[{i}] has kept samples; stack untrained ensembles")
    recent = first.recent.capacity if first.recent is not None else 0
    out = BayesianEnsemble(first.network, first.likelihood, first.prior, sum(e.num_chains for e in ensembles),
                           first.num_data, first.store.capacity, first.store.policy, first.forward_chains.vectorize,
                           first.store.seed, recent_size=recent)
    with torch.no_grad():
        for j, p in enumerate(out.chains):
            p.copy_(torch.cat([e.chains[j].detach() for e in ensembles]))
    return out
