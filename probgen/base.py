"""Base classes that every probgen family's LightningModule derives from.

The CLI (``probgen fit|validate|test|predict|sample``) runs any subclass of
:class:`ProbgenModule` with any subclass of :class:`probgen.data.ProbgenDataModule`.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.fabric.utilities.types import _Stateful
from torch import Tensor


class ProbgenModule(L.LightningModule):
    """A probgen model: a LightningModule that can also draw samples.

    Subclasses implement the Lightning hooks as usual and, where the model is generative,
    :meth:`sample`. ``probgen sample`` calls :meth:`sample` and then
    :meth:`plot_samples`.
    """

    # -- exact resume: the random state travels with the checkpoint -------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Save the random state so that a resumed run draws the same numbers.

        Saved: the global torch RNG (CPU and CUDA) and every ``torch.Generator`` held as an
        attribute by this module or a submodule (e.g. a process's private Monte Carlo
        generator), keyed by module path and attribute name. Subclasses that override this
        must call ``super().on_save_checkpoint(checkpoint)``.
        """
        checkpoint["probgen_rng_state"] = torch.get_rng_state()
        if torch.cuda.is_available():
            checkpoint["probgen_cuda_rng_state"] = torch.cuda.get_rng_state_all()
        generators = {key: g.get_state() for key, g in self._held_generators().items()}
        if generators:
            checkpoint["probgen_generator_states"] = generators

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Remember the saved random and data-loader state; it is applied when training (re)starts.

        Applying it in :meth:`on_train_start` (after Lightning's sanity-check validation)
        keeps validation's random draws from shifting the training stream. Subclasses that
        override this must call ``super().on_load_checkpoint(checkpoint)``.
        """
        self._resume_rng_state = (checkpoint.get("probgen_rng_state"), checkpoint.get("probgen_cuda_rng_state"))
        self._resume_generator_states = checkpoint.get("probgen_generator_states", {})
        fit_loop = (checkpoint.get("loops") or {}).get("fit_loop") or {}
        self._resume_loader_states = (fit_loop.get("state_dict") or {}).get("combined_loader", [])

    def on_train_start(self) -> None:
        """Restore the random state and the training loader's position of a resumed run.

        The loader position is Lightning's stateful-loader state (see
        :class:`probgen.data.base.ResumableDataLoader`). Lightning applies it itself unless
        the train loader was built before the loop state was restored (which happens when
        ``configure_optimizers`` reads ``trainer.estimated_stepping_batches``, Lightning
        issue #20550); applying it again here is idempotent. Subclasses that override this
        must call ``super().on_train_start()``.
        """
        cpu_state, cuda_state = getattr(self, "_resume_rng_state", (None, None))
        if cpu_state is not None:
            torch.set_rng_state(cpu_state)
        if cuda_state is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda_state)
        self._resume_rng_state = (None, None)
        held = self._held_generators()
        for key, state in getattr(self, "_resume_generator_states", {}).items():
            if key in held:
                held[key].set_state(state.to(held[key].get_state()))
        self._resume_generator_states = {}
        loader_states = getattr(self, "_resume_loader_states", [])
        self._resume_loader_states = []
        trainer = self._trainer
        if loader_states and trainer is not None and trainer.ckpt_path is not None:
            stateful = [dl for dl in _flat_loaders(trainer.train_dataloader) if isinstance(dl, _Stateful)]
            if len(stateful) == len(loader_states):
                for loader, state in zip(stateful, loader_states):
                    loader.load_state_dict(state)

    def on_validation_start(self) -> None:
        """During ``fit``, give validation its own random stream and keep the training one aside.

        Validation inside ``fit`` (e.g. an ELBO or importance-sampled log Z with the global
        RNG) would otherwise advance the training stream, and a run resumed from a checkpoint
        taken just before a validation (``every_n_train_steps``: the checkpoint is written at
        the end of the batch, the validation runs after it and is not repeated on resume)
        would draw different training noise. The validation stream is seeded from the
        training state without advancing it, so it differs between validations and runs.
        Subclasses that override this must call ``super().on_validation_start()``.
        """
        trainer = self._trainer
        if trainer is None or trainer.state.fn != "fit":
            return
        cpu_state = torch.get_rng_state()
        cuda_state = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        held = {key: g.get_state() for key, g in self._held_generators().items()}
        self._training_random_state = (cpu_state, cuda_state, held)
        seed = int(torch.randint(2**62, (1,), generator=torch.Generator().set_state(cpu_state)))
        torch.manual_seed(seed)

    def on_validation_end(self) -> None:
        """Put the training random stream back (see :meth:`on_validation_start`)."""
        saved = getattr(self, "_training_random_state", None)
        self._training_random_state = None
        if saved is None:
            return
        cpu_state, cuda_state, held = saved
        torch.set_rng_state(cpu_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state_all(cuda_state)
        generators = self._held_generators()
        for key, state in held.items():
            generators[key].set_state(state)

    def _held_generators(self) -> dict[str, torch.Generator]:
        """Every ``torch.Generator`` held as an attribute by this module or a submodule."""
        return {
            f"{name}.{attr}" if name else attr: value
            for name, module in self.named_modules()
            for attr, value in vars(module).items()
            if isinstance(value, torch.Generator)
        }

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


def _flat_loaders(loaders) -> list:
    """The loaders in ``trainer.train_dataloader`` (one loader, or a list/dict of them)."""
    if isinstance(loaders, dict):
        return [dl for v in loaders.values() for dl in _flat_loaders(v)]
    if isinstance(loaders, (list, tuple)):
        return [dl for v in loaders for dl in _flat_loaders(v)]
    return [] if loaders is None else [loaders]
