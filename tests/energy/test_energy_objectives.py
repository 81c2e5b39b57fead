"""Objectives against closed forms: Gaussian energies with known Z."""

import math

import pytest
import torch

from probgen.energy import (
    GaussianNoise,
    MovingAverageLogZ,
    QuadraticEnergy,
    compositional_loss,
    contrastive_divergence_loss,
    denoising_score_matching_loss,
    minibatch_loss,
    moving_average_update,
    nce_loss,
    storm_update,
)
from probgen.exceptions import ProbgenNumericalError

DT = torch.float64


def _quadratic_2d():
    P = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=DT)
    return QuadraticEnergy(2, mean=torch.tensor([0.5, -0.3], dtype=DT), precision=P).double()


def _grads(loss, params):
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])


@pytest.mark.parametrize("dim", [1, 2])
def test_compositional_value_and_gradient_approach_exact_nll(dim):
    """gamma = 1 (the first step): value -> mean E + log Z and gradient -> grad of the exact NLL, within 4 s.e."""
    torch.manual_seed(0)
    energy = _quadratic_2d() if dim == 2 else QuadraticEnergy(1, mean=[0.4], precision=1.7).double()
    q = GaussianNoise(dim, mean=torch.zeros(dim), cov=1.5**2 * torch.eye(dim)).double()
    x = torch.randn(64, dim, dtype=DT)
    params = [energy.mean, energy.raw_chol]
    exact = energy(x).mean() + energy.log_partition()  # closed-form log Z
    exact_grad = _grads(exact, params)
    mask = torch.cat([torch.ones(dim), torch.tril(torch.ones(dim, dim)).reshape(-1)]).bool()
    errors = []
    for m in (100, 10_000, 1_000_000):
        gen = torch.Generator().manual_seed(m)
        xn = q.sample(m, gen)
        lq = q.log_prob(xn)
        out = compositional_loss(energy, x, xn, lq, MovingAverageLogZ(gamma=1.0))
        grad = _grads(out.loss, params)
        # standard errors from the importance weights (self-normalised IS, delta method)
        with torch.no_grad():
            log_w = -energy(xn) - lq
            wbar = torch.softmax(log_w, 0)
        per_sample = torch.stack(
            [_grads(energy(xn[j : j + 1]).sum(), params) for j in range(min(m, 500))]
        )  # (k, p): grad of E at the first k noise points, to estimate the spread of the gradient terms
        w_rel = (log_w - torch.logsumexp(log_w, 0) + math.log(m)).exp()
        se_value = w_rel.std() / math.sqrt(m)
        k = per_sample.shape[0]
        h_mean = (wbar[:k, None] * per_sample).sum(0) / wbar[:k].sum()
        spread = ((w_rel[:k, None] * (per_sample - h_mean)) ** 2).mean(0).sqrt()
        se_grad = spread / math.sqrt(m)
        assert abs(out.value - exact) < 4 * se_value + 1e-12, (m, out.value, exact, se_value)
        err = (grad - exact_grad)[mask].abs()
        assert (err < 4 * se_grad[mask] + 1e-10).all(), (m, err, se_grad)
        errors.append(float(abs(out.value - exact).detach()) + float(err.max()))
    assert errors[-1] < errors[0]
    assert errors[-1] < 5e-3


def test_moving_average_bias_shrinks_as_gamma_decreases():
    """Stationary bias of log u_t at fixed theta: -gamma/(2-gamma) * rho/(2m) to second order, rho = Var_q(w)/Z^2."""
    energy = QuadraticEnergy(1, mean=[1.0], precision=1.0).double()
    q = GaussianNoise(1, cov=[[1.5**2]]).double()
    grid = torch.linspace(-30, 30, 200_001, dtype=DT)[:, None]
    dx = 60 / 200_000
    with torch.no_grad():
        log_w_grid = -2 * energy(grid) - q.log_prob(grid)  # p~^2 / q
        rho = float(log_w_grid.exp().sum() * dx / (2 * math.pi)) - 1.0  # E_q[w^2]/Z^2 - 1, Z^2 = 2 pi
    log_z = 0.5 * math.log(2 * math.pi)
    m, R = 8, 20_000
    gen = torch.Generator().manual_seed(1)
    biases, preds, ses = [], [], []
    for gamma in (1.0, 0.25, 0.05):
        steps = int(12 / gamma) + 1
        log_u = None
        with torch.no_grad():
            for _ in range(steps):
                xn = q.sample(R * m, gen)
                log_g = torch.logsumexp((-energy(xn) - q.log_prob(xn)).reshape(R, m), 1) - math.log(m)
                log_u = log_g if log_u is None else moving_average_update(log_u, log_g, gamma)
        bias = float(log_u.mean()) - log_z
        se = float(log_u.std()) / math.sqrt(R)
        pred = -gamma / (2 - gamma) * rho / (2 * m)
        assert abs(bias - pred) < 4 * se + 0.25 * abs(pred), (gamma, bias, pred, se)
        biases.append(abs(bias)), preds.append(pred), ses.append(se)
    assert biases[0] > biases[1] + 4 * ses[1] and biases[1] > biases[2]


def test_storm_equals_moving_average_at_fixed_theta_and_tracks_a_moving_target():
    log_u, log_g = torch.tensor(0.3, dtype=DT), torch.tensor(-0.2, dtype=DT)
    same = storm_update(log_u, log_g, log_g, 0.1)
    assert torch.allclose(same, moving_average_update(log_u, log_g, 0.1))
    # a target that moves deterministically: the STORM correction follows it exactly, the plain average lags
    gamma, lu_ma, lu_storm = 0.1, torch.tensor(0.0, dtype=DT), torch.tensor(0.0, dtype=DT)
    for t in range(1, 50):
        g, g_prev = torch.tensor(0.05 * t, dtype=DT), torch.tensor(0.05 * (t - 1), dtype=DT)
        lu_ma, lu_storm = moving_average_update(lu_ma, g, gamma), storm_update(lu_storm, g, g_prev, gamma)
    assert abs(float(lu_storm) - 0.05 * 49) < 1e-9
    assert float(lu_ma) < 0.05 * 49 - 0.3


def test_storm_estimator_uses_previous_parameters():
    energy = QuadraticEnergy(1, mean=[0.0], precision=1.0).double()
    q = GaussianNoise(1, cov=[[4.0]]).double()
    est = MovingAverageLogZ(gamma=0.2, storm=True)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 1, dtype=DT, generator=gen)
    for _ in range(3):
        xn = q.sample(200_000, gen)
        out = compositional_loss(energy, x, xn, q.log_prob(xn), est)
        out.loss.backward()
        with torch.no_grad():
            energy.mean -= 0.5 * energy.mean.grad + 0.3  # a large move: Z is unchanged (translation)
            energy.mean.grad = None
    assert abs(float(est.log_u) - 0.5 * math.log(2 * math.pi)) < 0.02
    assert set(est.prev_params) == {"mean", "raw_chol"}
    state = est.state_dict()
    new = MovingAverageLogZ()
    new.load_state_dict(state)
    assert new.storm and new.steps == 3 and torch.equal(new.log_u, est.log_u)


def test_minibatch_loss_matches_plugin_and_estimator_rejects_bad_input():
    energy = QuadraticEnergy(1).double()
    q = GaussianNoise(1).double()
    xn = q.sample(10, torch.Generator().manual_seed(0))
    out = minibatch_loss(energy, xn[:3], xn, q.log_prob(xn))
    expected = energy(xn[:3]).mean() + torch.log(torch.mean(torch.exp(-energy(xn) - q.log_prob(xn))))
    assert torch.allclose(out.loss, expected)
    with pytest.raises(ValueError, match="gamma"):
        MovingAverageLogZ(gamma=0.0)
    with pytest.raises(ValueError, match="noise_log_q"):
        minibatch_loss(energy, xn, xn, q.log_prob(xn)[:3])
    with pytest.raises(ProbgenNumericalError, match="widen q"):
        MovingAverageLogZ().update(torch.tensor(float("inf")))


def _fit_nce(x, lq_x, xn, lq_n):
    energy = QuadraticEnergy(1).double()
    c = torch.zeros((), dtype=DT, requires_grad=True)
    opt = torch.optim.LBFGS([energy.mean, energy.raw_chol, c], lr=1, max_iter=200, line_search_fn="strong_wolfe", tolerance_grad=1e-10)

    def closure():
        opt.zero_grad()
        loss = nce_loss(energy, x, lq_x, xn, lq_n, c).loss
        loss.backward()
        return loss

    opt.step(closure)
    return energy, c


def test_nce_optimum_is_the_true_parameters():
    """Minimise NCE (learnt c) on R independent data/noise sets; the mean estimate equals truth within 4 s.e."""
    true_mean, true_std = 1.0, 0.7
    true = torch.tensor([true_mean, -math.log(true_std), 0.5 * math.log(2 * math.pi) + math.log(true_std)], dtype=DT)
    q = GaussianNoise(1, cov=[[1.5**2]]).double()
    gen = torch.Generator().manual_seed(3)
    estimates = []
    for _ in range(12):
        x = true_mean + true_std * torch.randn(3000, 1, dtype=DT, generator=gen)
        xn = q.sample(3000, gen)
        energy, c = _fit_nce(x, q.log_prob(x), xn, q.log_prob(xn))
        estimates.append(torch.stack([energy.mean[0], energy.raw_chol[0, 0], c]).detach())
    est = torch.stack(estimates)
    se = est.std(0) / math.sqrt(len(est))
    assert ((est.mean(0) - true).abs() < 4 * se).all(), (est.mean(0), true, se)
    assert (se < 0.02).all()


def test_denoising_score_matching_optimum_is_the_smoothed_gaussian():
    """For data N(mu, s^2) the DSM minimiser over Gaussian energies is N(mu, s^2 + sigma^2)."""
    mu, s, sigma, n = -0.5, 0.8, 0.5, 20_000
    x = mu + s * torch.randn(n, 1, dtype=DT, generator=torch.Generator().manual_seed(0))
    energy = QuadraticEnergy(1).double()
    opt = torch.optim.LBFGS([energy.mean, energy.raw_chol], lr=1, max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = denoising_score_matching_loss(energy, x, sigma, generator=torch.Generator().manual_seed(1)).loss
        loss.backward()
        return loss

    opt.step(closure)
    var = s**2 + sigma**2
    assert abs(float(energy.mean.detach()) - mu) < 4 * math.sqrt(var / n)
    assert abs(float(energy.precision.detach()) * var - 1) < 4 * math.sqrt(2 / n) * 2
    with pytest.raises(ValueError, match="sigma"):
        denoising_score_matching_loss(energy, x, 0.0)


def test_contrastive_divergence_gradient_is_data_minus_model_expectation():
    energy = QuadraticEnergy(1, mean=[0.2]).double()
    x = torch.tensor([[1.0], [2.0]], dtype=DT)
    neg = torch.tensor([[0.0], [-1.0], [3.0]], dtype=DT)
    out = contrastive_divergence_loss(energy, x, neg)
    out.loss.backward()
    # dE/dmu = -(x - mu): data mean of -(x - mu) minus negative mean of -(x - mu)
    expected = -(x.mean() - 0.2) + (neg.mean() - 0.2)
    assert torch.allclose(energy.mean.grad, expected.reshape(1))
    with pytest.raises(ValueError, match="alpha"):
        contrastive_divergence_loss(energy, x, neg, alpha=-1.0)


def test_gamma_schedule_and_independent_batch_update_u_from_that_batch_only():
    est = MovingAverageLogZ(gamma=0.2, gamma_decay=1.0, gamma_offset=4.0)
    assert [round(est.gamma_t, 12)] == [0.2]
    est.steps = 4
    assert abs(est.gamma_t - 0.1) < 1e-12  # gamma (1 + t/t0)^-1 halves at t = t0
    with pytest.raises(ValueError, match="gamma_decay"):
        MovingAverageLogZ(gamma_decay=1.5)
    with pytest.raises(ValueError, match="gamma_offset"):
        MovingAverageLogZ(gamma_offset=0.0)
    energy = QuadraticEnergy(1, mean=[1.0], precision=1.0).double()
    q = GaussianNoise(1).double()
    gen = torch.Generator().manual_seed(0)
    x, xn, xu = (q.sample(k, gen) for k in (16, 32, 32))
    est = MovingAverageLogZ(gamma=0.5, gamma_decay=1.0, gamma_offset=1.0)
    est.update(torch.tensor(0.3, dtype=DT))
    out = compositional_loss(energy, x, xn, q.log_prob(xn), est, xu, q.log_prob(xu))
    with torch.no_grad():
        log_g_u = torch.logsumexp(-energy(xu) - q.log_prob(xu), 0) - math.log(32)
    # step 1: gamma_1 = 0.5 / 2; u_1 = 0.75 e^0.3 + 0.25 g_u (the independent batch's estimate)
    assert torch.allclose(out.log_z, torch.log(0.75 * math.exp(0.3) + 0.25 * log_g_u.exp()), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="together"):
        compositional_loss(energy, x, xn, q.log_prob(xn), est, xu)


def test_decaying_gamma_or_an_independent_batch_removes_the_stationary_bias():
    """1-D Gaussian mean, q = N(0, 1), mismatch mu* = 2, at the optimum theta = mu*.

    Z does not depend on mu, so the exact gradient of the NLL at mu* is 0 and an unbiased method
    has E[grad] = 0; the bias of grad ghat_t / u_t is a stationary bias of mu of the same size
    (curvature 1). R independent estimators (MovingAverageLogZ is elementwise), m = 128; the
    mean over the second half of the run per estimator, s.e. over estimators.
    """
    R, m, T, mu = 200, 128, 160, 2.0

    def run(gamma_decay: float, independent: bool) -> tuple[float, float]:
        gen = torch.Generator().manual_seed(0)
        est = MovingAverageLogZ(0.1, gamma_decay=gamma_decay, gamma_offset=10.0)

        def batch():
            xn = torch.randn(R, m, generator=gen, dtype=DT)
            log_w = -0.5 * (xn - mu) ** 2 + 0.5 * xn**2  # -E - log q up to log sqrt(2 pi)
            return torch.logsumexp(log_w, 1) - math.log(m), (log_w.exp() * (xn - mu)).mean(1)  # log ghat, grad ghat

        tail = []
        for t in range(T):
            log_g, grad_g = batch()
            log_u = est.update(batch()[0] if independent else log_g)
            if t >= T // 2:
                tail.append(grad_g * torch.exp(-log_u))
        per = torch.stack(tail).mean(0)
        return float(per.mean()), float(per.std()) / math.sqrt(R)

    bias, se = run(0.0, False)
    assert bias < -6 * se  # constant gamma, one batch: the paper's setting has a clear bias (~ -0.05)
    for decay, independent in ((1.0, False), (0.0, True)):
        bias, se = run(decay, independent)
        assert abs(bias) < 4 * se, (decay, independent, bias, se)
