"""Every YAML under models/ trains with fast_dev_run, and its checkpoint reloads (weights_only)."""

from pathlib import Path

import pytest
import torch

from probgen.cli import load_checkpoint_into, run_cli

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "models").glob("**/*.yaml"))

# Configs that are step 2 of a recipe: they load the checkpoint step 1 writes. The test trains
# step 1 with fast_dev_run first and passes its checkpoint (plus overrides that keep step 2 small).
NEEDS_CHECKPOINT = {
    "energy/digits_ood_flow.yaml": ("energy/digits_flow_q.yaml", "--model.init_args.noise_kwargs.checkpoint",
                                    ["--model.init_args.noise_pool=256", "--model.init_args.log_z_samples=256"]),
}


def _prerequisite_args(config: Path, tmp_path: Path) -> list[str]:
    name = str(config.relative_to(REPO / "models"))
    if name not in NEEDS_CHECKPOINT:
        return []
    first, flag, overrides = NEEDS_CHECKPOINT[name]
    root = tmp_path / "step1"
    cli = run_cli(["fit", "--config", str(REPO / "models" / first), "--trainer.fast_dev_run=true",
                   "--trainer.accelerator=cpu", f"--trainer.default_root_dir={root}"])
    ckpt = root / "step1.ckpt"
    cli.trainer.save_checkpoint(ckpt)
    return [f"{flag}={ckpt}", *overrides]


def test_configs_are_shipped():
    assert (REPO / "models" / "interpolants" / "checkerboard.yaml") in CONFIGS


@pytest.mark.parametrize("config", CONFIGS, ids=[str(c.relative_to(REPO / "models")) for c in CONFIGS])
def test_config_fits_and_checkpoint_reloads(config, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # configs name data paths relative to the repository root
    extra = _prerequisite_args(config, tmp_path)
    cli = run_cli(["fit", "--config", str(config), "--trainer.fast_dev_run=true",
                   "--trainer.accelerator=cpu", f"--trainer.default_root_dir={tmp_path}", *extra])
    assert cli.trainer.state.finished, f"{config.name}: fit did not finish"
    ckpt = tmp_path / "model.ckpt"
    cli.trainer.save_checkpoint(ckpt)
    torch.load(ckpt, weights_only=True)  # must not need pickled objects
    fresh = run_cli(["--config", str(config), "--trainer.accelerator=cpu", *extra], run=False).model
    load_checkpoint_into(fresh, ckpt)
    trained = cli.model.state_dict()
    reloaded = fresh.state_dict()
    assert trained.keys() == reloaded.keys()
    for key, value in trained.items():
        assert torch.equal(value.cpu(), reloaded[key].cpu()), f"{config.name}: {key} differs after reload"
