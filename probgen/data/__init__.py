"""LightningDataModules: toy 2-D densities, sklearn digits, UCI regression, fOU paths, moving digits.

Densities with exact log densities (checkerboard, eight Gaussians, ...) live in
:mod:`probgen.data.toy2d`; the classes here are the DataModules that configs name.
"""

from probgen.data.base import EpochShuffle, ProbgenDataModule, plot_samples
from probgen.data.classification2d import GapRegression1D, Spirals, TwoMoons
from probgen.data.digits import DigitsDataModule, corrupt_digits, load_digits_tensors
from probgen.data.fou import FOUBridge, FOUPaths
from probgen.data.gaussian import GaussianDataModule
from probgen.data.images import ImageDataModule, load_image_folder, load_image_tensors
from probgen.data.moving_digits import MovingDigits
from probgen.data.synthetic import HeavyTailRegression
from probgen.data.toy2d import Toy2D
from probgen.data.uci import UCIRegression, load_uci

__all__ = [
    "DigitsDataModule",
    "EpochShuffle",
    "FOUBridge",
    "FOUPaths",
    "GapRegression1D",
    "GaussianDataModule",
    "HeavyTailRegression",
    "ImageDataModule",
    "MovingDigits",
    "ProbgenDataModule",
    "Spirals",
    "Toy2D",
    "TwoMoons",
    "UCIRegression",
    "corrupt_digits",
    "load_digits_tensors",
    "load_image_folder",
    "load_image_tensors",
    "load_uci",
    "plot_samples",
]
