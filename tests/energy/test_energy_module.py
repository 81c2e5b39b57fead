"""EnergyBasedModel: every objective trains; state survives a weights_only checkpoint."""

import math

import lightning as L
import pytest
import torch

from probgen.data.gaussian import GaussianDataModule
from probgen.energy import OBJECTIVES, EnergyBasedModel

QUAD_1D = {"kind": "quadratic", "dim": 1, "mean": [0.0], "precision": 1.0, "learn_precision": False}


def _fit(model, steps, tmp_path, dm=None):
    dm = dm or GaussianDataModule(dim=1, mean=2.0, std=1.0, n_train=4096, n_val=512, n_test=512, batch_size=128)
    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0, limit_val_batches=1)
    trainer.fit(model, dm)
    return trainer, dm


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_every_objective_learns_the_gaussian_mean(objective, tmp_path):
    torch.manual_seed(0)
    model = EnergyBasedModel(dim=1, energy=QUAD_1D, objective=objective, noise_kwargs={"scale": 1.5}, noise_batch_size=256,
                             lr=0.08, langevin_steps=8, langevin_step_size=0.2, cd_alpha=0.0, buffer_size=512, dsm_sigma=0.1)
    _fit(model, 70, tmp_path)
    assert abs(float(model.energy.mean.detach()) - 2.0) < 0.2, objective
    assert bool(model.noise_fitted)


def test_checkpoint_holds_moving_average_and_replay_buffer(tmp_path):
    torch.manual_seed(0)
    for objective in ("storm", "pcd"):
        model = EnergyBasedModel(dim=1, energy=QUAD_1D, objective=objective, noise_batch_size=64, buffer_size=128, langevin_steps=5)
        trainer, _ = _fit(model, 5, tmp_path)
        path = tmp_path / f"{objective}.ckpt"
        trainer.save_checkpoint(path)
        ckpt = torch.load(path, weights_only=True)
        fresh = EnergyBasedModel(**ckpt["hyper_parameters"])
        fresh.on_load_checkpoint(ckpt)
        fresh.load_state_dict(ckpt["state_dict"])
        if objective == "storm":
            assert fresh.estimator.steps == 5 and torch.equal(fresh.estimator.log_u, model.estimator.log_u)
            assert set(fresh.estimator.prev_params) == set(model.estimator.prev_params)
        else:
            assert torch.equal(fresh.replay.buffer, model.replay.buffer)
        assert bool(fresh.noise_fitted) and torch.equal(fresh.noise.loc, model.noise.loc)


def test_eval_nll_uses_the_exact_grid_log_z_and_sample_shape(tmp_path):
    torch.manual_seed(0)
    model = EnergyBasedModel(dim=1, energy=QUAD_1D, objective="compositional", grid_bound=10.0, grid_points=2000,
                             sample_steps=20, sample_step_size=0.1, sample_init_temperature=4.0)
    trainer, dm = _fit(model, 2, tmp_path)
    log_z, ess = model.log_partition()
    assert abs(float(log_z) - 0.5 * math.log(2 * math.pi)) < 1e-6 and torch.isnan(ess)
    res = trainer.test(model, dm, verbose=False)[0]
    x = dm.splits["test"][0]
    expected = float(model.energy(x).mean().detach() + 0.5 * math.log(2 * math.pi))
    assert abs(res["test/nll"] - expected) < 1e-4
    assert model.sample(10, torch.Generator().manual_seed(0)).shape == (10, 1)
    with pytest.raises(ValueError, match="objective"):
        EnergyBasedModel(objective="score")
    with pytest.raises(ValueError, match="num_samples"):
        model.sample(0)


def test_gaussian_datamodule_splits_and_errors():
    dm = GaussianDataModule(dim=2, mean=[1.0, -1.0], std=0.5, n_train=4000, n_val=10, n_test=10, batch_size=32)
    dm.setup()
    x = dm.splits["train"][0]
    assert x.shape == (4000, 2) and dm.splits["test"][0].shape == (10, 2)
    assert ((x.mean(0) - torch.tensor([1.0, -1.0])).abs() < 4 * 0.5 / math.sqrt(4000)).all()
    with pytest.raises(ValueError, match="mean"):
        GaussianDataModule(dim=2, mean=[0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="std"):
        GaussianDataModule(std=0.0)


@pytest.mark.parametrize(
    "kwargs,name",
    [({"dim": 0}, "dim"), ({"dim": -1}, "dim"), ({"dim": 2.0}, "dim"), ({"noise_batch_size": 1}, "noise_batch_size"),
     ({"gamma": 0.0}, "gamma"), ({"gamma": 1.5}, "gamma"), ({"gamma_decay": 2.0}, "gamma_decay"),
     ({"gamma_offset": 0.0}, "gamma_offset"), ({"lr": 0.0}, "lr"), ({"lr": float("nan")}, "lr"),
     ({"weight_decay": -1.0}, "weight_decay"), ({"langevin_steps": 0}, "langevin_steps"),
     ({"langevin_step_size": -0.1}, "langevin_step_size"), ({"langevin_clip_grad": 0.0}, "langevin_clip_grad"),
     ({"langevin_method": "hmc"}, "langevin_method"), ({"sample_method": "x"}, "sample_method"),
     ({"cd_alpha": -1.0}, "cd_alpha"), ({"buffer_size": 0}, "buffer_size"), ({"reinit_prob": 1.5}, "reinit_prob"),
     ({"dsm_sigma": 0.0}, "dsm_sigma"), ({"sample_steps": 0}, "sample_steps"), ({"sample_step_size": 0.0}, "sample_step_size"),
     ({"sample_init_temperature": 0.5}, "sample_init_temperature"), ({"grid_bound": 0.0}, "grid_bound"),
     ({"grid_points": 1}, "grid_points"), ({"log_z_samples": 1}, "log_z_samples"), ({"objective": "score"}, "objective"),
     ({"noise": "uniform"}, "noise"), ({"dim": 3, "energy": QUAD_1D}, "dim"), ({"base_on_noise": 1}, "base_on_noise"),
     ({"energy": "mlp"}, "energy"), ({"noise_kwargs": [1]}, "noise_kwargs")],
)
def test_every_argument_is_validated_at_construction(kwargs, name):
    with pytest.raises((ValueError, TypeError), match=name):
        EnergyBasedModel(**kwargs)


def test_nan_batch_and_nan_fit_rows_raise_naming_the_rows():
    model = EnergyBasedModel(dim=1, energy=QUAD_1D)
    x = torch.randn(10, 1)
    x[3] = float("nan")
    x[7] = float("inf")
    with pytest.raises(ValueError, match=r"fit_noise.*rows \[3, 7\]"):
        model.fit_noise(x)
    with pytest.raises(ValueError, match=r"training batch.*NaN or inf"):
        model.training_step(x, 0)
    with pytest.raises(ValueError, match="GaussianMixtureNoise.fit"):
        from probgen.energy import GaussianMixtureNoise

        GaussianMixtureNoise(1, num_components=2).fit(x)


@pytest.mark.parametrize("objective", ["compositional", "minibatch", "nce"])
def test_tilted_objectives_skip_log_q_of_the_noise_and_keep_the_gradient(objective, monkeypatch):
    """With p ~ q exp(-E_net) the weights are exp(-E_net): same gradient as the full energy with log q, and no log q call."""
    torch.manual_seed(0)
    model = EnergyBasedModel(dim=1, energy=QUAD_1D, objective=objective, base_on_noise=True, noise_batch_size=64,
                             noise_kwargs={"mean": [0.5], "cov": [[2.0]]}, fit_noise_to_data=False).double()
    x = 2.0 + torch.randn(32, 1, dtype=torch.float64)
    calls = []
    real = model.noise.log_prob
    monkeypatch.setattr(model.noise, "log_prob", lambda z: calls.append(z.shape[0]) or real(z))
    state = torch.get_rng_state()
    out = model.objective_step(x)
    (grad,) = torch.autograd.grad(out.loss, model.tilt.mean)
    assert calls == []  # neither the noise batch's nor the data's log q
    torch.set_rng_state(state)
    xn = model.noise.sample(64)
    from probgen.energy import MovingAverageLogZ, compositional_loss, minibatch_loss, nce_loss

    lq = real(xn)
    if objective == "compositional":
        ref = compositional_loss(model.energy, x, xn, lq, MovingAverageLogZ(0.1))
    elif objective == "minibatch":
        ref = minibatch_loss(model.energy, x, xn, lq)
    else:
        ref = nce_loss(model.energy, x, real(x), xn, lq, model.log_normalizer)
    (ref_grad,) = torch.autograd.grad(ref.loss, model.tilt.mean)
    assert torch.allclose(grad, ref_grad, rtol=1e-10, atol=1e-12)


def test_ais_log_z_in_the_eval_loop_brackets_the_exact_value(tmp_path):
    torch.manual_seed(0)
    quad = {"kind": "quadratic", "dim": 3, "mean": [0.5, 0.0, -0.5], "precision": 2.0}
    model = EnergyBasedModel(dim=3, energy=quad, objective="compositional", log_z_method="ais", log_z_samples=500,
                             ais_levels=30, ais_step_size=0.2, noise_kwargs={"scale": 1.5})
    dm = GaussianDataModule(dim=3, mean=0.5, std=0.7, n_train=512, n_val=256, n_test=256, batch_size=256)
    trainer, dm = _fit(model, 1, tmp_path, dm)
    res = trainer.validate(model, dm, verbose=False)[0]
    exact = float(model.energy.log_partition().detach())
    # the model's samples are not the data here, so the reverse run from data is only an estimate; both are near exact
    assert abs(res["val/log_z"] - exact) < 0.05 and abs(res["val/log_z_upper"] - exact) < 0.2
    assert 1 < res["val/log_z_ess"] <= 500 and "val/nll_upper" in res


def test_noise_pool_batches_are_pool_rows_train_and_survive_the_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = EnergyBasedModel(dim=1, energy=QUAD_1D, objective="compositional", noise_kwargs={"scale": 1.5}, noise_batch_size=256,
                             noise_pool=4096, lr=0.08)
    trainer, _ = _fit(model, 70, tmp_path)
    assert abs(float(model.energy.mean.detach()) - 2.0) < 0.2
    pool_x, pool_lq = model._pool
    assert pool_x.shape == (4096, 1)
    assert torch.allclose(pool_lq, model.noise.log_prob(pool_x))  # untilted: log q of the pool, computed once
    xn, lq = model._noise_batch()
    assert torch.isin(xn[:, 0], pool_x[:, 0]).all() and torch.allclose(lq, model.noise.log_prob(xn))
    path = tmp_path / "pool.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    fresh = EnergyBasedModel(**ckpt["hyper_parameters"])
    fresh.on_load_checkpoint(ckpt)
    assert torch.equal(fresh._pool[0], pool_x) and torch.equal(fresh._pool[1], pool_lq)
    with pytest.raises(ValueError, match="noise_pool"):
        EnergyBasedModel(noise_pool=-1)


def test_ais_log_z_with_hmc_transitions_matches_the_exact_value():
    from probgen.energy import log_partition_ais
    from probgen.samplers import reverse_ais, sigmoid_betas

    quad = {"kind": "quadratic", "dim": 3, "mean": [0.5, 0.0, -0.5], "precision": 2.0}
    model = EnergyBasedModel(dim=3, energy=quad, objective="compositional", log_z_method="ais", log_z_samples=500,
                             ais_levels=30, ais_step_size=0.2, ais_transition="hmc", ais_num_leapfrog=3, noise_kwargs={"scale": 1.5}).double()
    exact = float(model.energy.log_partition().detach())
    log_z, ess = model.log_partition(generator=torch.Generator().manual_seed(0))
    assert 1 < float(ess) <= 500
    # the module runs HMC-AIS: the same numbers as the sampler called with transition="hmc", within 4 of its s.e. of exact
    ref = log_partition_ais(model.energy, model.noise, 500, 30, step_size=0.2, transition="hmc", num_leapfrog=3,
                            generator=torch.Generator().manual_seed(0))
    assert float(log_z) == float(ref.lower) and abs(float(log_z) - exact) < 4 * float(ref.lower_std_err)
    x = torch.randn(1000, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) / 2**0.5 + torch.tensor([0.5, 0.0, -0.5], dtype=torch.float64)
    upper = float(model.log_partition_upper(x, generator=torch.Generator().manual_seed(2)))
    rev = reverse_ais(model.energy, model.noise, x, sigmoid_betas(30), step_size=0.2, transition="hmc", num_leapfrog=3,
                      generator=torch.Generator().manual_seed(2))
    assert upper == float(rev.log_z) and abs(upper - exact) < 4 * float(rev.std_err)
    with pytest.raises(ValueError, match="ais_transition"):
        EnergyBasedModel(dim=3, energy=quad, ais_transition="nuts")
    with pytest.raises(ValueError, match="ais_num_leapfrog"):
        EnergyBasedModel(dim=3, energy=quad, ais_num_leapfrog=0)
