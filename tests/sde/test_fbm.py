"""Tests of exact fBM and the Markov approximation against closed forms and quadrature."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate as si
import scipy.special as sp
import torch

from probgen.exceptions import NotPositiveDefiniteError
from probgen.sde.fbm import (
    MarkovFBM,
    fbm_covariance,
    gammainc,
    gammaincc_scaled,
    geometric_gammas,
    sample_fbm,
)

D = torch.float64


# ---------------------------------------------------------------- exact fBM sampling
@pytest.mark.parametrize("method", ["cholesky", "davies-harte"])
@pytest.mark.parametrize("hurst", [0.25, 0.75])
def test_sample_fbm_covariance_within_mc_error(method, hurst):
    ts = torch.linspace(0.0, 2.0, 9, dtype=D)
    n = 4000
    x = sample_fbm(ts, hurst, n, method=method, generator=torch.Generator().manual_seed(1))
    assert x.shape == (n, 9) and x.dtype == D
    assert (x[:, 0] == 0).all()
    cov = fbm_covariance(ts, hurst)
    emp = x.T @ x / n  # mean is known to be zero
    # s.e. of a Gaussian second moment E[x_i x_j]: sqrt((C_ii C_jj + C_ij^2) / n)
    se = torch.sqrt((cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov**2) / n)
    assert ((emp - cov).abs() <= 4 * se + 1e-12).all()


@pytest.mark.parametrize("hurst", [0.2, 0.35, 0.65, 0.8])
def test_increment_autocorrelation_has_sign_of_2h_minus_1(hurst):
    ts = torch.linspace(0.0, 1.0, 65, dtype=D)
    x = sample_fbm(ts, hurst, 2000, method="davies-harte", generator=torch.Generator().manual_seed(2))
    dx = x.diff(dim=1)
    rho = float((dx[:, :-1] * dx[:, 1:]).mean() / (dx**2).mean())
    exact = 2 ** (2 * hurst - 1) - 1
    assert math.copysign(1, rho) == math.copysign(1, 2 * hurst - 1)
    # 2000 * 63 correlated pairs; s.e. of the lag-1 correlation is below 1 / sqrt(2000 * 63 / 4)
    assert abs(rho - exact) < 4 / math.sqrt(2000 * 63 / 4)


def test_type2_covariance_matches_quadrature_of_its_definition():
    hurst = 0.3
    alpha = hurst + 0.5
    ts = torch.tensor([0.0, 0.3, 1.0, 1.7], dtype=D)
    cov = fbm_covariance(ts, hurst, kind="type2").numpy()
    for i, t in enumerate(ts.tolist()):
        for j, s in enumerate(ts.tolist()):
            m = min(t, s)
            if m == 0:
                ref = 0.0
            else:  # int_0^m (t-u)^(alpha-1) (s-u)^(alpha-1) du / Gamma(alpha)^2
                def f(u, t=t, s=s):
                    return (t - u) ** (alpha - 1) * (s - u) ** (alpha - 1)

                ref = si.quad(f, 0, m, limit=200)[0] / sp.gamma(alpha) ** 2
            assert abs(cov[i, j] - ref) < 1e-6 * max(1.0, abs(ref))
    # and its diagonal is t^{2H} / (2H Gamma(H + 1/2)^2)
    diag = ts.numpy() ** (2 * hurst) / (2 * hurst * sp.gamma(alpha) ** 2)
    np.testing.assert_allclose(np.diag(cov), diag, rtol=1e-10)


def test_sample_fbm_type2_covariance():
    ts = torch.tensor([0.25, 0.5, 1.0], dtype=D)
    n = 4000
    x = sample_fbm(ts, 0.7, n, kind="type2", generator=torch.Generator().manual_seed(3))
    cov = fbm_covariance(ts, 0.7, kind="type2")
    se = torch.sqrt((cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov**2) / n)
    assert ((x.T @ x / n - cov).abs() <= 4 * se).all()


def test_sample_fbm_bad_input():
    ts = torch.linspace(0, 1, 5, dtype=D)
    with pytest.raises(ValueError, match="hurst"):
        sample_fbm(ts, 1.0, 3)
    with pytest.raises(ValueError, match="hurst"):
        fbm_covariance(ts, 0.0)
    with pytest.raises(ValueError, match="strictly increasing"):
        sample_fbm(ts.flip(0), 0.5, 3)
    with pytest.raises(ValueError, match="kind"):
        sample_fbm(ts, 0.5, 3, kind="type3")
    with pytest.raises(ValueError, match="uniform"):
        sample_fbm(torch.tensor([0.0, 0.1, 0.5], dtype=D), 0.5, 3, method="davies-harte")
    with pytest.raises(ValueError, match="type I"):
        sample_fbm(ts, 0.5, 3, kind="type2", method="davies-harte")
    with pytest.raises(ValueError, match="num_samples"):
        sample_fbm(ts, 0.5, 0)
    assert issubclass(NotPositiveDefiniteError, ArithmeticError)


def test_sample_fbm_reproducible_with_generator():
    ts = torch.linspace(0, 1, 17)
    a = sample_fbm(ts, 0.6, 4, generator=torch.Generator().manual_seed(5))
    b = sample_fbm(ts, 0.6, 4, generator=torch.Generator().manual_seed(5))
    assert a.dtype == torch.float32 and torch.equal(a, b)


# ---------------------------------------------------------------- incomplete gamma
@pytest.mark.parametrize("x", [1e-3, 0.2, 3.0, 9.9, 10.0, 25.0, 80.0])
def test_gammainc_values_and_gradient_in_a_vs_scipy(x):
    a = torch.tensor([0.55, 0.9, 1.2, 1.45, 2.3], dtype=D, requires_grad=True)
    xx = torch.full((5,), x, dtype=D)
    p = gammainc(a, xx)
    s = gammaincc_scaled(a, xx)
    an = a.detach().numpy()
    np.testing.assert_allclose(p.detach().numpy(), sp.gammainc(an, x), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(s.detach().numpy(), sp.gammaincc(an, x) * np.exp(x), rtol=1e-9)
    # d/da against central differences of scipy's (independent) implementation
    (gp,) = torch.autograd.grad(p.sum(), a)
    (gs,) = torch.autograd.grad(s.sum(), a)
    eps = 1e-6
    fd_p = (sp.gammainc(an + eps, x) - sp.gammainc(an - eps, x)) / (2 * eps)
    fd_s = (sp.gammaincc(an + eps, x) - sp.gammaincc(an - eps, x)) * np.exp(x) / (2 * eps)
    np.testing.assert_allclose(gp.numpy(), fd_p, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(gs.numpy(), fd_s, rtol=1e-5, atol=1e-9)


# ---------------------------------------------------------------- Markov approximation
def _scipy_system(hurst, gammas, T, kind):
    """A and b of the paper's App. B written independently with scipy special functions."""
    g = np.asarray(gammas)
    a = hurst + 0.5
    gi, gj = g[:, None], g[None, :]
    if kind == "type1":
        A = (2 * T - (1 - np.exp(-gi * T)) / gi - (1 - np.exp(-gj * T)) / gj) / (gi + gj)
        qz = sp.gammaincc(a, g * T) * np.exp(g * T)
        b = 2 * T / g**a - T**a / (g * sp.gamma(a + 1)) + (np.exp(-g * T) - qz) / g ** (a + 1)
        b = b * math.sqrt(sp.gamma(2 * hurst + 1) * math.sin(math.pi * hurst))
    else:
        s = gi + gj
        A = (T - (1 - np.exp(-s * T)) / s) / s
        b = T * sp.gammainc(a, g * T) / g**a - a * sp.gammainc(a + 1, g * T) / g ** (a + 1)
    return A, b


@pytest.mark.parametrize("kind", ["type1", "type2"])
@pytest.mark.parametrize("hurst", [0.2, 0.5, 0.8])
def test_omegas_solve_linear_system(kind, hurst):
    m = MarkovFBM(hurst, n_ou=6, gamma_max=20.0, horizon=2.0, kind=kind, dtype=D)
    A, b = _scipy_system(hurst, m.gammas.numpy(), 2.0, kind)
    omega = m.omegas.numpy()
    np.testing.assert_allclose(A @ omega, b, rtol=1e-8, atol=1e-10)
    g = m.gammas.numpy()
    np.testing.assert_allclose(g, 20.0 ** np.linspace(-1, 1, 6), rtol=1e-12)


@pytest.mark.parametrize("kind", ["type1", "type2"])
def test_omegas_gradient_in_hurst_vs_finite_differences(kind):
    hurst = torch.tensor(0.35, dtype=D, requires_grad=True)
    m = MarkovFBM(hurst, n_ou=5, gamma_max=20.0, horizon=2.0, kind=kind)
    jac = torch.stack([torch.autograd.grad(w, hurst, retain_graph=True)[0] for w in m.omegas])
    err_grad = torch.autograd.grad(m.error, hurst)[0]
    eps = 1e-6
    g = m.gammas.detach().numpy()
    om = lambda h: np.linalg.solve(*_scipy_system(h, g, 2.0, kind))
    fd = (om(0.35 + eps) - om(0.35 - eps)) / (2 * eps)
    np.testing.assert_allclose(jac.numpy(), fd, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(err_grad)


def _cross_by_quadrature(hurst, gamma, t, kind):
    """E[B_H(t) Yhat(t)] by numerical integration of the defining stochastic integrals."""
    a = hurst + 0.5
    if kind == "type2":
        return si.quad(lambda r: r ** (a - 1) * math.exp(-gamma * r), 0, t, limit=200)[0] / sp.gamma(a)
    c = math.sqrt(sp.gamma(2 * hurst + 1) * math.sin(math.pi * hurst)) / sp.gamma(a)
    # B(t) = c int_{-inf}^t [(t-s)^(a-1) - (-s)_+^(a-1)] dW_s,  Y(t) - Y(0) = int [e^{-g(t-s)} 1{s<t} - e^{g s} 1{s<0}] dW_s
    inside = si.quad(lambda s: (t - s) ** (a - 1) * math.exp(-gamma * (t - s)), 0, t, limit=200)[0]
    past = si.quad(
        lambda v: ((t + v) ** (a - 1) - v ** (a - 1)) * (math.exp(-gamma * (t + v)) - math.exp(-gamma * v)),
        0,
        np.inf,
        limit=400,
    )[0]
    return c * (inside + past)


@pytest.mark.parametrize("kind", ["type1", "type2"])
@pytest.mark.parametrize("hurst", [0.3, 0.7])
def test_error_variance_and_error_match_quadrature(kind, hurst):
    T = 1.5
    m = MarkovFBM(hurst, n_ou=3, gamma_max=8.0, horizon=T, kind=kind, dtype=D)
    ts = torch.tensor([0.4, 1.1], dtype=D)
    omega, g = m.omegas.numpy(), m.gammas.numpy()
    ev = m.error_variance(ts).numpy()
    for i, t in enumerate(ts.tolist()):
        var_b = t ** (2 * hurst) if kind == "type1" else t ** (2 * hurst) / (2 * hurst * sp.gamma(hurst + 0.5) ** 2)
        cross = np.array([_cross_by_quadrature(hurst, gk, t, kind) for gk in g])
        var_hat = float(m.covariance(torch.tensor([t], dtype=D))[0, 0])
        ref = var_b - 2 * cross @ omega + var_hat
        assert abs(ev[i] - ref) < 1e-6
    # the time-averaged error is the mean of the pointwise error over [0, T]
    grid = torch.linspace(0, T, 2001, dtype=D)
    avg = float(torch.trapezoid(m.error_variance(grid), grid)) / T
    assert abs(avg - float(m.error)) < 1e-5 * max(1.0, float(m.error)) + 1e-7


def test_markov_covariance_approaches_fbm_as_k_grows_within_closed_form_error():
    ts = torch.linspace(0.0, 1.0, 11, dtype=D)
    for kind in ("type1", "type2"):
        hurst = 0.3
        target = fbm_covariance(ts, hurst, kind=kind)
        gaps, errs = [], []
        for k in (2, 4, 8, 16):
            m = MarkovFBM(hurst, n_ou=k, gamma_max=40.0, horizon=1.0, kind=kind, dtype=D)
            cov = m.covariance(ts)
            ev = m.error_variance(ts).clamp_min(0)
            # Cauchy-Schwarz: |Cov(Bhat_t, Bhat_s) - Cov(B_t, B_s)| <= e_t sd(Bhat_s) + sd(B_t) e_s
            sd_hat, sd = cov.diagonal().clamp_min(0).sqrt(), target.diagonal().sqrt()
            e = ev.sqrt()
            bound = e[:, None] * sd_hat[None, :] + sd[:, None] * e[None, :]
            assert ((cov - target).abs() <= bound + 1e-10).all()
            gaps.append(float((cov - target).abs().max()))
            errs.append(float(m.error))
        assert errs[-1] < 0.5 * errs[0] and gaps[-1] < 0.5 * gaps[0]


def test_hurst_one_half_type2_is_brownian_motion():
    ts = torch.linspace(0.0, 1.0, 11, dtype=D)
    m = MarkovFBM(0.5, n_ou=5, gamma_max=20.0, horizon=1.0, kind="type2", dtype=D)
    brownian = torch.minimum(ts[:, None], ts[None, :])
    assert float(m.relative_error) < 1e-6
    bound = 3 * math.sqrt(float(m.error_variance(ts).max()))
    assert float((m.covariance(ts) - brownian).abs().max()) < bound + 1e-8
    np.testing.assert_allclose(fbm_covariance(ts, 0.5, kind="type2").numpy(), brownian.numpy(), atol=1e-12)
    np.testing.assert_allclose(fbm_covariance(ts, 0.5).numpy(), brownian.numpy(), atol=1e-12)


def test_hurst_one_half_type1_error_is_what_the_closed_form_says():
    # type I at H = 1/2 is W(t) - W(0); its covariance is min(t, s) and the approximation's
    # distance to it is bounded by the closed-form error.
    ts = torch.linspace(0.0, 1.0, 11, dtype=D)
    m = MarkovFBM(0.5, n_ou=8, gamma_max=50.0, horizon=1.0, kind="type1", dtype=D)
    brownian = torch.minimum(ts[:, None], ts[None, :])
    e = m.error_variance(ts).clamp_min(0).sqrt()
    sd_hat, sd = m.covariance(ts).diagonal().sqrt(), ts.sqrt()
    bound = e[:, None] * sd_hat[None, :] + sd[:, None] * e[None, :]
    assert ((m.covariance(ts) - brownian).abs() <= bound + 1e-10).all()
    assert float(m.relative_error) < 0.05


def test_initial_state_type1_is_stationary_and_type2_zero():
    m = MarkovFBM(0.3, n_ou=3, gamma_max=10.0, kind="type1", dtype=D)
    y0 = m.initial_state((20000,), generator=torch.Generator().manual_seed(0))
    g = m.gammas
    cov = 1 / (g[:, None] + g[None, :])
    se = torch.sqrt((cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov**2) / 20000)
    assert ((y0.T @ y0 / 20000 - cov).abs() <= 4 * se).all()
    m2 = MarkovFBM(0.3, n_ou=3, gamma_max=10.0, kind="type2")
    assert torch.equal(m2.initial_state((4, 2)), torch.zeros(4, 2, 3))


def test_markov_fbm_bad_input_and_dtypes():
    with pytest.raises(ValueError, match="hurst"):
        MarkovFBM(1.2)
    with pytest.raises(ValueError, match="hurst"):
        MarkovFBM(torch.tensor(-0.1))
    with pytest.raises(ValueError, match="gamma_max"):
        MarkovFBM(0.3, gamma_max=-1.0)
    with pytest.raises(ValueError, match="horizon"):
        MarkovFBM(0.3, horizon=0.0)
    with pytest.raises(ValueError, match="n_ou"):
        MarkovFBM(0.3, n_ou=0)
    with pytest.raises(ValueError, match="kind"):
        MarkovFBM(0.3, kind="fractional")
    m = MarkovFBM(0.3, gamma_max=20.0)
    m.check_dt(0.01)
    with pytest.raises(ValueError, match="gamma_max \\* dt"):
        m.check_dt(0.05)
    assert m.omegas.dtype == torch.get_default_dtype()
    h = torch.tensor(0.4, dtype=D)
    assert MarkovFBM(h).omegas.dtype == D
    assert geometric_gammas(1, 20.0).tolist() == [1.0]
