"""LaplaceGPClassifier against dense closed forms, scikit-learn's binary Laplace GPC and finite differences."""

import math

import pytest
import torch
from torch.distributions import InverseGamma, LogNormal

from probgen.exceptions import ProbgenNumericalError
from probgen.nngp import LaplaceGPClassifier, NNGPKernel

D = torch.float64


def _data(n=12, C=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, dtype=D, generator=g)
    labels = torch.randint(0, C, (n,), generator=g)
    return x, labels


def _dense_psi(f_vec, K_big, Y, n, C):
    F = f_vec.reshape(C, n).T  # class-major stacking
    return -0.5 * f_vec @ torch.linalg.solve(K_big, f_vec) + (Y * F).sum() - torch.logsumexp(F, -1).sum()


def test_mode_evidence_and_predictive_match_dense_formulas():
    """R&W eq. 3.32-3.44 written with the full (nC x nC) matrices: W = diag(pi) - Pi Pi^T is singular,
    so the covariance uses K** - K*^T (I + W K)^-1 W K* and the evidence log|I + K W|."""
    n, C, s = 12, 3, 2.5
    x, labels = _data(n, C)
    kernel = NNGPKernel(1, "relu").double()
    clf = LaplaceGPClassifier(kernel, scale=s).fit(x, labels)
    mode = clf.modes[0]
    with torch.no_grad():
        K = s * kernel(x).to_dense()
    Y = torch.nn.functional.one_hot(labels, C).to(D)
    K_big = torch.block_diag(*[K] * C)
    f_vec = mode.f.T.reshape(-1).clone().requires_grad_()
    (grad,) = torch.autograd.grad(_dense_psi(f_vec, K_big, Y, n, C), f_vec)
    assert grad.abs().max() < 1e-8  # the mode is a stationary point of the dense objective

    pi = torch.softmax(mode.f, -1)
    Pi = torch.cat([torch.diag(pi[:, c]) for c in range(C)], 0)
    W = torch.diag(pi.T.reshape(-1)) - Pi @ Pi.T
    eye = torch.eye(n * C, dtype=D)
    log_q = _dense_psi(f_vec.detach(), K_big, Y, n, C) - 0.5 * torch.linalg.slogdet(eye + K_big @ W)[1]
    assert mode.log_evidence == pytest.approx(log_q.item(), abs=1e-9)

    xs = torch.randn(4, 2, dtype=D, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ks, kss = s * kernel(x, xs).to_dense(), s * kernel(xs, diag=True)
    Ks_big = torch.block_diag(*[ks] * C)
    mean = (Ks_big.T @ (Y - pi).T.reshape(-1)).reshape(C, 4).T
    cov = torch.block_diag(*[torch.diag(kss)] * C) - Ks_big.T @ torch.linalg.solve(eye + W @ K_big, W @ Ks_big)
    cov = torch.stack([cov.reshape(C, 4, C, 4)[:, j, :, j] for j in range(4)])
    log_w, mu, sigma = clf.predict_latent(xs)
    assert log_w.tolist() == [0.0]
    torch.testing.assert_close(mu[0], mean, atol=1e-10, rtol=0)
    torch.testing.assert_close(sigma[0], cov, atol=1e-10, rtol=0)


def test_binary_case_matches_scikit_learn_laplace():
    """Two softmax latents with kernel K each are a logistic GP on f_1 - f_0 with kernel 2K
    (the sum f_1 + f_0 is independent of the data), so evidence and mode equal sklearn's."""
    from gpytorch.kernels import RBFKernel
    from sklearn.gaussian_process import GaussianProcessClassifier
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel

    x, _ = _data(30, 2, seed=3)
    labels = (x[:, 0] + 0.5 * torch.randn(30, dtype=D, generator=torch.Generator().manual_seed(4)) > 0).long()
    kernel = RBFKernel().double()
    kernel.lengthscale = 0.7
    clf = LaplaceGPClassifier(kernel, scale=1.3).fit(x, labels)
    ref = GaussianProcessClassifier(ConstantKernel(2 * 1.3, "fixed") * RBF(0.7, "fixed"), optimizer=None)
    ref.fit(x.numpy(), labels.numpy())
    # sklearn stops Newton at |delta log q| < 1e-10 relative to its own objective
    assert clf.modes[0].log_evidence == pytest.approx(ref.log_marginal_likelihood_value_, abs=1e-6)
    diff = clf.modes[0].f[:, 1] - clf.modes[0].f[:, 0]
    torch.testing.assert_close(diff, torch.as_tensor(ref.base_estimator_.f_cached), atol=1e-6, rtol=0)


def test_class_probabilities_match_quadrature_in_the_binary_case():
    """p(y*=1) = E[sigmoid(d)], d = f_1 - f_0 Gaussian: Gauss-Hermite quadrature vs the Monte Carlo estimate."""
    x, labels = _data(20, 2, seed=5)
    clf = LaplaceGPClassifier(NNGPKernel(1, "erf").double(), scale=3.0).fit(x, labels)
    xs = torch.randn(6, 2, dtype=D, generator=torch.Generator().manual_seed(6))
    _, mu, cov = clf.predict_latent(xs)
    m = mu[0, :, 1] - mu[0, :, 0]
    v = cov[0, :, 0, 0] + cov[0, :, 1, 1] - 2 * cov[0, :, 0, 1]
    import numpy as np

    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    nodes, weights = torch.as_tensor(nodes), torch.as_tensor(weights) / math.sqrt(2 * math.pi)
    exact = (torch.sigmoid(m[:, None] + v.sqrt()[:, None] * nodes) * weights).sum(-1)
    S = 20000
    probs = clf.predict_proba(xs, num_samples=S, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(probs.sum(-1), torch.ones(6, dtype=D))
    tol = 4.0 * 0.5 / math.sqrt(S)  # 4 Monte Carlo standard errors (the sigmoid's std is at most 0.5)
    assert (probs[:, 1] - exact).abs().max() < tol


def test_scale_integral_matches_an_independent_fine_grid():
    """The adaptive trapezoid over log sigma^2 against a fine fixed grid of fixed-scale fits."""
    x, labels = _data(15, 3, seed=7)
    kernel = NNGPKernel(2, "relu").double()
    prior = InverseGamma(torch.tensor(2.0, dtype=D), torch.tensor(2.0, dtype=D))
    clf = LaplaceGPClassifier(kernel, prior=prior).fit(x, labels)
    post = clf.posterior
    t = torch.linspace(post.log_scale.min().item() - 3, post.log_scale.max().item() + 3, 121, dtype=D)
    g = torch.tensor([LaplaceGPClassifier(kernel, scale=math.exp(ti)).fit(x, labels).modes[0].log_evidence
                      + prior.log_prob(torch.tensor(ti, dtype=D).exp()).item() + ti for ti in t.tolist()], dtype=D)
    log_z = torch.logsumexp(g, 0) + math.log(t[1] - t[0])
    error = abs(post.log_evidence.item() - log_z.item())
    assert error < 1e-4
    assert error <= post.quadrature_error  # the reported estimate (step h against 2h) is conservative
    assert post.log_weights.exp().sum().item() == pytest.approx(1.0, abs=1e-12)


def test_concentrated_prior_reduces_to_the_fixed_scale_classifier():
    x, labels = _data(15, 3, seed=8)
    kernel = NNGPKernel(1, "relu").double()
    fixed = LaplaceGPClassifier(kernel, scale=2.0).fit(x, labels)
    mixed = LaplaceGPClassifier(kernel, prior=LogNormal(torch.tensor(math.log(2.0), dtype=D),
                                                        torch.tensor(1e-3, dtype=D))).fit(x, labels)
    xs = torch.randn(5, 2, dtype=D, generator=torch.Generator().manual_seed(9))
    p_fixed = fixed.predict_proba(xs, 4000, generator=torch.Generator().manual_seed(0))
    p_mixed = mixed.predict_proba(xs, 4000, generator=torch.Generator().manual_seed(0))
    # common random numbers and sigma^2 within 0.3% of 2: only the scale's spread separates them
    torch.testing.assert_close(p_mixed, p_fixed, atol=2e-3, rtol=0)
    assert mixed.posterior.mean().item() == pytest.approx(2.0, rel=5e-3)
    # a prior this narrow integrates to the evidence at its centre (the grid step follows its width)
    assert mixed.posterior.log_evidence.item() == pytest.approx(fixed.posterior.log_evidence.item(), abs=1e-3)
    assert mixed.posterior.quadrature_error < 1e-3


def test_float32_inputs_follow_the_float64_result():
    x, labels = _data(25, 3, seed=13)
    prior = InverseGamma(torch.tensor(2.0, dtype=D), torch.tensor(2.0, dtype=D))
    kernel = NNGPKernel(1, "relu")
    c64 = LaplaceGPClassifier(kernel.double(), prior=prior).fit(x, labels)
    log_z64 = c64.posterior.log_evidence.item()
    w64, mean64, _ = c64.predict_latent(x[:5])
    c32 = LaplaceGPClassifier(kernel.float(), prior=prior).fit(x.float(), labels)
    w32, mean32, _ = c32.predict_latent(x[:5].float())
    assert mean32.dtype == torch.float32
    assert c32.posterior.log_evidence.item() == pytest.approx(log_z64, rel=1e-5)
    # the mixture's predictive mean does not depend on where the grid nodes fall; float32
    # Newton stops at its own resolution (tol 16 eps ~ 2e-6 relative)
    mix64 = torch.einsum("k,kmc->mc", w64.exp(), mean64)
    mix32 = torch.einsum("k,kmc->mc", w32.exp().double(), mean32.double())
    torch.testing.assert_close(mix32, mix64, atol=1e-4, rtol=0)


def test_a_truncated_scale_grid_warns_and_widens_the_error():
    x, labels = _data(15, 3, seed=14)
    prior = InverseGamma(torch.tensor(2.0, dtype=D), torch.tensor(2.0, dtype=D))
    full = LaplaceGPClassifier(NNGPKernel(1, "relu").double(), prior=prior).fit(x, labels)
    with pytest.warns(RuntimeWarning, match="max_nodes"):
        cut = LaplaceGPClassifier(NNGPKernel(1, "relu").double(), prior=prior, max_nodes=2).fit(x, labels)
    assert len(cut.modes) == 5
    actual = abs(cut.posterior.log_evidence.item() - full.posterior.log_evidence.item())
    assert actual <= cut.posterior.quadrature_error


def test_type_two_maximum_likelihood_scale_is_a_maximum():
    x, labels = _data(20, 3, seed=10)
    kernel = NNGPKernel(1, "relu").double()
    clf = LaplaceGPClassifier(kernel, scale=None).fit(x, labels)
    t_hat = clf.modes[0].log_scale
    best = clf.modes[0].log_evidence
    for dt in (-0.2, 0.2):
        other = LaplaceGPClassifier(kernel, scale=math.exp(t_hat + dt)).fit(x, labels).modes[0].log_evidence
        assert other < best


@pytest.mark.parametrize("prior", [None, InverseGamma(torch.tensor(2.0, dtype=D), torch.tensor(1.0, dtype=D))])
def test_evidence_gradient_matches_finite_differences(prior):
    """The gradient is that of the quadrature rule with its nodes held fixed (a refit would move
    them, adding the rule's own aliasing error), so the finite differences keep the nodes too."""
    x, labels = _data(12, 3, seed=11)
    kernel = NNGPKernel(2, "erf").double()
    clf = LaplaceGPClassifier(kernel, prior=prior, scale=1.5, tol=1e-14).fit(x, labels)
    clf.log_marginal_likelihood().backward()
    nodes = clf.posterior.log_scale.tolist()
    step = nodes[1] - nodes[0] if len(nodes) > 1 else 1.0

    def log_evidence():
        log_q = torch.tensor([LaplaceGPClassifier(kernel, scale=math.exp(t), tol=1e-14).fit(x, labels)
                              .modes[0].log_evidence for t in nodes], dtype=D)
        if prior is None:
            return log_q[0].item()
        log_prior = torch.tensor([prior.log_prob(torch.tensor(t, dtype=D).exp()).item() + t for t in nodes], dtype=D)
        return (torch.logsumexp(log_q + log_prior, 0) + math.log(step)).item()

    assert log_evidence() == pytest.approx(clf.posterior.log_evidence.item(), abs=1e-9)
    eps = 1e-5
    for p in (kernel.raw_weight_var, kernel.raw_bias_var):
        grad = p.grad.item()
        with torch.no_grad():
            p.data += eps
            up = log_evidence()
            p.data -= 2 * eps
            down = log_evidence()
            p.data += eps
        assert grad == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-7)


def test_learns_a_separable_problem():
    g = torch.Generator().manual_seed(12)
    centres = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.5]], dtype=D)
    labels = torch.randint(0, 3, (90,), generator=g)
    x = centres[labels] + 0.6 * torch.randn(90, 2, dtype=D, generator=g)
    prior = InverseGamma(torch.tensor(2.0, dtype=D), torch.tensor(2.0, dtype=D))
    clf = LaplaceGPClassifier(NNGPKernel(2, "relu", bias_var=1.0).double(), prior=prior).fit(x[:60], labels[:60])
    probs = clf.predict_proba(x[60:], generator=torch.Generator().manual_seed(0))
    assert (probs.argmax(-1) == labels[60:]).double().mean() > 0.9
    far = clf.predict_proba(torch.tensor([[0.0, -30.0]], dtype=D), generator=torch.Generator().manual_seed(0))
    assert far.max() < probs.max(-1).values.median()  # less confident far from the data


def test_bad_input_is_rejected():
    kernel = NNGPKernel(1, "relu").double()
    x, labels = _data()
    with pytest.raises(ValueError, match="scale"):
        LaplaceGPClassifier(kernel, scale=-1.0)
    with pytest.raises(TypeError, match="prior"):
        LaplaceGPClassifier(kernel, prior="invgamma")
    with pytest.raises(ValueError, match="labels"):
        LaplaceGPClassifier(kernel, num_classes=3).fit(x, labels + 1)
    with pytest.raises(ValueError, match="labels"):
        LaplaceGPClassifier(kernel).fit(x, labels[:-1])
    with pytest.raises(RuntimeError, match="not fitted"):
        LaplaceGPClassifier(kernel).predict_proba(x)
    with pytest.raises(ValueError, match="num_samples"):
        LaplaceGPClassifier(kernel).fit(x, labels).predict_proba(x, num_samples=0)
    with pytest.raises(ValueError, match="non-empty"):
        LaplaceGPClassifier(kernel).fit(x[:0], labels[:0])
    with pytest.raises(TypeError, match="tensor"):
        LaplaceGPClassifier(kernel).fit(x, labels).predict_proba(x.tolist())


def test_non_convergence_raises_a_numerical_error():
    x, labels = _data()
    with pytest.raises(ProbgenNumericalError, match="max_iter"):
        LaplaceGPClassifier(NNGPKernel(1, "relu").double(), scale=50.0, max_iter=1).fit(x, labels)
