"""The ``probgen`` command: a LightningCLI over every probgen model and datamodule.

Subcommands: ``fit``, ``validate``, ``test``, ``predict`` (Lightning's) and ``sample``,
which loads a checkpoint, draws samples, and writes them to ``samples.pt`` plus a PNG::

    probgen fit --config models/interpolants/checkerboard.yaml
    probgen sample --ckpt_path last --num_samples 5000 --out_dir samples

``sample`` without ``--config`` reads the ``config.yaml`` that ``fit`` saved beside the
checkpoint's run (``lightning_logs/version_N/config.yaml``).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from probgen.base import ProbgenModule
from probgen.data.base import ProbgenDataModule

FAMILIES = ("interpolants", "fractional", "nngp", "ensembles", "energy")


class CLIUsageError(ValueError):
    """A bad command-line or config value: ``probgen`` prints the message as one line (no
    traceback) and exits with status 2. Its message names the flag, the value and what is
    allowed."""


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
            raise CLIUsageError(
                f"--ckpt_path={ckpt_path}: no such file; pass an existing .ckpt file, 'last' (the "
                f"newest checkpoints/*.ckpt under the working directory) or null (untrained model)"
            )
        return path
    found = sorted(Path(root).glob("**/checkpoints/*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise CLIUsageError(
            f"--ckpt_path=last: no checkpoints/*.ckpt under {Path(root).resolve()}; run `probgen fit` "
            f"first, or pass a .ckpt file or null"
        )
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
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples <= 0:
            raise CLIUsageError(f"--num_samples={num_samples}: num_samples must be an integer >= 1")
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

    def init_parser(self, **kwargs) -> LightningArgumentParser:
        """Parsers raise instead of printing the usage text, so :func:`run_cli` can print one line."""
        kwargs.setdefault("exit_on_error", False)
        return super().init_parser(**kwargs)

    def instantiate_classes(self) -> None:
        """Instantiate as LightningCLI does; a constructor's ValueError/TypeError becomes a
        :class:`CLIUsageError` naming the flag (``--model.init_args.lr``) and its value."""
        try:
            super().instantiate_classes()
        except (ValueError, TypeError) as err:
            config = self.config.get(self.subcommand) if self.subcommand else self.config
            raise CLIUsageError(_constructor_error_line(err, config)) from err

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict:
        """``--ckpt_path last`` of ``test``/``validate``/``predict`` means what it means for
        ``sample``: the newest ``checkpoints/*.ckpt`` under the trainer's root (Lightning's own
        ``"last"`` needs a ``ModelCheckpoint(save_last=True)`` in *this* trainer and otherwise
        warns and evaluates the untrained model)."""
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        if subcommand in ("test", "validate", "predict") and kwargs.get("ckpt_path") == "last":
            kwargs["ckpt_path"] = str(find_checkpoint("last", self.trainer.default_root_dir))
        return kwargs

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        """Add a rich progress bar unless the config turns progress bars off."""
        config = self._get(self.config_init, "trainer", default={}) or {}
        callbacks: list[L.Callback] = [SaveLastCheckpoint()]
        if config.get("enable_progress_bar") is not False:
            callbacks.append(RichProgressBar(leave=True))
        self.trainer_defaults = {**self.trainer_defaults, "callbacks": callbacks}
        return super().instantiate_trainer(**kwargs)


def _root_cause(err: BaseException) -> BaseException:
    """The innermost ValueError/TypeError of an exception chain (jsonargparse wraps the
    constructor's own error in a "Does not validate against any of the Union subtypes")."""
    found = err
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, (ValueError, TypeError)):
            found = err
        err = err.__cause__ or err.__context__
    return found


def _component_of(err: BaseException) -> tuple[str, object | None]:
    """Which config section raised ``err``: the outermost LightningModule / DataModule /
    Trainer constructor frame in its traceback."""
    tb = err.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if isinstance(owner, L.LightningModule):
            return "model", owner
        if isinstance(owner, L.LightningDataModule):
            return "data", owner
        if isinstance(owner, L.Trainer):
            return "trainer", owner
        tb = tb.tb_next
    return "", None


def _constructor_error_line(err: BaseException, config) -> str:
    """One line for a constructor's error: the flag, its value, the constructor's message."""
    root = _root_cause(err)
    message = " ".join(str(root).split())
    section, owner = _component_of(root)
    if not section:
        return message
    prefix = "--trainer." if section == "trainer" else f"--{section}.init_args."
    where = "" if owner is None else f" ({type(owner).__module__}.{type(owner).__qualname__})"
    argument = getattr(root, "argument", None)  # set by probgen.validation
    if argument is None:  # a plain "NAME must ..." message from a constructor's own check
        m = re.match(r"(\w+) must\b", message)
        argument = m.group(1) if m else None
    name = re.sub(r"\[.*$", "", argument or "")  # weight_var[1] -> weight_var
    key = f"{section}.{name}" if section == "trainer" else f"{section}.init_args.{name}"
    try:
        known = bool(name) and config is not None and key in config
        value = config.get(key) if known else None
    except (KeyError, AttributeError, TypeError):
        known, value = False, None
    if not known:
        return f"--{section}{where}: {message}"
    shown = "null" if value is None else value
    return f"{prefix}{name}={shown}{where}: {message}"


_NOISE = (
    "Does not validate against any of the Union subtypes",
    "Subtypes:",
    "Errors:",
    "Given value type:",
    "Given value:",
    "- Expected a <class 'NoneType'>",
)


def _parse_error_line(message: str) -> str:
    """One line out of jsonargparse's multi-line parse error (an unknown option, a class that
    does not exist, a value of the wrong type), with a suggestion for a misspelling."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    keys, class_path, details = [], None, []
    for line in lines:
        if line.startswith(_NOISE):
            continue
        c = re.match(r"- Problem with given class_path '([^']+)':", line)
        if c:
            class_path = c.group(1)
            continue
        k = re.match(r'-?\s*Parser key "([^"]+)":\s*(.*)$', line)
        if k:
            keys.append(k.group(1))
            if k.group(2):
                details.append(k.group(2))
            continue
        details.append(line.lstrip("- "))
    detail = re.sub(r"<class '([\w.]+)'>", r"\1", "; ".join(details) if details else " ".join(lines))
    detail = re.sub(r"\bExpected a (?=[aeiou])", "Expected an ", detail)
    unknown = re.search(r"does not accept option '([^']+)'", detail)
    if unknown:
        return _unknown_key_line(unknown.group(1))
    section = keys[0] if keys else None
    option = re.search(r"Option '([^']+)' is not accepted", detail)
    if option and class_path and section in ("model", "data"):
        return _unknown_option_line(section, class_path, option.group(1))
    missing = re.search(r"(?:has no attribute|No module named) '([^']+)'", detail)
    if class_path and section in ("model", "data") and (missing or "Import path" in detail or "not found" in detail):
        return _unknown_class_line(section, class_path)
    if section in ("model", "data") and len(keys) > 1:
        return f"--{section}.init_args.{'.'.join(keys[1:])}: {detail}"
    if keys:
        return f"--{'.'.join(keys)}: {detail}"
    return detail


def _unknown_key_line(key: str) -> str:
    """``trainer.max_step`` / ``trainr`` (from a YAML file or a flag): suggest the closest key."""
    section, _, name = key.partition(".")
    if section == "trainer" and name:
        allowed = [p for p in inspect.signature(L.Trainer.__init__).parameters if p != "self"]
        close = difflib.get_close_matches(name, allowed, n=1)
        hint = f"; did you mean --trainer.{close[0]}?" if close else "; see `probgen fit --help`"
        return f"--{key}: the Trainer has no option {name!r}{hint}"
    top = ["seed_everything", "trainer", "model", "data", "optimizer", "lr_scheduler", "ckpt_path", "config"]
    close = difflib.get_close_matches(section, top, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"--{key}: unknown option {section!r}{hint} (allowed at the top level: {', '.join(top)})"


def _unknown_option_line(section: str, class_path: str, option: str) -> str:
    try:
        module, _, name = class_path.rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        allowed = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]
    except Exception:  # noqa: BLE001 - the suggestion is best effort
        allowed = []
    close = difflib.get_close_matches(option, allowed, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return (f"--{section}.init_args.{option}: {class_path} has no argument {option!r}{hint} "
            f"(allowed: {', '.join(allowed)})")


def _unknown_class_line(section: str, class_path: str) -> str:
    base = ProbgenModule if section == "model" else ProbgenDataModule
    known = {}
    for c in _subclasses(base):
        family = c.__module__.rsplit(".module", 1)[0]
        known[f"{family}.{c.__qualname__}"] = c
        known[f"{c.__module__}.{c.__qualname__}"] = c
    close = difflib.get_close_matches(class_path, list(known), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else "; `probgen --help` lists them"
    return f"--{section}.class_path={class_path}: no such {section} class{hint}"


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
    raise CLIUsageError(f"--ckpt_path={ckpt}: no config.yaml found above {path}; pass --config explicitly")


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
    from jsonargparse import ArgumentError

    import_families()
    given = list(sys.argv[1:] if args is None else args)
    command = f"probgen {given[0]}" if run and given and not given[0].startswith("-") else "probgen"
    try:
        args = _with_saved_config(given)
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
    except ArgumentError as err:
        _exit_usage(command, _parse_error_line(str(err)))
    except CLIUsageError as err:
        _exit_usage(command, str(err))


def _exit_usage(command: str, line: str) -> None:
    """Print the one line ``probgen fit: error: <line>`` and exit with status 2."""
    print(f"{command}: error: {' '.join(line.split())}", file=sys.stderr)
    raise SystemExit(2)


def _raw_formatter():
    import argparse

    from jsonargparse import DefaultHelpFormatter

    class Formatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
        pass

    return Formatter


if __name__ == "__main__":
    main()
