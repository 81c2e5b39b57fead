"""Sampler options of generate(): time grids, the EDM second-order sampler, last-step denoising."""

import math

import numpy as np
import pytest
import torch

from probgen.interpolants import generate
from probgen.interpolants.generate import time_grid


def test_edm_grid_closed_form():
    g = time_grid("edm", 0.0, 1.0, 4, rho=7.0)
    # sigma_i = (1 - i/4)^7 on [0, 1]: t_i = 1 - (1 - i/4)^7
    expected = [1 - (1 - i / 4) ** 7 for i in range(5)]
    np.testing.assert_allclose(g, expected, rtol=0, atol=1e-15)
    assert g[0] == 0.0 and g[-1] == 1.0 and all(b > a for a, b in zip(g[:-1], g[1:]))
    assert time_grid("uniform", 0.2, 0.6, 2) == pytest.approx([0.2, 0.4, 0.6])
    with pytest.raises(ValueError, match="increase strictly"):
        time_grid([0.0, 0.5, 0.4, 1.0], 0.0, 1.0, 3)
    with pytest.raises(ValueError, match="time_grid must be one of"):
        time_grid("log", 0.0, 1.0, 3)


def test_euler_on_a_custom_grid_is_the_product_formula():
    """dx/dt = a x: Euler on the grid t_0 < ... < t_N gives x_0 prod_i (1 + a h_i) exactly."""
    a = -1.3
    grid = [0.0, 0.1, 0.35, 0.5, 0.9, 1.0]
    x0 = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    out, nfe = generate(lambda t, x: a * x, x0, method="ode", solver="euler", grid=grid, return_nfe=True)
    factor = math.prod(1 + a * (b - c) for c, b in zip(grid[:-1], grid[1:]))
    torch.testing.assert_close(out, x0 * factor, rtol=1e-14, atol=0)
    assert nfe == 5
    back = generate(lambda t, x: a * x, x0, method="ode", solver="euler", grid=grid, direction="backward")
    torch.testing.assert_close(back, x0 * math.prod(1 - a * (b - c) for c, b in zip(grid[:-1], grid[1:])), rtol=1e-14, atol=0)


def test_edm_sampler_is_second_order():
    """Heun on the EDM grid for dx/dt = cos(3t) x (exact: x0 exp(sin(3t)/3)): error slope 2 in N."""
    f = lambda t, x: torch.cos(3 * t)[:, None] * x  # noqa: E731
    x0 = torch.ones(1, 1, dtype=torch.float64)
    exact = math.exp(math.sin(3.0) / 3)
    ns = [8, 16, 32, 64]
    errs = [abs(float(generate(f, x0, steps=n, solver="edm", rho=3.0)) - exact) for n in ns]
    slope = -np.polyfit(np.log(ns), np.log(errs), 1)[0]
    assert abs(slope - 2.0) < 0.25, (slope, errs)


def test_denoise_last_removes_the_final_noise():
    """b = 0, s = 0, eps constant: X_1 - X_0 ~ N(0, 2 eps (1 - h_last)) with the last step noiseless."""
    n, eps, steps = 20000, 0.5, 4
    x0 = torch.zeros(n, 1, dtype=torch.float64)
    zero = lambda t, x: torch.zeros_like(x)  # noqa: E731
    out = generate(zero, x0, steps=steps, method="sde", score=zero, eps=eps, denoise_last=True,
                   generator=torch.Generator().manual_seed(0))
    var, target = float(out.var()), 2 * eps * (1 - 1 / steps)
    assert abs(var - target) < 4 * target * math.sqrt(2 / n)
    full = generate(zero, x0, steps=steps, method="sde", score=zero, eps=eps, generator=torch.Generator().manual_seed(0))
    assert abs(float(full.var()) - 2 * eps) < 4 * 2 * eps * math.sqrt(2 / n)
    with pytest.raises(ValueError, match="denoise_last"):
        generate(zero, x0, denoise_last=True)


def test_diffusion_schedule_forms_closed_form():
    """SiT-style eps(t) families: values against their formulas, and 'sbdm' on the VP path equals half the
    VP SDE's squared diffusion beta_s(1 - t) / 2 (the score-based-diffusion SDE)."""
    import math

    from probgen.interpolants import Interpolant
    from probgen.interpolants.generate import EPS_FORMS, diffusion_schedule

    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    n = 0.7
    torch.testing.assert_close(diffusion_schedule("constant", n)(t), torch.full_like(t, n))
    torch.testing.assert_close(diffusion_schedule("linear", n)(t), n * (1 - t))
    torch.testing.assert_close(diffusion_schedule("vanishing", n)(t), n * (1 - t))
    torch.testing.assert_close(diffusion_schedule("decreasing", n)(t), 0.25 * (n * torch.cos(math.pi * t) + 1) ** 2)
    torch.testing.assert_close(diffusion_schedule("increasing_decreasing", n)(t), n * torch.sin(math.pi * t) ** 2)
    vp = Interpolant("vp", "zero")
    torch.testing.assert_close(diffusion_schedule("sbdm", 1.0, vp)(t), 0.5 * (0.1 + (20.0 - 0.1) * (1 - t)))
    lin = Interpolant("one_sided_linear", "zero")
    torch.testing.assert_close(diffusion_schedule("sigma", n, lin)(t), n * (1 - t))
    # one-sided linear: alpha^2 beta'/beta - alpha alpha' = (1 - t)^2 / t + (1 - t) = (1 - t) / t
    torch.testing.assert_close(diffusion_schedule("sbdm", 1.0, lin)(t), (1 - t) / t)
    two = Interpolant("linear", "brownian")
    torch.testing.assert_close(diffusion_schedule("sigma", n, two)(t), n * torch.sqrt(t * (1 - t)))
    assert set(EPS_FORMS) >= {"constant", "sigma", "sbdm", "linear", "decreasing", "increasing_decreasing"}
    with pytest.raises(ValueError, match="diffusion form"):
        diffusion_schedule("cosine", 1.0)
    with pytest.raises(ValueError, match="norm"):
        diffusion_schedule("constant", -1.0)
    with pytest.raises(ValueError, match="needs the interpolant"):
        diffusion_schedule("sigma", 1.0)
    with pytest.raises(ValueError, match="one-sided"):
        diffusion_schedule("sbdm", 1.0, two)


def _gaussian_target_fields():
    from probgen.data.toy2d import GaussianMixture
    from probgen.interpolants import GaussianMixtureFields, Interpolant, standard_normal

    interp = Interpolant("one_sided_linear", "zero")
    return interp, GaussianMixtureFields(interp, standard_normal(1), GaussianMixture([[1.5]], stds=torch.tensor([0.3])))


def test_churn_renoise_keeps_the_marginal():
    """The churn move x_t -> x_that keeps the interpolant's law: from exact draws of rho_t it gives
    N(beta(that) m, alpha(that)^2 + beta(that)^2 s^2), checked within 4 standard errors."""
    import importlib

    gen = importlib.import_module("probgen.interpolants.generate")
    interp, fields = _gaussian_target_fields()
    g = torch.Generator().manual_seed(3)
    n, t, th = 40_000, 0.6, 0.35
    x = fields.sample(t, n, generator=g)
    y = gen._one_sided_renoise(interp)(x, t, th, g)
    mean, var = 1.5 * th, (1 - th) ** 2 + th**2 * 0.09
    assert abs(float(y.mean()) - mean) < 4 * math.sqrt(var / n)
    assert abs(float(y.var()) - var) < 4 * var * math.sqrt(2.0 / n)
    back = gen.churn_back_times(interp, [0.0, 0.25, 0.5, 0.75, 1.0], churn=1.2)
    # sigma = (1 - t) / t raised by (1 + min(1.2 / 4, sqrt 2 - 1)) = 1.3; t = 0 (sigma infinite) is not churned
    assert back[0] == 0.0
    for t_i, tb in zip([0.25, 0.5, 0.75], back[1:]):
        assert abs((1 - tb) / tb - 1.3 * (1 - t_i) / t_i) < 1e-9


def test_edm_churn_sampler_reaches_the_target():
    """EDM's stochastic sampler on exact fields for a Gaussian target: churn = 0 is the deterministic EDM
    sampler (identical output), and with churn the samples' mean and variance match N(1.5, 0.3^2)."""
    interp, fields = _gaussian_target_fields()
    g = torch.Generator().manual_seed(4)
    n = 20_000
    x0 = torch.randn(n, 1, generator=g, dtype=torch.float64)
    plain = generate(fields.velocity, x0, steps=32, solver="edm")
    same = generate(fields.velocity, x0, steps=32, solver="edm", churn=0.0, interpolant=interp)
    torch.testing.assert_close(plain, same, rtol=0, atol=0)
    out, nfe = generate(fields.velocity, x0, steps=32, solver="edm", churn=10.0, interpolant=interp, generator=g, return_nfe=True)
    assert nfe == 64 and not torch.equal(out, plain)
    assert abs(float(out.mean()) - 1.5) < 4 * 0.3 / math.sqrt(n)
    assert abs(float(out.var()) - 0.09) < 4 * 0.09 * math.sqrt(2.0 / n)
    with pytest.raises(ValueError, match="solver='edm'"):
        generate(fields.velocity, x0, steps=8, solver="heun", churn=1.0, interpolant=interp)
    with pytest.raises(ValueError, match="interpolant"):
        generate(fields.velocity, x0, steps=8, solver="edm", churn=1.0)
    with pytest.raises(ValueError, match="churn"):
        generate(fields.velocity, x0, steps=8, solver="edm", churn=-1.0, interpolant=interp)
