"""probgen: probabilistic generative models on PyTorch.

The public API is re-exported here and imported lazily (``import probgen`` does not pull in
gpytorch or pyro until a name that needs them is used)::

    from probgen import sdeint, Interpolant, generate, NNGPKernel, SGLDEnsemble
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "probgen.sde": ("sdeint", "odeint", "MarkovFBM", "fbm_covariance", "sample_fbm"),
    "probgen.samplers": ("SGLD", "PSGLD", "SGHMC", "langevin", "cyclical_schedule", "polynomial_schedule", "rhat", "ess"),
    "probgen.interpolants": ("Interpolant", "generate", "log_likelihood", "StochasticInterpolant"),
    "probgen.fractional": ("FractionalSDE", "LatentFractionalSDE"),
    "probgen.nngp": ("NNGPKernel", "StudentTProcess", "ScaleMixtureGP", "LaplaceGPClassifier", "ScaleMixtureNNGP"),
    "probgen.ensembles": ("SGLDEnsemble",),
    "probgen.energy": ("EnergyBasedModel",),
    "probgen.base": ("ProbgenModule",),
    "probgen.data": ("ProbgenDataModule",),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = ["__version__", *_WHERE]


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'probgen' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
