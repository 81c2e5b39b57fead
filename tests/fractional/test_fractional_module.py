"""The Lightning modules: one step, gradients to the Hurst index, checkpoints, sampling."""

from __future__ import annotations

import io

import pytest
import torch

from probgen.fractional import FractionalSDE, LatentFractionalSDE


def test_fractional_sde_step_learns_hurst_and_theta():
    torch.manual_seed(0)
    model = FractionalSDE(n_ou=3, gamma_max=10.0, horizon=1.0, hurst=0.5, learn_theta=True, theta=0.5,
                          context="next_obs", dt=0.05)
    values = torch.randn(4, 5, 1).cumsum(1) * 0.3
    times = torch.linspace(0.2, 1.0, 5).expand(4, 5)
    loss = model.training_step((values, times), 0)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.sde.hurst_raw.grad is not None and model.sde.hurst_raw.grad != 0
    assert model.sde.theta.grad is not None
    out = model.elbo(values, times)
    assert out["xs"].shape == (6, 4, 1) and out["elbo"].shape == (4,)


def test_fractional_sde_checkpoint_state_loads_weights_only():
    model = FractionalSDE(n_ou=2, gamma_max=5.0, dt=0.05)
    buf = io.BytesIO()
    torch.save({"state_dict": model.state_dict(), "hparams": dict(model.hparams)}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    clone = FractionalSDE(**ckpt["hparams"])
    clone.load_state_dict(ckpt["state_dict"])
    assert clone.sde.hurst.item() == pytest.approx(model.sde.hurst.item())


def test_bridge_sample_is_posterior_and_starts_at_x0():
    model = FractionalSDE(n_ou=2, gamma_max=5.0, horizon=2.0, dt=0.05, sample_points=11, x0=0.5)
    paths = model.sample(7, generator=torch.Generator().manual_seed(0))
    assert paths.shape == (7, 11, 1) and torch.all(paths[:, 0] == 0.5)
    with pytest.raises(ValueError, match="num_samples"):
        model.sample(0)


@pytest.mark.parametrize("white", [False, True])
def test_latent_fractional_sde_forward_and_prediction(white):
    torch.manual_seed(0)
    model = LatentFractionalSDE(latent_dim=2, n_ou=3, gamma_max=5.0, horizon=0.5, white=white, hidden=16,
                                context_dim=4, content_dim=4, control_hidden=8, dt=0.05, num_cond_frames=3,
                                frame_size=9)
    videos = torch.rand(2, 6, 9, 9)
    times = (torch.arange(6) * 0.1).expand(2, 6)
    out = model.forward_video(videos, times)
    assert out["recon"].shape == videos.shape and torch.isfinite(out["elbo"]).all()
    loss = model.training_step((videos, times), 0)
    loss.backward()
    if not white:
        assert model.sde.hurst_raw.grad is not None
    pred = model.forward_video(videos, times, num_cond=3)
    assert pred["recon"].shape == videos.shape
    assert model.sample(2, num_frames=4).shape == (2, 4, 9, 9)


def test_control_switched_off_after_control_until_gives_zero_kl():
    model = FractionalSDE(n_ou=2, gamma_max=5.0, dt=0.05)
    with torch.no_grad():
        model.sde.control.net[-1].bias.fill_(1.0)  # a non-zero control
        x0 = torch.zeros(3, 1)
        ts = torch.tensor([0.0, 1.0])
        _, _, kl_on = model.sde.simulate(x0, ts, 0.05)
        _, _, kl_off = model.sde.simulate(x0, ts, 0.05, control_until=-1.0)
    assert torch.allclose(kl_on, torch.full((3,), 0.5)) and torch.equal(kl_off, torch.zeros(3))


def test_affine_control_is_zero_at_init_and_affine_in_the_state():
    from probgen.fractional import ControlNet

    net = ControlNet(dim=2, n_ou=3, context_dim=3, hidden=8, kind="affine", gammas=torch.tensor([0.1, 1.0, 10.0]))
    t = torch.tensor(0.3)
    x, y, c = torch.randn(5, 2), torch.randn(5, 2, 3), torch.randn(5, 3)
    assert torch.equal(net(t, x, y, c), torch.zeros(5, 2))
    torch.nn.init.normal_(net.net[-1].weight)
    u1, u2, u0 = net(t, 2 * x, 2 * y, c), net(t, x, y, c), net(t, 0 * x, 0 * y, c)
    # affine in (x, y) for a fixed context: u(2s) - u(0) = 2 (u(s) - u(0))
    assert torch.allclose(u1 - u0, 2 * (u2 - u0), atol=1e-5)
    with pytest.raises(ValueError, match="control kind"):
        ControlNet(dim=1, n_ou=1, kind="gru")


def test_latent_model_with_the_learnt_variance_family_has_the_closed_form_kl():
    # at initialisation u = 0 and log kappa^2 = -softplus(-2) on every step: the path KL is, in closed form,
    # steps * d * (kappa^2 - 1 - log kappa^2) / 2; prediction switches the transition off (prior, KL 0)
    # after the conditioning frames
    torch.manual_seed(0)
    model = LatentFractionalSDE(latent_dim=2, n_ou=3, gamma_max=5.0, horizon=0.5, hidden=16, context_dim=4,
                                content_dim=4, control_hidden=8, dt=0.05, num_cond_frames=3, frame_size=9,
                                transition="gaussian").double()
    videos = torch.rand(2, 6, 9, 9, dtype=torch.float64)
    times = (torch.arange(6, dtype=torch.float64) * 0.1).expand(2, 6)
    lv = -torch.nn.functional.softplus(torch.tensor(-2.0, dtype=torch.float64))
    per_step = 0.5 * 2 * (torch.exp(lv) - 1 - lv)
    out = model.forward_video(videos, times)
    assert torch.allclose(out["kl_path"], torch.full((2,), 10 * float(per_step), dtype=torch.float64), atol=1e-12)
    pred = model.forward_video(videos, times, num_cond=3)  # on for the steps from t <= 0.2: 5 steps
    assert torch.allclose(pred["kl_path"], torch.full((2,), 5 * float(per_step), dtype=torch.float64), atol=1e-12)
    model.training_step((videos, times), 0).backward()
    assert model.sde.hurst_raw.grad is not None
    with pytest.raises(ValueError, match="transition"):
        LatentFractionalSDE(transition="guided")
