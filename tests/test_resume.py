"""Kill and resume: a `probgen fit` run killed with SIGKILL after a mid-epoch checkpoint and
resumed with `--ckpt_path` ends bit-identical to an uninterrupted run, for every family.

Each case trains a shipped config (shrunk by overrides to a few seconds) three times with
the same checkpointing callback: uninterrupted; killed (SIGKILL, from outside) a few steps
after a checkpoint taken in the middle of its second epoch; resumed from that checkpoint.
The final checkpoints must agree bit for bit in everything but the callbacks' and loops'
bookkeeping (weights, EMA and other buffers, optimiser and scheduler state, the RNG states,
family state such as u_t or the sample store), and the metrics the resumed run logs must
equal the uninterrupted run's at the same steps.

The default tests kill a forked child that runs the CLI entry point (`probgen.cli.run_cli`,
what `probgen fit` calls), so no test pays Python's and Lightning's import time again; the
`slow` test runs `python -m probgen.cli fit` as a fresh subprocess for every family.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from probgen.cli import run_cli

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

# family -> (shipped config, overrides, checkpoint step, kill step, last step, batches per epoch)
CASES = {
    "interpolants": (
        "models/interpolants/checkerboard.yaml",
        ["--model.init_args.hidden_dims=[16, 16]", "--model.init_args.warmup_steps=3",
         "--model.init_args.val_nll_samples=4", "--model.init_args.nll_steps=2",
         "--model.init_args.sample_steps=2", "--model.init_args.plot_every_n_val=0", "--data.init_args.n_train=192", "--data.init_args.n_val=32",
         "--data.init_args.n_test=32", "--data.init_args.batch_size=32", "--trainer.val_check_interval=4",
         # max_epochs beside max_steps: the cosine schedule's trainer.estimated_stepping_batches then
         # builds the train loader before the loop state is restored (Lightning issue #20550)
         "--trainer.max_epochs=3"],
        8, 10, 14, 6,
    ),
    "energy": (
        "models/energy/toy2d_density.yaml",
        ["--model.init_args.energy={kind: mlp, dim: 2, hidden: 16, depth: 2, envelope: 0.01}",
         "--model.init_args.noise_batch_size=64", "--model.init_args.grid_points=20",
         "--model.init_args.noise_kwargs={num_components: 2, scale: 1.3}",
         "--data.init_args.n_train=192", "--data.init_args.n_val=32", "--data.init_args.n_test=32",
         "--data.init_args.batch_size=32", "--trainer.val_check_interval=4"],
        8, 10, 14, 6,
    ),
    "energy-pcd": (
        "models/energy/toy2d_density.yaml",
        ["--model.init_args.objective=pcd", "--model.init_args.langevin_steps=3", "--model.init_args.buffer_size=128",
         "--model.init_args.energy={kind: mlp, dim: 2, hidden: 16, depth: 2, envelope: 0.01}",
         "--model.init_args.noise_batch_size=32", "--model.init_args.grid_points=20",
         "--model.init_args.noise_kwargs={num_components: 2, scale: 1.3}",
         "--data.init_args.n_train=192", "--data.init_args.n_val=32", "--data.init_args.n_test=32",
         "--data.init_args.batch_size=32", "--trainer.val_check_interval=4"],
        8, 10, 14, 6,
    ),
    "ensembles": (
        "models/ensembles/two_moons.yaml",
        ["--model.init_args.hidden_dims=[8]", "--model.init_args.num_chains=3", "--model.init_args.burn_in=4",
         "--model.init_args.thin=2", "--model.init_args.store_size=4", "--data.init_args.num_train=160",
         "--data.init_args.num_test=32", "--data.init_args.batch_size=32", "--trainer.check_val_every_n_epoch=1"],
        7, 9, 13, 5,
    ),
    "fractional": (
        "models/fractional/fou_hurst.yaml",
        ["--model.init_args.control_hidden=8", "--model.init_args.gamma_max=2.0", "--model.init_args.dt=0.1", "--data.init_args.n_obs=8",
         "--model.init_args.n_ou=4",  # K = 10 on [1/2, 2] has weights ~1e5: a degenerate approximation
         "--data.init_args.num_train=64", "--data.init_args.num_val=16", "--data.init_args.num_test=16",
         # a validation (whose ELBO draws from the global RNG) right after the checkpoint
         "--data.init_args.batch_size=16", "--trainer.val_check_interval=2"],
        6, 8, 10, 4,
    ),
    "nngp": (
        "models/nngp/synthetic_heavy_tail.yaml",
        ["--model.init_args.method=importance", "--data.init_args.num_train=64", "--data.init_args.num_val=16",
         "--data.init_args.num_test=16", "--data.init_args.batch_size=16", "--trainer.check_val_every_n_epoch=1"],
        6, 8, 10, 4,
    ),
}


def _overlay(root: Path, ckpt_step: int, last_step: int, pause_step: int | None) -> Path:
    """Trainer settings shared by the three runs of a case (plus the pause for the killed one)."""
    callbacks = [{
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {"dirpath": str(root / "checkpoints"), "filename": "{step}", "every_n_train_steps": ckpt_step,
                      "save_top_k": -1},
    }]
    if pause_step is not None:
        callbacks.append({"class_path": "toy_models.PauseAfterStep",
                          "init_args": {"step": pause_step, "marker": str(root / "paused")}})
    trainer = {
        "max_steps": last_step, "accelerator": "cpu", "devices": 1, "enable_progress_bar": False,
        "enable_model_summary": False, "log_every_n_steps": 1, "default_root_dir": str(root),
        "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(root), "name": "logs"}},
        "callbacks": callbacks,
    }
    path = root / ("overlay-killed.yaml" if pause_step is not None else "overlay.yaml")
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"trainer": trainer}))
    return path


def _fit_args(family: str, overlay: Path, *extra: str) -> list[str]:
    config, overrides, *_ = CASES[family]
    return ["fit", "--config", str(REPO / config), "--config", str(overlay), *overrides, *extra]


def _wait_and_kill(pid: int, marker: Path, alive, log: Path, timeout: float = 600.0) -> None:
    """SIGKILL ``pid`` once ``marker`` exists; fail if it exits first or never gets there."""
    start = time.monotonic()
    while not marker.exists():
        if not alive():
            pytest.fail(f"the run to be killed ended before its pause step:\n{log.read_text()[-4000:]}")
        if time.monotonic() - start > timeout:
            os.kill(pid, signal.SIGKILL)
            pytest.fail(f"the run to be killed did not reach its pause step in {timeout:.0f} s:\n{log.read_text()[-4000:]}")
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)


def _run_killed_forked(family: str, root: Path) -> None:
    """Run the CLI in a forked child; SIGKILL it at its pause step."""
    _, _, ckpt_step, pause_step, last_step, _ = CASES[family]
    overlay = _overlay(root, ckpt_step, last_step, pause_step)
    log = root / "killed.log"
    pid = os.fork()
    if pid == 0:  # child: run `probgen fit`, never return into pytest
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            run_cli(_fit_args(family, overlay))
        except BaseException:  # noqa: BLE001 - reported through the log
            import traceback

            os.write(2, traceback.format_exc().encode())
        os._exit(1)
    status: list[int] = []

    def alive() -> bool:
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status.append(st)
        return not done

    _wait_and_kill(pid, root / "paused", alive, log)
    st = status[0] if status else os.waitpid(pid, 0)[1]
    assert os.WIFSIGNALED(st) and os.WTERMSIG(st) == signal.SIGKILL, f"child status {st}"


def _run_killed_subprocess(family: str, root: Path) -> None:
    """Run ``python -m probgen.cli fit`` as a fresh process; SIGKILL it at its pause step."""
    _, _, ckpt_step, pause_step, last_step, _ = CASES[family]
    overlay = _overlay(root, ckpt_step, last_step, pause_step)
    log = root / "killed.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)]),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    # one thread, like the parent's runs: float reductions must split the same way
    code = "import torch, sys; torch.set_num_threads(1); from probgen.cli import main; main(sys.argv[1:])"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-c", code, *_fit_args(family, overlay)], cwd=root,
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    _wait_and_kill(proc.pid, root / "paused", lambda: proc.poll() is None, log)
    assert proc.wait() == -signal.SIGKILL


def _assert_identical(a, b, where: str) -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys {sorted(map(str, a))} vs {sorted(map(str, b))}"
        for k in a:
            _assert_identical(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), f"{where}: {a!r} vs {b!r}"
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        torch.testing.assert_close(b, a, rtol=0, atol=0, equal_nan=True, msg=lambda m: f"{where}: {m}")
    else:
        assert a == b or (a != a and b != b), f"{where}: {a!r} vs {b!r}"


def _logged(csv_path: Path) -> dict[int, dict[str, str]]:
    """Metrics per step of a CSVLogger file: ``{step: {name: value as written}}``."""
    out: dict[int, dict[str, str]] = {}
    with csv_path.open() as handle:
        for row in csv.DictReader(handle):
            step = int(row.pop("step"))
            for key, value in row.items():
                if value != "":
                    assert out.setdefault(step, {}).setdefault(key, value) == value, f"{key} logged twice at step {step}"
    return out


def _check_resume(family: str, tmp_path: Path, kill) -> None:
    _, _, ckpt_step, _, last_step, per_epoch = CASES[family]
    full_root, killed_root = tmp_path / "full", tmp_path / "killed"
    kill(family, killed_root)
    run_cli(_fit_args(family, _overlay(full_root, ckpt_step, last_step, None)))

    ckpt = killed_root / "checkpoints" / f"step={ckpt_step}.ckpt"
    assert ckpt.is_file(), sorted(p.name for p in (killed_root / "checkpoints").glob("*"))
    assert not (killed_root / "checkpoints" / "last.ckpt").exists()  # it really died mid-run
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    loader_state = saved["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    epoch, batches = ckpt_step // per_epoch, ckpt_step % per_epoch
    assert loader_state == [{"epoch": epoch, "batches": batches}] and 0 < batches < per_epoch  # mid-epoch

    resumed = run_cli(_fit_args(family, _overlay(killed_root, ckpt_step, last_step, None), f"--ckpt_path={ckpt}"))
    assert resumed.trainer.global_step == last_step

    resumed_log = _assert_same_end(full_root, killed_root, ckpt_step)
    assert all(any(k.startswith("train/") for k in resumed_log.get(s, {})) for s in range(ckpt_step, last_step))


def _assert_same_end(full_root: Path, resumed_root: Path, from_step: int) -> dict[int, dict[str, str]]:
    """The final checkpoints agree bit for bit (but for bookkeeping), and the resumed run's
    logged metrics equal the uninterrupted run's from ``from_step`` on; returns the former."""
    a = torch.load(full_root / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    b = torch.load(resumed_root / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    bookkeeping = {"callbacks", "loops", "pytorch-lightning_version"}
    assert {"state_dict", "optimizer_states", "probgen_rng_state"} <= a.keys()
    _assert_identical({k: v for k, v in a.items() if k not in bookkeeping},
                      {k: v for k, v in b.items() if k not in bookkeeping}, "checkpoint")
    full_log = _logged(full_root / "logs" / "version_0" / "metrics.csv")
    resumed_log = _logged(resumed_root / "logs" / "version_1" / "metrics.csv")
    assert resumed_log == {s: m for s, m in full_log.items() if s >= from_step}
    return resumed_log


@pytest.fixture
def one_thread():
    """Every run of a case on one intra-op thread (also what makes forking torch safe)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("family", list(CASES))
def test_killed_run_resumes_bit_identical(family, tmp_path, one_thread, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _check_resume(family, tmp_path, _run_killed_forked)


@pytest.mark.slow
@pytest.mark.parametrize("family", list(CASES))
def test_killed_cli_subprocess_resumes_bit_identical(family, tmp_path, one_thread, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _check_resume(family, tmp_path, _run_killed_subprocess)


def test_run_extended_past_max_steps_matches_longer_run(tmp_path, one_thread, monkeypatch):
    """A run stopped by max_steps mid-epoch (on a validation step), resumed from its last.ckpt
    with a larger max_steps, ends like a run given that max_steps from the start."""
    monkeypatch.chdir(tmp_path)
    family, stop = "energy", 8  # constant learning rate: the config does not depend on max_steps
    _, _, _, _, last_step, per_epoch = CASES[family]
    assert stop % per_epoch and stop % 4 == 0  # mid-epoch, and validation runs at that step
    run_cli(_fit_args(family, _overlay(tmp_path / "full", 1000, last_step, None)))
    run_cli(_fit_args(family, _overlay(tmp_path / "short", 1000, stop, None)))
    short = tmp_path / "short.ckpt"
    (tmp_path / "short" / "checkpoints" / "last.ckpt").rename(short)
    assert torch.load(short, weights_only=True)["global_step"] == stop
    run_cli(_fit_args(family, _overlay(tmp_path / "short", 1000, last_step, None), f"--ckpt_path={short}"))
    _assert_same_end(tmp_path / "full", tmp_path / "short", stop)


# -- the loader on its own -------------------------------------------------------------------
def _loader(num_workers: int = 0):
    from probgen.data.base import EpochBatches, ResumableDataLoader
    from torch.utils.data import TensorDataset

    data = TensorDataset(torch.arange(50.0)[:, None])
    return ResumableDataLoader(data, sampler=EpochBatches(50, 8, seed=3, drop_last=True), batch_size=None,
                               num_workers=num_workers)


def _epoch(loader, epoch: int) -> list[torch.Tensor]:
    loader.sampler.set_epoch(epoch)
    return [b[0].flatten() for b in loader]


def test_loader_continues_the_epoch_from_its_state():
    full = _loader()
    first, second = _epoch(full, 0), _epoch(full, 1)
    assert len(first) == len(second) == 6
    assert torch.cat(first).unique().numel() == 48 and not torch.equal(torch.cat(first), torch.cat(second))

    run = _loader()
    run.sampler.set_epoch(1)
    it = iter(run)
    seen = [next(it)[0].flatten() for _ in range(2)]
    state = run.state_dict()
    assert state == {"epoch": 1, "batches": 2}
    resumed = _loader()
    resumed.load_state_dict(state)
    rest = _epoch(resumed, 1)
    for a, b in zip(seen + rest, second, strict=True):
        assert torch.equal(a, b)
    assert resumed.state_dict() == {"epoch": 1, "batches": 6}
    # the offset is for that epoch only: the next epoch is whole again
    assert len(_epoch(resumed, 2)) == 6


def test_loader_state_at_an_epoch_end_starts_the_next_epoch_whole():
    run = _loader()
    _epoch(run, 0)
    resumed = _loader()
    resumed.load_state_dict(run.state_dict())  # {"epoch": 0, "batches": 6}
    for a, b in zip(_epoch(resumed, 1), _epoch(_loader(), 1), strict=True):
        assert torch.equal(a, b)


def test_loader_with_workers_draws_the_epoch_set_after_iter():
    """Lightning may call iter() before set_epoch: the batches must still be the new epoch's."""
    expected = _epoch(_loader(), 2)
    loader = _loader(num_workers=1)
    it = iter(loader)
    loader.sampler.set_epoch(2)
    for a, b in zip([x[0].flatten() for x in it], expected, strict=True):
        assert torch.equal(a, b)


def test_loader_state_errors_name_the_problem():
    with pytest.raises(ValueError, match="'epoch' and 'batches'"):
        _loader().load_state_dict({"epoch": 0})
    with pytest.raises(ValueError, match=r"batch must be in \[0, 6\]"):
        _loader().sampler.resume_at(0, 7)
