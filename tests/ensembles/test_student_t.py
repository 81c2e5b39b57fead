"""Student-t likelihood and its mixture predictive against scipy's closed-form density."""

import math

import lightning as L
import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import logsumexp

from probgen.data.classification2d import GapRegression1D
from probgen.ensembles import SGLDEnsemble, StudentTLikelihood
from probgen.ensembles.predictive import student_t_mixture


@pytest.mark.parametrize("noise", ["fixed", "learnt", "heteroscedastic"])
def test_student_t_log_prob_matches_scipy(noise):
    g = torch.Generator().manual_seed(0)
    lik = StudentTLikelihood(df=3.5, noise=noise, scale=0.7)
    out_dim = 2 if noise == "heteroscedastic" else 1
    out = torch.randn(4, 6, out_dim, generator=g, dtype=torch.float64)
    y = torch.randn(6, 1, generator=g, dtype=torch.float64) * 3
    params = lik.init_params(4, torch.float64)
    if noise == "learnt":
        params["log_scale"] = torch.tensor([-1.0, 0.0, 0.3, 1.0], dtype=torch.float64)
    loc, scale2 = lik.scales(out, params)
    expected = stats.t.logpdf(y.numpy()[None], 3.5, loc.numpy(), np.sqrt(scale2.numpy())).sum(-1)
    np.testing.assert_allclose(lik.log_prob(out, y, params).numpy(), expected, rtol=1e-12)
    _, var = lik.moments(out, params)
    torch.testing.assert_close(var, scale2 * 3.5 / 1.5)


def test_student_t_mixture_log_prob_matches_scipy():
    g = torch.Generator().manual_seed(1)
    locs = torch.randn(5, 3, 1, generator=g, dtype=torch.float64)
    scales2 = torch.rand(5, 3, 1, generator=g, dtype=torch.float64) + 0.1
    y = torch.randn(3, 1, generator=g, dtype=torch.float64)
    mix = student_t_mixture(locs, scales2, 2.5)
    per = stats.t.logpdf(y.numpy()[None, :, 0], 2.5, locs.numpy()[..., 0], np.sqrt(scales2.numpy()[..., 0]))
    np.testing.assert_allclose(mix.log_prob(y).numpy(), logsumexp(per, 0) - math.log(5), rtol=1e-12)


def test_module_student_t_test_nll_is_the_t_mixture(tmp_path):
    L.seed_everything(0)
    model = SGLDEnsemble(input_dim=None, hidden_dims=[8], num_chains=2, likelihood="student_t", noise_df=3.0,
                         sampler="psgld", lr=1e-3, burn_in=2, thin=1, store_size=3)
    dm = GapRegression1D(num_train=20, batch_size=10, num_grid=15)
    trainer = L.Trainer(max_steps=6, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, default_root_dir=tmp_path, limit_val_batches=0)
    trainer.fit(model, dm)
    logged = trainer.test(model, dm, verbose=False)[0]["test/nll"]
    x, y = dm.splits["test"]
    out, lik = model.ensemble.predict_outputs(x)
    loc, scale2 = model.ensemble.likelihood.scales(out, lik)
    per = stats.t.logpdf(y.numpy()[None, :, 0], 3.0, loc.numpy()[..., 0], np.sqrt(scale2.numpy()[..., 0]))
    expected = -(logsumexp(per.astype(np.float64), 0) - math.log(per.shape[0])).mean()
    assert logged == pytest.approx(expected, rel=1e-5)


def test_student_t_rejects_bad_df():
    with pytest.raises(ValueError, match="df must be"):
        StudentTLikelihood(df=0.0)
    with pytest.raises(ValueError, match="noise_df must"):
        SGLDEnsemble(likelihood="student_t", noise_df=-1.0)
