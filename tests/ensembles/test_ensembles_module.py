"""SGLDEnsemble in Lightning: exact checkpoint resume, weights_only loading, metrics."""

import lightning as L
import pytest
import torch

from probgen.data.classification2d import GapRegression1D, TwoMoons
from probgen.ensembles import SGLDEnsemble


class OrderedGap(GapRegression1D):
    """Fixed batch order (no shuffle), so that a resumed run sees the same batches."""

    def train_dataloader(self):
        return self._loader("train", shuffle=False)


def _model(**kw):
    args = {"input_dim": 1, "output_dim": 1, "hidden_dims": [16], "num_chains": 3, "sampler": "sghmc", "lr": 1e-3,
                "burn_in": 4, "thin": 2, "store_size": 3, "store_policy": "reservoir", "seed": 5}
    args.update(kw)
    return SGLDEnsemble(**args)


def _trainer(tmp_path, max_steps, **kw):
    return L.Trainer(max_steps=max_steps, logger=False, enable_progress_bar=False, enable_model_summary=False,
                     enable_checkpointing=False, default_root_dir=tmp_path, limit_val_batches=0, **kw)


@pytest.mark.parametrize("sampler,schedule", [("sghmc", "cyclical"), ("psgld", "polynomial")])
def test_resume_from_checkpoint_continues_exactly(tmp_path, sampler, schedule):
    kw = {"sampler": sampler, "schedule": schedule, "total_steps": 20, "num_cycles": 2, "exploration_fraction": 0.3}
    L.seed_everything(0)
    full = _model(**kw)
    _trainer(tmp_path, 20).fit(full, OrderedGap(num_train=40, batch_size=10))

    L.seed_everything(0)
    first = _model(**kw)
    t1 = _trainer(tmp_path, 8)
    t1.fit(first, OrderedGap(num_train=40, batch_size=10))
    ckpt = tmp_path / "mid.ckpt"
    t1.save_checkpoint(ckpt)
    raw = torch.load(ckpt, weights_only=True)  # tensors and plain types only
    assert raw["optimizer_states"][0]["param_groups"][0]["num_steps"] == 8

    L.seed_everything(123)  # a different global seed must not matter
    resumed = _model(**kw)
    _trainer(tmp_path, 20).fit(resumed, OrderedGap(num_train=40, batch_size=10), ckpt_path=ckpt)

    for a, b in zip(full.ensemble.chains, resumed.ensemble.chains):
        assert torch.equal(a, b)
    assert torch.equal(full.ensemble.store.draw, resumed.ensemble.store.draw)
    for a, b in zip(full.ensemble.store.samples().values(), resumed.ensemble.store.samples().values()):
        assert torch.equal(a, b)


def test_checkpoint_reloads_with_load_from_checkpoint(tmp_path):
    model = _model(noise="heteroscedastic")
    trainer = _trainer(tmp_path, 10)
    dm = GapRegression1D(num_train=20, batch_size=20)
    trainer.fit(model, dm)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    loaded = SGLDEnsemble.load_from_checkpoint(tmp_path / "m.ckpt", weights_only=True)
    x = torch.linspace(-1, 1, 5)[:, None]
    torch.testing.assert_close(loaded.predictive(x).mean, model.predictive(x).mean)


def test_two_moons_classification_metrics(tmp_path):
    L.seed_everything(0)
    model = SGLDEnsemble(input_dim=2, output_dim=2, hidden_dims=[16], likelihood="categorical", num_chains=4,
                         sampler="psgld", lr=1e-3, burn_in=40, thin=5, store_size=4)
    trainer = _trainer(tmp_path, 80)
    dm = TwoMoons(num_train=200, num_test=200, batch_size=50)
    trainer.fit(model, dm)
    metrics = trainer.test(model, dm, verbose=False)[0]
    assert metrics["test/accuracy"] > 0.8
    for k in ("test/nll", "test/ece", "test/brier", "test/rhat_pred_max", "test/ess_pred_min"):
        assert k in metrics
    draws = model.sample(7)
    assert draws.shape == (7, sum(p[0].numel() for p in model.ensemble.chains))
