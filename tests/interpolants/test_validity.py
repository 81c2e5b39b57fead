"""Issue #15's defects: the SDE likelihood against the OU closed form, the paper's trigonometric
path, time intervals derived from path and objective, refused combinations, bad input."""

import math

import pytest
import torch

from probgen.interpolants import (
    Interpolant,
    QuadraticGamma,
    StochasticInterpolant,
    generate,
    log_likelihood,
    make_objective,
)
from probgen.interpolants.objectives import valid_time_interval


def std_normal_lp(x):
    return -0.5 * x.pow(2).flatten(1).sum(-1) - 0.5 * x[0].numel() * math.log(2 * math.pi)


# --------------------------------------------------------------------------- SDE likelihood
def ou_fields():
    return (lambda t, x: torch.zeros_like(x)), (lambda t, x: -2.0 * x)


def test_sde_likelihood_is_log_mean_exp_and_matches_ou_closed_form():
    """b = 0, s = -2x, eps = 1 from N(0, 1): the forward SDE is dX = -2X dt + sqrt(2) dW, so
    X_1 ~ N(0, 1/2 + e^{-4}/2). exp(L) is unbiased for that density; the mean of L is not.

    Euler's O(dt) bias (about 2.9 dt nats at x = 0, measured at K = 40,000) is removed by
    Richardson extrapolation over 100 and 200 steps, leaving Monte Carlo error only.
    In 1-d Rademacher Hutchinson is the exact divergence."""
    b, s = ou_fields()
    x = torch.tensor([[0.0], [1.0], [2.0]], dtype=torch.float64)
    var = 0.5 + 0.5 * math.exp(-4.0)
    exact = -0.5 * math.log(2 * math.pi * var) - x[:, 0] ** 2 / (2 * var)
    torch.testing.assert_close(exact, torch.tensor([-0.581, -1.563, -4.509], dtype=torch.float64), atol=5e-4, rtol=0)
    K = 2000
    runs = {}
    for steps, seed in ((100, 0), (200, 1)):
        runs[steps] = log_likelihood(b, x, std_normal_lp, steps=steps, method="sde", score=s, eps=1.0, num_paths=K,
                                     divergence="hutchinson", generator=torch.Generator().manual_seed(seed),
                                     return_stderr=True, return_nfe=True)
    (lp1, se1, nfe1), (lp2, se2, nfe2) = runs[100], runs[200]
    assert lp2.shape == se2.shape == (3,) and (nfe1, nfe2) == (100, 200)
    assert (se2 > 0).all() and (se2 < 0.05).all()
    richardson, se = 2 * lp2 - lp1, torch.sqrt(4 * se2**2 + se1**2)
    assert ((richardson - exact).abs() < 4 * se).all(), (richardson - exact, se)
    # the old estimator, the mean of the per-path values, sits a Jensen gap (0.09-0.13 nats) below
    paths = log_likelihood(b, x.repeat(K, 1), std_normal_lp, steps=200, method="sde", score=s, eps=1.0, num_paths=1,
                           divergence="hutchinson", generator=torch.Generator().manual_seed(1)).reshape(K, 3)
    mean_of_logs, se_logs = paths.mean(0), paths.std(0) / math.sqrt(K)
    assert ((exact - mean_of_logs) > 0.06 + 4 * se_logs).all()


def test_sde_likelihood_spread_is_pure_discretisation_with_the_true_score():
    """Started in its stationary law N(0, 1/2), the OU's score is exactly -2x, so L is exact path
    by path in continuous time: its spread is Euler's strong error, O(dt^(1/2)) (halves per 4x steps)."""
    b, s = ou_fields()
    base = lambda x: -x.pow(2).sum(-1) - 0.5 * math.log(math.pi)  # noqa: E731
    x = torch.tensor([[0.3], [-1.2]], dtype=torch.float64)
    n = 200
    spread = {}
    for steps in (50, 200):
        L = log_likelihood(b, x.repeat(n, 1), base, steps=steps, method="sde", score=s, eps=1.0, num_paths=1,
                           divergence="hutchinson", generator=torch.Generator().manual_seed(steps))
        spread[steps] = L.reshape(n, 2).std(0)
    ratio = spread[200] / spread[50]
    assert ((ratio > 0.36) & (ratio < 0.64)).all(), ratio  # 0.5 +- 4 s.e. of a ratio of two sample stds (n = 200)


def test_sde_likelihood_arguments():
    v = lambda t, x: x  # noqa: E731
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="num_paths"):
        log_likelihood(v, x, std_normal_lp, method="sde", score=v, eps=1.0, num_paths=0)
    with pytest.raises(ValueError, match="eps > 0"):
        log_likelihood(v, x, std_normal_lp, method="sde", score=v, eps=0.0)
    with pytest.raises(ValueError, match=r"eps must be >= 0.*eps\(1\) = -0\.5"):
        log_likelihood(v, x, std_normal_lp, steps=4, method="sde", score=v, eps=lambda t: 0.5 - t)


# ------------------------------------------------------------------------- paths and gammas
@pytest.mark.parametrize("gamma", ["brownian", "quadratic", "zero"])
def test_trig_path_is_variance_preserving(gamma):
    I = Interpolant("trig", gamma)
    t = torch.linspace(0.01, 0.99, 25, dtype=torch.float64)
    torch.testing.assert_close(I.alpha(t) ** 2 + I.beta(t) ** 2 + I.gamma(t) ** 2, torch.ones_like(t), atol=1e-12, rtol=0)
    # derivatives of the bound path against autograd
    tt = t.clone().requires_grad_(True)
    for f, df in ((I.alpha, I.dalpha), (I.beta, I.dbeta)):
        (d,) = torch.autograd.grad(f(tt).sum(), tt)
        torch.testing.assert_close(df(t), d, atol=1e-10, rtol=1e-10)
    # Monte Carlo: independent N(0, 1) endpoints and z give Var x_t = 1 (4 standard errors; se of a variance = sqrt(2/n))
    n = 20000
    g = torch.Generator().manual_seed(0)
    x0, x1 = (torch.randn(n, 1, generator=g, dtype=torch.float64) for _ in range(2))
    xt = I.sample(x0, x1, torch.full((n,), 0.3, dtype=torch.float64), generator=g).xt
    assert abs(float(xt.var()) - 1.0) < 4 * math.sqrt(2 / n)


def test_trig_refuses_gamma_reaching_one_and_cos_sin_keeps_the_old_path():
    with pytest.raises(ValueError, match="gamma\\(t\\) < 1"):
        Interpolant("trig", "sin2")
    I = Interpolant("cos_sin", "sin2")
    t = torch.tensor([0.25], dtype=torch.float64)
    torch.testing.assert_close(I.alpha(t), torch.cos(math.pi * t / 2))


def test_quadratic_gamma():
    g = QuadraticGamma(scale=2.0)
    t = torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64)
    torch.testing.assert_close(g.gamma(t), torch.tensor([0.0, 0.375, 0.0], dtype=torch.float64))
    torch.testing.assert_close(g.dgamma(t), torch.tensor([2.0, 1.0, -2.0], dtype=torch.float64))
    assert Interpolant("linear", "quadratic").t_bounds == (0.0, 1.0)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_sample_refuses_times_outside_unit_interval(bad):
    I = Interpolant("linear", "brownian")
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        I.sample(x, x, torch.tensor([0.5, bad, 0.2]))


# -------------------------------------------------------------------------- time intervals
@pytest.mark.parametrize(
    "path,gamma,objective,score,expected",
    [
        ("one_sided_linear", "zero", "velocity", False, (0.0, 1.0)),
        ("one_sided_linear", "zero", "velocity", True, (0.0, 0.999)),  # s = -eta0 / alpha, alpha(1) = 0
        ("one_sided_linear", "zero", "denoiser", False, (0.001, 1.0)),  # b divides by beta(0) = 0
        ("one_sided_linear", "zero", "denoiser", True, (0.001, 0.999)),
        ("one_sided_trig", "zero", "score", False, (0.001, 0.999)),  # loss 1/alpha, b by beta
        ("vp", "zero", "denoiser", True, (0.0, 0.999)),  # beta(0) > 0; t_bounds stop at 1 - t_eps
        ("linear", "quadratic", "velocity_denoiser", False, (0.0, 1.0)),
        ("linear", "quadratic", "velocity_denoiser", True, (0.001, 0.999)),  # s = -eta / gamma
        ("linear", "brownian", "velocity_score", False, (0.001, 0.999)),
    ],
)
def test_valid_time_interval(path, gamma, objective, score, expected):
    lo, hi = valid_time_interval(Interpolant(path, gamma), make_objective(objective), score=score)
    assert (lo, hi) == pytest.approx(expected)


def test_score_objective_on_deterministic_two_sided_path_is_refused():
    with pytest.raises(ValueError, match="vanishes at t = 1/2"):
        valid_time_interval(Interpolant("linear", "zero"), make_objective("velocity_score"))


def small(**kw):
    args = dict(hidden_dims=[16], time_frequencies=1, nll_steps=4, val_nll_samples=8, sample_steps=4,
                plot_every_n_val=0, lr_schedule="constant", ema_decay=0.0)
    args.update(kw)
    return StochasticInterpolant(**args)


@pytest.mark.parametrize("objective", ["score", "denoiser"])
def test_one_sided_score_and_denoiser_models_sample_and_evaluate(objective):
    """These divided by beta(0) = 0 and raised SolverDivergedError before the interval was derived."""
    torch.manual_seed(0)
    model = small(path="one_sided_linear", gamma="zero", objective=objective)
    assert model.t_min == pytest.approx(1e-3) and model.t_max == pytest.approx(1.0 - 1e-3 if objective == "score" else 1.0)
    x = model.sample(8, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(x).all()
    assert torch.isfinite(model.nll(torch.randn(8, 2))).all()
    y = model.sample(8, generator=torch.Generator().manual_seed(0), method="sde", eps=0.5)
    assert torch.isfinite(y).all()
    with pytest.raises(ValueError, match="t_min, t_max must satisfy"):
        small(path="one_sided_linear", gamma="zero", objective=objective, t_min=0.0)


# -------------------------------------------------------------------- refused combinations
def test_ot_coupling_with_velocity_derived_score_is_refused():
    with pytest.raises(ValueError, match="score_from_velocity"):
        small(path="one_sided_linear", gamma="zero", objective="velocity", coupling="ot", sample_method="sde", sample_eps=1.0)
    model = small(path="one_sided_linear", gamma="zero", objective="velocity", coupling="ot")  # ODE: fine
    assert torch.isfinite(model.sample(4)).all()
    with pytest.raises(ValueError, match="score_from_velocity"):
        model.score_field()
    with pytest.raises(ValueError, match="score_from_velocity"):
        model.sample(4, method="sde", eps=1.0)


def test_mirror_likelihood_is_refused():
    with pytest.raises(ValueError, match="no likelihood"):
        small(path="mirror", gamma="brownian", objective="denoiser")
    model = small(path="mirror", gamma="brownian", objective="denoiser", val_nll_samples=0)
    with pytest.raises(ValueError, match="no base density"):
        model.nll(torch.zeros(2, 2))


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(dim=0), "dim must be an integer >= 1"),
        (dict(hidden_dims=[16, 0]), "hidden_dims"),
        (dict(activation="swish"), "activation"),
        (dict(lr=-1.0), "lr must be"),
        (dict(lr_min_ratio=2.0), "lr_min_ratio"),
        (dict(sample_steps=0), "sample_steps"),
        (dict(sample_eps=-0.5), "sample_eps"),
        (dict(sample_solver="rk45"), "sample_solver"),
        (dict(nll_solver="midpoint"), "nll_solver"),
        (dict(nll_num_probes=0), "nll_num_probes"),
        (dict(bpd_scale=0.0), "bpd_scale"),
        (dict(num_plot_samples=0), "num_plot_samples"),
        (dict(gamma_scale=float("inf")), "gamma_scale"),
        (dict(warmup_steps=1.5), "warmup_steps"),
    ],
)
def test_module_argument_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        small(**kw)


# ------------------------------------------------------------------------------- generate
def test_negative_callable_eps_is_refused_before_the_solve():
    calls = []
    v = lambda t, x: calls.append(1) or torch.zeros_like(x)  # noqa: E731
    x0 = torch.zeros(4, 2)
    with pytest.raises(ValueError, match=r"eps must be >= 0.*eps\(0\.75\) = -0\.25"):
        generate(v, x0, steps=4, method="sde", score=v, eps=lambda t: 0.5 - t)
    assert not calls  # refused before any field evaluation


def test_zero_eps_never_evaluates_the_score():
    def score(t, x):
        raise AssertionError("the score must not be evaluated when eps = 0")

    out = generate(lambda t, x: -x, torch.ones(3, 2), steps=10, method="sde", score=score, eps=0.0)
    torch.testing.assert_close(out, torch.full((3, 2), 0.9**10))
