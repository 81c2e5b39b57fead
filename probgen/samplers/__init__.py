"""Shared samplers: everything that draws from an energy or a posterior.

* :func:`langevin`: ULA / MALA / annealed Langevin on data-space tensors with an energy.
* :class:`SGLD`, :class:`PSGLD`, :class:`SGHMC`: SG-MCMC over network weights as
  ``torch.optim.Optimizer`` subclasses, with functional steps (``sgld_step``, ...) for
  many chains under ``torch.func.vmap``.
* :class:`AdaptiveSGHMC` (``adaptive_sghmc_step``): scale-adapted SGHMC (Springenberg et
  al. 2016), step size and friction set from running gradient moments during burn-in.
* :func:`gamma_precision_gibbs`: conjugate Gibbs draws of Gamma-prior precisions.
* :func:`cyclical_schedule`, :func:`polynomial_schedule` and their LR schedulers.
* :func:`rhat`, :func:`ess`: convergence diagnostics.
* :func:`hmc`: Hamiltonian Monte Carlo (leapfrog + Metropolis) on data-space tensors.
* :func:`ais`, :func:`reverse_ais`: annealed importance sampling, a bracket on $\\log Z$
  (MALA or HMC transitions).
* :func:`churn_sampler`: an ODE solve with EDM's stochastic "churn" move before each step.
"""

from probgen.samplers.adaptive import AdaptiveSGHMC, adaptive_sghmc_init, adaptive_sghmc_step
from probgen.samplers.ais import AISResult, ais, geometric_betas, reverse_ais, sigmoid_betas
from probgen.samplers.churn import churn_sampler
from probgen.samplers.diagnostics import autocorrelation, ess, rank_normalize, rhat, split_chains
from probgen.samplers.gibbs import gamma_precision_gibbs, sample_gamma
from probgen.samplers.hmc import hmc
from probgen.samplers.langevin import LangevinResult, langevin
from probgen.samplers.schedules import (
    CyclicalLR,
    PolynomialDecayLR,
    cyclical_phase,
    cyclical_schedule,
    polynomial_schedule,
)
from probgen.samplers.sgmcmc import (
    PSGLD,
    SGHMC,
    SGLD,
    psgld_init,
    psgld_step,
    sghmc_init,
    sghmc_step,
    sgld_step,
)

__all__ = [
    "churn_sampler",
    "AdaptiveSGHMC",
    "adaptive_sghmc_init",
    "adaptive_sghmc_step",
    "gamma_precision_gibbs",
    "sample_gamma",
    "AISResult",
    "PSGLD",
    "SGHMC",
    "SGLD",
    "CyclicalLR",
    "LangevinResult",
    "PolynomialDecayLR",
    "ais",
    "autocorrelation",
    "cyclical_phase",
    "cyclical_schedule",
    "ess",
    "geometric_betas",
    "hmc",
    "langevin",
    "polynomial_schedule",
    "psgld_init",
    "psgld_step",
    "rank_normalize",
    "reverse_ais",
    "rhat",
    "sghmc_init",
    "sghmc_step",
    "sgld_step",
    "sigmoid_betas",
    "split_chains",
]
