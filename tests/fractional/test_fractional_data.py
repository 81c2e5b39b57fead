"""fOU paths (exact fBM + pathwise solution) and stochastic moving digits."""

from __future__ import annotations

import math

import scipy.integrate as si
import torch

from probgen.data.digits import load_digits_tensors
from probgen.data.fou import FOUBridge, FOUPaths, simulate_fou
from probgen.data.moving_digits import MovingDigits, make_moving_digits


def test_fou_with_theta_zero_is_scaled_fbm():
    n = 4000
    times, x = simulate_fou(n, 0.3, theta=0.0, sigma=0.5, horizon=2.0, n_obs=4,
                            generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(times, torch.tensor([0.5, 1.0, 1.5, 2.0], dtype=torch.float64))
    exact = 0.25 * times ** 0.6
    assert ((x.pow(2).mean(0) - exact).abs() <= 4 * exact * math.sqrt(2 / n)).all()


def test_fou_variance_matches_quadrature_of_the_pathwise_solution():
    # Var X(t) = s^2 [R(t,t) - 2 th int_0^t e^{-th(t-u)} R(u,t) du + th^2 iint e^{-th(2t-u-v)} R(u,v) du dv]
    hurst, theta, sigma, t = 0.7, 1.5, 1.0, 1.0
    R = lambda a, b: 0.5 * (a ** (2 * hurst) + b ** (2 * hurst) - abs(a - b) ** (2 * hurst))
    single = si.quad(lambda u: math.exp(-theta * (t - u)) * R(u, t), 0, t)[0]
    double = si.dblquad(lambda v, u: math.exp(-theta * (2 * t - u - v)) * R(u, v), 0, t, 0, t)[0]
    exact = sigma**2 * (R(t, t) - 2 * theta * single + theta**2 * double)
    n = 6000
    _, x = simulate_fou(n, hurst, theta, sigma, horizon=t, n_obs=2, fine=64,
                        generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    var = float(x[:, -1].pow(2).mean())
    assert abs(var - exact) < 4 * exact * math.sqrt(2 / n)


def test_fou_datamodules_shapes():
    dm = FOUPaths(num_train=8, num_val=4, num_test=4, n_obs=10, batch_size=4)
    dm.setup()
    values, times = next(iter(dm.train_dataloader()))
    assert values.shape == (4, 10, 1) and times.shape == (4, 10) and (times > 0).all()
    bridge = FOUBridge(num_paths=64, batch_size=32)
    v, t = next(iter(bridge.train_dataloader()))
    assert v.shape == (32, 1, 1) and torch.all(t == 2.0) and torch.all(v == 0.0)


def test_moving_digits_keep_the_digit_inside_the_canvas():
    idx = torch.tensor([0, 5, 9])
    videos = make_moving_digits(3, 10, 16, speed=2.0, velocity_noise=0.5,
                                generator=torch.Generator().manual_seed(0), digit_indices=idx)
    assert videos.shape == (3, 10, 16, 16)
    assert videos.min() >= 0 and videos.max() <= 1
    pixels, _ = load_digits_tensors()
    # bilinear translation inside the canvas conserves the digit's total intensity
    mass = (pixels[idx] / 16).sum(-1)
    assert torch.allclose(videos.sum((-1, -2)), mass[:, None].expand(3, 10), rtol=1e-5)
    # the digit moves
    assert (videos[:, 1:] - videos[:, :-1]).abs().sum() > 0


def test_moving_digits_datamodule_is_reproducible():
    a = MovingDigits(num_train=4, num_val=2, num_test=2, num_frames=5, seed=3)
    b = MovingDigits(num_train=4, num_val=2, num_test=2, num_frames=5, seed=3)
    a.setup()
    b.setup()
    assert torch.equal(a.splits["train"][0], b.splits["train"][0])
    assert torch.allclose(a.splits["train"][1][0], torch.arange(5) * 0.1)
