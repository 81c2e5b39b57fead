"""LightningDataModules: toy 2-D densities, sklearn digits, UCI regression, fOU paths, moving digits."""

from probgen.data.base import ProbgenDataModule, plot_samples
from probgen.data.digits import DigitsDataModule, corrupt_digits, load_digits_tensors
from probgen.data.uci import UCIRegression, load_uci

__all__ = [
    "DigitsDataModule",
    "ProbgenDataModule",
    "UCIRegression",
    "corrupt_digits",
    "load_digits_tensors",
    "load_uci",
    "plot_samples",
]
