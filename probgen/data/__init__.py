"""LightningDataModules: toy 2-D densities, sklearn digits, UCI regression, fOU paths, moving digits."""

from probgen.data.base import ProbgenDataModule, plot_samples

__all__ = ["ProbgenDataModule", "plot_samples"]
