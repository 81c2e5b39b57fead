"""log Z estimates, noise distributions and the replay buffer."""

import math

import pytest
import torch

from probgen.energy import (
    GaussianMixtureNoise,
    GaussianNoise,
    QuadraticEnergy,
    ReplayBuffer,
    build_noise,
    log_likelihood,
    log_partition_grid,
    log_partition_importance,
)

DT = torch.float64


def test_importance_log_z_within_standard_error_and_ess():
    energy = QuadraticEnergy(2, mean=[0.5, -1.0], precision=[[2.0, 0.4], [0.4, 0.5]]).double()
    q = GaussianNoise(2, cov=[[2.0, 0.0], [0.0, 4.0]]).double()
    est = log_partition_importance(energy, q, num_samples=200_000, generator=torch.Generator().manual_seed(0))
    assert abs(est.log_z - energy.log_partition()) < 4 * est.std_err
    assert 1 < est.ess < est.num_samples
    # q proportional to the model: every weight equal, ESS = m, exact log Z
    exact_q = GaussianNoise(2, mean=[0.5, -1.0], cov=torch.linalg.inv(energy.precision.detach())).double()
    est = log_partition_importance(energy, exact_q, num_samples=1000, generator=torch.Generator().manual_seed(0))
    assert abs(est.ess - 1000) < 1e-6 and abs(est.log_z - energy.log_partition()) < 1e-9


def test_grid_log_z_one_and_two_dims():
    e1 = QuadraticEnergy(1, mean=[0.3], precision=4.0).double()
    assert abs(log_partition_grid(e1, -5, 5, 2000) - e1.log_partition()) < 1e-9
    e2 = QuadraticEnergy(2, mean=[0.3, 0.1], precision=[[1.0, 0.2], [0.2, 2.0]]).double()
    assert abs(log_partition_grid(e2, [-9, -8], [9, 8], 500) - e2.log_partition()) < 1e-8
    x = torch.zeros(3, 2, dtype=DT)
    assert torch.allclose(log_likelihood(e2, x, e2.log_partition()), -e2(x) - e2.log_partition())
    with pytest.raises(ValueError, match="event_shape"):
        log_partition_grid(QuadraticEnergy(3), -1, 1)
    with pytest.raises(ValueError, match="high > low"):
        log_partition_grid(e1, 1, -1)


def test_gaussian_noise_fit_and_log_prob():
    gen = torch.Generator().manual_seed(0)
    L = torch.tensor([[1.0, 0.0], [0.8, 0.5]], dtype=DT)
    x = torch.tensor([1.0, -2.0], dtype=DT) + torch.randn(20_000, 2, dtype=DT, generator=gen) @ L.T
    q = GaussianNoise(2, scale=1.5).double().fit(x)
    cov = L @ L.T
    assert ((q.loc - torch.tensor([1.0, -2.0], dtype=DT)).abs() < 4 * (cov.diagonal() / 20_000).sqrt()).all()
    assert torch.allclose(q.scale_tril @ q.scale_tril.T, 1.5**2 * torch.cov(x.T), rtol=1e-4)
    y = q.sample(7, gen)
    ref = torch.distributions.MultivariateNormal(q.loc, scale_tril=q.scale_tril).log_prob(y)
    assert torch.allclose(q.log_prob(y), ref)
    a = q.sample(5, torch.Generator().manual_seed(3))
    b = q.sample(5, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="scale"):
        GaussianNoise(2, scale=0.0)


def test_gaussian_mixture_noise_normalised_and_recovers_clusters():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[-3.0, 0.0], [3.0, 0.0], [0.0, 3.0]], dtype=DT)
    x = centres[torch.randint(3, (3000,), generator=gen)] + 0.3 * torch.randn(3000, 2, dtype=DT, generator=gen)
    q = build_noise("mixture", 2, num_components=3, iterations=50).double().fit(x)
    found = q.locs[torch.cdist(centres, q.locs).argmin(1)]
    assert (found - centres).abs().max() < 0.05
    # log_prob integrates to one (midpoint rule on a box holding the mass)
    g = torch.linspace(-7, 7, 401, dtype=DT)
    cell = (14 / 400) ** 2
    grid = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    assert abs(q.log_prob(grid).exp().sum() * cell - 1) < 1e-3
    s = q.sample(20_000, gen)
    assert (s.mean(0) - x.mean(0)).abs().max() < 0.1
    qd = GaussianMixtureNoise(2, num_components=3, diagonal=True, iterations=20).double().fit(x)
    assert torch.isfinite(qd.log_prob(s)).all()
    with pytest.raises(ValueError, match="noise kind"):
        build_noise("flow2", 2)


def test_replay_buffer_reinit_rate_and_state():
    buf = ReplayBuffer(capacity=1000, reinit_prob=0.2)
    gen = torch.Generator().manual_seed(0)
    x0, idx = buf.sample(5000, lambda k: torch.zeros(k, 2), gen)
    assert buf.buffer.shape == (1000, 2) and (x0 == 0).all()
    buf.update(idx, torch.ones(5000, 2))
    x0, idx = buf.sample(20_000, lambda k: torch.full((k, 2), -1.0), gen)
    frac = float((x0[:, 0] == -1.0).double().mean())
    # fresh starts: 0.2; the rest come from slots that are 1 (written) or 0 (never drawn)
    assert abs(frac - 0.2) < 4 * math.sqrt(0.2 * 0.8 / 20_000)
    state = buf.state_dict()
    new = ReplayBuffer()
    new.load_state_dict(state)
    assert new.capacity == 1000 and torch.equal(new.buffer, buf.buffer)
    with pytest.raises(ValueError, match="reinit_prob"):
        ReplayBuffer(reinit_prob=2.0)


def test_noise_energy_is_normalised_and_tilts_the_model():
    from probgen.energy import EnergyBasedModel, NoiseEnergy, SumEnergy

    q = GaussianMixtureNoise(2, num_components=2, iterations=10).double()
    gen = torch.Generator().manual_seed(0)
    q.fit(torch.randn(400, 2, dtype=DT, generator=gen) * torch.tensor([1.0, 0.5], dtype=DT))
    assert abs(float(log_partition_grid(NoiseEnergy(q), -8, 8, 400))) < 1e-6  # -log q integrates to log 1
    model = EnergyBasedModel(dim=2, energy={"kind": "quadratic", "dim": 2}, noise="gaussian", base_on_noise=True)
    assert isinstance(model.energy, SumEnergy) and isinstance(model.energy.terms[1], NoiseEnergy)
    assert model.energy.terms[1].noise is model.noise
    x = torch.randn(5, 2)
    assert torch.allclose(model.energy(x), model.energy.terms[0](x) - model.noise.log_prob(x))


def test_gaussian_mixture_fit_uses_a_seeded_subsample_of_at_most_max_fit_points():
    # With K = 1, EM's fixed point is the sample mean and (biased) covariance of the rows it sees,
    # so the fit names the subsample exactly: max_fit_points rows drawn without replacement by seed.
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1000, 2, dtype=DT, generator=gen) * torch.tensor([2.0, 0.5], dtype=DT) + 1.0
    q = GaussianMixtureNoise(2, num_components=1, iterations=3, max_fit_points=50, seed=7).double().fit(x)
    sub = x[torch.randperm(1000, generator=torch.Generator().manual_seed(7))[:50]]
    cov = torch.cov(sub.T, correction=0) + 1e-3 * torch.eye(2, dtype=DT)
    assert torch.allclose(q.locs[0], sub.mean(0), atol=1e-12)
    assert torch.allclose(q.scale_trils[0] @ q.scale_trils[0].T, cov, atol=1e-10)
    assert (sub.mean(0) - x.mean(0)).abs().max() > 1e-3  # the subsample differs from the full data
    # at most max_fit_points rows: the whole data, unchanged; None: every row
    for m in (1000, None):
        qf = GaussianMixtureNoise(2, num_components=1, iterations=3, max_fit_points=m).double().fit(x)
        assert torch.allclose(qf.locs[0], x.mean(0), atol=1e-12)
    with pytest.raises(ValueError, match="max_fit_points"):
        GaussianMixtureNoise(2, num_components=4, max_fit_points=7)
    with pytest.raises(ValueError, match="max_fit_points"):
        GaussianMixtureNoise(2, max_fit_points=100.0)
