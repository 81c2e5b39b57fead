"""Fractional-noise neural SDEs and their variational inference (Daems et al., ICLR 2024).

Math in plain torch (:mod:`~probgen.fractional.augmented`, :mod:`~probgen.fractional.model`,
:mod:`~probgen.fractional.latent`, :mod:`~probgen.fractional.bridge`); the LightningModules
:class:`FractionalSDE` and :class:`LatentFractionalSDE` in :mod:`~probgen.fractional.module`.
The Markov approximation of fBM itself is :class:`probgen.sde.MarkovFBM`.
"""

from probgen.fractional.augmented import AugmentedFractionalSDE, split_state
from probgen.fractional.bridge import fbm_bridge_std
from probgen.fractional.model import (
    ControlNet,
    NeuralFractionalSDE,
    gaussian_log_likelihood,
    next_observation_context,
)
from probgen.fractional.module import FractionalSDE, LatentFractionalSDE

__all__ = [
    "AugmentedFractionalSDE",
    "ControlNet",
    "FractionalSDE",
    "LatentFractionalSDE",
    "NeuralFractionalSDE",
    "fbm_bridge_std",
    "gaussian_log_likelihood",
    "next_observation_context",
    "split_state",
]
