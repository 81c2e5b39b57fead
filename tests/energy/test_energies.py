"""Composition algebra against closed-form Gaussians; Langevin on a composite."""


import math

import pytest
import torch

from probgen.energy import (
    ConditionalMLPEnergy,
    ConvEnergy,
    Energy,
    MLPEnergy,
    QuadraticEnergy,
    SoftMinEnergy,
    SumEnergy,
    build_energy,
    log_partition_grid,
)
from probgen.samplers import langevin

DT = torch.float64


def _gauss(mean, precision):
    return QuadraticEnergy(len(mean), mean=torch.tensor(mean, dtype=DT), precision=torch.tensor(precision, dtype=DT)).double()


def _mvn_log_prob(x, mean, precision):
    return torch.distributions.MultivariateNormal(mean, precision_matrix=precision).log_prob(x)


E1 = ([1.0, -0.5], [[2.0, 0.6], [0.6, 1.0]])
E2 = ([-0.5, 0.8], [[1.0, -0.3], [-0.3, 3.0]])


def _product_params(w1=1.0, w2=1.0):
    P1, P2 = torch.tensor(E1[1], dtype=DT), torch.tensor(E2[1], dtype=DT)
    m1, m2 = torch.tensor(E1[0], dtype=DT), torch.tensor(E2[0], dtype=DT)
    P = w1 * P1 + w2 * P2
    return torch.linalg.solve(P, w1 * P1 @ m1 + w2 * P2 @ m2), P


@pytest.mark.parametrize("weights", [(1.0, 1.0), (2.0, -0.2)])
def test_weighted_sum_is_the_normalised_product_density(weights):
    """w1 E1 + w2 E2 of two Gaussians is N(P^-1 (w1 P1 m1 + w2 P2 m2), P^-1), P = w1 P1 + w2 P2 (w2 < 0: negation)."""
    e1, e2 = _gauss(*E1), _gauss(*E2)
    w1, w2 = weights
    composite = e1 + e2 if weights == (1.0, 1.0) else w1 * e1 - (-w2) * e2
    assert isinstance(composite, SumEnergy) and len(composite.terms) == 2
    mean, P = _product_params(w1, w2)
    log_z = log_partition_grid(composite, -9.0, 9.0, num_points=600)
    x = torch.randn(50, 2, dtype=DT, generator=torch.Generator().manual_seed(0))
    log_p = -composite(x) - log_z
    assert torch.allclose(log_p, _mvn_log_prob(x, mean, P), atol=1e-6)


def test_softmin_disjunction_is_the_mixture_and_tends_to_min():
    e1, e2 = _gauss(*E1), _gauss(*E2)
    mix = SoftMinEnergy([e1, e2], temperature=1.0, weights=[0.3, 0.7])
    # exp(-E) = 0.3 exp(-E1) + 0.7 exp(-E2): Z = 0.3 Z1 + 0.7 Z2 exactly
    z_exact = 0.3 * e1.log_partition().exp() + 0.7 * e2.log_partition().exp()
    assert abs(log_partition_grid(mix, -9.0, 9.0, num_points=600) - z_exact.log()) < 1e-6
    x = torch.randn(100, 2, dtype=DT, generator=torch.Generator().manual_seed(1)) * 2
    cold = SoftMinEnergy([e1, e2], temperature=1e-3)
    assert torch.allclose(cold(x), torch.minimum(e1(x), e2(x)), atol=1e-2)
    with pytest.raises(ValueError, match="temperature"):
        SoftMinEnergy([e1, e2], temperature=0.0)


def test_condition_gives_the_gaussian_conditional():
    e = _gauss(*E1)
    m, P = torch.tensor(E1[0], dtype=DT), torch.tensor(E1[1], dtype=DT)
    a = 0.7
    cond = e.condition([0], torch.tensor([a], dtype=DT))
    assert cond.event_shape == (1,)
    # x1 | x0 = a ~ N(m1 - P10 (a - m0) / P11, 1 / P11)
    mean_c = m[1] - P[1, 0] * (a - m[0]) / P[1, 1]
    y = torch.linspace(-3, 3, 11, dtype=DT)[:, None]
    log_p = -cond(y) - log_partition_grid(cond, -12.0, 12.0, num_points=4000)
    exact = torch.distributions.Normal(mean_c, P[1, 1].rsqrt()).log_prob(y[:, 0])
    assert torch.allclose(log_p, exact, atol=1e-6)
    with pytest.raises(ValueError, match="index"):
        e.condition([0, 1], torch.zeros(2))


def test_langevin_samples_a_composite_within_monte_carlo_error():
    """MALA on E1 + E2 (product of experts): mean and covariance of the product Gaussian, 4 s.e."""
    torch.manual_seed(0)
    composite = _gauss(*E1) + _gauss(*E2)
    mean, P = _product_params()
    cov = torch.linalg.inv(P)
    n = 4000
    gen = torch.Generator().manual_seed(2)
    out = langevin(composite, torch.randn(n, 2, dtype=DT, generator=gen), steps=300, step_size=0.15, method="mala", generator=gen)
    x = out.x
    assert out.mean_acceptance > 0.5
    se_mean = (cov.diagonal() / n).sqrt()
    assert ((x.mean(0) - mean).abs() < 4 * se_mean).all(), (x.mean(0), mean)
    emp = torch.cov(x.T)
    # s.e. of a sample covariance entry: sqrt((S_ij^2 + S_ii S_jj) / n)
    se_cov = ((cov**2 + torch.outer(cov.diagonal(), cov.diagonal())) / n).sqrt()
    assert ((emp - cov).abs() < 4 * se_cov).all(), (emp, cov)


def test_energies_shapes_builders_and_errors():
    torch.manual_seed(0)
    mlp = MLPEnergy(2, hidden=16, depth=2, envelope=0.1)
    conv = ConvEnergy(side=8, channels=4)
    assert mlp(torch.randn(5, 2)).shape == (5,)
    assert conv(torch.rand(3, 64)).shape == (3,)
    assert ConvEnergy(side=8, channels=4, flat=False)(torch.rand(3, 1, 8, 8)).shape == (3,)
    cond = ConditionalMLPEnergy(2, num_classes=3, hidden=8, depth=1)
    y = torch.tensor([2, 2])
    x = torch.randn(2, 2)
    assert torch.allclose(cond.given(2)(x), cond(x, y))
    e = build_energy({"kind": "sum", "terms": [{"kind": "mlp", "dim": 2, "hidden": 8, "depth": 1}, {"kind": "quadratic", "dim": 2}], "weights": [1.0, 0.5]})
    assert isinstance(e, SumEnergy) and torch.allclose(e.weights, torch.tensor([1.0, 0.5]))
    s = build_energy({"kind": "softmin", "temperature": 0.5, "terms": [{"kind": "quadratic", "dim": 2}] * 2})
    assert isinstance(s, SoftMinEnergy) and s(x).shape == (2,)
    # nested sums flatten, builtin sum works, negation weights multiply through
    a, b, c = QuadraticEnergy(2), QuadraticEnergy(2), QuadraticEnergy(2)
    total = sum([a, b, c])
    assert len(total.terms) == 3
    neg = -(a + 2.0 * b)
    assert neg.weights.tolist() == [-1.0, -2.0]
    assert torch.allclose(neg(x), -(a(x) + 2 * b(x)))
    # score = -grad E
    q = QuadraticEnergy(2, mean=[1.0, 0.0])
    assert torch.allclose(q.score(x), -(x - q.mean))
    with pytest.raises(ValueError, match="event_shape"):
        a + QuadraticEnergy(3)
    with pytest.raises(ValueError, match="shape"):
        mlp(torch.randn(4, 3))
    with pytest.raises(ValueError, match="kind"):
        build_energy({"kind": "rbm"})
    with pytest.raises(ValueError, match="precision"):
        QuadraticEnergy(2, precision=[[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(ValueError, match="activation"):
        MLPEnergy(2, activation="relu6")
    assert isinstance(total, Energy)


def test_fourier_features_are_sin_cos_of_a_fixed_gaussian_projection():
    from probgen.energy import MLPEnergy

    e = MLPEnergy(2, hidden=8, depth=1, fourier_features=16, fourier_scale=2.0, fourier_seed=3).double()
    B = e.fourier_matrix
    assert B.shape == (16, 2) and torch.equal(B, MLPEnergy(2, fourier_features=16, fourier_scale=2.0, fourier_seed=3).fourier_matrix.double())
    assert abs(float(B.std()) - 2.0) < 4 * 2.0 / math.sqrt(2 * 32)  # s.e. of a sample std of 32 normals
    x = torch.randn(5, 2, dtype=torch.float64)
    phi = e.features(x)
    assert torch.allclose(phi, torch.cat([x, torch.sin(2 * math.pi * x @ B.T), torch.cos(2 * math.pi * x @ B.T)], -1))
    assert e(x).shape == (5,) and "fourier_matrix" in e.state_dict()
    assert torch.autograd.gradcheck(e, (x.requires_grad_(True),))
    with pytest.raises(ValueError, match="fourier_features"):
        MLPEnergy(2, fourier_features=-1)
    with pytest.raises(ValueError, match="fourier_scale"):
        MLPEnergy(2, fourier_features=4, fourier_scale=0.0)
    with pytest.raises(ValueError, match="dim"):
        MLPEnergy(0)


def test_conv_energy_tilted_against_a_mixture_gradients_in_float64():
    """The digits model p ~ q exp(-E_conv): shapes, gradcheck of E_conv + NoiseEnergy(q) in x and in
    the conv weights (float64), and its score equals -grad E_conv + grad log q of the mixture in closed form."""
    from probgen.energy import GaussianMixtureNoise, NoiseEnergy

    torch.manual_seed(0)
    conv = ConvEnergy(side=4, channels=2, envelope=0.1).double()
    gen = torch.Generator().manual_seed(1)
    data = torch.rand(40, 16, generator=gen, dtype=torch.float64)
    q = GaussianMixtureNoise(16, num_components=2, diagonal=True, min_var=1e-2).double().fit(data)
    model = conv + NoiseEnergy(q)
    x = torch.rand(3, 16, generator=gen, dtype=torch.float64, requires_grad=True)
    assert model(x).shape == (3,) and model(x).dtype == torch.float64
    assert torch.autograd.gradcheck(model, (x,))
    w = conv.head.weight
    assert torch.autograd.gradcheck(lambda weight: torch.func.functional_call(conv, {"head.weight": weight}, (x.detach(),)), (w.detach().clone().requires_grad_(True),))
    # score of the mixture in closed form: sum_k r_k(x) * (mu_k - x) / var_k
    xd = x.detach()
    mu, var = q.locs, q.scale_trils.diagonal(dim1=-2, dim2=-1).pow(2)
    log_r = torch.log_softmax(q._component_log_prob(xd) + torch.log_softmax(q.logits, 0), -1)
    score_q = (log_r.exp()[..., None] * (mu[None] - xd[:, None]) / var[None]).sum(1)
    assert torch.allclose(model.score(xd), conv.score(xd) + score_q, atol=1e-8)
