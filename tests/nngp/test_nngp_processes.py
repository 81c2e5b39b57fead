"""Student-t process and scale mixtures against closed forms and numerical integrals."""

import math

import numpy as np
import pytest
import torch
from pyro.distributions import MultivariateStudentT
from scipy import integrate, stats
from torch.distributions import Gamma, HalfCauchy, InverseGamma, LogNormal

from probgen.exceptions import NotPositiveDefiniteError
from probgen.nngp import BurrXII, GaussianProcess, NNGPKernel, ScaleMixtureGP, StudentTProcess

D = torch.float64


def _data(n=25, d=3, seed=0, outputs=None):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=D)
    f = torch.sin(x.sum(-1, keepdim=True) * torch.arange(1, (outputs or 1) + 1, dtype=D))
    y = 1.5 * f + 0.2 * torch.randn(f.shape, generator=gen, dtype=D)
    xs = torch.randn(6, d, generator=gen, dtype=D)
    return x, (y[:, 0] if outputs is None else y), xs


def _kernel():
    return NNGPKernel(2, "relu", weight_var=1.8, bias_var=0.1).double()


def _numpy_parts(kernel, x, y, xs, noise):
    """Everything the scale sees, by numpy linear algebra (independent of the process code)."""
    with torch.no_grad():
        K = kernel(x).to_dense().numpy()
        Ks = kernel(x, xs).to_dense().numpy()
        Kss = kernel(xs).to_dense().numpy()
    Ky = K + noise * np.eye(len(K))
    mean = Ks.T @ np.linalg.solve(Ky, y.numpy())
    var = np.diag(Kss - Ks.T @ np.linalg.solve(Ky, Ks))
    return Ky, mean, var


def test_student_t_predictive_equals_numerical_gaussian_mixture_integral():
    x, y, xs = _data()
    alpha, beta, noise = 2.5, 1.5, 0.05
    kernel = _kernel()
    tp = StudentTProcess(kernel, alpha, beta, noise=noise).fit(x, y)
    Ky, mean, var = _numpy_parts(kernel, x, y, xs, noise)
    # posterior of sigma^2 by brute force: p(y | s2) p(s2) on a numerical integral
    yn = y.numpy()

    def log_joint(s2):
        return (stats.multivariate_normal.logpdf(yn, cov=s2 * Ky)
                + stats.invgamma.logpdf(s2, alpha, scale=beta))

    s2_hat = yn @ np.linalg.solve(Ky, yn) / len(yn)
    shift = log_joint(s2_hat)
    joint = lambda s2: math.exp(log_joint(s2) - shift)
    z = integrate.quad(joint, 0, np.inf, points=None, limit=200)[0]
    for observed in (False, True):
        pred = tp.predict(xs, observed=observed)
        ys = torch.as_tensor(mean + np.array([-2.0, -0.5, 0.0, 0.3, 1.0, 3.0]) * np.sqrt(var + noise), dtype=D)
        ours = pred.log_prob(ys).detach().numpy()
        for i in range(len(ys)):
            v = var[i] + (noise if observed else 0.0)
            dens = integrate.quad(
                lambda s2: joint(s2) * stats.norm.pdf(ys[i].item(), mean[i], math.sqrt(s2 * v)), 0, np.inf, limit=200
            )[0] / z
            assert abs(ours[i] - math.log(dens)) < 1e-6


def test_student_t_marginal_likelihood_is_multivariate_t_with_shared_scale():
    for outputs in (None, 3):
        x, y, _ = _data(n=12, outputs=outputs, seed=1)
        alpha, beta, noise = 1.7, 0.9, 0.1
        kernel = _kernel()
        tp = StudentTProcess(kernel, alpha, beta, noise=noise).fit(x, y)
        with torch.no_grad():
            Ky = kernel(x).to_dense() + noise * torch.eye(12, dtype=D)
        C = 1 if outputs is None else outputs
        big = torch.kron(torch.eye(C, dtype=D), Ky)  # vec(y) stacks the outputs
        vec = y.reshape(-1) if outputs is None else y.T.reshape(-1)
        ref = MultivariateStudentT(torch.tensor(2 * alpha, dtype=D), torch.zeros(12 * C, dtype=D),
                                   torch.linalg.cholesky(beta / alpha * big)).log_prob(vec)
        assert torch.allclose(tp.log_marginal_likelihood(), ref, rtol=1e-10, atol=1e-9)
        assert torch.allclose(tp.predict(x[:4]).df, torch.tensor(2 * alpha + 12 * C, dtype=D), rtol=1e-14)


def test_student_t_tends_to_gaussian_process():
    x, y, xs = _data(seed=2)
    ratio = 0.8  # beta / alpha fixed: the prior scale of the GP limit
    gp = GaussianProcess(_kernel(), scale=ratio, noise=0.02).fit(x, y)
    ref_dist = gp.predict(xs, observed=True)
    ys = ref_dist.loc + torch.linspace(-3, 3, 6, dtype=D) * ref_dist.scale  # t - normal = O(z^4 / dof)
    ref = ref_dist.log_prob(ys)
    errs = []
    for alpha in (1e2, 1e4, 1e6):
        tp = StudentTProcess(_kernel(), alpha, ratio * alpha, noise=0.02).fit(x, y)
        errs.append((tp.predict(xs, observed=True).log_prob(ys) - ref).abs().max().item())
    # the difference is O(1/alpha): 100x smaller per 100x larger alpha
    assert errs[2] < 1e-3 and errs[0] / errs[1] > 50 and errs[1] / errs[2] > 50
    tp = StudentTProcess(_kernel(), 1e8, ratio * 1e8, noise=0.02).fit(x, y)
    assert torch.allclose(tp.log_marginal_likelihood(), gp.log_marginal_likelihood(), atol=1e-5)


def test_quadrature_with_inverse_gamma_prior_reproduces_closed_form():
    x, y, xs = _data(outputs=2, seed=3)
    alpha, beta = 2.0, 3.0
    tp = StudentTProcess(_kernel(), alpha, beta, noise=0.03).fit(x, y)
    prior = InverseGamma(torch.tensor(alpha, dtype=D), torch.tensor(beta, dtype=D))
    sm = ScaleMixtureGP(_kernel(), prior, noise=0.03, num_nodes=128).fit(x, y)
    assert torch.allclose(sm.log_marginal_likelihood(), tp.log_marginal_likelihood(), rtol=0, atol=1e-9)
    assert sm.posterior.quadrature_error < 1e-9
    ys = torch.randn(6, 2, dtype=D, generator=torch.Generator().manual_seed(0))
    for observed in (False, True):
        assert torch.allclose(sm.predict(xs, observed).log_prob(ys), tp.predict(xs, observed).log_prob(ys), atol=1e-9)
    post = tp.posterior_scale()
    assert sm.posterior.mean().item() == pytest.approx(post.mean.item(), rel=1e-9)


def test_importance_sampling_within_monte_carlo_error():
    x, y, xs = _data(seed=4)
    alpha, beta = 3.0, 2.0
    tp = StudentTProcess(_kernel(), alpha, beta, noise=0.05).fit(x, y)
    sm = ScaleMixtureGP(_kernel(), InverseGamma(torch.tensor(alpha, dtype=D), torch.tensor(beta, dtype=D)),
                        noise=0.05, method="importance", num_samples=4000,
                        generator=torch.Generator().manual_seed(0)).fit(x, y)
    post = sm.posterior
    S = sm.num_samples
    # relative standard error of the evidence estimate from the normalised weights
    rel_se = math.sqrt(max(S / post.ess - 1.0, 0.0) / S)
    assert abs(post.log_evidence.item() - tp.log_marginal_likelihood().item()) < 4 * rel_se
    assert 10 < post.ess <= S
    # same generator seed, same estimate
    again = ScaleMixtureGP(_kernel(), sm.prior, noise=0.05, method="importance", num_samples=4000,
                           generator=torch.Generator().manual_seed(0)).fit(x, y)
    assert torch.equal(again.posterior.log_scale, post.log_scale)


def test_general_priors_against_scipy_quadrature():
    x, y, xs = _data(n=15, seed=5)
    kernel = _kernel()
    sm = ScaleMixtureGP(kernel, BurrXII(2.0, 1.5), noise=0.05).fit(x, y)
    Ky, mean, var = _numpy_parts(kernel, x, y, xs, 0.05)
    yn = y.numpy()
    base = sm.base_predict(xs)
    priors = {
        "burr": (BurrXII(2.0, 1.5), lambda s: stats.burr12.logpdf(s, 2.0, 1.5)),
        "lognormal": (LogNormal(0.0, 1.0), lambda s: stats.lognorm.logpdf(s, 1.0)),
        "halfcauchy": (HalfCauchy(1.0), lambda s: stats.halfcauchy.logpdf(s)),
        "gamma": (Gamma(2.0, 2.0), lambda s: stats.gamma.logpdf(s, 2.0, scale=0.5)),
    }
    for name, (prior, scipy_logpdf) in priors.items():
        def integrand(s2, extra=lambda s2: 1.0):
            return math.exp(stats.multivariate_normal.logpdf(yn, cov=s2 * Ky) + scipy_logpdf(s2) + 20.0) * extra(s2)

        z = integrate.quad(integrand, 0, np.inf, limit=400)[0]
        assert sm.log_marginal_likelihood(prior).item() == pytest.approx(math.log(z) - 20.0, abs=1e-6), name
        y0 = mean[0] + 0.7
        dens = integrate.quad(lambda s2: integrand(s2, lambda s: stats.norm.pdf(y0, mean[0], math.sqrt(s * var[0]))),
                              0, np.inf, limit=400)[0] / z
        ours = sm.predict_from_base(base, prior=prior).log_prob(torch.full((6,), y0, dtype=D))[0].item()
        assert ours == pytest.approx(math.log(dens), abs=1e-6), name
        assert sm.scale_posterior(prior).quadrature_error < 1e-6


def test_marginal_likelihood_gradients_match_finite_differences():
    x, y, _ = _data(n=10, seed=6)
    kernel = _kernel()
    tp = StudentTProcess(kernel, 2.0, 1.0, noise=0.1)
    sm = ScaleMixtureGP(_kernel(), BurrXII(2.0, 2.0), noise=0.1)
    for process in (tp, sm):
        names = [n for n, _ in process.named_parameters()]
        start = tuple(p.detach().clone().requires_grad_(True) for _, p in process.named_parameters())

        def lml(*params):
            for p_name, value in zip(names, params):
                _set(process, p_name, value)
            return process.fit(x, y).log_marginal_likelihood()

        assert torch.autograd.gradcheck(lml, start, atol=1e-6)


def _set(module, dotted, value):
    *path, last = dotted.split(".")
    for p in path:
        module = getattr(module, p)
    delattr(module, last)
    setattr(module, last, value)


def test_burr_xii_matches_scipy():
    d = BurrXII(torch.tensor(2.5, dtype=D), torch.tensor(1.5, dtype=D), torch.tensor(0.7, dtype=D))
    v = torch.tensor([0.01, 0.3, 1.0, 4.0, 50.0], dtype=D)
    ref = stats.burr12(2.5, 1.5, scale=0.7)
    assert np.allclose(d.log_prob(v).numpy(), ref.logpdf(v.numpy()), rtol=1e-12)
    assert np.allclose(d.cdf(v).numpy(), ref.cdf(v.numpy()), rtol=1e-12)
    u = torch.tensor([0.01, 0.5, 0.99], dtype=D)
    assert np.allclose(d.icdf(u).numpy(), ref.ppf(u.numpy()), rtol=1e-10)
    assert d.mean.item() == pytest.approx(ref.mean(), rel=1e-10)
    torch.manual_seed(0)
    s = d.sample((20000,))
    # Kolmogorov-Smirnov at ~4 standard errors
    assert stats.kstest(s.numpy(), ref.cdf).statistic < 4 * 0.87 / math.sqrt(20000) * 1.5


def test_errors():
    x, y, xs = _data(n=8)
    with pytest.raises(RuntimeError, match="fit"):
        StudentTProcess(_kernel()).predict(xs)
    with pytest.raises(ValueError, match="y must have shape"):
        StudentTProcess(_kernel()).fit(x, y[:5])
    with pytest.raises(ValueError, match="alpha"):
        StudentTProcess(_kernel(), alpha=-1.0)
    with pytest.raises(ValueError, match="method"):
        ScaleMixtureGP(_kernel(), LogNormal(0.0, 1.0), method="mcmc")
    with pytest.raises(TypeError, match="prior"):
        ScaleMixtureGP(_kernel(), prior=2.0)

    class Negative(torch.nn.Module):
        def forward(self, a, b=None):
            return -torch.eye(len(a), dtype=a.dtype)

        def __call__(self, a, b=None, diag=False):
            return _Dense(-torch.eye(len(a), dtype=a.dtype))

    with pytest.raises(NotPositiveDefiniteError, match="jitter"):
        StudentTProcess(Negative()).fit(x, y)


class _Dense:
    def __init__(self, t):
        self.t = t

    def to_dense(self):
        return self.t


def test_shared_factorisation_and_vectorised_prior_grid():
    x, y, xs = _data(seed=7)
    kernel = _kernel()
    tp = StudentTProcess(kernel, noise=0.07).fit(x, y)
    base = tp.base_predict(xs)
    a = torch.tensor([[0.5, 2.0], [4.0, 8.0]], dtype=D)
    b = torch.tensor([[1.0, 0.5], [2.0, 8.0]], dtype=D)
    ys = torch.linspace(-1, 1, 6, dtype=D)
    grid = tp.predict_from_base(base, True, alpha=a, beta=b).log_prob(ys)
    assert grid.shape == (2, 2, 6)
    for i in range(2):
        for j in range(2):
            single = StudentTProcess(kernel, a[i, j].item(), b[i, j].item(), noise=0.07).fit(x, y)
            assert torch.allclose(grid[i, j], single.predict(xs, observed=True).log_prob(ys), atol=1e-12)
    sm = ScaleMixtureGP(kernel, LogNormal(0.0, 1.0), noise=0.5).share_fit(tp)
    assert sm.noise.item() == pytest.approx(0.07)
    ref = ScaleMixtureGP(kernel, LogNormal(0.0, 1.0), noise=0.07).fit(x, y)
    assert torch.allclose(sm.predict(xs, True).log_prob(ys), ref.predict(xs, True).log_prob(ys), atol=1e-12)
    with pytest.raises(ValueError, match="same kernel"):
        ScaleMixtureGP(_kernel(), LogNormal(0.0, 1.0)).share_fit(tp)


def _regression_data(n, m, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n + m, 4, generator=g, dtype=torch.float64)
    y = torch.sin(x[:, 0]) + 0.5 * x[:, 1] + 0.1 * torch.randn(n + m, generator=g, dtype=torch.float64)
    return x[:n], y[:n], x[n:], y[n:]


@pytest.mark.parametrize("cls", [GaussianProcess, StudentTProcess])
def test_iterative_solver_agrees_with_cholesky(cls):
    # CG + stochastic Lanczos (linear_operator's inv_quad_logdet) against the exact factor: the
    # evidence within 0.01 nats per point (16 probes; the log-det estimate is the stochastic part),
    # predictive means and variances to the CG tolerance
    x, y, xt, _ = _regression_data(400, 50)
    out = {}
    for solver in ("cholesky", "iterative"):
        kernel = NNGPKernel(2, "relu", weight_var=2.0, bias_var=0.1).double()
        proc = cls(kernel, noise=0.05, solver=solver).double()
        lml = proc.fit(x, y).log_marginal_likelihood()
        (grad,) = torch.autograd.grad(lml, kernel.raw_weight_var)
        pred = proc.predict(xt, observed=True)
        out[solver] = (lml.item() / len(y), grad.item() / len(y), pred.mean, pred.variance, proc.stats.chol)
    exact, iterative = out["cholesky"], out["iterative"]
    assert iterative[4] is None and exact[4] is not None  # the iterative path made no factor
    assert abs(exact[0] - iterative[0]) < 0.01
    assert abs(exact[1] - iterative[1]) < 0.05 * abs(exact[1]) + 0.01
    assert torch.allclose(exact[2], iterative[2], rtol=0, atol=1e-3)
    assert torch.allclose(exact[3], iterative[3], rtol=1e-3, atol=1e-4)
    # the same probes at every call: a deterministic objective
    kernel = NNGPKernel(2, "relu", weight_var=2.0, bias_var=0.1).double()
    proc = cls(kernel, noise=0.05, solver="iterative").double()
    with torch.no_grad():
        assert proc.fit(x, y).log_marginal_likelihood().item() == proc.fit(x, y).log_marginal_likelihood().item()


def test_auto_solver_threshold_and_options():
    x, y, _, _ = _regression_data(60, 0)
    kernel = NNGPKernel(1, "relu").double()
    assert StudentTProcess(kernel, noise=0.1).fit(x, y).stats.chol is not None
    proc = StudentTProcess(kernel, noise=0.1, solver_options={"threshold": 50}).fit(x, y)
    assert proc.stats.chol is None
    with pytest.raises(ValueError, match="solver"):
        GaussianProcess(kernel, solver="lanczos")
    with pytest.raises(ValueError, match="unknown keys"):
        GaussianProcess(kernel, solver_options={"tolerance": 1e-3})


def test_iterative_gradient_with_recomputed_kernel_equals_the_dense_operator():
    # the one-buffer kernel operator changes memory, not the estimator: with the same fixed-seed
    # probes the evidence and every gradient equal those of a DenseLinearOperator of K (whose
    # gradient is the n x n matrix), including the preconditioner's control-variate term
    from linear_operator.operators import DenseLinearOperator

    x, y, _, _ = _regression_data(200, 0)
    out = []
    for dense in (False, True):
        kernel = NNGPKernel(2, "relu", weight_var=2.0, bias_var=0.1, block_size=50).double()
        proc = StudentTProcess(kernel, noise=0.05, solver="iterative").double()
        if dense:
            proc._kernel_operator = lambda x, k=kernel: DenseLinearOperator(k(x).to_dense())
        lml = proc.fit(x, y).log_marginal_likelihood()
        grads = torch.autograd.grad(lml, [kernel.raw_weight_var, kernel.raw_bias_var, proc.raw_noise])
        out.append(torch.cat([lml.reshape(1), *(g.reshape(-1) for g in grads)]))
    assert torch.allclose(out[0], out[1], rtol=1e-9, atol=1e-9)
