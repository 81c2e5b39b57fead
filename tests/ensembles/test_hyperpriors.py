"""Gibbs updates of Gamma hyperpriors inside the ensemble, against closed forms.

Bayesian linear regression $y = X w + b + \\varepsilon$ with independent priors
$w_j \\sim N(0, 1/\\lambda_{g(j)})$, $\\varepsilon \\sim N(0, 1/\\tau)$ and Gamma hyperpriors on
$\\lambda_g$ and $\\tau$. Given $(\\lambda, \\tau)$ the posterior of the weights is Gaussian and
$p(\\lambda, \\tau \\mid y) \\propto p(\\lambda) p(\\tau) N(y; 0, I/\\tau + X\\Lambda^{-1}X^\\top)$, so the
exact posterior moments of every weight and precision are a low-dimensional integral over
$(\\log\\lambda, \\log\\tau)$, computed here on a fine grid (no sampling). K independent chains
(SGLD on the weights alternated with the Gibbs draws, started at prior draws) give K
independent final states: ESS = K, and means / variances are compared with the exact ones
within 4 Monte Carlo standard errors (the variance's from the exact 4th central moment).
"""

import math

import numpy as np
import pytest
import torch
from torch import nn

from probgen.ensembles import (
    BayesianEnsemble,
    GaussianLikelihood,
    GaussianPrior,
    HierarchicalGaussianPrior,
    SamplingSchedule,
    gibbs_hyperpriors,
)

F64 = torch.float64
N = 40
A_TAU, B_TAU = 2.0, 0.5      # Gamma prior on the noise precision (mean 4)
A_LAM, B_LAM = 3.0, 3.0      # Gamma hyperprior on the weight precisions (mean 1)


def _data():
    """Centred inputs with X^T X = N diag(1, 0.8) (orthogonal to the bias column), so that the
    weights' conditional posterior is well conditioned and chains forget their start quickly."""
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.cat([torch.ones(N, 1, dtype=F64), torch.randn(N, 2, generator=g, dtype=F64)], 1))
    x = math.sqrt(N) * q[:, 1:] * torch.tensor([1.0, 0.8], dtype=F64).sqrt()
    y = x @ torch.tensor([0.8, -0.5], dtype=F64) + 0.3 + 0.5 * torch.randn(N, generator=g, dtype=F64)
    return x, y


def _log_gamma(v, a, b):
    return a * math.log(b) - math.lgamma(a) + (a - 1) * np.log(v) - b * v


def _exact_moments(x, y, lam_fixed=None, grid=(70, 70, 90)):
    """Exact posterior moments for the design [x, 1]: weights (2, bias) with precisions
    (lam_w, lam_b) either fixed (``lam_fixed``) or Gamma(A_LAM, B_LAM) each ("tensor" groups),
    noise precision tau ~ Gamma(A_TAU, B_TAU). Returns a dict of (mean, var, m4) per quantity."""
    X = np.concatenate([x.numpy(), np.ones((N, 1))], 1)
    yv = y.numpy()
    XtX, Xty, yty = X.T @ X, X.T @ yv, yv @ yv
    lt = np.linspace(math.log(0.3), math.log(40.0), grid[2])
    if lam_fixed is None:
        lw = np.linspace(math.log(2e-3), math.log(50.0), grid[0])
        lb = np.linspace(math.log(2e-3), math.log(50.0), grid[1])
    else:
        lw, lb = np.log([lam_fixed]), np.log([lam_fixed])
    LW, LB, LT = np.meshgrid(lw, lb, lt, indexing="ij")
    lam_w, lam_b, tau = np.exp(LW).ravel(), np.exp(LB).ravel(), np.exp(LT).ravel()
    diag = np.stack([lam_w, lam_w, lam_b], 1)                       # (G, 3) prior precisions
    P = diag[:, :, None] * np.eye(3) + tau[:, None, None] * XtX     # posterior precision of the weights
    C = np.linalg.inv(P)
    m = tau[:, None] * np.einsum("gij,j->gi", C, Xty)
    # log N(y; 0, I/tau + X diag^-1 X^T) by the Woodbury identity and the determinant lemma
    _, logdet_p = np.linalg.slogdet(P)
    log_ml = (0.5 * N * np.log(tau) - 0.5 * tau * yty + 0.5 * np.log(diag).sum(1) - 0.5 * logdet_p
              + 0.5 * np.einsum("gi,gij,gj->g", m, P, m) - 0.5 * N * math.log(2 * math.pi))
    logw = log_ml + _log_gamma(tau, A_TAU, B_TAU) + np.log(tau)     # density in log tau
    if lam_fixed is None:
        logw += _log_gamma(lam_w, A_LAM, B_LAM) + np.log(lam_w) + _log_gamma(lam_b, A_LAM, B_LAM) + np.log(lam_b)
    w = np.exp(logw - logw.max())
    w /= w.sum()
    # the grid must hold the whole posterior: negligible mass on its faces
    edge = w.reshape(LT.shape)
    assert edge[..., [0, -1]].sum() < 1e-8
    if lam_fixed is None:
        assert edge[[0, -1]].sum() + edge[:, [0, -1]].sum() < 1e-6
    out = {}
    for name, v in (("tau", tau), ("lam_w", lam_w), ("lam_b", lam_b)):
        mu = w @ v
        out[name] = (mu, w @ (v - mu) ** 2, w @ (v - mu) ** 4)
    mu = w @ m
    cdiag = np.einsum("gii->gi", C)
    d = m - mu
    var = w @ (d**2 + cdiag)
    m4 = w @ (d**4 + 6 * d**2 * cdiag + 3 * cdiag**2)
    for i, name in enumerate(("w0", "w1", "bias")):
        out[name] = (mu[i], var[i], m4[i])
    return out


def _assert_moments(draws, exact, name, k):
    mu, var, m4 = exact
    emp_mu, emp_var = draws.mean(), draws.var()
    assert abs(emp_mu - mu) < 4 * math.sqrt(var / k), (name, emp_mu, mu)
    assert abs(emp_var - var) < 4 * math.sqrt((m4 - var**2) / k), (name, emp_var, var)


def _run(prior, exact, k, steps=400, gibbs_start=100):
    """K chains from prior draws: SGLD with the noise precision at its prior mean for
    ``gibbs_start`` steps (so the first residuals are not those of prior draws of the weights),
    then a Gibbs draw of the precisions after every step. The step makes h lambda_max = 0.05
    at the posterior's tau + 3 sd (SGLD's variance bias ~ h lambda / 4 <= 1.3 %, against a
    4 s.e. tolerance of ~18 % at K = 1000); at the mean tau the slowest direction contracts by
    ~e^-0.024 a step, e^-9.6 over the run."""
    x, y = _data()
    tau_mean, tau_var, _ = exact["tau"]
    lr = 0.05 / ((tau_mean + 3 * math.sqrt(tau_var)) * N)
    lik = GaussianLikelihood("gibbs", scale=(A_TAU / B_TAU) ** -0.5, precision_concentration=A_TAU,
                             precision_rate=B_TAU)
    ens = BayesianEnsemble(nn.Linear(2, 1).double(), lik, prior, num_chains=k, num_data=N, store_size=1,
                           store_policy="last", seed=1, init="prior")
    sampler = ens.make_sampler("sgld", lr=lr, seed=2)
    schedule = SamplingSchedule(lr=lr, burn_in=steps - 1)
    for step in range(steps):
        ens.train_step(x, y[:, None], sampler, schedule)
        if step >= gibbs_start:
            gibbs_hyperpriors(ens, x, y[:, None], step=step, seed=3)
    return ens


def test_sgld_with_gibbs_noise_precision_matches_exact_posterior():
    """Fixed weight precision 1, Gibbs noise precision: the exact marginals of tau and of the weights."""
    k = 1000
    exact = _exact_moments(*_data(), lam_fixed=1.0)
    ens = _run(GaussianPrior(1.0), exact, k)
    tau = torch.exp(-2 * ens.params()["likelihood.log_scale"]).detach().numpy()
    # the noise precision's marginal is not Gamma, but its moments are exact
    _assert_moments(tau, exact["tau"], "tau", k)
    w = ens.params()
    _assert_moments(w["weight"][:, 0, 0].detach().numpy(), exact["w0"], "w0", k)
    _assert_moments(w["weight"][:, 0, 1].detach().numpy(), exact["w1"], "w1", k)
    _assert_moments(w["bias"][:, 0].detach().numpy(), exact["bias"], "bias", k)
    # the sampler never moved log_scale: the Gibbs draw is its only update
    assert ens.params()["likelihood.log_scale"].grad is None


def test_sgld_with_gibbs_weight_and_noise_precisions_matches_exact_posterior():
    """Gamma hyperpriors on both weight precisions (per tensor) and on the noise precision."""
    k = 1000
    exact = _exact_moments(*_data())
    ens = _run(HierarchicalGaussianPrior(A_LAM, B_LAM, groups="tensor"), exact, k)
    lam = ens.prior.precision.numpy()
    assert lam.shape == (k, 2)
    _assert_moments(lam[:, 0], exact["lam_w"], "lam_w", k)
    _assert_moments(lam[:, 1], exact["lam_b"], "lam_b", k)
    _assert_moments(torch.exp(-2 * ens.params()["likelihood.log_scale"]).detach().numpy(), exact["tau"], "tau", k)
    w = ens.params()
    _assert_moments(w["weight"][:, 0, 0].detach().numpy(), exact["w0"], "w0", k)
    _assert_moments(w["weight"][:, 0, 1].detach().numpy(), exact["w1"], "w1", k)
    _assert_moments(w["bias"][:, 0].detach().numpy(), exact["bias"], "bias", k)


def test_weight_precision_draw_is_its_gamma_conditional():
    """For fixed weights the draw is Gamma(a + n_g/2, b + sum c_j w_j^2 / 2) per group (its mean
    and variance within 4 s.e.; the Gamma sampler's own law is KS-tested in tests/samplers),
    with the fan-in factor c_j of weight matrices; "global" pools every tensor."""
    k = 2000
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    for groups, fan_in in (("tensor", True), ("global", False)):
        prior = HierarchicalGaussianPrior(1.5, 0.7, groups=groups, fan_in=fan_in)
        ens = BayesianEnsemble(net, GaussianLikelihood("fixed"), prior, num_chains=k, num_data=10, seed=4,
                               init="prior")
        theta = {n: v.detach() for n, v in ens.split(ens.params())[0].items()}
        draws = gibbs_hyperpriors(ens, step=7)["weight_precision"]
        assert torch.equal(draws, ens.prior.precision)
        sums, counts = [], []
        for v in theta.values():
            c = v.shape[-1] if (fan_in and v.dim() == 3) else 1.0
            sums.append(c * v.flatten(1).square().sum(1))
            counts.append(v[0].numel())
        if groups == "global":
            sums, counts = [sum(sums)], [sum(counts)]
        assert draws.shape == (k, len(sums))
        for j, (s, n) in enumerate(zip(sums, counts)):
            z = draws[:, j] * (0.7 + s / 2)                   # standard Gamma(a + n/2) if right
            shape = 1.5 + n / 2                                # mean = var = shape, 4th central 3a^2 + 6a
            assert abs(z.mean() - shape) < 4 * math.sqrt(shape / k), (groups, j)
            assert abs(z.var() - shape) < 4 * math.sqrt((3 * shape**2 + 6 * shape - shape**2) / k), (groups, j)
        # the prior's log density uses the drawn precisions
        lam = draws[:, 0] * (theta["0.weight"].shape[-1] if fan_in else 1.0)
        v = theta["0.weight"].flatten(1)
        ref = (-0.5 * lam * v.square().sum(1) + 0.5 * v.shape[1] * (lam.log() - math.log(2 * math.pi)))
        first = {"0.weight": theta["0.weight"]}
        prior_one = HierarchicalGaussianPrior(1.5, 0.7, groups="tensor", fan_in=fan_in)
        prior_one.bind(first)
        prior_one.precision = draws[:, :1].clone()
        torch.testing.assert_close(prior_one.log_prob(first), ref)


def test_gibbs_ensemble_resumes_exactly_and_is_seeded():
    """The precisions are state: a state_dict round trip mid-run continues bit for bit."""
    x, y = _data()

    def make():
        ens = BayesianEnsemble(nn.Linear(2, 1).double(), GaussianLikelihood("gibbs"),
                               HierarchicalGaussianPrior(2.0, 1.0, groups="global"), num_chains=4, num_data=N,
                               store_size=5, seed=1)
        return ens, ens.make_sampler("psgld", lr=1e-3, seed=2)

    schedule = SamplingSchedule(lr=1e-3, burn_in=3)

    def advance(ens, sampler, start, stop):
        for step in range(start, stop):
            ens.train_step(x, y[:, None], sampler, schedule)
            gibbs_hyperpriors(ens, x, y[:, None], step=step, seed=9)

    full, s_full = make()
    advance(full, s_full, 0, 12)
    first, s_first = make()
    advance(first, s_first, 0, 5)
    state, opt_state = first.state_dict(), s_first.state_dict()
    assert "prior.precision" in state
    resumed, s_resumed = make()
    resumed.load_state_dict(state)
    s_resumed.load_state_dict(opt_state)
    advance(resumed, s_resumed, 5, 12)
    for a, b in zip(full.chains, resumed.chains):
        assert torch.equal(a, b)
    assert torch.equal(full.prior.precision, resumed.prior.precision)
    assert not torch.equal(full.prior.precision, first.prior.precision)


def test_minibatch_residual_sum_is_scaled_to_the_data_size():
    x, y = _data()
    ens = BayesianEnsemble(nn.Linear(2, 1).double(), GaussianLikelihood("gibbs", precision_concentration=A_TAU,
                                                                        precision_rate=B_TAU),
                           GaussianPrior(1.0), num_chains=3, num_data=N, seed=1)
    # all N rows twice over (2N rows with the same residual mean square): the same draw as the full data
    a = gibbs_hyperpriors(ens, x, y, step=3)["noise_precision"]
    b = gibbs_hyperpriors(ens, torch.cat([x, x]), torch.cat([y, y]), step=3)["noise_precision"]
    torch.testing.assert_close(a, b)


def test_hyperprior_bad_input():
    with pytest.raises(ValueError, match="groups"):
        HierarchicalGaussianPrior(groups="layer")
    with pytest.raises(ValueError, match="concentration"):
        HierarchicalGaussianPrior(concentration=0.0)
    with pytest.raises(RuntimeError, match="not bound"):
        HierarchicalGaussianPrior().log_prob({"w": torch.zeros(2, 3)})
    ens = BayesianEnsemble(nn.Linear(2, 1).double(), GaussianLikelihood("fixed"), GaussianPrior(1.0), num_chains=2)
    with pytest.raises(ValueError, match="no Gibbs-sampled precision"):
        gibbs_hyperpriors(ens)
    ens = BayesianEnsemble(nn.Linear(2, 1).double(), GaussianLikelihood("gibbs"), GaussianPrior(1.0), num_chains=2)
    with pytest.raises(ValueError, match="needs the data"):
        gibbs_hyperpriors(ens)
    from probgen.ensembles import StudentTLikelihood
    with pytest.raises(ValueError, match="gibbs"):
        StudentTLikelihood(noise="gibbs")


def test_module_gibbs_resumes_exactly_and_reloads(tmp_path):
    """SGLDEnsemble(hyperprior="gamma", noise="gibbs"): a run checkpointed mid-way and resumed
    ends bit-identical to the uninterrupted one (the precisions and the seeded draws are state),
    and the checkpoint reloads with weights_only=True."""
    import lightning as L
    from test_ensembles_module import OrderedGap, _model, _trainer

    from probgen.ensembles import SGLDEnsemble

    kw = {"hyperprior": "gamma", "hyperprior_groups": "tensor", "noise": "gibbs", "gibbs_every": 2,
          "precision_concentration": 2.0, "precision_rate": 0.5}
    L.seed_everything(0)
    full = _model(**kw)
    t_full = _trainer(tmp_path, 20)
    t_full.fit(full, OrderedGap(num_train=40, batch_size=10))
    first = _model(**kw)
    t1 = _trainer(tmp_path, 9)
    t1.fit(first, OrderedGap(num_train=40, batch_size=10))
    ckpt = tmp_path / "mid.ckpt"
    t1.save_checkpoint(ckpt)
    L.seed_everything(123)
    resumed = _model(**kw)
    _trainer(tmp_path, 20).fit(resumed, OrderedGap(num_train=40, batch_size=10), ckpt_path=ckpt)
    for a, b in zip(full.ensemble.chains, resumed.ensemble.chains):
        assert torch.equal(a, b)
    assert torch.equal(full.ensemble.prior.precision, resumed.ensemble.prior.precision)
    assert full.ensemble.prior.precision.shape == (3, 4)  # 3 chains, 4 tensors of the 1-16-1 MLP
    # Gibbs moved the precisions and the noise scale between steps 9 and 20
    assert not torch.equal(first.ensemble.prior.precision, full.ensemble.prior.precision)
    log_scale = full.ensemble.names.index("likelihood.log_scale")
    assert not torch.equal(first.ensemble.chains[log_scale], full.ensemble.chains[log_scale])
    t_full.save_checkpoint(tmp_path / "end.ckpt")
    loaded = SGLDEnsemble.load_from_checkpoint(tmp_path / "end.ckpt", weights_only=True)
    assert torch.equal(loaded.ensemble.prior.precision, full.ensemble.prior.precision)
    x = torch.linspace(-1, 1, 5)[:, None]
    torch.testing.assert_close(loaded.predictive(x).mean, full.predictive(x).mean)
    # gibbs_start: no draw before it (the precisions keep their initial values), and at most burn_in
    L.seed_everything(0)
    late = _model(**kw, gibbs_start=4)
    t_late = _trainer(tmp_path, 4)
    t_late.fit(late, OrderedGap(num_train=40, batch_size=10))
    assert torch.equal(late.ensemble.prior.precision, torch.ones(3, 4))
    assert torch.equal(late.ensemble.chains[log_scale], torch.zeros(3))  # log(noise_scale = 1)
    with pytest.raises(ValueError, match="gibbs_start"):
        _trainer(tmp_path, 4).fit(_model(**kw, gibbs_start=5), OrderedGap(num_train=40, batch_size=10))
    with pytest.raises(ValueError, match="hyperprior"):
        SGLDEnsemble(hyperprior="gamma", prior="laplace")
    with pytest.raises(ValueError, match="noise='gibbs'"):
        SGLDEnsemble(noise="gibbs", likelihood="student_t")
