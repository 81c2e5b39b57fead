"""The CLI reports bad input in one line naming the flag, the value and what is allowed."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from probgen.cli import main

REPO = Path(__file__).resolve().parents[1]


def _config(tmp_path: Path, model: dict | None = None, data: dict | None = None, **top) -> Path:
    cfg = {
        "model": {"class_path": "probgen.ensembles.SGLDEnsemble", "init_args": {"input_dim": 2, "num_chains": 2, **(model or {})}},
        "data": {"class_path": "probgen.data.TwoMoons", "init_args": {"num_train": 64, **(data or {})}},
        "trainer": {"max_steps": 1, "logger": False, "enable_progress_bar": False, "accelerator": "cpu",
                    "default_root_dir": str(tmp_path)},
        **top,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _error_line(capsys, args: list[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "usage:" not in err
    ours = [line for line in err.splitlines() if line.startswith("probgen")]
    assert len(ours) == 1, err
    return ours[0]


@pytest.mark.parametrize("flag, value, allowed", [
    ("--model.init_args.lr", "-1", "lr must be a real number > 0, got -1.0"),
    ("--model.init_args.num_chains", "0", "num_chains must be an integer >= 1, got 0"),
    ("--model.init_args.sampler", "sgdl", "sampler must be one of 'sgld', 'psgld', 'sghmc', 'adaptive_sghmc', got 'sgdl'"),
    ("--data.init_args.batch_size", "0", "batch_size must be an integer >= 1, got 0"),
    ("--data.init_args.noise", "-0.5", "noise must be a real number >= 0, got -0.5"),
])
def test_bad_value_on_the_command_line(tmp_path, capsys, flag, value, allowed):
    line = _error_line(capsys, ["fit", "--config", str(_config(tmp_path)), f"{flag}={value}"])
    assert line.startswith(f"probgen fit: error: {flag}={value}")
    assert allowed in line
    assert not (tmp_path / "checkpoints").exists() and not list(tmp_path.glob("**/*.ckpt"))


def test_bad_value_in_the_yaml(tmp_path, capsys):
    line = _error_line(capsys, ["fit", "--config", str(_config(tmp_path, model={"temperature": -2.0}))])
    assert "--model.init_args.temperature=-2.0" in line and "temperature must be a real number >= 0, got -2.0" in line


def test_misspelled_model_argument(tmp_path, capsys):
    line = _error_line(capsys, ["fit", "--config", str(_config(tmp_path, model={"num_chian": 3}))])
    assert line.startswith("probgen fit: error: --model.init_args.num_chian: probgen.ensembles.SGLDEnsemble has no argument 'num_chian'; did you mean 'num_chains'?")


def test_misspelled_flag(tmp_path, capsys):
    line = _error_line(capsys, ["fit", "--config", str(_config(tmp_path)), "--data.init_args.nosie=0.1"])
    assert "--data.init_args.nosie" in line and "did you mean 'noise'?" in line


def test_misspelled_class(tmp_path, capsys):
    cfg = _config(tmp_path)
    text = cfg.read_text().replace("SGLDEnsemble", "SGLDEnsembel")
    cfg.write_text(text)
    line = _error_line(capsys, ["fit", "--config", str(cfg)])
    assert line == ("probgen fit: error: --model.class_path=probgen.ensembles.SGLDEnsembel: no such model class; "
                    "did you mean 'probgen.ensembles.SGLDEnsemble'?")


def test_misspelled_trainer_and_top_level_keys(tmp_path, capsys):
    cfg = _config(tmp_path)
    cfg.write_text(cfg.read_text().replace("max_steps", "max_step"))
    line = _error_line(capsys, ["fit", "--config", str(cfg)])
    assert line == "probgen fit: error: --trainer.max_step: the Trainer has no option 'max_step'; did you mean --trainer.max_steps?"
    cfg.write_text(cfg.read_text().replace("trainer:", "trainr:"))
    line = _error_line(capsys, ["fit", "--config", str(cfg)])
    assert "unknown option 'trainr'; did you mean 'trainer'?" in line


def test_wrong_type(tmp_path, capsys):
    line = _error_line(capsys, ["fit", "--config", str(_config(tmp_path)), "--model.init_args.lr=fast"])
    assert line == "probgen fit: error: --model.init_args.lr: Expected a float. Got value: fast"


def test_sample_with_a_missing_checkpoint(tmp_path, capsys):
    cfg = str(_config(tmp_path))
    missing = tmp_path / "missing.ckpt"
    line = _error_line(capsys, ["sample", "--config", cfg, "--ckpt_path", str(missing)])
    assert line.startswith(f"probgen sample: error: --ckpt_path={missing}: no such file; pass an existing .ckpt file, 'last'")
    line = _error_line(capsys, ["sample", "--config", cfg, "--trainer.default_root_dir", str(tmp_path)])
    assert line.startswith("probgen sample: error: --ckpt_path=last: no checkpoints/*.ckpt under")


def test_console_entry_point_prints_one_line_and_no_traceback(tmp_path):
    """The issue's case, end to end in a fresh process: a bad lr stops before any run folder."""
    cmd = [sys.executable, "-m", "probgen.cli", "fit", "--config", str(_config(tmp_path)), "--model.init_args.lr=-1"]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if not line.startswith("Seed set")]
    assert lines == ["probgen fit: error: --model.init_args.lr=-1.0 (probgen.ensembles.module.SGLDEnsemble): "
                     "lr must be a real number > 0, got -1.0"]
    assert not list(tmp_path.glob("**/version_*"))
