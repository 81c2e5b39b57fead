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

    # -- exact resume: the global torch RNG travels with the checkpoint ----------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Save the global torch RNG state so that a resumed run draws the same numbers.

        Subclasses that override this must call ``super().on_save_checkpoint(checkpoint)``.
        """
        checkpoint["probgen_rng_state"] = torch.get_rng_state()
        if torch.cuda.is_available():
            checkpoint["probgen_cuda_rng_state"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Remember the saved RNG state; it is applied when training (re)starts.

        Applying it in :meth:`on_train_start` (after Lightning's sanity-check validation)
        keeps validation's random draws from shifting the training stream. Subclasses that
        override this must call ``super().on_load_checkpoint(checkpoint)``.
        """
        self._resume_rng_state = (checkpoint.get("probgen_rng_state"), checkpoint.get("probgen_cuda_rng_state"))

    def on_train_start(self) -> None:
        """Restore the RNG state of a resumed run (see :meth:`on_load_checkpoint`)."""
        cpu_state, cuda_state = getattr(self, "_resume_rng_state", (None, None))
        if cpu_state is not None:
            torch.set_rng_state(cpu_state)
        if cuda_state is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda_state)
        self._resume_rng_state = (None, None)

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

    def plot_samples(self, samples: Tensor, path: str | Path, datamodule: L.LightningDataModule | None = None) -> Path:
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
