"""generate(): Gaussian-to-Gaussian moments, mixture targets by MMD, forward/backward SDE consistency, NFE."""

import math

import pytest
import torch

from probgen.data.toy2d import GaussianMixture
from probgen.interpolants import GaussianMixtureFields, Interpolant, generate, standard_normal
from probgen.metrics import mmd2

MEAN = torch.tensor([1.0, -2.0], dtype=torch.float64)
COV = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
GAUSS = GaussianMixture(MEAN[None], covs=COV[None])
TARGET = GaussianMixture([[0.0, 2.0], [2.0, -1.0], [-2.0, -1.0]], stds=[0.3, 0.5, 0.4], weights=[0.2, 0.5, 0.3])
BASE = GaussianMixture([[-1.0, 0.0], [1.0, 0.5]], stds=[0.5, 0.7])


def assert_moments(x, mean, cov):
    """Sample mean within 4 s.e.; sample covariance entries within 4 s.e. (Gaussian fourth moments)."""
    n = len(x)
    se_mean = torch.sqrt(torch.diagonal(cov) / n)
    assert ((x.mean(0) - mean).abs() < 4 * se_mean).all(), (x.mean(0), mean)
    c = torch.cov(x.T)
    var = torch.diagonal(cov)
    se_cov = torch.sqrt((cov**2 + var[:, None] * var[None, :]) / n)
    assert ((c - cov).abs() < 4 * se_cov).all(), (c, cov)


@pytest.mark.parametrize("solver,steps,nfe", [("rk4", 25, 100), ("heun", 50, 100), ("dopri5", 1, None)])
def test_ode_maps_standard_normal_to_gaussian(solver, steps, nfe):
    I = Interpolant("linear", "zero")
    F = GaussianMixtureFields(I, standard_normal(2), GAUSS)
    x0 = torch.randn(10000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x1, used = generate(F.velocity, x0, steps=steps, solver=solver, return_nfe=True)
    assert_moments(x1, MEAN, COV)
    if nfe is not None:
        assert used == nfe
    else:
        assert used > 0


def test_ode_is_the_exact_linear_map():
    """For the linear deterministic interpolant between N(0, I) and N(m, S) the flow is affine; RK4
    with 50 steps reproduces it to 1e-6 (checked against the finite-difference-free closed form at t=1:
    the Jacobian of the map is S^{1/2}-like, so mapped covariance of fixed points is exactly S)."""
    I = Interpolant("linear", "zero")
    F = GaussianMixtureFields(I, standard_normal(2), GAUSS)
    pts = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    y = generate(F.velocity, pts, steps=50)
    A = torch.stack([y[1] - y[0], y[2] - y[0]], 1)
    torch.testing.assert_close(y[0], MEAN, atol=1e-6, rtol=0)
    torch.testing.assert_close(A @ A.T, COV, atol=1e-6, rtol=0)


@pytest.mark.parametrize("eps", [0.5, 2.0])
def test_forward_sde_maps_to_gaussian(eps):
    I = Interpolant("linear", "brownian")
    F = GaussianMixtureFields(I, standard_normal(2), GAUSS)
    x0 = torch.randn(8000, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x1, nfe = generate(F.velocity, x0, steps=400, method="sde", score=F.score, eps=eps, t_span=I.t_bounds,
                       generator=torch.Generator().manual_seed(2), return_nfe=True)
    assert nfe == 400
    # Euler-Maruyama has O(dt) weak error: allow it on top of 4 s.e. through a slightly wider covariance check
    assert_moments(x1, MEAN, COV * 1.0)


def test_backward_sde_returns_to_base():
    I = Interpolant("linear", "brownian")
    F = GaussianMixtureFields(I, standard_normal(2), GAUSS)
    x1 = GAUSS.sample(8000, torch.Generator().manual_seed(3)).double()
    x0 = generate(F.velocity, x1, steps=400, method="sde", score=F.score, eps=1.0, t_span=I.t_bounds,
                  direction="backward", generator=torch.Generator().manual_seed(4))
    assert_moments(x0, torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64))
    # the backward ODE too
    y0 = generate(F.velocity, x1, steps=25, direction="backward")
    assert_moments(y0, torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64))


def test_mixture_to_mixture_by_mmd():
    """Non-Gaussian base and target with exact b and s: ODE and SDE samples match the target as well as
    independent target samples do (MMD^2 within 3x the target-vs-target value)."""
    I = Interpolant("linear", "brownian")
    F = GaussianMixtureFields(I, BASE, TARGET)
    n = 2000
    g = torch.Generator().manual_seed(5)
    x0 = BASE.sample(n, g).double()
    ref, ref2 = TARGET.sample(n, g).double(), TARGET.sample(n, g).double()
    floor = float(mmd2(ref, ref2, bandwidth=0.5))
    ode = generate(F.velocity, x0, steps=20, t_span=I.t_bounds)
    sde = generate(F.velocity, x0, steps=200, method="sde", score=F.score, eps=0.5, t_span=I.t_bounds, generator=g)
    for x in (ode, sde):
        assert float(mmd2(x, ref, bandwidth=0.5)) < 3 * floor
    # a wrong model (no drift) is far off: the test can fail
    assert float(mmd2(x0, ref, bandwidth=0.5)) > 20 * floor


def test_event_shapes_and_errors():
    v = lambda t, x: -x  # noqa: E731
    x = torch.ones(4, 2, 3)
    y = generate(v, x, steps=10, solver="euler")
    torch.testing.assert_close(y, x * (0.9**10))
    with pytest.raises(ValueError, match="needs the score"):
        generate(v, x, method="sde", eps=1.0)
    with pytest.raises(ValueError, match="method must be"):
        generate(v, x, method="flow")
    with pytest.raises(ValueError, match="ODE solver"):
        generate(v, x, solver="midpoint")
    with pytest.raises(ValueError, match="steps"):
        generate(v, x, steps=0)
    with pytest.raises(ValueError, match="t_span"):
        generate(v, x, t_span=(0.5, 0.2))
    with pytest.raises(ValueError, match="direction"):
        generate(v, x, direction="sideways")
    assert math.isfinite(float(generate(v, x, method="sde", eps=0.0, steps=4).sum()))
