"""ULA / MALA against closed forms."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate
from scipy.stats import norm

from probgen.exceptions import SamplerDivergedError
from probgen.samplers import ess, langevin

F64 = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


def gaussian_energy(mu, prec):
    def energy(x):
        d = x - mu
        return 0.5 * ((d @ prec) * d).sum(-1)

    return energy


MU = torch.tensor([1.0, -2.0], dtype=F64)
PREC = torch.tensor([[2.0, 0.8], [0.8, 1.0]], dtype=F64)


def moment_check(x, mean, cov, n_se=4.0):
    """Sample mean and covariance of iid rows x (n, d) against (mean, cov) within n_se
    standard errors: se(mean_i) = sqrt(C_ii / n), se(C_ij) = sqrt((C_ii C_jj + C_ij^2) / n)."""
    n = x.shape[0]
    m = x.mean(0)
    c = torch.cov(x.T)
    se_m = (cov.diagonal() / n).sqrt()
    se_c = ((cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov**2) / n).sqrt()
    return bool(((m - mean).abs() < n_se * se_m).all() and ((c - cov).abs() < n_se * se_c).all())


def test_ula_gaussian_matches_discretised_stationary_law():
    # ULA on a Gaussian with precision A is the linear recursion x' = (I - hA) x + hA mu
    # + sqrt(2hT) xi, whose stationary law is exactly N(mu, T (A - h A^2 / 2)^{-1}).
    h, temp, n = 0.3, 1.5, 4000
    x0 = MU.expand(n, 2).clone()
    out = langevin(gaussian_energy(MU, PREC), x0, 150, h, temperature=temp, generator=gen(0))
    cov_h = temp * torch.linalg.inv(PREC - h * PREC @ PREC / 2)
    assert moment_check(out.x, MU, cov_h)
    # and the O(h) bias with respect to the target T A^{-1} is visible at this h
    assert not moment_check(out.x, MU, temp * torch.linalg.inv(PREC))
    assert out.acceptance_rate.shape == (n,) and out.mean_acceptance == 1.0


def test_ula_per_chain_step_size():
    # 1-D target N(0, 1/a): stationary variance of ULA with step h is 1 / (a (1 - h a / 2))
    a, n = 2.0, 4000
    h = torch.tensor([0.1, 0.6], dtype=F64).repeat(n // 2)
    out = langevin(
        lambda x: 0.5 * a * x.square().sum(-1),
        torch.zeros(n, 1, dtype=F64),
        120,
        h,
        generator=gen(1),
    )
    for hk, xs in ((0.1, out.x[0::2, 0]), (0.6, out.x[1::2, 0])):
        var = 1 / (a * (1 - hk * a / 2))
        se = var * math.sqrt(2 / xs.numel())
        assert abs(xs.var() - var) < 4 * se


def test_mala_gaussian_is_exact_with_autocorrelated_trace():
    # few long chains: Monte Carlo error from the ESS of the trace
    h, n_chains, steps = 0.6, 32, 1500
    out = langevin(
        gaussian_energy(MU, PREC),
        torch.zeros(n_chains, 2, dtype=F64),
        steps,
        h,
        method="mala",
        generator=gen(2),
        trace_every=1,
    )
    draws = out.trace[200:].transpose(0, 1)  # (chains, draws, 2)
    cov = torch.linalg.inv(PREC)
    flat = draws.reshape(-1, 2)
    mean = flat.mean(0)
    c = flat - MU
    second = torch.stack([c[:, 0] ** 2, c[:, 1] ** 2, c[:, 0] * c[:, 1]], -1)
    quantities = torch.cat([draws, second.reshape(n_chains, -1, 3)], -1)
    n_eff = ess(quantities, method="basic")
    sd = quantities.reshape(-1, 5).std(0)
    se = sd / n_eff.sqrt()
    est = torch.cat([mean, second.mean(0)])
    target = torch.cat([MU, torch.stack([cov[0, 0], cov[1, 1], cov[0, 1]])])
    assert ((est - target).abs() < 4 * se).all(), (est, target, se)
    assert 0.3 < out.mean_acceptance < 0.95


# a skewed, bimodal 1-D target: 0.3 N(-1, 0.6^2) + 0.7 N(1.2, 0.5^2)
W, M, S = np.array([0.3, 0.7]), np.array([-1.0, 1.2]), np.array([0.6, 0.5])


def mixture_energy(x):
    x = x[:, 0]
    comps = torch.stack(
        [math.log(w) - 0.5 * ((x - m) / s) ** 2 - math.log(s) for w, m, s in zip(W, M, S)], -1
    )
    return -torch.logsumexp(comps, -1)


def mixture_cdf(q):
    return float((W * norm.cdf((q - M) / S)).sum())


def mixture_sample(n, seed):
    rng = np.random.default_rng(seed)
    k = rng.choice(2, size=n, p=W)
    return torch.from_numpy(rng.normal(M[k], S[k])).unsqueeze(-1)


def check_mixture(xs, n_se=4.0):
    """First two moments and CDF at five points of iid draws against the closed form."""
    xs = xs.numpy()
    n = xs.size
    m1 = float((W * M).sum())
    m2 = float((W * (M**2 + S**2)).sum())
    m4 = float((W * (M**4 + 6 * M**2 * S**2 + 3 * S**4)).sum())
    m3 = float((W * (M**3 + 3 * M * S**2)).sum())
    ok = abs(xs.mean() - m1) < n_se * math.sqrt((m2 - m1**2) / n)
    ok &= abs((xs**2).mean() - m2) < n_se * math.sqrt((m4 - m2**2) / n)
    del m3
    for q in (-1.5, -0.5, 0.3, 1.0, 1.8):
        p = mixture_cdf(q)
        ok &= abs((xs <= q).mean() - p) < n_se * math.sqrt(p * (1 - p) / n)
    return bool(ok)


def test_mala_leaves_non_gaussian_target_invariant_ula_does_not():
    # start from exact draws: an exact kernel keeps them exact after any number of steps;
    # ULA at the same step drifts to its biased stationary law (the test has power).
    n, h, steps = 20000, 0.15, 60
    x0 = mixture_sample(n, seed=3)
    assert check_mixture(x0[:, 0])
    mala = langevin(mixture_energy, x0, steps, h, method="mala", generator=gen(4))
    assert check_mixture(mala.x[:, 0])
    ula = langevin(mixture_energy, x0, steps, h, method="ula", generator=gen(4))
    assert not check_mixture(ula.x[:, 0])


def test_mala_converges_on_quartic_against_quadrature():
    # E(x) = x^4 / 4 - x^2 / 2 + 0.4 x: skewed, non-Gaussian; moments by quadrature
    def energy(x):
        x = x[:, 0]
        return x**4 / 4 - x**2 / 2 + 0.4 * x

    dens = lambda x: math.exp(-(x**4 / 4 - x**2 / 2 + 0.4 * x))
    z = integrate.quad(dens, -np.inf, np.inf)[0]
    mom = [integrate.quad(lambda x, k=k: x**k * dens(x), -np.inf, np.inf)[0] / z for k in (1, 2, 4)]
    m1, m2, m4 = mom
    n = 10000
    x0 = torch.randn(n, 1, dtype=F64, generator=gen(5))  # not the target
    out = langevin(energy, x0, 300, 0.2, method="mala", generator=gen(6))
    xs = out.x[:, 0]
    assert abs(xs.mean() - m1) < 4 * math.sqrt((m2 - m1**2) / n)
    assert abs((xs**2).mean() - m2) < 4 * math.sqrt((m4 - m2**2) / n)
    for q in (-1.2, 0.0, 1.0):
        p = integrate.quad(dens, -np.inf, q)[0] / z
        assert abs((xs <= q).double().mean() - p) < 4 * math.sqrt(p * (1 - p) / n)


def test_mala_stays_exact_with_gradient_clipping():
    # clipping at 0.5 changes the proposal for most states, not the target
    n = 8000
    energy = gaussian_energy(MU, PREC)
    chol = torch.linalg.cholesky(torch.linalg.inv(PREC))
    x0 = MU + torch.randn(n, 2, dtype=F64, generator=gen(7)) @ chol.T  # exact draws
    out = langevin(energy, x0, 100, 0.5, method="mala", clip_grad=0.5, generator=gen(8))
    # ULA with the same clipping is visibly off (the check has power)
    ula = langevin(energy, x0, 100, 0.5, clip_grad=0.5, generator=gen(8))
    assert not moment_check(ula.x, MU, torch.linalg.inv(PREC))
    assert moment_check(out.x, MU, torch.linalg.inv(PREC))


def test_clip_grad_and_step_size_schedule_closed_form():
    # temperature 0: deterministic gradient descent on E = |x|^2 / 2
    x0 = torch.tensor([[3.0, 4.0]], dtype=F64)  # |x0| = 5, gradient x0
    out = langevin(lambda x: 0.5 * x.square().sum(-1), x0, 1, 0.1, temperature=0.0, clip_grad=1.0)
    assert torch.allclose(out.x, x0 - 0.1 * x0 / 5)  # clipped to unit norm
    hs = [0.1, 0.2, 0.3]
    out = langevin(
        lambda x: 0.5 * x.square().sum(-1), x0, 3, 1.0, temperature=0.0, anneal={"step_size": hs}
    )
    assert torch.allclose(out.x, x0 * (0.9 * 0.8 * 0.7))


def test_temperature_annealing_ends_at_final_temperature():
    # anneal from T = 20 down to T = 0.5, then hold: ULA's law is N(0, T / (a (1 - h a / 2)))
    a, h, n, steps = 1.0, 0.2, 4000, 200
    temps = [max(0.5, 20.0 * (1 - k / 80)) for k in range(steps)]
    out = langevin(
        lambda x: 0.5 * a * x.square().sum(-1),
        torch.zeros(n, 1, dtype=F64),
        steps,
        h,
        anneal={"temperature": lambda k: temps[k]},
        generator=gen(9),
        trace_every=50,
    )
    var = 0.5 / (a * (1 - h * a / 2))
    assert abs(out.x.var() - var) < 4 * var * math.sqrt(2 / n)
    assert out.trace.shape == (4, n, 1)
    assert out.trace[0].var() > 5 * var  # still hot early on


def test_divergence_raises_with_advice():
    energy = lambda x: 0.5 * 10.0 * x.square().sum(-1)
    with pytest.raises(SamplerDivergedError, match="step_size.*clip_grad"):
        langevin(energy, torch.ones(4, 2), 2000, 1.0, generator=gen(0))  # |1 - h a| = 9
    with pytest.raises(SamplerDivergedError, match="between steps 0 and 100.*4 of 4 chains"):
        langevin(energy, torch.ones(4, 2), 2000, 1.0, generator=gen(0))
    # a finite start where the energy is not finite: the chain cannot start
    undefined = lambda x: torch.log(-x.sum(-1))
    with pytest.raises(SamplerDivergedError, match="in x0"):
        langevin(undefined, torch.ones(2, 2), 5, 0.1)
    # a NaN start is bad input, not a diverged chain
    with pytest.raises(ValueError, match="x0 contains NaN"):
        langevin(energy, torch.full((2, 2), float("nan")), 5, 0.1)


def test_seeding_and_dtype():
    energy = lambda x: 0.5 * x.square().sum(-1)
    a = langevin(energy, torch.zeros(8, 3), 20, 0.1, method="mala", generator=gen(11))
    b = langevin(energy, torch.zeros(8, 3), 20, 0.1, method="mala", generator=gen(11))
    assert torch.equal(a.x, b.x)
    torch.manual_seed(5)
    c = langevin(energy, torch.zeros(8, 3), 20, 0.1)
    torch.manual_seed(5)
    d = langevin(energy, torch.zeros(8, 3), 20, 0.1)
    assert torch.equal(c.x, d.x) and c.x.dtype == torch.float32
    e = langevin(
        lambda x: 0.5 * x.square().sum((-1, -2)),
        torch.zeros(8, 2, 2, dtype=F64),
        5,
        0.1,
        generator=gen(1),
    )
    assert e.x.shape == (8, 2, 2) and e.x.dtype == F64 and e.energy.shape == (8,)
    with torch.no_grad():  # works inside no_grad (e.g. a validation step)
        langevin(energy, torch.zeros(4, 2), 3, 0.1)


def test_bad_arguments():
    energy = lambda x: 0.5 * x.square().sum(-1)
    x0 = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="method"):
        langevin(energy, x0, 5, 0.1, method="hmc")
    with pytest.raises(ValueError, match="step_size"):
        langevin(energy, x0, 5, -0.1)
    with pytest.raises(ValueError, match="step_size must be finite"):
        langevin(energy, x0, 5, torch.tensor([0.1, float("inf"), 0.1, 0.1]))
    with pytest.raises(ValueError, match="temperature"):
        langevin(energy, x0, 5, 0.1, method="mala", temperature=0.0)
    with pytest.raises(ValueError, match="shape"):
        langevin(lambda x: x.sum(), x0, 5, 0.1)
    with pytest.raises(ValueError, match="anneal"):
        langevin(energy, x0, 5, 0.1, anneal={"temperature": [1.0, 2.0]})
    with pytest.raises(ValueError, match="anneal"):
        langevin(energy, x0, 5, 0.1, anneal={"beta": [1.0] * 5})
    with pytest.raises(ValueError, match="clip_grad"):
        langevin(energy, x0, 5, 0.1, clip_grad=0.0)
    with pytest.raises(TypeError, match="x0"):
        langevin(energy, torch.zeros(4, 2, dtype=torch.long), 5, 0.1)


def test_mala_rejects_proposals_outside_the_support_without_error():
    # E = x^2 / 2 on (-1, 1), +inf outside: a truncated normal. Proposals that leave the
    # support have infinite energy and must be rejected, not reported as divergence.
    def energy(x):
        x = x[:, 0]
        return torch.where(x.abs() < 1, 0.5 * x**2, torch.full_like(x, float("inf")))

    n = 8000
    out = langevin(energy, torch.zeros(n, 1, dtype=F64), 60, 0.5, method="mala", generator=gen(3))
    xs = out.x[:, 0]
    assert (xs.abs() < 1).all()
    # N(0, 1) truncated to (-1, 1): moments by quadrature; se of the variance from mu_4
    z = norm.cdf(1) - norm.cdf(-1)
    var = integrate.quad(lambda t: t**2 * norm.pdf(t), -1, 1)[0] / z
    mu4 = integrate.quad(lambda t: t**4 * norm.pdf(t), -1, 1)[0] / z
    assert abs(xs.var() - var) < 4 * math.sqrt((mu4 - var**2) / n)
