"""FlowNoise: a probability-flow ODE as the noise q, against closed forms.

The exact interpolant velocity between N(0, I) and a Gaussian (mixture) target
(:class:`probgen.interpolants.GaussianMixtureFields`) is a "perfectly trained flow": its q is
the target, whose log density is known in closed form.
"""

import math

import pytest
import torch
from torch import nn

from probgen.data.toy2d import GaussianMixture
from probgen.energy import (
    FlowNoise,
    GaussianNoise,
    MovingAverageLogZ,
    NoiseEnergy,
    QuadraticEnergy,
    build_noise,
    compositional_loss,
    log_partition_importance,
)
from probgen.interpolants import GaussianMixtureFields, Interpolant, standard_normal

DT = torch.float64
FULL = GaussianMixture([[1.0, -2.0]], covs=[[[2.0, 0.5], [0.5, 1.0]]])
DIAG_STD = torch.tensor([2.0, 0.5], dtype=DT)
DIAG = GaussianMixture([[1.0, -2.0]], covs=torch.diag(DIAG_STD**2)[None])
MIX = GaussianMixture([[0.0, 2.0], [2.0, -1.0]], stds=[0.5, 0.8], weights=[0.3, 0.7])


def flow_noise(target: GaussianMixture, **kwargs) -> FlowNoise:
    fields = GaussianMixtureFields(Interpolant("linear", "zero"), standard_normal(target.dim), target)
    return FlowNoise(fields.velocity, target.dim, **kwargs).double()


@pytest.mark.parametrize(
    "target,steps",
    # the mixture's field is nonlinear and steep between the modes: rk4 needs more steps for the
    # far, low-density points (20 steps: 0.1 nats there, 7e-5 on target samples)
    [(GaussianMixture([[0.7]], covs=[[[2.5]]]), 20), (FULL, 20), (MIX, 50)],
    ids=["gauss1d", "gauss2d", "mixture2d"],
)
def test_log_prob_equals_target_log_density(target, steps):
    q = flow_noise(target, steps=steps)
    gen = torch.Generator().manual_seed(0)
    x = torch.cat([target.sample(300, gen).to(DT), 3.0 * torch.randn(50, target.dim, generator=gen, dtype=DT)])
    err = (q.log_prob(x) - target.log_prob(x)).abs().max()
    assert err < 1e-2


def test_samples_have_target_moments():
    n = 20_000
    q = flow_noise(FULL, steps=20)
    x = q.sample(n, torch.Generator().manual_seed(1))
    assert x.shape == (n, 2) and x.dtype == DT
    mean, cov = FULL.means[0], FULL.covs[0]
    assert ((x.mean(0) - mean).abs() < 4 * (cov.diagonal() / n).sqrt()).all()
    # s.e. of a sample covariance entry: sqrt((S_ii S_jj + S_ij^2) / n)
    se = ((cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov**2) / n).sqrt()
    assert ((torch.cov(x.T) - cov).abs() < 4 * se).all()


def test_samples_and_log_prob_consistent_up_to_solver_error():
    """For a diagonal target the exact flow map is x1 = m + sigma * x0 (componentwise), so the
    sampling solve and the likelihood solve are each checked against a closed form; the solver
    error is O(h^4) for rk4 and O(h) for Euler."""
    m = DIAG.means[0]

    def errors(solver, steps):
        q = flow_noise(DIAG, steps=steps, solver=solver)
        x = q.sample(500, torch.Generator().manual_seed(2))
        x0 = torch.randn(500, 2, generator=torch.Generator().manual_seed(2), dtype=DT)
        sample_err = (x - (m + DIAG_STD * x0)).abs().max()
        x_lp, lq = q.sample_and_log_prob(500, torch.Generator().manual_seed(2))
        assert torch.equal(x_lp, x)
        return sample_err, (lq - DIAG.log_prob(x)).abs().max()

    s_rk4, l_rk4 = errors("rk4", 20)
    assert s_rk4 < 1e-5 and l_rk4 < 1e-5
    s20, l20 = errors("euler", 20)
    s80, l80 = errors("euler", 80)
    assert l20 > 1e-2  # a coarse solver's error is visible ...
    assert 3.0 < l20 / l80 < 5.0 and 3.0 < s20 / s80 < 5.0  # ... and first order in h


def test_compositional_objective_log_z_and_gradient_with_flow_q():
    mean, prec = torch.tensor([0.5, -1.0], dtype=DT), torch.tensor([[2.0, 0.4], [0.4, 0.5]], dtype=DT)
    energy = QuadraticEnergy(2, mean=mean, precision=prec).double()
    log_z = energy.log_partition().detach()
    # q: a flow to a wider, shifted Gaussian than the model
    target = GaussianMixture([[0.3, -0.7]], covs=(1.5 * torch.linalg.inv(prec))[None])
    q = flow_noise(target, steps=20)
    m = 4000
    xn, lq = q.sample_and_log_prob(m, torch.Generator().manual_seed(3))
    data = mean + torch.randn(500, 2, generator=torch.Generator().manual_seed(4), dtype=DT) @ torch.linalg.cholesky(torch.linalg.inv(prec)).T
    out = compositional_loss(energy, data, xn, lq, MovingAverageLogZ(gamma=1.0))
    log_w = (-energy(xn) - lq).detach()
    w = (log_w - torch.logsumexp(log_w, 0)).exp() * m  # w / mean(w)
    se = w.std() / math.sqrt(m)
    assert abs(out.log_z - log_z) < 4 * se
    exact_nll = energy(data).mean().detach() + log_z
    assert abs(out.value - exact_nll) < 4 * se
    # gradient wrt the mean: exact NLL gradient is mean_i -P (x_i - mu) (grad log Z = 0); the
    # compositional gradient adds the self-normalised estimate sum_j w_j P (x'_j - mu) / sum_j w_j
    out.loss.backward()
    exact_grad = -((data - mean) @ prec).mean(0)
    g = (xn - mean) @ prec
    wn = w / m
    g_hat = (wn[:, None] * g).sum(0)
    g_se = (wn[:, None] ** 2 * (g - g_hat) ** 2).sum(0).sqrt()
    assert ((energy.mean.grad - exact_grad).abs() < 4 * g_se + 1e-9).all()
    # the moving average over several noise batches stays on log Z
    est = MovingAverageLogZ(gamma=0.5)
    gen = torch.Generator().manual_seed(5)
    for _ in range(4):
        out = compositional_loss(energy, data, *q.sample_and_log_prob(1000, gen), est)
    assert abs(out.log_z - log_z) < 4 * se * math.sqrt(m / 1000)


def test_importance_log_z_1d_and_perfect_flow_q():
    e1 = QuadraticEnergy(1, mean=[0.4], precision=0.8).double()
    q1 = flow_noise(GaussianMixture([[0.0]], covs=[[[2.0]]]), steps=20)
    est = log_partition_importance(e1, q1, num_samples=4000, generator=torch.Generator().manual_seed(6))
    assert abs(est.log_z - e1.log_partition()) < 4 * est.std_err
    assert est.ess > 0.5 * est.num_samples
    # q = the model itself: every weight equals Z up to the solver error
    e2 = QuadraticEnergy(2, mean=[1.0, -2.0], precision=torch.linalg.inv(FULL.covs[0])).double()
    est = log_partition_importance(e2, flow_noise(FULL, steps=20), num_samples=1000, generator=torch.Generator().manual_seed(7))
    assert abs(est.log_z - e2.log_partition()) < 1e-5 and est.ess > 1000 * (1 - 1e-6)


class ScaledField(nn.Module):
    """b(t, x) = a x: the flow map is x1 = e^a x0, so q = N(0, e^{2a} I) exactly."""

    def __init__(self, a: float) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a))

    def forward(self, t, x):
        return self.a * x


def test_module_velocity_is_frozen_registered_and_gets_no_gradient():
    field = ScaledField(0.4)
    q = FlowNoise(field, (2,), steps=10).double()
    assert not field.a.requires_grad and "flow.a" in q.state_dict()
    assert field.a.dtype == DT  # .double() reached the registered flow
    x = torch.randn(100, 2, dtype=DT, requires_grad=True)
    lp = q.log_prob(x)
    exact = torch.distributions.Normal(0.0, math.exp(0.4)).log_prob(x.detach()).sum(-1)
    assert (lp - exact).abs().max() < 1e-6
    # differentiable in x (the score of N(0, e^0.8 I) is -x e^-0.8), never in the frozen flow
    (score,) = torch.autograd.grad(lp.sum(), x)
    assert (score + x.detach() * math.exp(-0.8)).abs().max() < 1e-6
    assert field.a.grad is None
    with torch.no_grad():
        assert not q.log_prob(x).requires_grad
    s = q.sample(4000, torch.Generator().manual_seed(8))
    assert not s.requires_grad
    assert abs(s.std() - math.exp(0.4)) < 4 * math.exp(0.4) / math.sqrt(2 * 8000)
    assert q.fit(x.detach()) is q
    with pytest.raises(ValueError, match="shape"):
        q.log_prob(torch.zeros(3, 3, dtype=DT))


def test_from_interpolant_and_checkpoint(tmp_path):
    from probgen.interpolants import StochasticInterpolant

    torch.manual_seed(0)
    model = StochasticInterpolant(dim=2, hidden_dims=[16], ema_decay=0.9, nll_steps=4, nll_solver="rk4", val_nll_samples=0)
    with torch.no_grad():
        for p in model.ema_net.parameters():
            p.add_(0.1 * torch.randn_like(p))  # EMA weights differ from the raw ones
    q = FlowNoise.from_interpolant(model)
    assert q.steps == 4 and q.solver == "rk4" and q.t_span == (model.t_min, model.t_max)
    assert all(p.requires_grad for p in model.net.parameters())  # the model is untouched
    x = q.sample(64, torch.Generator().manual_seed(9))
    ref = model.sample(64, torch.Generator().manual_seed(9), method="ode", solver="rk4", steps=4)
    assert torch.allclose(x, ref)
    assert torch.allclose(q.log_prob(x), -model.nll(x), atol=1e-5)
    path = tmp_path / "flow.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    q2 = build_noise("flow", (2,), checkpoint=str(path), steps=4)
    assert isinstance(q2, FlowNoise)
    assert torch.allclose(q2.log_prob(x), q.log_prob(x), atol=1e-6)
    assert torch.allclose(q2.sample(8, torch.Generator().manual_seed(1)), q.sample(8, torch.Generator().manual_seed(1)))
    # as the q of an EnergyBasedModel, from its config (noise="flow"): one step of every
    # objective that uses q, gradients only into the energy, and a weights-only state dict
    from probgen.energy import EnergyBasedModel

    for objective in ("compositional", "nce"):
        ebm = EnergyBasedModel(dim=2, objective=objective, noise="flow", noise_kwargs={"checkpoint": str(path), "steps": 4}, noise_batch_size=16)
        ebm.objective_step(torch.randn(8, 2)).loss.backward()
        assert all(p.grad is None for p in ebm.noise.parameters())
        assert any(p.grad is not None for p in ebm.energy.parameters())
    torch.save(ebm.state_dict(), tmp_path / "ebm.pt")
    assert any(k.startswith("noise.flow.") for k in torch.load(tmp_path / "ebm.pt", weights_only=True))
    with pytest.raises(ValueError, match="checkpoint"):
        build_noise("flow", (2,))
    with pytest.raises(ValueError, match="not a file"):
        FlowNoise.from_checkpoint(tmp_path / "missing.ckpt")


def test_bad_arguments():
    v = lambda t, x: x
    with pytest.raises(TypeError, match="velocity"):
        FlowNoise(3.0, 2)
    with pytest.raises(ValueError, match="steps"):
        FlowNoise(v, 2, steps=0)
    with pytest.raises(ValueError, match="solver"):
        FlowNoise(v, 2, solver="midpoint")
    with pytest.raises(ValueError, match="t_span"):
        FlowNoise(v, 2, t_span=(0.5, 0.2))
    with pytest.raises(TypeError, match="base"):
        FlowNoise(v, 2, base=object())
    with pytest.raises(ValueError, match="n must be"):
        FlowNoise(v, 2, base=GaussianNoise(2)).sample(0)


@pytest.mark.parametrize("divergence", ["exact", "hutchinson"])
def test_tilted_flow_gradient_equals_finite_differences(divergence):
    """grad_x of E = E_net - log q (NoiseEnergy of a FlowNoise) is the derivative of log q + (-E_net)."""
    q = flow_noise(MIX, steps=10, divergence=divergence)
    net = QuadraticEnergy(2, mean=[0.3, -0.2], precision=[[0.5, 0.1], [0.1, 0.8]]).double()
    energy = net + NoiseEnergy(q)
    x = torch.tensor([[0.2, 1.5], [1.8, -0.7], [-1.0, 0.4]], dtype=DT, requires_grad=True)
    (grad,) = torch.autograd.grad(energy(x).sum(), x)
    h, fd = 1e-5, torch.zeros(3, 2, dtype=DT)
    with torch.no_grad():
        for j in range(2):
            e = torch.zeros(2, dtype=DT)
            e[j] = h
            # -(log q + (-E_net)) by central differences, one coordinate at a time
            fd[:, j] = ((net(x + e) - q.log_prob(x + e)) - (net(x - e) - q.log_prob(x - e))) / (2 * h)
    assert (grad - fd).abs().max() < 1e-6
    if divergence == "exact":
        # and the score of q is the target mixture's to the flow's discretisation error
        xx = x.detach().requires_grad_(True)
        (true_score,) = torch.autograd.grad(MIX.log_prob(xx).sum(), xx)
        # -grad E = score of q + score of e^{-E_net}
        assert (-grad - (true_score + net.score(x.detach()))).abs().max() < 1e-2


def test_flow_log_prob_gradcheck_float64():
    q = flow_noise(FULL, steps=4)
    x = torch.tensor([[0.5, -1.0], [1.5, -2.5]], dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(q.log_prob, (x,))


def test_flow_noise_rejects_bad_divergence_options():
    fields = GaussianMixtureFields(Interpolant("linear", "zero"), standard_normal(2), FULL)
    with pytest.raises(ValueError, match="divergence"):
        FlowNoise(fields.velocity, 2, divergence="jvp")
    with pytest.raises(ValueError, match="num_probes"):
        FlowNoise(fields.velocity, 2, num_probes=0)
    assert FlowNoise(fields.velocity, 17).divergence == "hutchinson" and FlowNoise(fields.velocity, 2).divergence == "exact"


# -- the tilted flow model in the base space: transport, inverse, PulledBackEnergy, latent AIS ----
def _tilted_gaussian_flow():
    """q = N(m, S) by its exact flow, tilt E(x) = (x - mu)' P (x - mu) / 2: p = q e^{-E} / Z is Gaussian with
    Z = (2 pi)^{d/2} |P|^{-1/2} N(m; mu, S + P^{-1}), precision S^{-1} + P, mean (S^{-1} + P)^{-1}(S^{-1} m + P mu)."""
    from probgen.energy import QuadraticEnergy

    q = flow_noise(FULL, steps=10)
    mu, prec = torch.tensor([0.5, 0.0], dtype=DT), torch.tensor([[1.5, 0.3], [0.3, 0.8]], dtype=DT)
    tilt = QuadraticEnergy(2, mean=mu, precision=prec).double()
    m, S = FULL.means[0].to(DT), FULL.covs[0].to(DT)
    C = S + torch.linalg.inv(prec)
    log_n = torch.distributions.MultivariateNormal(mu, C).log_prob(m)
    log_z = float(math.log(2 * math.pi) - 0.5 * torch.logdet(prec) + log_n)
    post_prec = torch.linalg.inv(S) + prec
    post_cov = torch.linalg.inv(post_prec)
    post_mean = post_cov @ (torch.linalg.solve(S, m) + prec @ mu)
    return q, tilt, log_z, post_mean, post_cov


def test_transport_is_the_sampling_map_and_inverse_undoes_it():
    q = flow_noise(DIAG, steps=20)
    z = q.base.sample(200, torch.Generator().manual_seed(5))
    x = q.transport(z)
    assert torch.equal(x, q.sample(200, torch.Generator().manual_seed(5)))
    # the exact map of the diagonal target is x = m + sigma z
    assert (x - (DIAG.means[0].to(DT) + DIAG_STD * z)).abs().max() < 1e-4
    assert (q.inverse(x) - z).abs().max() < 1e-4
    with pytest.raises(ValueError, match="z must be"):
        q.transport(torch.zeros(3, 5, dtype=DT))


def test_pulled_back_energy_gradient_and_latent_ais_bracket_closed_form_log_z():
    from probgen.energy import PulledBackEnergy, QuadraticEnergy, log_partition_ais_flow

    q, tilt, log_z, post_mean, post_cov = _tilted_gaussian_flow()
    pulled = PulledBackEnergy(tilt, q)
    z = torch.randn(3, 2, generator=torch.Generator().manual_seed(6), dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(pulled, (z,), eps=1e-6, atol=1e-5)
    # E_z(z) = E(T z) - log rho0(z) with T the exact map
    zz = z.detach()
    assert torch.allclose(pulled(zz), tilt(q.transport(zz)) - q.base.log_prob(zz))
    gen = torch.Generator().manual_seed(7)
    x_exact = post_mean + torch.randn(500, 2, generator=gen, dtype=DT) @ torch.linalg.cholesky(post_cov).T
    br = log_partition_ais_flow(tilt, q, 500, 15, x_target=x_exact, step_size=0.3, generator=gen)
    assert abs(float(br.lower) - log_z) < 4 * float(br.lower_std_err) + 1e-3, (float(br.lower), log_z)
    assert abs(float(br.upper) - log_z) < 4 * float(br.upper_std_err) + 1e-3, (float(br.upper), log_z)
    assert 1 < float(br.ess) <= 500
    with pytest.raises(TypeError, match="FlowNoise"):
        PulledBackEnergy(tilt, GaussianNoise(2))
    with pytest.raises(ValueError, match="event shape"):
        PulledBackEnergy(QuadraticEnergy(3).double(), q)
