"""Base classes that every probgen family's LightningModule derives from.

The CLI (``probgen fit|validate|test|predict|sample``) runs any subclass of
:class:`ProbgenModule` with any subclass of :class:`probgen.data.ProbgenDataModule`.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch import Tensor


class ProbgenModule(L.LightningModule):
    """A probgen model: a LightningModule that can also draw samples.

    Subclasses implement the Lightning hooks as usual and, where the model is generative,
    :meth:`sample`. ``probgen sample`` calls :meth:`sample` and then
    :meth:`plot_samples`.
    """

    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``num_samples`` samples from the model.

        Args:
            num_samples: how many samples to draw, > 0.
            generator: optional torch generator for reproducibility.

        Returns:
            Samples ``(num_samples, *event_shape)``.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not implement sample(); "
            "`probgen sample` needs a generative model"
        )

    def plot_samples(self, samples: Tensor, path: str | Path, datamodule=None) -> Path:
        """Write a PNG of ``samples`` to ``path``; delegates to the datamodule's plot if given.

        Args:
            samples: ``(n, *event_shape)`` as returned by :meth:`sample`.
            path: where to write the PNG.
            datamodule: optional datamodule whose ``plot_samples`` knows the data's geometry.

        Returns:
            The path written.
        """
        from probgen.data.base import plot_samples

        if datamodule is not None and hasattr(datamodule, "plot_samples"):
            return datamodule.plot_samples(samples, path)
        return plot_samples(samples, path)
