"""The probgen CLI: fit, sample, help, exact resume and DDP on CPU."""

import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from probgen.cli import find_checkpoint, load_checkpoint_into, run_cli

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
DEFAULT_CONFIG = REPO / "models" / "interpolants" / "checkerboard.yaml"


def _toy_config(tmp_path: Path) -> Path:
    cfg = {
        "seed_everything": 0,
        "model": {"class_path": "toy_models.GaussianFit"},
        "data": {"class_path": "toy_models.GaussianData"},
        "trainer": {"max_epochs": 2, "accelerator": "cpu", "default_root_dir": str(tmp_path)},
    }
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_fit_then_sample_writes_samples_and_plot(tmp_path):
    config = _toy_config(tmp_path)
    cli = run_cli(["fit", "--config", str(config)])
    ckpt = find_checkpoint("last", tmp_path)
    out = tmp_path / "samples"
    run_cli(["sample", "--config", str(config), "--ckpt_path", str(ckpt), "--num_samples", "300", "--out_dir", str(out)])
    samples = torch.load(out / "samples.pt", weights_only=True)
    assert samples.shape == (300, 2)
    assert (out / "samples.png").stat().st_size > 1000
    # the samples come from the trained weights, not a fresh model
    assert torch.allclose(samples.mean(0), cli.model.mu.detach(), atol=4 * cli.model.log_sigma.exp().max().item() / 300**0.5)


def test_validate_with_ckpt_path_last_evaluates_the_trained_weights(tmp_path, capsys):
    config = _toy_config(tmp_path)
    fitted = run_cli(["fit", "--config", str(config)]).model
    cli = run_cli(["validate", "--config", str(config), "--ckpt_path", "last"])
    # Lightning's own "last" found no ModelCheckpoint(save_last=True) and tested the fresh model
    for k, v in fitted.state_dict().items():
        assert torch.equal(v, cli.model.state_dict()[k]), k
    with pytest.raises(SystemExit):
        run_cli(["validate", "--config", str(config), "--ckpt_path", "last", f"--trainer.default_root_dir={tmp_path / 'empty'}"])
    assert "--ckpt_path=last: no checkpoints/*.ckpt under" in capsys.readouterr().err


def test_checkpoint_loads_with_weights_only(tmp_path):
    config = _toy_config(tmp_path)
    cli = run_cli(["fit", "--config", str(config)])
    ckpt = torch.load(find_checkpoint("last", tmp_path), weights_only=True)
    fresh = run_cli(["--config", str(config)], run=False).model
    load_checkpoint_into(fresh, find_checkpoint("last", tmp_path))
    for k, v in cli.model.state_dict().items():
        assert torch.equal(v, fresh.state_dict()[k]), k
    assert "probgen_rng_state" in ckpt


def test_sample_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="ckpt_path"):
        find_checkpoint(str(tmp_path / "missing.ckpt"))
    with pytest.raises(ValueError, match="no checkpoints"):
        find_checkpoint("last", tmp_path)


def test_help_lists_models_and_configs():
    out = subprocess.run(
        [sys.executable, "-m", "probgen.cli", "--help"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert "Models (--model):" in out.stdout
    assert "probgen.interpolants.StochasticInterpolant" in out.stdout
    assert "models/interpolants/checkerboard.yaml" in out.stdout


class StopAfterEpochs(L.Callback):
    """Simulates an interruption: stop training at the end of epoch ``epochs - 1``."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


def _final_state(cli) -> dict:
    return {k: v.detach().clone() for k, v in cli.model.state_dict().items()}


@pytest.mark.parametrize("config", [pytest.param("toy", id="toy"), pytest.param("default", id="default-config")])
def test_resume_matches_uninterrupted_run(tmp_path, config):
    """Train 2 epochs; train 1 epoch, checkpoint, resume to 2: same weights and metrics."""
    if config == "toy":
        cfg = [str(_toy_config(tmp_path))]
        limits = []
    else:
        if not DEFAULT_CONFIG.exists():
            pytest.skip("default config not shipped yet")
        cfg = [str(DEFAULT_CONFIG)]
        limits = ["--trainer.limit_train_batches=3", "--trainer.limit_val_batches=1"]
    common = ["--trainer.accelerator=cpu", "--trainer.logger=false", "--trainer.enable_progress_bar=false", *limits]
    full = run_cli(["fit", "--config", *cfg, *common, "--trainer.max_epochs=2", "--trainer.max_steps=-1",
                    f"--trainer.default_root_dir={tmp_path / 'full'}"])
    # the interrupted run is configured exactly like the full one (same LR schedule length)
    # and stopped by a callback after the first epoch
    first = run_cli(["--config", *cfg, *common, "--trainer.max_epochs=2", "--trainer.max_steps=-1",
                     f"--trainer.default_root_dir={tmp_path / 'first'}"], run=False)
    first.trainer.callbacks.append(StopAfterEpochs(1))
    first.trainer.fit(first.model, datamodule=first.datamodule)
    assert first.trainer.current_epoch == 1
    ckpt = tmp_path / "half.ckpt"
    first.trainer.save_checkpoint(ckpt)
    resumed = run_cli(["fit", "--config", *cfg, *common, "--trainer.max_epochs=2", "--trainer.max_steps=-1",
                       f"--trainer.default_root_dir={tmp_path / 'resumed'}", f"--ckpt_path={ckpt}"])
    assert resumed.trainer.global_step == full.trainer.global_step
    a, b = _final_state(full), _final_state(resumed)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=0, msg=k)
    for name, value in full.trainer.callback_metrics.items():
        torch.testing.assert_close(resumed.trainer.callback_metrics[name], value, rtol=0, atol=0, msg=name)


def test_default_config_trains_under_ddp_on_cpu(tmp_path):
    if not DEFAULT_CONFIG.exists():
        pytest.skip("default config not shipped yet")
    env = {**os.environ, "PYTHONPATH": str(TESTS), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "probgen.cli", "fit", "--config", str(DEFAULT_CONFIG),
        "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu",
        "--trainer.max_steps=3", "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    ckpt = find_checkpoint("last", tmp_path)
    state = torch.load(ckpt, weights_only=True)
    assert state["global_step"] == 3
