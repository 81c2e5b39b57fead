"""Run control: the predictive R-hat / ESS stop, and ESS from the evenly spaced last-M store."""

import math

import lightning as L
import numpy as np
import pytest
import torch
from scipy.signal import lfilter
from torch import nn

from probgen.data.classification2d import GapRegression1D
from probgen.ensembles import SGLDEnsemble
from probgen.ensembles.store import SampleStore
from probgen.samplers import ess


def _trainer(tmp_path, max_steps):
    return L.Trainer(max_steps=max_steps, logger=False, enable_progress_bar=False, enable_model_summary=False,
                     enable_checkpointing=False, default_root_dir=tmp_path, limit_val_batches=0)


def _linear_model(**kw):
    # Bayesian linear regression (a conjugate posterior SGLD mixes on within ~1/(h N) steps)
    args = {"network": nn.Linear(1, 1), "noise": "fixed", "noise_scale": 0.3, "num_chains": 4, "sampler": "sgld",
            "lr": 1e-3, "burn_in": 200, "thin": 10, "store_size": 10, "stop_rhat": 1.05, "check_every": 100,
            "diag_draws": 40, "seed": 2}
    args.update(kw)
    return SGLDEnsemble(**args)


def test_stop_fires_when_chains_agree(tmp_path):
    L.seed_everything(0)
    model = _linear_model()
    trainer = _trainer(tmp_path, 3000)
    trainer.fit(model, GapRegression1D(num_train=40, batch_size=40))
    assert model.stopped_at is not None and model.stopped_at < 3000
    assert trainer.global_step == model.stopped_at
    assert (model.stopped_at - 200) % 100 == 0  # only at checks after burn-in
    assert len(model.ensemble.recent) >= 4
    assert float(trainer.callback_metrics["train/rhat_pred_max"]) <= 1.05


def test_stop_does_not_fire_when_chains_are_stuck_apart(tmp_path):
    # chains drawn far apart from a wide prior and a step too small to move them: they never
    # agree, so the R-hat stop must not fire and the run goes to max_steps
    L.seed_everything(0)
    model = _linear_model(lr=1e-9, init="prior", prior_scale=10.0)
    trainer = _trainer(tmp_path, 400)
    trainer.fit(model, GapRegression1D(num_train=40, batch_size=40))
    assert model.stopped_at is None
    assert trainer.global_step == 400
    assert float(trainer.callback_metrics["train/rhat_pred_max"]) > 1.05


def test_ess_stop_needs_enough_draws(tmp_path):
    # the ESS threshold alone: K * M = 4 * 40 = 160 draws can never give ESS >= 10,000
    model = _linear_model(stop_rhat=None, stop_ess=1e4)
    trainer = _trainer(tmp_path, 400)
    trainer.fit(model, GapRegression1D(num_train=40, batch_size=40))
    assert model.stopped_at is None and trainer.global_step == 400
    assert 0 < float(trainer.callback_metrics["train/ess_pred_min"]) < 1e4


@pytest.mark.parametrize("name,value", [("stop_rhat", 0.9), ("stop_ess", 0.0), ("check_every", 0), ("diag_draws", 3)])
def test_run_control_bad_input(name, value):
    with pytest.raises(ValueError, match=name):
        _linear_model(**{name: value})


def test_ess_of_evenly_spaced_ar1_draws_matches_closed_form():
    # K AR(1) chains (phi = 0.9), REPS independent replicates in the stored shape, offered to the
    # last-M store: its draws are the run's last M, evenly spaced, so their ESS is
    # K M (1 - phi) / (1 + phi). The reservoir keeps a random subsample of the whole run (gaps
    # of ~n / M steps): its draws look nearly independent and its ESS is not the run's.
    phi, k, m, n, reps = 0.9, 4, 2000, 10000, 100
    rng = np.random.default_rng(3)
    eps = rng.standard_normal((k, n, reps))
    eps[:, 0] /= math.sqrt(1 - phi**2)
    x = torch.from_numpy(lfilter([math.sqrt(1 - phi**2)], [1.0, -phi], eps, axis=1))
    last = SampleStore({"x": (reps,)}, k, m, "last", dtype=torch.float64)
    reservoir = SampleStore({"x": (reps,)}, k, m // 10, "reservoir", seed=1, dtype=torch.float64)
    for t in range(n):
        last.add({"x": x[:, t]}, step=t)
        reservoir.add({"x": x[:, t]}, step=t)
    assert torch.equal(last.steps(), torch.arange(n - m, n))
    true = k * m * (1 - phi) / (1 + phi)
    ratio = ess(last.samples()["x"], method="basic") / true
    se = ratio.std() / math.sqrt(reps)
    # Geyer truncation bias plus the O(tau / n) bias of each split chain's own mean (see
    # tests/samplers/test_samplers_diagnostics.py)
    tol = 4 * se + 1.6 * math.sqrt(2.0 / (k * m)) + 2 * (1 + phi) / (1 - phi) / (m / 2)
    assert abs(ratio.mean() - 1.0) < tol
    uneven = ess(reservoir.samples()["x"], method="basic") / (k * (m // 10))
    assert uneven.mean() > 0.5  # vs (1 - phi) / (1 + phi) = 0.053 for evenly spaced draws
