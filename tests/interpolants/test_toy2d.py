"""Toy 2-D densities: supports, normalisation, moments, closed-form scores, the DataModule."""

import math

import pytest
import torch

from probgen.data.toy2d import (
    DENSITIES,
    Checkerboard,
    GaussianMixture,
    Pinwheel,
    Rings,
    Toy2D,
    TwoMoons,
    make_density,
)


def grid(bound=6.0, n=241):
    xs = torch.linspace(-bound, bound, n, dtype=torch.float64)
    X = torch.stack(torch.meshgrid(xs, xs, indexing="ij"), -1).reshape(-1, 2)
    return X, float(xs[1] - xs[0]) ** 2


@pytest.mark.parametrize("name", ["eight_gaussians", "gmm", "rings", "two_moons", "pinwheel"])
def test_log_prob_integrates_to_one(name):
    X, h = grid()  # spacing 0.05 = half the smallest noise scale: the Riemann sum is spectrally accurate
    density = TwoMoons(num_nodes=256) if name == "two_moons" else make_density(name)
    total = float(density.log_prob(X).exp().sum() * h)
    tol = 2e-3 if density.log_prob_is_exact else 2e-2
    assert abs(total - 1.0) < tol


def test_checkerboard_support_and_entropy():
    d = Checkerboard()
    x = d.sample(20000, torch.Generator().manual_seed(0)).double()
    f = torch.floor(x)
    assert ((f.sum(-1) % 2) == 0).all() and (x.abs() <= 4).all()
    torch.testing.assert_close(d.log_prob(x), torch.full((20000,), -math.log(32.0), dtype=torch.float64))
    off = torch.tensor([[0.5, -0.5], [4.5, 0.5], [-3.5, -2.5]], dtype=torch.float64)  # light, outside, light
    assert torch.isinf(d.log_prob(off)).all()
    assert d.entropy() == pytest.approx(math.log(32))
    # each of the 32 squares gets 1/32 of the mass (4 s.e.)
    counts = torch.bincount(((f[:, 0] + 4) * 8 + (f[:, 1] + 4)).long(), minlength=64).double()
    dark = counts[counts > 0]
    assert len(dark) == 32
    p = 1 / 32
    assert ((dark / 20000 - p).abs() < 4 * math.sqrt(p * (1 - p) / 20000)).all()


def test_gaussian_mixture_moments_and_score():
    d = make_density("gmm")
    n = 40000
    x = d.sample(n, torch.Generator().manual_seed(1)).double()
    mean = (d.weights[:, None] * d.means).sum(0)
    second = (d.weights[:, None, None] * (d.covs + d.means[:, :, None] * d.means[:, None, :])).sum(0)
    cov = second - mean[:, None] * mean[None, :]
    se = torch.sqrt(torch.diagonal(cov) / n)
    assert ((x.mean(0) - mean).abs() < 4 * se).all()
    # score = grad log p
    y = x[:50].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(d.log_prob(y).sum(), y)
    torch.testing.assert_close(d.score(x[:50]), g)


def test_rings_matches_quadrature():
    r = Rings()
    x = r.sample(200, torch.Generator().manual_seed(2)).double()
    phi = (torch.arange(4096, dtype=torch.float64) + 0.5) * 2 * math.pi / 4096
    circ = torch.stack([torch.cos(phi), torch.sin(phi)], -1)
    nodes = torch.cat([rad * circ for rad in r.radii])
    d2 = torch.cdist(x, nodes).pow(2)
    quad = torch.logsumexp(-d2 / (2 * r.noise**2), -1) - math.log(len(nodes)) - math.log(2 * math.pi * r.noise**2)
    torch.testing.assert_close(r.log_prob(x), quad, atol=1e-6, rtol=0)


def test_two_moons_quadrature_converged():
    d = TwoMoons()
    x = d.sample(300, torch.Generator().manual_seed(3)).double()
    fine = TwoMoons(num_nodes=16384).log_prob(x)
    assert (d.log_prob(x) - fine).abs().max() < 1e-4


def test_pinwheel_grid_fallback_is_flagged_and_close():
    p = Pinwheel()
    assert not p.log_prob_is_exact
    # the histogram density of fresh samples in a coarse bin agrees with the grid's mass there
    x = p.sample(100000, torch.Generator().manual_seed(4)).double()
    lp = p.log_prob(x)
    assert torch.isfinite(lp).all()
    # cross-entropy of samples ~ entropy: the grid estimate and a Monte Carlo estimate agree
    assert abs(float(-lp.mean()) - p.entropy(num_samples=100000)) < 0.02


def test_toy2d_datamodule_splits_and_determinism():
    dm = Toy2D(name="two_moons", n_train=3000, n_val=500, n_test=700, batch_size=256, seed=5)
    dm.setup()
    assert dm.splits["train"][0].shape == (3000, 2)
    assert dm.splits["test"][0].shape == (700, 2)
    dm2 = Toy2D(name="two_moons", n_train=3000, n_val=500, n_test=700, batch_size=256, seed=5)
    dm2.setup()
    torch.testing.assert_close(dm.splits["val"][0], dm2.splits["val"][0])
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch, (list, tuple)) and batch[0].shape == (256, 2)
    assert len(dm.train_dataloader()) == 3000 // 256


def test_bad_arguments():
    with pytest.raises(ValueError, match="density name must be one of"):
        make_density("spiral")
    with pytest.raises(ValueError, match="n_train"):
        Toy2D(n_train=0)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        Checkerboard().sample(0)
    with pytest.raises(ValueError, match="shape"):
        Checkerboard().log_prob(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="stds"):
        GaussianMixture([[0.0, 0.0]], stds=[-1.0])
    assert set(DENSITIES) == {"checkerboard", "eight_gaussians", "gmm", "two_moons", "rings", "pinwheel"}
