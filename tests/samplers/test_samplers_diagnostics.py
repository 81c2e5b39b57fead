"""R-hat and ESS against cases with known answers."""

import math

import numpy as np
import pytest
import torch
from scipy.signal import lfilter

from probgen.samplers import autocorrelation, ess, rank_normalize, rhat, split_chains

REPS = 300  # independent replicates, carried in a trailing dimension


def ar1(phi, n_chains, n_draws, reps, seed):
    """Stationary Gaussian AR(1) chains x_t = phi x_{t-1} + sqrt(1 - phi^2) eps_t, shape
    (n_chains, n_draws, reps); the integrated autocorrelation time is (1 + phi) / (1 - phi)."""
    rng = np.random.default_rng(seed)
    eps = rng.standard_normal((n_chains, n_draws, reps))
    eps[:, 0] /= math.sqrt(1 - phi**2)  # x_0 ~ N(0, 1): start in stationarity
    x = lfilter([math.sqrt(1 - phi**2)], [1.0, -phi], eps, axis=1)
    return torch.from_numpy(x)


def truncation_bias_bound(total):
    # Geyer's truncation keeps pairs until the first negative one; with iid noise each kept
    # pair estimate is positive with mean ~0.8 * sqrt(2 / total), which biases tau upwards by
    # about twice that: ESS / (M N) is ~1 - 1.6 sqrt(2 / total) at worst.
    return 1.6 * math.sqrt(2.0 / total)


@pytest.mark.parametrize("method", ["bulk", "basic"])
def test_ess_iid_is_n(method):
    m, n = 4, 1000
    x = torch.randn(m, n, REPS, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ratio = ess(x, method=method) / (m * n)
    se = ratio.std() / math.sqrt(REPS)
    assert abs(ratio.mean() - 1.0) < 4 * se + truncation_bias_bound(m * n)
    assert ratio.shape == (REPS,)


@pytest.mark.parametrize("phi", [0.5, 0.9, -0.3])
def test_ess_ar1_matches_closed_form(phi):
    m, n = 4, 4000
    x = ar1(phi, m, n, REPS // 3, seed=1)
    true = m * n * (1 - phi) / (1 + phi)
    ratio = ess(x, method="basic") / true
    se = ratio.std() / math.sqrt(ratio.numel())
    # truncation bias (see truncation_bias_bound) plus the O(tau / n) bias from subtracting
    # each split chain's own mean (length n / 2)
    tol = 4 * se + truncation_bias_bound(m * n) + 2 * (1 + phi) / (1 - phi) / (n / 2)
    assert abs(ratio.mean() - 1.0) < tol
    # negative autocorrelation: ESS above the number of draws
    if phi < 0:
        assert ratio.mean() * true > m * n


def test_ess_bulk_is_invariant_to_monotone_maps():
    x = ar1(0.5, 4, 2000, 20, seed=2)
    assert torch.allclose(ess(x), ess(torch.exp(3 * x)))  # monotone map: same ranks


def test_tail_ess_matches_indicator_autocorrelation_of_ar1():
    # For a stationary Gaussian AR(1), I(x_t <= q) has lag-t correlation
    # (Phi2(q, q; phi^t) - p^2) / (p (1 - p)) with p = Phi(q); the tail ESS is the smaller
    # of the ESS of the 5% and 95% indicators, equal by symmetry.
    from scipy.stats import multivariate_normal, norm

    phi, m, n = 0.7, 4, 4000
    q, p = norm.ppf(0.05), 0.05
    corr = []
    for t in range(1, 200):
        r = phi**t
        if r < 1e-8:
            break
        biv = multivariate_normal(mean=[0, 0], cov=[[1, r], [r, 1]]).cdf([q, q])
        corr.append((biv - p * p) / (p * (1 - p)))
    tau = 1 + 2 * sum(corr)
    true = m * n / tau
    x = ar1(phi, m, n, 100, seed=7)
    ratio = ess(x, method="tail") / true
    se = ratio.std() / math.sqrt(ratio.numel())
    # minimum of two ESS estimates: biased low by about one s.d. of a single estimate;
    # allow that plus the truncation and mean-subtraction biases
    tol = 4 * se + ratio.std() + truncation_bias_bound(m * n) + 2 * tau / (n / 2)
    assert abs(ratio.mean() - 1.0) < tol
    assert tau < (1 + phi) / (1 - phi)  # indicators decorrelate faster than x itself


def test_rhat_iid_near_one():
    x = torch.randn(4, 2000, 100, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    r = rhat(x)
    assert (r < 1.01).all()
    assert (r > 0.99).all()


def test_split_rhat_matches_closed_form_for_shifted_chains():
    # chain means mu = (0, 0, 0, 1), unit within-chain variance. For split chains of length L
    # the classic R-hat^2 -> 1 + s^2 where s^2 is the (ddof=1) variance of the 2M half-chain
    # means (the 1/L terms cancel in expectation).
    m, n, reps = 4, 2000, 100
    mu = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64).reshape(m, 1, 1)
    x = torch.randn(m, n, reps, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    x = x + mu
    s2 = mu.flatten().repeat_interleave(2).var(unbiased=True)
    expected = math.sqrt(1.0 + s2)
    r = rhat(x, method="split")
    se = r.std() / math.sqrt(reps)
    # O(1/L) deviation of E[R-hat] from the limit: |d R| <= 2 / L
    assert abs(r.mean() - expected) < 4 * se + 2.0 / (n // 2)
    # rank version flags it as well
    assert (rhat(x) > 1.05).all()


def test_rank_rhat_flags_scale_differences_split_rhat_does_not():
    m, n = 4, 2000
    scale = torch.tensor([1.0, 1.0, 1.0, 3.0], dtype=torch.float64).reshape(m, 1, 1)
    x = torch.randn(m, n, 50, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    x = x * scale
    # same means: between-chain variance ~ 0, classic R-hat ~ 1
    assert (rhat(x, method="split") < 1.01).all()
    # folded draws differ in location between chains: the tail R-hat catches it
    assert (rhat(x) > 1.05).all()


def test_split_rhat_detects_a_trend_within_one_chain():
    n = 1000
    t = torch.linspace(0, 1, n, dtype=torch.float64)
    x = (
        torch.randn(1, n, dtype=torch.float64, generator=torch.Generator().manual_seed(6)) + 3 * t
    ).unsqueeze(-1)
    assert rhat(x, method="split").item() > 1.3
    assert rhat(x).item() > 1.3


def test_rank_normalize_and_split_shapes_and_ties():
    x = torch.tensor([[1.0, 2.0, 2.0, 3.0]]).T.reshape(1, 4)
    z = rank_normalize(x)
    assert z[0, 1] == z[0, 2]  # ties share the average rank
    assert torch.allclose(z[0, 0], -z[0, 3])
    s = split_chains(torch.arange(10.0).reshape(2, 5))
    assert s.tolist() == [[0, 1], [5, 6], [3, 4], [8, 9]]


def test_autocorrelation_of_known_sequence():
    x = torch.tensor([[1.0, -1.0, 1.0, -1.0]], dtype=torch.float64)
    acov = autocorrelation(x)
    # mean 0: gamma_t = (1/n) sum_s x_s x_{s+t} = (4, -3, 2, -1)/4
    assert torch.allclose(acov[0], torch.tensor([1.0, -0.75, 0.5, -0.25], dtype=torch.float64))


def test_dtype_shape_and_errors():
    x = torch.randn(2, 50, 3, 4)
    assert rhat(x).shape == (3, 4) and rhat(x).dtype == torch.float32
    assert ess(x).shape == (3, 4)
    assert ess(torch.randint(0, 5, (2, 50))).dtype == torch.float64
    with pytest.raises(ValueError, match="chains"):
        rhat(torch.randn(10))
    with pytest.raises(ValueError, match="draws"):
        ess(torch.randn(2, 3))
    with pytest.raises(ValueError, match="method"):
        ess(x, method="nope")
    with pytest.raises(ValueError, match="method"):
        rhat(x, method="nope")


def _stan_ess_reference(x):
    """Stan's / ArviZ's ESS of already split chains x: (m, n), transliterated loop by loop
    (autocovariances by their O(n^2) definition), as an independent reference."""
    m, n = x.shape
    xc = x - x.mean(axis=1, keepdims=True)
    acov = np.stack([[np.dot(c[: n - t], c[t:]) / n for t in range(n)] for c in xc])
    mean_var = acov[:, 0].mean() * n / (n - 1)
    var_plus = mean_var * (n - 1) / n + (x.mean(axis=1).var(ddof=1) if m > 1 else 0.0)
    rho = np.zeros(n)
    rho_even, rho_odd = 1.0, 1 - (mean_var - acov[:, 1].mean()) / var_plus
    rho[0], rho[1] = rho_even, rho_odd
    t = 1
    while t < n - 3 and rho_even + rho_odd > 0:
        rho_even = 1 - (mean_var - acov[:, t + 1].mean()) / var_plus
        rho_odd = 1 - (mean_var - acov[:, t + 2].mean()) / var_plus
        if rho_even + rho_odd >= 0:
            rho[t + 1], rho[t + 2] = rho_even, rho_odd
        t += 2
    max_t = t - 2
    if rho_even > 0:
        rho[max_t + 1] = rho_even
    t = 1
    while t <= max_t - 2:
        if rho[t + 1] + rho[t + 2] > rho[t - 1] + rho[t]:
            rho[t + 1] = rho[t + 2] = (rho[t - 1] + rho[t]) / 2
        t += 2
    tau = -1 + 2 * rho[: max_t + 1].sum() + rho[max_t + 1 : max_t + 2].sum()
    return m * n / max(tau, 1 / np.log10(m * n))


@pytest.mark.parametrize("phi, n", [(0.0, 200), (0.6, 301), (0.95, 400), (-0.4, 150)])
def test_ess_basic_matches_stan_reference_loop(phi, n):
    # the estimator itself (truncation, the extra rho_{2k} term after the last kept pair,
    # monotone sequence, the 1 / log10(MN) floor) against Stan's loop on the same draws
    x = ar1(phi, 4, n, 5, seed=11)
    got = ess(x, method="basic")
    split = split_chains(x).numpy()
    ref = [_stan_ess_reference(split[..., r]) for r in range(x.shape[-1])]
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-9)


def _arviz_rhat_rank_reference(x):
    """ArviZ's rank-normalised split R-hat of x: (m, n), with numpy / scipy only."""
    from scipy.special import ndtri
    from scipy.stats import rankdata

    def z_scale(a):
        r = rankdata(a, method="average").reshape(a.shape)
        return ndtri((r - 0.375) / (a.size + 0.25))

    def classic(a):
        n = a.shape[1]
        b = n * a.mean(axis=1).var(ddof=1)
        w = a.var(axis=1, ddof=1).mean()
        return np.sqrt((b / w + n - 1) / n)

    half = x.shape[1] // 2
    split = np.concatenate([x[:, :half], x[:, -half:]], axis=0)
    folded = np.abs(split - np.median(split))
    return max(classic(z_scale(split)), classic(z_scale(folded)))


@pytest.mark.parametrize("n, ties", [(50, False), (51, False), (50, True)])
def test_rank_rhat_matches_numpy_reference(n, ties):
    # a location- and scale-shifted chain; even and odd lengths (the fold point is the mean of
    # the two middle split draws); ties from rounding (average ranks)
    x = ar1(0.5, 4, n, 3, seed=12) * torch.tensor([1.0, 1.0, 2.0, 1.0]).reshape(4, 1, 1)
    x = x + torch.tensor([0.0, 0.3, 0.0, 0.0], dtype=x.dtype).reshape(4, 1, 1)
    if ties:
        x = x.mul(4).round() / 4
    got = rhat(x)
    ref = [_arviz_rhat_rank_reference(x[..., r].numpy()) for r in range(x.shape[-1])]
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12)
