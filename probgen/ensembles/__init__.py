"""SGLD Bayesian ensembles: many SG-MCMC chains of one network, one Bayesian mixture predictor.

K chains run at once (one vmapped forward over stacked parameters) with the shared
functional SGLD / pSGLD / SGHMC steps of :mod:`probgen.samplers`; the predictive averages
all kept samples of all chains. Deep ensembles (temperature 0) and a single chain (K = 1)
are configurations of the same objects.
"""

from probgen.ensembles.chains import ChainForward, init_chains, mlp
from probgen.ensembles.diagnostics import chain_diagnostics
from probgen.ensembles.ensemble import BayesianEnsemble, SamplingSchedule, run_length, stack_ensembles, steps_of
from probgen.ensembles.hyperpriors import gibbs_hyperpriors
from probgen.ensembles.likelihoods import CategoricalLikelihood, GaussianLikelihood, StudentTLikelihood
from probgen.ensembles.module import SGLDEnsemble
from probgen.ensembles.predictive import (
    categorical_mixture,
    gaussian_mixture,
    mixture_moments,
    mixture_nll,
    mutual_information,
    predictive_entropy,
)
from probgen.ensembles.priors import DistributionPrior, GaussianPrior, HierarchicalGaussianPrior, make_prior
from probgen.ensembles.sampler import EnsembleSampler
from probgen.ensembles.store import SampleStore

__all__ = [
    "BayesianEnsemble",
    "CategoricalLikelihood",
    "ChainForward",
    "DistributionPrior",
    "EnsembleSampler",
    "GaussianLikelihood",
    "GaussianPrior",
    "HierarchicalGaussianPrior",
    "SGLDEnsemble",
    "SampleStore",
    "SamplingSchedule",
    "StudentTLikelihood",
    "run_length",
    "stack_ensembles",
    "steps_of",
    "categorical_mixture",
    "chain_diagnostics",
    "gaussian_mixture",
    "gibbs_hyperpriors",
    "init_chains",
    "make_prior",
    "mixture_moments",
    "mixture_nll",
    "mlp",
    "mutual_information",
    "predictive_entropy",
]
