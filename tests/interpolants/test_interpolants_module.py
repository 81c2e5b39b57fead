"""StochasticInterpolant: trains, samples with EMA weights, checkpoints load with weights_only=True."""

import math

import lightning as L
import pytest
import torch

from probgen.data.toy2d import Toy2D
from probgen.interpolants import StochasticInterpolant


def small(**kw):
    args = dict(hidden_dims=[32, 32], time_frequencies=2, nll_steps=4, val_nll_samples=64, sample_steps=4,
                plot_every_n_val=0, lr_schedule="constant")
    args.update(kw)
    return StochasticInterpolant(**args)


def fit(model, tmp_path, steps=20, name="eight_gaussians"):
    dm = Toy2D(name=name, n_train=2048, n_val=128, n_test=128, batch_size=128, eval_batch_size=128)
    trainer = L.Trainer(max_steps=steps, default_root_dir=tmp_path, enable_progress_bar=False, logger=False,
                        enable_model_summary=False, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    return trainer, dm


def test_training_reduces_loss_and_checkpoint_roundtrip(tmp_path):
    torch.manual_seed(0)
    model = small(lr=3e-3)
    x = Toy2D(name="eight_gaussians", n_train=512, n_val=8, n_test=8).density.sample(512, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    before = float(model._loss(x, model.net, generator=g)[0])
    trainer, dm = fit(model, tmp_path, steps=60)
    g = torch.Generator().manual_seed(1)
    after = float(model._loss(x, model.net, generator=g)[0])
    assert after < before
    # EMA weights differ from the raw weights and live in the checkpoint
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    assert any(k.startswith("ema_net.") for k in ckpt["state_dict"])
    clone = small(lr=3e-3)
    clone.on_load_checkpoint(ckpt)
    clone.load_state_dict(ckpt["state_dict"])
    for p, q in zip(clone.ema_net.parameters(), model.ema_net.parameters()):
        torch.testing.assert_close(p, q)
    assert not all(torch.equal(p, q) for p, q in zip(model.net.parameters(), model.ema_net.parameters()))
    s1 = clone.sample(50, generator=torch.Generator().manual_seed(0))
    s2 = model.sample(50, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(s1, s2)
    assert s1.shape == (50, 2) and torch.isfinite(s1).all()


def test_validation_and_test_log_nll(tmp_path):
    model = small()
    trainer, dm = fit(model, tmp_path, steps=2)
    res = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert math.isfinite(res["test/nll"]) and "test/loss" in res
    v = trainer.validate(model, datamodule=dm, verbose=False)[0]
    assert math.isfinite(v["val/nll"])


@pytest.mark.parametrize(
    "kw",
    [
        dict(path="linear", gamma="brownian", objective="velocity_score", sample_method="sde", sample_eps=0.5),
        dict(path="trig", gamma="quadratic", objective="velocity_denoiser", antithetic=True, coupling="ot"),
        dict(path="one_sided_linear", gamma="zero", objective="velocity", sample_method="sde", sample_eps=1.0,
             sample_eps_schedule="vanishing"),
        dict(path="vp", gamma="zero", objective="denoiser", nll_divergence="hutchinson", nll_num_probes=2),
        dict(path="linear", gamma="brownian", base="eight_gaussians", objective="velocity", coupling="ot"),
        dict(path="one_sided_linear", gamma="zero", space_frequencies=4, space_scale=4.0),
    ],
)
def test_configurations_train_and_sample(tmp_path, kw):
    model = small(**kw)
    fit(model, tmp_path, steps=3)
    x = model.sample(16, generator=torch.Generator().manual_seed(0))
    assert x.shape == (16, 2) and torch.isfinite(x).all()
    assert torch.isfinite(model.nll(x.double().float()[:8])).all()


def test_bad_configurations():
    with pytest.raises(ValueError, match="one-sided"):
        small(path="one_sided_linear", gamma="zero", objective="denoiser", coupling="ot")
    with pytest.raises(ValueError, match="needs base='gaussian'"):
        small(path="one_sided_linear", gamma="zero", base="eight_gaussians")
    with pytest.raises(ValueError, match="sample_method"):
        small(sample_method="langevin")
    with pytest.raises(ValueError, match="t_min"):
        small(t_min=0.5, t_max=0.4)
    with pytest.raises(ValueError, match="does not identify the score"):
        small(path="linear", gamma="brownian", objective="velocity", sample_method="sde", sample_eps=1.0)
    model = small(path="linear", gamma="brownian", objective="velocity")
    with pytest.raises(ValueError, match="does not identify the score"):
        model.sample(4, method="sde", eps=1.0)
    with pytest.raises(ValueError, match="num_samples"):
        model.sample(0)
