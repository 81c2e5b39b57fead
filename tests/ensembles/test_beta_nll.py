"""beta-NLL (Seitzer et al. 2022) as the heteroscedastic warm-start objective, against closed forms."""

import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from probgen.data.classification2d import GapRegression1D
from probgen.ensembles import GaussianLikelihood, SGLDEnsemble

F64 = torch.float64


def _case():
    torch.manual_seed(0)
    out = torch.randn(3, 5, 2, dtype=F64, requires_grad=True)
    y = torch.randn(5, 1, dtype=F64)
    return out, y


def test_beta_zero_is_the_exact_log_density():
    out, y = _case()
    lik = GaussianLikelihood("heteroscedastic", warm_start_objective="beta_nll", beta=0.0)
    assert torch.equal(lik.beta_log_prob(out, y, {}, 0.0), lik.log_prob(out, y, {}))
    # and the warm-start path with beta = 0 is the exact likelihood too
    assert torch.equal(lik.log_prob(out, y, {}, mean_first=True), lik.log_prob(out, y, {}))


@pytest.mark.parametrize("beta", [0.5, 1.0])
def test_beta_nll_value_and_gradients(beta):
    """Value sg[s^2b] log N and gradients d/dmu = s^2b (y - mu) / s^2,
    d/draw = s^2b (r^2 / s^3 - 1 / s) sigmoid(raw): the variance weight is held constant."""
    out, y = _case()
    lik = GaussianLikelihood("heteroscedastic", min_scale=1e-3, warm_start_objective="beta_nll", beta=beta)
    val = lik.log_prob(out, y, {}, mean_first=True)
    mu, raw = out.detach()[..., :1], out.detach()[..., 1:]
    sigma = F.softplus(raw) + 1e-3
    r = y - mu
    w = sigma ** (2 * beta)
    log_n = -0.5 * math.log(2 * math.pi) - sigma.log() - r.square() / (2 * sigma**2)
    torch.testing.assert_close(val, (w * log_n).squeeze(-1))
    val.sum().backward()
    torch.testing.assert_close(out.grad[..., :1], w * r / sigma**2)
    torch.testing.assert_close(out.grad[..., 1:], w * (r.square() / sigma**3 - 1 / sigma) * torch.sigmoid(raw))
    if beta == 1.0:  # the mean's gradient is that of a squared error, whatever the variance
        torch.testing.assert_close(out.grad[..., :1], r)


def test_beta_nll_never_reaches_a_log_density():
    """Outside the warm start (mean_first=False: training after it, predictive, test NLL) the
    likelihood is the exact Gaussian whatever beta is."""
    out, y = _case()
    exact = GaussianLikelihood("heteroscedastic").log_prob(out, y, {})
    lik = GaussianLikelihood("heteroscedastic", warm_start_objective="beta_nll", beta=0.7)
    assert torch.equal(lik.log_prob(out, y, {}), exact)
    assert not torch.allclose(lik.log_prob(out, y, {}, mean_first=True), exact)


def test_module_beta_nll_warm_start_trains_and_bad_input(tmp_path):
    L.seed_everything(0)
    model = SGLDEnsemble(input_dim=1, hidden_dims=[8], num_chains=2, noise="heteroscedastic", lr=1e-3,
                         burn_in=6, warm_start=4, warm_start_objective="beta_nll", beta=0.5, store_size=2, thin=1)
    trainer = L.Trainer(max_steps=10, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, default_root_dir=tmp_path, limit_val_batches=0)
    trainer.fit(model, GapRegression1D(num_train=20, batch_size=10))
    assert model.ensemble.likelihood.warm_start_objective == "beta_nll"
    assert len(model.ensemble.store) == 2
    with pytest.raises(ValueError, match="warm_start > 0"):
        SGLDEnsemble(noise="heteroscedastic", warm_start_objective="beta_nll")
    with pytest.raises(ValueError, match="beta"):
        SGLDEnsemble(noise="heteroscedastic", warm_start=1, warm_start_objective="beta_nll", beta=1.5)
    with pytest.raises(ValueError, match="warm_start_objective"):
        GaussianLikelihood("heteroscedastic", warm_start_objective="beta")
    with pytest.raises(ValueError, match="beta"):
        GaussianLikelihood("heteroscedastic", beta=-0.1)
