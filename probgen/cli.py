"""The ``probgen`` command: a LightningCLI over every probgen model and datamodule.

Subcommands: ``fit``, ``validate``, ``test``, ``predict`` (Lightning's) and ``sample``,
which loads a checkpoint, draws samples, and writes them to ``samples.pt`` plus a PNG::

    probgen fit --config models/interpolants/checkerboard.yaml
    probgen sample --ckpt_path last --num_samples 5000 --out_dir samples

``sample`` without ``--config`` reads the ``config.yaml`` that ``fit`` saved beside the
checkpoint's run (``lightning_logs/version_N/config.yaml``).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.cli import LightningCLI

from probgen.base import ProbgenModule
from probgen.data.base import ProbgenDataModule

FAMILIES = ("interpolants", "fractional", "nngp", "ensembles", "energy")


def import_families() -> list[str]:
    """Import every family so that its modules register as ProbgenModule subclasses.

    Returns:
        The family names that could not be imported (their error is raised again if a
        config names one of their classes).
    """
    failed = []
    for family in ("data", *FAMILIES):
        try:
            importlib.import_module(f"probgen.{family}")
        except ImportError:
            failed.append(family)
    return failed


def _subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_subclasses(sub))
    return sorted(set(out), key=lambda c: f"{c.__module__}.{c.__qualname__}")


def find_checkpoint(ckpt_path: str, root: str | Path = ".") -> Path:
    """Resolve ``ckpt_path``: a file, or ``"last"`` for the newest ``*.ckpt`` under ``root``.

    Raises:
        ValueError: if the file does not exist or no checkpoint is found.
    """
    if ckpt_path != "last":
        path = Path(ckpt_path)
        if not path.is_file():
            raise ValueError(f"ckpt_path {ckpt_path!r} is not a file; pass a .ckpt path or 'last'")
        return path
    found = sorted(Path(root).glob("**/checkpoints/*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise ValueError(f"ckpt_path='last' but no checkpoints/*.ckpt under {Path(root).resolve()}; run `probgen fit` first")
    return found[-1]


def load_checkpoint_into(model: L.LightningModule, ckpt_path: str | Path) -> dict:
    """Load a Lightning checkpoint into ``model`` with ``weights_only=True``, hooks included."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    model.on_load_checkpoint(ckpt)
    model.load_state_dict(ckpt["state_dict"])
    return ckpt


class SaveLastCheckpoint(L.Callback):
    """Save ``checkpoints/last.ckpt`` when training ends, so ``probgen sample`` always finds it.

    Lightning's ModelCheckpoint saves after validation or at epoch ends; a run whose
    ``max_steps`` stops between those would otherwise leave its final weights unsaved.

    A run that reaches ``max_steps`` is saved at the end of its last batch rather than at
    ``on_train_end``: Lightning counts an epoch cut short by ``max_steps`` as finished by
    then, so a checkpoint taken there would make a run extended with a larger ``max_steps``
    skip the rest of that epoch. From the batch-end checkpoint it continues exactly. A
    validation that falls on that step runs after this save and is not repeated when the run
    is extended (as for any ``every_n_train_steps`` checkpoint); it runs on its own random
    stream (:meth:`probgen.base.ProbgenModule.on_validation_start`), so the training is the
    same. Other endings (``max_epochs``, early stopping) save at ``on_train_end``.
    """

    def __init__(self) -> None:
        self._saved_at: int | None = None

    @staticmethod
    def _path(trainer: L.Trainer) -> Path | None:
        checkpoint = trainer.checkpoint_callback
        if checkpoint is None or trainer.fast_dev_run or checkpoint.dirpath is None:
            return None
        return Path(checkpoint.dirpath) / "last.ckpt"

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._saved_at = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        path = self._path(trainer)
        if path is not None and 0 < trainer.max_steps <= trainer.global_step:
            trainer.save_checkpoint(path)
            self._saved_at = trainer.global_step

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path = self._path(trainer)
        if path is not None and self._saved_at != trainer.global_step:
            trainer.save_checkpoint(path)


class ProbgenTrainer(L.Trainer):
    """Lightning's Trainer plus the ``sample`` subcommand."""

    def sample(
        self,
        model: ProbgenModule,
        datamodule: ProbgenDataModule | None = None,
        ckpt_path: str | None = "last",
        num_samples: int = 1000,
        out_dir: str = "samples",
        seed: int = 0,
    ) -> Path:
        """Load a checkpoint, draw samples, write ``samples.pt`` and ``samples.png``.

        Args:
            model: the model (from the config).
            datamodule: its datamodule (used for the plot's reference data and geometry).
            ckpt_path: checkpoint file, ``"last"`` for the newest under the working
                directory, or None to sample the untrained model.
            num_samples: how many samples, > 0.
            out_dir: output folder.
            seed: seed of the sampling generator.

        Returns:
            The output folder.
        """
        if num_samples <= 0:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        if ckpt_path is not None:
            path = find_checkpoint(ckpt_path, self.default_root_dir)
            load_checkpoint_into(model, path)
            print(f"loaded {path}")
        model.eval()
        if datamodule is not None:
            datamodule.setup("predict")
        generator = torch.Generator(device=model.device).manual_seed(seed)
        with torch.no_grad():
            samples = model.sample(num_samples, generator=generator)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(samples.cpu(), out / "samples.pt")
        png = model.plot_samples(samples, out / "samples.png", datamodule=datamodule)
        print(f"wrote {out / 'samples.pt'} ({tuple(samples.shape)}) and {png}")
        return out


class ProbgenCLI(LightningCLI):
    """LightningCLI in subclass mode over :class:`ProbgenModule` / :class:`ProbgenDataModule`."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {**LightningCLI.subcommands(), "sample": {"model", "datamodule"}}

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        """Add a rich progress bar unless the config turns progress bars off."""
        config = self._get(self.config_init, "trainer", default={}) or {}
        callbacks: list[L.Callback] = [SaveLastCheckpoint()]
        if config.get("enable_progress_bar") is not False:
            callbacks.append(RichProgressBar(leave=True))
        self.trainer_defaults = {**self.trainer_defaults, "callbacks": callbacks}
        return super().instantiate_trainer(**kwargs)


def _help_text() -> str:
    models = [f"{c.__module__.rsplit('.module', 1)[0]}.{c.__qualname__}" for c in _subclasses(ProbgenModule)]
    data = [f"{c.__module__}.{c.__qualname__}" for c in _subclasses(ProbgenDataModule)]
    configs = sorted(str(p) for p in Path("models").glob("**/*.yaml")) if Path("models").is_dir() else []
    lines = ["probgen: probabilistic generative models on PyTorch.", "", "Models (--model):"]
    lines += [f"  {m}" for m in models] or ["  (none importable)"]
    lines += ["", "Datamodules (--data):"] + [f"  {d}" for d in data]
    if configs:
        lines += ["", "Ready-made configs (--config):"] + [f"  {c}" for c in configs]
    return "\n".join(lines)


def _with_saved_config(args: list[str]) -> list[str]:
    """For ``sample`` without ``--config``: add the config.yaml saved beside the checkpoint."""
    if not args or args[0] != "sample" or any(a == "--config" or a.startswith("--config=") for a in args):
        return args
    ckpt = "last"
    for i, a in enumerate(args):
        if a == "--ckpt_path" and i + 1 < len(args):
            ckpt = args[i + 1]
        elif a.startswith("--ckpt_path="):
            ckpt = a.split("=", 1)[1]
    if ckpt in ("null", "None"):
        return args
    path = find_checkpoint(ckpt)
    for parent in path.parents:
        if (parent / "config.yaml").is_file():
            return [args[0], "--config", _component_config(parent / "config.yaml"), *args[1:]]
    raise ValueError(f"no config.yaml found above {path}; pass --config explicitly")


def _component_config(saved: Path) -> str:
    """The model/data/trainer part of a config saved by ``fit`` (drops fit-only options)."""
    import tempfile

    import yaml

    config = yaml.safe_load(saved.read_text())
    keep = {k: v for k, v in config.items() if k in ("seed_everything", "model", "data", "trainer")}
    handle = tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="probgen-sample-", delete=False)
    with handle:
        yaml.safe_dump(keep, handle)
    return handle.name


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``probgen`` console script."""
    run_cli(args)


def run_cli(args: list[str] | None = None, run: bool = True) -> ProbgenCLI:
    """Run the CLI on ``args`` (default ``sys.argv[1:]``) and return the LightningCLI object.

    With ``run=False``, ``args`` holds no subcommand and the model, datamodule and trainer
    are only instantiated (as in LightningCLI).
    """
    import_families()
    given = list(sys.argv[1:] if args is None else args)
    try:
        args = _with_saved_config(given)
    except ValueError as err:
        raise SystemExit(f"probgen sample: {err}") from None
    if args == sys.argv[1:]:
        args = None  # let LightningCLI read sys.argv itself
    return ProbgenCLI(
        ProbgenModule,
        ProbgenDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        trainer_class=ProbgenTrainer,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"description": _help_text(), "formatter_class": _raw_formatter()},
        args=args,
        run=run,
    )


def _raw_formatter():
    import argparse

    from jsonargparse import DefaultHelpFormatter

    class Formatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
        pass

    return Formatter


if __name__ == "__main__":
    main()
