"""ScaleMixtureNNGP LightningModule: training lowers -log p(y), checkpoints reload with weights_only."""

import lightning as L
import pytest
import torch

from probgen.data.synthetic import HeavyTailRegression, heavy_tail_regression
from probgen.nngp import ScaleMixtureNNGP, class_probabilities, one_hot_targets
from probgen.nngp.module import predictive_cdf


def _trainer(tmp_path, steps):
    return L.Trainer(max_steps=steps, logger=False, enable_progress_bar=False, enable_model_summary=False,
                     default_root_dir=tmp_path, check_val_every_n_epoch=1000, num_sanity_val_steps=0)


@pytest.mark.parametrize("prior,extra", [("invgamma", {}), ("burr12", {"prior_params": {"c": 2.0, "d": 1.0}}),
                                         ("gaussian", {})])
def test_training_increases_marginal_likelihood_and_checkpoint_reloads(tmp_path, prior, extra):
    dm = HeavyTailRegression(num_train=60, num_val=20, num_test=40, batch_size=60)
    model = ScaleMixtureNNGP(depth=1, prior=prior, lr=0.1, **extra)
    trainer = _trainer(tmp_path, 15)
    trainer.fit(model, dm)
    y = model.y_train[:, 0]
    with torch.no_grad():
        start = ScaleMixtureNNGP(depth=1, prior=prior, **extra).process.fit(model.x_train, y).log_marginal_likelihood()
        end = model.process.fit(model.x_train, y).log_marginal_likelihood()
    assert end > start
    metrics = trainer.test(model, dm, verbose=False)[0]
    assert {"test/nll", "test/rmse", "test/calibration_error", "test/coverage95"} <= set(metrics)
    ckpt = tmp_path / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=True)
    reloaded = ScaleMixtureNNGP.load_from_checkpoint(ckpt)
    assert torch.equal(reloaded.x_train, model.x_train)
    x_test = dm.splits["test"][0]
    assert torch.allclose(reloaded.predictive(x_test).mean, model.predictive(x_test).mean)
    assert "state_dict" in state
    samples = reloaded.sample(3, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (3, 60)
    png = reloaded.plot_samples(samples, tmp_path / "bands.png", datamodule=dm)
    assert png.stat().st_size > 10_000  # predictive bands over the 1-D input


def test_classification_module_on_digits(tmp_path):
    from probgen.data import DigitsDataModule

    dm = DigitsDataModule(task="classification", batch_size=64)
    model = ScaleMixtureNNGP(depth=1, task="classification", max_train_points=300, lr=0.05, num_prob_samples=128)
    trainer = _trainer(tmp_path, 2)
    with pytest.warns(UserWarning, match="random subset of 300 of the"):  # a subsample is said out loud
        trainer.fit(model, dm)
    assert len(model.x_train) == 300
    metrics = trainer.test(model, dm, verbose=False)[0]
    assert metrics["test/accuracy"] > 0.85  # 300 training digits; chance is 0.1
    assert {"test/nll", "test/ece", "test/brier"} <= set(metrics)
    png = model.plot_samples(model.sample(2), tmp_path / "classifier.png", datamodule=dm)
    assert png.stat().st_size > 10_000  # test digits with predictions and a reliability diagram


def test_class_probabilities_and_cdf_closed_forms():
    # two classes with independent N(mu_k, 1) latents: P(f_1 > f_0) = Phi((mu_1 - mu_0) / sqrt(2))
    mu = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    pred = torch.distributions.Normal(mu, torch.ones_like(mu))
    probs = class_probabilities(pred, num_samples=20000, generator=torch.Generator().manual_seed(0), smoothing=0.0)
    exact = torch.distributions.Normal(0.0, 1.0).cdf(torch.tensor(1.0 / 2**0.5)).item()
    se = (exact * (1 - exact) / 20000) ** 0.5
    assert abs(probs[0, 1].item() - exact) < 4 * se
    t = torch.distributions.StudentT(torch.tensor(3.0), torch.tensor(0.0), torch.tensor(2.0))
    assert predictive_cdf(t, torch.tensor(0.0)).item() == pytest.approx(0.5)
    assert predictive_cdf(t, torch.tensor(2 * 2.3533634348018264)).item() == pytest.approx(0.95, abs=1e-6)
    with pytest.raises(ValueError, match="labels"):
        one_hot_targets(torch.tensor([0, 3]), 3)


def test_heavy_tail_data_is_seeded_and_heavy_tailed():
    g = torch.Generator().manual_seed(0)
    x, y = heavy_tail_regression(4000, noise_df=2.0, noise_scale=0.2, generator=g)
    x2, y2 = heavy_tail_regression(4000, noise_df=2.0, noise_scale=0.2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(y, y2)
    resid = (y - torch.sin(3 * x) - 0.5 * x).flatten() / 0.2
    # t_2 has P(|T| > 4.303) = 0.05 exactly; 4 standard errors of a binomial proportion
    frac = (resid.abs() > 4.302652729911275).double().mean().item()
    assert abs(frac - 0.05) < 4 * (0.05 * 0.95 / 4000) ** 0.5
    with pytest.raises(ValueError, match="noise_df"):
        heavy_tail_regression(10, noise_df=0.0)


def test_softmax_classification_module_trains_the_laplace_evidence(tmp_path):
    from probgen.data import DigitsDataModule

    dm = DigitsDataModule(task="classification", batch_size=64)
    model = ScaleMixtureNNGP(depth=1, task="classification", likelihood="softmax", prior="invgamma",
                             max_train_points=150, lr=0.1, num_prob_samples=64, weight_var=1.0)
    trainer = _trainer(tmp_path, 3)
    trainer.fit(model, dm)
    labels = model.y_train.argmax(-1)
    with torch.no_grad():
        untrained = ScaleMixtureNNGP(depth=1, task="classification", likelihood="softmax", prior="invgamma",
                                     weight_var=1.0)
        start = untrained.process.fit(model.x_train, labels).log_marginal_likelihood()
        end = model.process.fit(model.x_train, labels).log_marginal_likelihood()
    assert end > start  # three Adam steps on the integrated Laplace evidence
    metrics = trainer.test(model, dm, verbose=False)[0]
    assert metrics["test/accuracy"] > 0.8  # 150 training digits; chance is 0.1
    assert {"test/nll", "test/ece", "test/brier"} <= set(metrics)
    ckpt = tmp_path / "softmax.ckpt"
    trainer.save_checkpoint(ckpt)
    reloaded = ScaleMixtureNNGP.load_from_checkpoint(ckpt)
    x_test = dm.splits["test"][0][:20]
    torch.testing.assert_close(reloaded.class_probabilities(x_test), model.class_probabilities(x_test))


def test_softmax_likelihood_argument_checks():
    with pytest.raises(ValueError, match="likelihood"):
        ScaleMixtureNNGP(likelihood="probit", task="classification")
    with pytest.raises(ValueError, match="classification"):
        ScaleMixtureNNGP(likelihood="softmax")
    with pytest.raises(ValueError, match="learn_prior"):
        ScaleMixtureNNGP(likelihood="softmax", task="classification", learn_prior=True)
    with pytest.raises(ValueError, match="scale=None"):
        ScaleMixtureNNGP(scale=None)
    ml = ScaleMixtureNNGP(likelihood="softmax", task="classification", prior="gaussian", scale=None)
    assert ml.process.prior is None and ml.process.scale is None  # type-II ML of the scale at each fit
