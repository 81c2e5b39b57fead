"""The rules behind the data-independent default config: mean-first warm start, run length in
epochs with a floor in updates, step size h = step_scale / N, input dimension read from the data."""

import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from probgen.data.classification2d import GapRegression1D
from probgen.ensembles import GaussianLikelihood, SamplingSchedule, SGLDEnsemble, run_length, steps_of


def test_mean_first_gradients_are_two_separate_gaussian_fits():
    torch.manual_seed(0)
    s = 0.7
    lik = GaussianLikelihood("heteroscedastic", scale=s, min_scale=1e-3)
    out = torch.randn(3, 5, 2, dtype=torch.float64, requires_grad=True)
    y = torch.randn(5, 1, dtype=torch.float64)
    lik.log_prob(out, y, {}, mean_first=True).sum().backward()
    mu, raw = out.detach()[..., :1], out.detach()[..., 1:]
    sigma = F.softplus(raw) + 1e-3
    r = y - mu
    # d/dmu of -(y - mu)^2 / (2 s^2): the homoscedastic fit, whatever the variance head says
    torch.testing.assert_close(out.grad[..., :1], r / s**2)
    # d/draw of log N(y; mu, sigma^2) with mu held fixed: (r^2 / sigma^3 - 1 / sigma) sigmoid(raw)
    torch.testing.assert_close(out.grad[..., 1:], (r.square() / sigma**3 - 1 / sigma) * torch.sigmoid(raw))


def test_mean_first_value_and_the_exact_likelihood_after_it():
    lik = GaussianLikelihood("heteroscedastic", scale=0.5, min_scale=1e-3)
    out = torch.tensor([[[0.3, -0.2]]], dtype=torch.float64)
    y = torch.tensor([[1.0]], dtype=torch.float64)
    sigma = math.log1p(math.exp(-0.2)) + 1e-3
    exact = -0.5 * math.log(2 * math.pi * sigma**2) - 0.7**2 / (2 * sigma**2)
    assert lik.log_prob(out, y, {}).item() == pytest.approx(exact, rel=1e-12)
    assert lik.log_prob(out, y, {}, mean_first=True).item() == pytest.approx(exact - 0.7**2 / (2 * 0.25), rel=1e-12)
    homo = GaussianLikelihood("fixed", scale=0.5)  # ignored unless heteroscedastic
    o = out[..., :1]
    assert torch.equal(homo.log_prob(o, y, {}, mean_first=True), homo.log_prob(o, y, {}))


def test_schedule_warm_start_only_inside_burn_in():
    sched = SamplingSchedule(lr=1e-3, burn_in=10, warm_start=4)
    assert [sched.mean_first(t) for t in (0, 3, 4, 9)] == [True, True, False, False]
    with pytest.raises(ValueError, match="warm_start"):
        SamplingSchedule(lr=1e-3, burn_in=3, warm_start=4)


def test_run_length_and_fractions():
    # 100 points in batches of 32: 4 updates an epoch
    assert run_length(100, 32, 10) == 40
    assert run_length(100, 32, 10, min_steps=1000) == 1000
    assert run_length(100_000, 32, 10, min_steps=1000) == 31250
    assert steps_of("burn_in", 0.5, 30000) == 15000
    assert steps_of("burn_in", 7, 30000) == 7
    with pytest.raises(ValueError, match="burn_in"):
        steps_of("burn_in", 1.5, 10)
    with pytest.raises(TypeError, match="burn_in"):
        steps_of("burn_in", "half", 10)
    with pytest.raises(ValueError, match="batch_size"):
        run_length(10, 0, 1)


def _trainer(tmp_path, **kw):
    return L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                     default_root_dir=tmp_path, limit_val_batches=0, **kw)


def test_module_reads_input_dim_runs_num_epochs_and_scales_lr(tmp_path):
    dm = GapRegression1D(num_train=40, batch_size=16)  # 3 updates an epoch
    model = SGLDEnsemble(input_dim=None, hidden_dims=[8], num_chains=2, sampler="psgld", step_scale=4e-3,
                         noise="heteroscedastic", schedule="cyclical", num_cycles=2, num_epochs=5, min_steps=0,
                         burn_in=0.5, warm_start=0.25, thin=1, store_size=4)
    trainer = _trainer(tmp_path, max_epochs=-1)
    trainer.fit(model, dm)
    assert model.hparams.input_dim == 1
    assert trainer.global_step == 15  # 5 epochs x 3 updates, stopped by the model
    assert model.schedule.total_steps == 15 and model.schedule.burn_in == 8 and model.schedule.warm_start == 4
    assert model.optimizers().optimizer.param_groups[0]["lr"] == pytest.approx(4e-3 / 40)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    loaded = SGLDEnsemble.load_from_checkpoint(tmp_path / "m.ckpt", weights_only=True)
    x = torch.linspace(-1, 1, 5)[:, None]
    torch.testing.assert_close(loaded.predictive(x).mean, model.predictive(x).mean)


def test_min_steps_floor_and_bad_warm_start(tmp_path):
    dm = GapRegression1D(num_train=40, batch_size=16)
    model = SGLDEnsemble(input_dim=None, hidden_dims=[8], num_chains=2, num_epochs=1, min_steps=7, burn_in=2)
    trainer = _trainer(tmp_path, max_epochs=-1)
    trainer.fit(model, dm)
    assert trainer.global_step == 7
    with pytest.raises(ValueError, match="warm_start"):
        SGLDEnsemble(noise="learnt", warm_start=0.2)
    with pytest.raises(ValueError, match="burn_in"):
        SGLDEnsemble(burn_in=1.0)
