"""Objectives: each is minimised by its exact field; conversions between fields."""

import pytest
import torch

from probgen.data.toy2d import GaussianMixture
from probgen.interpolants import (
    GaussianMixtureFields,
    Interpolant,
    denoiser_from_score,
    make_objective,
    score_from_denoiser,
    score_from_velocity,
    standard_normal,
    velocity_from_denoiser,
    velocity_from_score,
    velocity_from_v_and_score,
)

TARGET = GaussianMixture([[0.0, 2.0], [2.0, -1.0], [-2.0, -1.0]], stds=[0.3, 0.5, 0.4], weights=[0.2, 0.5, 0.3])
BASE = GaussianMixture([[-1.0, 0.0], [1.0, 0.5]], stds=[0.5, 0.7])


def exact_fields(F: GaussianMixtureFields, kind: str):
    def fields(t, x):
        out = {"b": F.velocity(t, x), "v": F.mean_velocity(t, x), "s": F.score(t, x)}
        out["eta"] = F.eta0(t, x) if kind == "one_sided" else F.eta_z(t, x)
        return out

    return fields


def perturbed(fields, delta):
    return lambda t, x: {k: v + delta(t, x) for k, v in fields(t, x).items()}


CASES = [
    ("linear", "brownian", "velocity"),
    ("linear", "brownian", "velocity_score"),
    ("linear", "brownian", "velocity_denoiser"),
    ("trig", "quadratic", "score"),
    ("cos_sin", "sin2", "denoiser"),
    ("one_sided_linear", "zero", "velocity"),
    ("one_sided_linear", "zero", "score"),
    ("one_sided_linear", "zero", "denoiser"),
    ("mirror", "brownian", "denoiser"),
    ("mirror", "brownian", "score"),
]


@pytest.mark.parametrize("path,gamma,objective", CASES)
@pytest.mark.parametrize("antithetic", [False, True])
def test_exact_field_minimises_loss(path, gamma, objective, antithetic):
    """L(f + delta) - L(f) = E|delta|^2 * (number of heads) + a zero-mean cross term (common random numbers)."""
    I = Interpolant(path, gamma)
    base = standard_normal(2) if I.kind == "one_sided" else BASE
    F = GaussianMixtureFields(I, base, TARGET)
    obj = make_objective(objective, antithetic=antithetic)
    n = 4000
    g = torch.Generator().manual_seed(0)
    x1 = TARGET.sample(n, g).double()
    x0 = base.sample(n, g).double()
    lo, hi = I.t_bounds
    t = lo + (hi - lo) * (0.05 + 0.9 * torch.rand(n, generator=g, dtype=torch.float64))
    z = torch.randn(n, 2, generator=g, dtype=torch.float64)
    exact = exact_fields(F, I.kind)
    loss0, _ = obj.loss(exact, I, x0, x1, t, z=z.clone())
    for c in (0.3, -0.2):
        delta = lambda tt, xx, c=c: c * torch.stack([torch.sin(xx[:, 1]), torch.cos(xx[:, 0]) * tt], -1)  # noqa: E731
        loss1, _ = obj.loss(perturbed(exact, delta), I, x0, x1, t, z=z.clone())
        xt = I.sample(x0, x1, t, z=z).xt
        expected = len(obj.outputs) * delta(t, xt).pow(2).sum(-1).mean()
        assert float(loss1 - loss0) > 0
        # the cross term has mean zero; 4 standard errors of it bound the difference
        assert abs(float(loss1 - loss0 - expected)) < 0.5 * float(expected) + 0.05


def test_conversions_two_sided():
    I = Interpolant("linear", "brownian")
    F = GaussianMixtureFields(I, BASE, TARGET)
    x = TARGET.sample(50, torch.Generator().manual_seed(1)).double()
    t = torch.full((50,), 0.35, dtype=torch.float64)
    torch.testing.assert_close(velocity_from_v_and_score(I, t, F.mean_velocity(t, x), F.score(t, x)), F.velocity(t, x))
    torch.testing.assert_close(score_from_denoiser(I, t, F.eta_z(t, x)), F.score(t, x))
    torch.testing.assert_close(denoiser_from_score(I, t, F.score(t, x)), F.eta_z(t, x))
    with pytest.raises(ValueError, match="not a function of the denoiser"):
        velocity_from_denoiser(I, t, x, F.eta_z(t, x))
    with pytest.raises(ValueError, match="one-sided"):
        score_from_velocity(I, t, x, F.velocity(t, x))


@pytest.mark.parametrize("path", ["one_sided_linear", "one_sided_trig", "vp"])
def test_conversions_one_sided(path):
    I = Interpolant(path, "zero")
    F = GaussianMixtureFields(I, standard_normal(2), TARGET)
    x = torch.randn(50, 2, dtype=torch.float64)
    t = torch.full((50,), 0.6, dtype=torch.float64)
    torch.testing.assert_close(score_from_velocity(I, t, x, F.velocity(t, x)), F.score(t, x))
    torch.testing.assert_close(velocity_from_denoiser(I, t, x, F.eta0(t, x)), F.velocity(t, x))
    torch.testing.assert_close(velocity_from_score(I, t, x, F.score(t, x)), F.velocity(t, x))
    torch.testing.assert_close(score_from_denoiser(I, t, F.eta0(t, x)), F.score(t, x))


def test_conversions_mirror():
    I = Interpolant("mirror", "brownian")
    F = GaussianMixtureFields(I, standard_normal(2), TARGET)
    x = torch.randn(50, 2, dtype=torch.float64)
    t = torch.full((50,), 0.3, dtype=torch.float64)
    torch.testing.assert_close(velocity_from_score(I, t, x, F.score(t, x)), F.velocity(t, x))
    torch.testing.assert_close(velocity_from_denoiser(I, t, x, F.eta_z(t, x)), F.velocity(t, x))


@pytest.mark.parametrize("objective", ["velocity", "score", "denoiser", "velocity_score", "velocity_denoiser"])
def test_objective_drift_and_score_wiring(objective):
    I = Interpolant("one_sided_linear", "zero") if objective in ("score", "denoiser") else Interpolant("linear", "brownian")
    base = standard_normal(2) if I.kind == "one_sided" else BASE
    F = GaussianMixtureFields(I, base, TARGET)
    obj = make_objective(objective)
    x = torch.randn(20, 2, dtype=torch.float64)
    t = torch.full((20,), 0.4, dtype=torch.float64)
    fields = exact_fields(F, I.kind)
    torch.testing.assert_close(obj.velocity(fields, I)(t, x), F.velocity(t, x))
    s = obj.score(fields, I)
    if objective == "velocity":
        assert s is None  # two-sided with gamma != 0: b alone does not give s
    else:
        torch.testing.assert_close(s(t, x), F.score(t, x))


def test_antithetic_reduces_score_loss_variance_near_small_gamma():
    I = Interpolant("linear", "brownian")
    F = GaussianMixtureFields(I, BASE, TARGET)
    fields = exact_fields(F, I.kind)
    n = 1000
    g = torch.Generator().manual_seed(3)
    x0, x1 = BASE.sample(n, g).double(), TARGET.sample(n, g).double()
    t = torch.full((n,), 2e-3, dtype=torch.float64)
    variances = {}
    for anti in (False, True):
        vals = []
        for k in range(10):
            z = torch.randn(n, 2, generator=g, dtype=torch.float64)
            vals.append(float(make_objective("score", antithetic=anti).loss(fields, I, x0, x1, t, z=z)[0]))
        variances[anti] = torch.tensor(vals).var()
    assert variances[True] < 0.1 * variances[False]


def test_bad_objective():
    with pytest.raises(ValueError, match="objective must be one of"):
        make_objective("flow")
    with pytest.raises(ValueError, match="does not identify b"):
        make_objective("score").velocity(lambda t, x: {}, Interpolant("linear", "brownian"))
