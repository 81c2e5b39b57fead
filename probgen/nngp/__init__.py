"""Neural-network Gaussian processes and their scale mixtures (Lee, Yun, Yang, Lee 2022)."""

from probgen.nngp.classification import class_probabilities, one_hot_targets
from probgen.nngp.fitting import PAPER_GRID, GridResult, fit_hyperparameters, grid_search
from probgen.nngp.kernels import ACTIVATIONS, NNGPKernel, nngp_covariance
from probgen.nngp.laplace import LaplaceGPClassifier, LaplaceMode
from probgen.nngp.module import ScaleMixtureNNGP, make_prior
from probgen.nngp.priors import BurrXII
from probgen.nngp.processes import (
    BasePrediction,
    ConjugateStats,
    GaussianProcess,
    ScaleMixtureGP,
    ScalePosterior,
    StudentTProcess,
    cholesky_with_jitter,
)

__all__ = [
    "ACTIVATIONS",
    "PAPER_GRID",
    "BasePrediction",
    "BurrXII",
    "ConjugateStats",
    "GaussianProcess",
    "GridResult",
    "LaplaceGPClassifier",
    "LaplaceMode",
    "NNGPKernel",
    "ScaleMixtureGP",
    "ScaleMixtureNNGP",
    "ScalePosterior",
    "StudentTProcess",
    "cholesky_with_jitter",
    "class_probabilities",
    "fit_hyperparameters",
    "grid_search",
    "make_prior",
    "nngp_covariance",
    "one_hot_targets",
]
