"""Every YAML under models/ trains with fast_dev_run, and its checkpoint reloads (weights_only)."""

from pathlib import Path

import pytest
import torch

from probgen.cli import load_checkpoint_into, run_cli

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "models").glob("**/*.yaml"))


def test_configs_are_shipped():
    assert (REPO / "models" / "interpolants" / "checkerboard.yaml") in CONFIGS


@pytest.mark.parametrize("config", CONFIGS, ids=[str(c.relative_to(REPO / "models")) for c in CONFIGS])
def test_config_fits_and_checkpoint_reloads(config, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # configs name data paths relative to the repository root
    cli = run_cli(["fit", "--config", str(config), "--trainer.fast_dev_run=true",
                   "--trainer.accelerator=cpu", f"--trainer.default_root_dir={tmp_path}"])
    assert cli.trainer.state.finished, f"{config.name}: fit did not finish"
    ckpt = tmp_path / "model.ckpt"
    cli.trainer.save_checkpoint(ckpt)
    torch.load(ckpt, weights_only=True)  # must not need pickled objects
    fresh = run_cli(["--config", str(config), "--trainer.accelerator=cpu"], run=False).model
    load_checkpoint_into(fresh, ckpt)
    trained = cli.model.state_dict()
    reloaded = fresh.state_dict()
    assert trained.keys() == reloaded.keys()
    for key, value in trained.items():
        assert torch.equal(value.cpu(), reloaded[key].cpu()), f"{config.name}: {key} differs after reload"
