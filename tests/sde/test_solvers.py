"""probgen.sde.sdeint / odeint against closed forms, torchsde path by path, and input errors."""

import math

import pytest
import torch
import torchsde

from probgen.exceptions import SolverDivergedError
from probgen.sde import (
    BrownianGrid,
    EulerMaruyama,
    ItoMilstein,
    StratonovichHeun,
    brownian_increments,
    odeint,
    sdeint,
    step_grid,
)
from probgen.testing import assert_close_mc, assert_order, make_generator

F64 = torch.float64


class LinearSDE:
    r"""Diagonal linear SDE $dX = \mu X dt + \sigma X dW$ (Ito: GBM) or $\circ dW$ (Stratonovich)."""

    noise_type = "diagonal"

    def __init__(self, mu, sigma, sde_type="ito"):
        self.mu, self.sigma, self.sde_type = mu, sigma, sde_type

    def f(self, t, y):
        return self.mu * y

    def g(self, t, y):
        return self.sigma * y


def gbm_exact(y0, mu, sigma, T, W_T, ito=True):
    drift = (mu - 0.5 * sigma**2) if ito else mu
    return y0 * torch.exp(drift * T + sigma * W_T)


def strong_errors(sde, method, ito, options=None, batch=4000, T=1.0, ks=(3, 4, 5, 6, 7)):
    gen = make_generator(0)
    fine = 2 ** max(ks)
    grid = BrownianGrid(
        [T * i / fine for i in range(fine + 1)], (batch, 1), dtype=F64, generator=gen
    )
    y0 = torch.ones(batch, 1, dtype=F64)
    exact = gbm_exact(y0, sde.mu, sde.sigma, T, grid.path[-1], ito=ito)
    dts, errors = [], []
    for k in ks:
        dt = T / 2**k
        ys = sdeint(sde, y0, [0.0, T], bm=grid, method=method, dt=dt, options=options)
        dts.append(dt)
        errors.append((ys[-1] - exact).abs().mean().item())
    return dts, errors


# ---------------------------------------------------------------------------------------------
# Strong orders on one shared Brownian path per test
# ---------------------------------------------------------------------------------------------


def test_euler_strong_order_half_on_gbm():
    dts, errors = strong_errors(LinearSDE(0.5, 1.0), "euler", ito=True)
    assert_order(dts, errors, EulerMaruyama.strong_order, tol=0.25)


@pytest.mark.parametrize("grad_free", [False, True])
def test_milstein_strong_order_one_on_gbm(grad_free):
    dts, errors = strong_errors(
        LinearSDE(0.5, 1.0), "milstein", ito=True, options={"grad_free": grad_free}
    )
    assert_order(dts, errors, ItoMilstein.strong_order, tol=0.25)


def test_heun_strong_order_one_on_stratonovich_linear_sde():
    # Stratonovich dX = mu X dt + sigma X o dW has X_T = X_0 exp(mu T + sigma W_T).
    dts, errors = strong_errors(LinearSDE(0.5, 1.0, "stratonovich"), "heun", ito=False)
    assert_order(dts, errors, StratonovichHeun.strong_order, tol=0.25)


class LevyAreaSDE:
    r"""$dX_1 = dW_1$, $dX_2 = X_1 \circ dW_2$: non-commuting noise, $X_2(T) = \int_0^T W_1\, dW_2$."""

    noise_type = "general"
    sde_type = "stratonovich"

    def f(self, t, y):
        return torch.zeros_like(y)

    def g(self, t, y):
        g = torch.zeros(*y.shape, 2, dtype=y.dtype)
        g[:, 0, 0] = 1.0
        g[:, 1, 1] = y[:, 0]
        return g


def test_heun_declares_and_shows_strong_order_half_for_general_noise():
    # the reference is the Stratonovich (trapezoid) sum on the 2^12-step grid of the same path
    batch, fine, T = 2000, 2**12, 1.0
    grid = BrownianGrid([T * i / fine for i in range(fine + 1)], (batch, 2), dtype=F64, generator=make_generator(1))
    w = grid.path  # (fine + 1, batch, 2)
    exact = (0.5 * (w[1:, :, 0] + w[:-1, :, 0]) * (w[1:, :, 1] - w[:-1, :, 1])).sum(0)
    y0 = torch.zeros(batch, 2, dtype=F64)
    dts, errors = [], []
    for k in (2, 3, 4, 5, 6):
        ys = sdeint(LevyAreaSDE(), y0, [0.0, T], bm=grid, method="heun", dt=T / 2**k)
        dts.append(T / 2**k)
        errors.append((ys[-1][:, 1] - exact).abs().mean().item())
    assert StratonovichHeun.strong_order_for("general") == 0.5
    assert StratonovichHeun.strong_order_for("diagonal") == 1.0
    assert_order(dts, errors, StratonovichHeun.strong_order_for("general"), tol=0.25)


def test_euler_strong_order_one_for_additive_noise():
    class OU:
        noise_type, sde_type = "additive", "ito"

        def f(self, t, y):
            return -y

        def g(self, t, y):
            return torch.full((*y.shape, 1), 0.5, dtype=y.dtype)

    # exact OU on the same path is not closed-form in the increments; use the 2^9-step Euler path
    batch, fine, T = 2000, 2**9, 1.0
    grid = BrownianGrid([T * i / fine for i in range(fine + 1)], (batch, 1), dtype=F64, generator=make_generator(2))
    y0 = torch.ones(batch, 1, dtype=F64)
    ref = sdeint(OU(), y0, [0.0, T], bm=grid, method="euler", dt=T / fine)[-1]
    dts, errors = [], []
    for k in (2, 3, 4, 5):
        ys = sdeint(OU(), y0, [0.0, T], bm=grid, method="euler", dt=T / 2**k)
        dts.append(T / 2**k)
        errors.append((ys[-1] - ref).abs().mean().item())
    assert_order(dts, errors, EulerMaruyama.strong_order_for("additive"), tol=0.25)
    with pytest.raises(ValueError, match="noise type"):
        ItoMilstein.strong_order_for("general")


def test_stratonovich_milstein_strong_order_one():
    dts, errors = strong_errors(LinearSDE(0.5, 1.0, "stratonovich"), "milstein", ito=False)
    assert_order(dts, errors, 1.0, tol=0.25)


class ScalarNoiseLinearSDE:
    r"""$dX = B X dt + A X dW$ with one Brownian motion, A non-symmetric, AB = BA.

    Exact: $X_T = \exp((B - A^2/2) T + A W_T) X_0$. Milstein needs $(\partial g) g = A A x$, not
    $A^\top A x$, so a transposed Jacobian would show up as a lost order.
    """

    noise_type = "scalar"
    sde_type = "ito"

    def __init__(self):
        self.A = torch.tensor([[0.4, 0.9], [-0.3, 0.2]], dtype=F64)
        self.B = 0.3 * torch.eye(2, dtype=F64) + 0.5 * self.A

    def f(self, t, y):
        return y @ self.B.T

    def g(self, t, y):
        return (y @ self.A.T).unsqueeze(-1)


@pytest.mark.parametrize("grad_free", [False, True])
def test_milstein_scalar_noise_nonsymmetric_jacobian(grad_free):
    sde, batch, T = ScalarNoiseLinearSDE(), 2000, 1.0
    fine = 2**7
    grid = BrownianGrid(
        [T * i / fine for i in range(fine + 1)], (batch, 1), dtype=F64, generator=make_generator(1)
    )
    y0 = torch.tensor([[1.0, -0.5]], dtype=F64).expand(batch, 2)
    W = grid.path[-1]  # (batch, 1)
    L = (sde.B - 0.5 * sde.A @ sde.A) * T
    mats = torch.linalg.matrix_exp(L + W[:, 0, None, None] * sde.A)
    exact = (mats @ y0.unsqueeze(-1)).squeeze(-1)
    dts, errors = [], []
    for k in (3, 4, 5, 6, 7):
        ys = sdeint(
            sde,
            y0,
            [0.0, T],
            bm=grid,
            method="milstein",
            dt=T / 2**k,
            options={"grad_free": grad_free},
        )
        dts.append(T / 2**k)
        errors.append((ys[-1] - exact).norm(dim=1).mean().item())
    assert_order(dts, errors, 1.0, tol=0.25)


class CommutingGeneralSDE:
    r"""$dX = B X dt + \sum_j A_j X \,(\circ) dW_j$, two Brownian motions, $A_1, A_2, B$ commuting.

    Ito: $X_T = \exp((B - \tfrac12 \sum_j A_j^2) T + \sum_j A_j W_j(T)) X_0$; Stratonovich: without
    the $-\tfrac12 A_j^2$ term.
    """

    noise_type = "general"

    def __init__(self, sde_type):
        self.sde_type = sde_type
        P = torch.tensor([[1.0, 0.5], [-0.3, 1.0]], dtype=F64)  # shared eigenvectors => commuting
        Pinv = torch.linalg.inv(P)
        self.A = [
            P @ torch.diag(torch.tensor(v, dtype=F64)) @ Pinv for v in ([0.6, 0.2], [-0.3, 0.4])
        ]
        self.B = P @ torch.diag(torch.tensor([0.2, -0.4], dtype=F64)) @ Pinv

    def f(self, t, y):
        return y @ self.B.T

    def g(self, t, y):
        return torch.stack([y @ a.T for a in self.A], dim=-1)

    def exact(self, y0, W, T):
        L = self.B * T - (0.5 * T * sum(a @ a for a in self.A) if self.sde_type == "ito" else 0)
        mats = torch.linalg.matrix_exp(
            L + W[:, 0, None, None] * self.A[0] + W[:, 1, None, None] * self.A[1]
        )
        return (mats @ y0.unsqueeze(-1)).squeeze(-1)


@pytest.mark.parametrize(
    "sde_type, method, order", [("ito", "euler", 0.5), ("stratonovich", "heun", 1.0)]
)
def test_strong_order_general_noise(sde_type, method, order):
    sde, batch, T = CommutingGeneralSDE(sde_type), 2000, 1.0
    fine = 2**7
    grid = BrownianGrid(
        [T * i / fine for i in range(fine + 1)], (batch, 2), dtype=F64, generator=make_generator(6)
    )
    y0 = torch.tensor([[1.0, 0.5]], dtype=F64).expand(batch, 2).contiguous()
    exact = sde.exact(y0, grid.path[-1], T)
    dts, errors = [], []
    for k in (3, 4, 5, 6, 7):
        ys = sdeint(sde, y0, [0.0, T], bm=grid, method=method, dt=T / 2**k)
        dts.append(T / 2**k)
        errors.append((ys[-1] - exact).norm(dim=1).mean().item())
    assert_order(dts, errors, order, tol=0.25)


def test_gradient_wrt_initial_state_matches_exact_gbm_derivative():
    # For GBM, X_T = X_0 exp(...) so dX_T/dX_0 = X_T / X_0 on the same path; Euler's discrete
    # derivative is prod_k (1 + mu h + sigma dW_k) = X_T^{Euler} / X_0 exactly.
    sde = LinearSDE(0.3, 0.5)
    y0 = torch.full((6, 1), 2.0, dtype=F64, requires_grad=True)
    ys = sdeint(sde, y0, [0.0, 1.0], method="euler", dt=0.01, generator=make_generator(8))
    (grad,) = torch.autograd.grad(ys[-1].sum(), y0)
    torch.testing.assert_close(grad, ys[-1].detach() / 2.0)


# ---------------------------------------------------------------------------------------------
# Weak order and moments on Ornstein-Uhlenbeck
# ---------------------------------------------------------------------------------------------


class OU:
    noise_type = "additive"
    sde_type = "ito"

    def __init__(self, theta, sigma):
        self.theta, self.sigma = theta, sigma

    def f(self, t, y):
        return -self.theta * y

    def g(self, t, y):
        return torch.full((y.shape[0], y.shape[1], 1), self.sigma, dtype=y.dtype)


def test_euler_weak_order_one_on_ou_mean_and_variance():
    theta, sigma, x0, T, n = 1.0, 0.8, 1.0, 1.0, 100_000
    exact_mean = x0 * math.exp(-theta * T)
    exact_var = sigma**2 * (1 - math.exp(-2 * theta * T)) / (2 * theta)
    dts, mean_err, var_err = [], [], []
    for k in (2, 3, 4, 5):
        dt = T / 2**k
        times = [i * dt for i in range(2**k + 1)]
        z = brownian_increments([dt] * 2**k, (n // 2, 1), dtype=F64, generator=make_generator(k))
        # Antithetic pairs (dW, -dW): the Euler state is linear in the increments, so the noise
        # cancels in the mean; the variance keeps its Monte Carlo error.
        bm = BrownianGrid(times, increments=torch.cat([z, -z], dim=1))
        xs = sdeint(OU(theta, sigma), torch.full((n, 1), x0, dtype=F64), [0.0, T], method="euler", dt=dt, bm=bm)[-1]
        dts.append(dt)
        mean_err.append(abs(xs.mean().item() - exact_mean))
        var_err.append(abs(xs.var().item() - exact_var))
    assert_order(dts, mean_err, EulerMaruyama.weak_order, tol=0.25)
    assert_order(dts, var_err, EulerMaruyama.weak_order, tol=0.25)


def test_ou_moments_at_small_dt_within_monte_carlo_error():
    theta, sigma, x0, T, n, dt = 2.0, 0.5, 1.5, 1.0, 20_000, 1e-2
    ts = torch.linspace(0, T, 5, dtype=F64)
    ys = sdeint(
        OU(theta, sigma), torch.full((n, 1), x0, dtype=F64), ts, dt=dt, generator=make_generator(3)
    )
    for i, t in enumerate(ts.tolist()):
        if i == 0:
            continue
        k = round(t / dt)
        # Law of the Euler chain (closed form): mean x0 a^k, variance sigma^2 dt (1 - a^{2k}) / (1 - a^2).
        a = 1 - theta * dt
        mean, var = x0 * a**k, sigma**2 * dt * (1 - a ** (2 * k)) / (1 - a * a)
        x = ys[i, :, 0]
        assert_close_mc(x.mean(), mean, x.std() / math.sqrt(n), what=f"mean at t={t}")
        c = x - x.mean()
        se_var = ((c**4).mean() - x.var() ** 2).sqrt() / math.sqrt(n)
        assert_close_mc(x.var(), var, se_var, what=f"variance at t={t}")
        # ... and the chain's law is within O(dt) of the OU process's.
        assert (
            abs(var - sigma**2 * (1 - math.exp(-2 * theta * t)) / (2 * theta))
            < 2 * theta * dt * sigma**2
        )


# ---------------------------------------------------------------------------------------------
# ODE orders on a linear ODE against the matrix exponential
# ---------------------------------------------------------------------------------------------

A_ODE = torch.tensor([[-0.5, 1.0, 0.0], [-1.0, -0.5, 0.3], [0.2, 0.0, -1.0]], dtype=F64)


def linear_field(t, y):
    return y @ A_ODE.T


@pytest.mark.parametrize("method, order", [("euler", 1), ("heun", 2), ("rk4", 4)])
def test_ode_order_on_linear_ode(method, order):
    y0 = torch.tensor([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]], dtype=F64)
    T = 2.0
    exact = y0 @ torch.linalg.matrix_exp(A_ODE * T).T
    dts = [T / 2**k for k in range(3, 8)]
    errors = [
        (odeint(linear_field, y0, [0.0, T], method=method, dt=dt)[-1] - exact).abs().max().item()
        for dt in dts
    ]
    assert_order(dts, errors, order, tol=0.25)


def test_odeint_outputs_at_all_times_backwards_and_nfe():
    y0 = torch.tensor([[1.0, 0.0, -1.0]], dtype=F64)
    ts = torch.tensor([0.0, 0.3, 1.0, 1.7], dtype=F64)
    ys, nfe = odeint(linear_field, y0, ts, method="rk4", dt=0.01, return_nfe=True)
    exact = torch.stack([y0 @ torch.linalg.matrix_exp(A_ODE * t).T for t in ts])
    assert ys.shape == (4, 1, 3)
    torch.testing.assert_close(ys, exact, atol=1e-8, rtol=0)
    assert nfe == 4 * (30 + 70 + 70)
    # backwards in time: from y(1.7) to y(0)
    back = odeint(linear_field, exact[-1], ts.flip(0), method="rk4", dt=0.01)
    torch.testing.assert_close(back[-1], y0, atol=1e-8, rtol=0)


def test_dopri5_accuracy_and_nfe():
    y0 = torch.tensor([[1.0, 0.0, -1.0]], dtype=F64)
    ys, nfe = odeint(
        linear_field, y0, [0.0, 1.0, 2.0], method="dopri5", rtol=1e-9, atol=1e-11, return_nfe=True
    )
    exact = y0 @ torch.linalg.matrix_exp(A_ODE * 2.0).T
    torch.testing.assert_close(ys[-1], exact, atol=1e-7, rtol=0)
    assert 6 < nfe < 5000


def test_odeint_without_dt_steps_between_outputs():
    y0 = torch.ones(2, 3, dtype=F64)
    ys, nfe = odeint(
        linear_field, y0, torch.linspace(0, 1, 11, dtype=F64), method="euler", return_nfe=True
    )
    assert nfe == 10
    expected = y0 @ torch.linalg.matrix_power(torch.eye(3, dtype=F64) + 0.1 * A_ODE, 10).T
    torch.testing.assert_close(ys[-1], expected)


# ---------------------------------------------------------------------------------------------
# Path-by-path agreement with torchsde given the same BrownianInterval
# ---------------------------------------------------------------------------------------------


class NeuralDiagonalSDE(torch.nn.Module):
    """MLP drift; elementwise (diagonal-commutative) diffusion."""

    noise_type = "diagonal"

    def __init__(self, d=3, sde_type="ito"):
        super().__init__()
        self.sde_type = sde_type
        self.net = torch.nn.Sequential(
            torch.nn.Linear(d + 1, 16), torch.nn.Tanh(), torch.nn.Linear(16, d)
        )
        self.a = torch.nn.Parameter(torch.linspace(0.5, 1.0, d))
        self.b = torch.nn.Parameter(torch.linspace(-0.2, 0.2, d))

    def f(self, t, y):
        return self.net(torch.cat([t.expand(y.shape[0], 1), y], dim=1))

    def g(self, t, y):
        return 0.5 * torch.sigmoid(self.a * y + self.b + t)


class GeneralSDE(torch.nn.Module):
    noise_type = "general"
    sde_type = "ito"

    def __init__(self, d=3, m=2):
        super().__init__()
        self.d, self.m = d, m
        self.drift = torch.nn.Linear(d, d)
        self.diff = torch.nn.Linear(d, d * m)

    def f(self, t, y):
        return torch.tanh(self.drift(y))

    def g(self, t, y):
        return 0.3 * torch.tanh(self.diff(y)).view(-1, self.d, self.m)


@pytest.mark.parametrize(
    "make_sde, method, options",
    [
        (lambda: NeuralDiagonalSDE(), "euler", None),
        (lambda: NeuralDiagonalSDE(), "milstein", None),
        (lambda: NeuralDiagonalSDE(), "milstein", {"grad_free": True}),
        (lambda: NeuralDiagonalSDE(sde_type="stratonovich"), "heun", None),
        (lambda: NeuralDiagonalSDE(sde_type="stratonovich"), "milstein", None),
        (lambda: GeneralSDE(), "euler", None),
    ],
)
def test_agrees_with_torchsde_path_by_path(make_sde, method, options):
    torch.manual_seed(0)
    sde = make_sde().to(F64)
    batch, d = 16, 3
    m = sde.m if sde.noise_type == "general" else d
    y0 = torch.randn(batch, d, dtype=F64)
    ts = torch.linspace(0.0, 1.0, 6, dtype=F64)
    bm = torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(batch, m), dtype=F64, entropy=7)
    ref = torchsde.sdeint(sde, y0, ts, bm=bm, method=method, dt=0.02, options=dict(options or {}))
    ref_grad = torch.autograd.grad(ref.square().sum(), list(sde.parameters()))
    ours = sdeint(sde, y0, ts, bm=bm, method=method, dt=0.02, options=options)
    grad = torch.autograd.grad(ours.square().sum(), list(sde.parameters()))
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-6)
    for a, b in zip(grad, ref_grad):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_delegated_methods_run():
    torch.manual_seed(0)
    sde = NeuralDiagonalSDE().to(F64)
    y0 = torch.randn(8, 3, dtype=F64)
    ys = sdeint(sde, y0, [0.0, 0.5, 1.0], method="srk", dt=0.05, generator=make_generator(0))
    assert ys.shape == (3, 8, 3) and torch.isfinite(ys).all()
    again = sdeint(sde, y0, [0.0, 0.5, 1.0], method="srk", dt=0.05, generator=make_generator(0))
    torch.testing.assert_close(ys, again)
    ys = sdeint(sde, y0, [0.0, 1.0], method="euler", dt=0.05, adjoint=True)
    ys.sum().backward()
    assert sde.a.grad is not None


# ---------------------------------------------------------------------------------------------
# logqp: the latent-SDE KL term
# ---------------------------------------------------------------------------------------------


class OUPosteriorBrownianPrior:
    r"""Posterior $dX = -\theta X dt + \sigma dW$, prior $dX = \sigma dW$: KL rate $\theta^2 X^2 / (2\sigma^2)$."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, theta, sigma):
        self.theta, self.sigma = theta, sigma

    def f(self, t, y):
        return -self.theta * y

    def g(self, t, y):
        return torch.full_like(y, self.sigma)

    def h(self, t, y):
        return torch.zeros_like(y)


def test_logqp_matches_closed_form_expectation():
    theta, sigma, x0, T, n, dt = 1.0, 0.5, 1.0, 1.0, 20_000, 0.01
    ts = [0.0, 0.5, 1.0]
    ys, log_ratio = sdeint(
        OUPosteriorBrownianPrior(theta, sigma),
        torch.full((n, 1), x0, dtype=F64),
        ts,
        dt=dt,
        logqp=True,
        generator=make_generator(5),
    )
    assert ys.shape == (3, n, 1) and log_ratio.shape == (2, n)
    # Expectation of the Euler scheme's left-point sum: E[X_k^2] = m_k, m_{k+1} = (1 - theta dt)^2 m_k + sigma^2 dt.
    m, expected, k_half = x0**2, [0.0, 0.0], round(0.5 / dt)
    for k in range(round(T / dt)):
        expected[k >= k_half] += 0.5 * theta**2 / sigma**2 * m * dt
        m = (1 - theta * dt) ** 2 * m + sigma**2 * dt
    for i in range(2):
        x = log_ratio[i]
        assert_close_mc(x.mean(), expected[i], x.std() / math.sqrt(n), what=f"KL over interval {i}")
    # The continuous-time KL, E int_0^T theta^2 X_t^2 / (2 sigma^2) dt, is within O(dt) of it.
    e = math.exp(-2 * theta * T)
    kl = (
        0.5
        * theta**2
        / sigma**2
        * (x0**2 * (1 - e) / (2 * theta) + sigma**2 / (2 * theta) * (T - (1 - e) / (2 * theta)))
    )
    assert abs(sum(expected) - kl) < 2 * theta * dt * kl


class ConstantDriftGeneral:
    noise_type = "general"
    sde_type = "ito"
    c = torch.tensor([0.6, -1.2], dtype=F64)

    def f(self, t, y):
        return self.c.expand_as(y)

    def g(self, t, y):
        return 0.5 * torch.eye(2, dtype=F64).expand(y.shape[0], 2, 2)

    def h(self, t, y):
        return torch.zeros_like(y)


@pytest.mark.parametrize("method", ["euler", "milstein"])
def test_logqp_exact_for_constant_u(method):
    # u = g^{-1}(f - h) = c / 0.5 on every path: the log ratio is |c|^2 / (2 0.25) per unit time.
    sde = ConstantDriftGeneral() if method == "euler" else OUPosteriorBrownianPrior(0.0, 0.5)
    if method == "milstein":
        sde.f = lambda t, y: torch.full_like(y, 0.6)
    y0 = torch.zeros(5, 2, dtype=F64)
    ts = [0.0, 0.25, 1.0]
    _, log_ratio = sdeint(sde, y0, ts, dt=0.05, logqp=True, method=method)
    rate = (0.6**2 + 1.2**2) / 0.5 if method == "euler" else 2 * 0.6**2 / 0.5
    expected = torch.tensor([0.25 * rate, 0.75 * rate], dtype=F64)[:, None].expand(2, 5)
    torch.testing.assert_close(log_ratio, expected)


def test_logqp_agrees_with_torchsde():
    sde = OUPosteriorBrownianPrior(1.0, 0.5)
    y0 = torch.ones(4, 1, dtype=F64)
    # torchsde augments the state with the KL, so for diagonal noise its bm has d + 1 channels.
    bm = torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(4, 2), dtype=F64, entropy=3)
    ys_ref, lr_ref = torchsde.sdeint(
        sde, y0, [0.0, 0.5, 1.0], bm=bm, method="euler", dt=0.01, logqp=True
    )
    ys, lr = sdeint(sde, y0, [0.0, 0.5, 1.0], bm=bm, method="euler", dt=0.01, logqp=True)
    torch.testing.assert_close(ys, ys_ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(lr, lr_ref, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------
# Grid, noise, randomness, dtypes
# ---------------------------------------------------------------------------------------------


def test_step_grid_lands_on_outputs():
    times, counts = step_grid([0.0, 0.25, 1.0], 0.1)
    assert counts == [3, 8]
    assert times[3] == 0.25 and times[-1] == 1.0 and len(times) == 12
    # dt dividing the span up to rounding gives exactly span / dt steps
    assert step_grid([0.0, 0.3], 0.1)[1] == [3]
    assert step_grid([0.0, 1.0], 1e-3)[1] == [1000]


def test_generator_and_global_seed_reproducible():
    sde, y0 = OU(1.0, 1.0), torch.zeros(64, 2)
    a = sdeint(sde, y0, [0.0, 1.0], dt=0.1, generator=make_generator(4))
    b = sdeint(sde, y0, [0.0, 1.0], dt=0.1, generator=make_generator(4))
    c = sdeint(sde, y0, [0.0, 1.0], dt=0.1, generator=make_generator(5))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    torch.manual_seed(11)
    d = sdeint(sde, y0, [0.0, 1.0], dt=0.1)
    torch.manual_seed(11)
    torch.testing.assert_close(d, sdeint(sde, y0, [0.0, 1.0], dt=0.1))
    assert a.dtype == torch.float32


def test_brownian_grid_increments():
    grid = BrownianGrid(
        torch.linspace(0, 2, 201), (50_000, 1), dtype=F64, generator=make_generator(0)
    )
    inc = grid(0.5, 1.7)
    n = inc.shape[0]
    assert_close_mc(inc.var(), 1.2, 1.2 * math.sqrt(2 / n), what="Var W(1.7) - W(0.5)")
    torch.testing.assert_close(grid.increments_on([0.0, 0.5, 1.7]).sum(0), grid(0.0, 1.7))
    with pytest.raises(ValueError, match="not a point"):
        grid(0.0, 0.005)


def test_increments_of_fresh_noise_have_variance_dt():
    sde = LinearSDE(0.0, 1.0)  # dX = X dW on X=1 for one step: X_1 - 1 = dW
    y = sdeint(
        sde, torch.ones(100_000, 1, dtype=F64), [0.0, 0.3], dt=0.3, generator=make_generator(2)
    )
    inc = y[-1, :, 0] - 1
    assert_close_mc(inc.mean(), 0.0, math.sqrt(0.3 / inc.numel()), what="mean of dW")
    assert_close_mc(inc.var(), 0.3, 0.3 * math.sqrt(2 / inc.numel()), what="variance of dW")


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def test_input_errors():
    sde, y0 = LinearSDE(0.1, 0.2), torch.ones(4, 2)
    with pytest.raises(ValueError, match="dt must be positive"):
        sdeint(sde, y0, [0.0, 1.0], dt=0.0)
    with pytest.raises(ValueError, match="dt must be positive"):
        sdeint(sde, y0, [0.0, 1.0], dt=-0.1)
    with pytest.raises(ValueError, match="strictly increasing"):
        sdeint(sde, y0, [0.0, 1.0, 1.0], dt=0.1)
    with pytest.raises(ValueError, match="strictly increasing"):
        sdeint(sde, y0, [1.0, 0.0], dt=0.1)
    with pytest.raises(ValueError, match=r"y0 must have shape \(batch, d\)"):
        sdeint(sde, torch.ones(4), [0.0, 1.0], dt=0.1)
    with pytest.raises(ValueError, match="NaN"):
        sdeint(sde, torch.tensor([[1.0, float("nan")]]), [0.0, 1.0], dt=0.1)
    with pytest.raises(ValueError, match="unknown"):
        sdeint(sde, y0, [0.0, 1.0], method="rk45", dt=0.1)
    with pytest.raises(ValueError, match="stratonovich"):
        sdeint(LinearSDE(0.1, 0.2, "stratonovich"), y0, [0.0, 1.0], method="euler", dt=0.1)
    with pytest.raises(ValueError, match="ito"):
        sdeint(sde, y0, [0.0, 1.0], method="heun", dt=0.1)
    with pytest.raises(ValueError, match="general"):
        sdeint(GeneralSDE(2, 2), y0, [0.0, 1.0], method="milstein", dt=0.1)
    with pytest.raises(TypeError, match="noise_type"):
        sdeint(object(), y0, [0.0, 1.0], dt=0.1)
    with pytest.raises(ValueError, match=r"drift f\(t, y\) must have shape"):
        bad = LinearSDE(0.1, 0.2)
        bad.f = lambda t, y: y[:, :1]
        sdeint(bad, y0, [0.0, 1.0], dt=0.1)
    with pytest.raises(ValueError, match="diagonal"):
        bad = LinearSDE(0.1, 0.2)
        bad.g = lambda t, y: y.unsqueeze(-1)
        sdeint(bad, y0, [0.0, 1.0], dt=0.1)
    with pytest.raises(ValueError, match="bm.shape"):
        sdeint(
            sde, y0, [0.0, 1.0], dt=0.1, bm=torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(4, 3))
        )
    with pytest.raises(ValueError, match=r"bm\(t0, t1\) must return increments of shape"):
        # a plain callable's (batch, 1) increments would broadcast over d silently
        sdeint(sde, y0, [0.0, 1.0], dt=0.1, bm=lambda a, b: torch.zeros(4, 1))
    with pytest.raises(ValueError, match="h\\(t, y\\)"):
        sdeint(sde, y0, [0.0, 1.0], dt=0.1, logqp=True)
    with pytest.raises(TypeError, match="generator"):
        sdeint(sde, y0, [0.0, 1.0], dt=0.1, generator=42)
    with pytest.raises(ValueError, match="dt must be positive"):
        odeint(linear_field, torch.ones(1, 3), [0.0, 1.0], dt=0.0)
    with pytest.raises(ValueError, match="strictly increasing or strictly decreasing"):
        odeint(linear_field, torch.ones(1, 3), [0.0, 1.0, 0.5])
    with pytest.raises(ValueError, match="shape"):
        odeint(lambda t, y: y[:, :1], torch.ones(1, 3), [0.0, 1.0])
    with pytest.raises(ValueError, match="unknown"):
        odeint(linear_field, torch.ones(1, 3), [0.0, 1.0], method="rk45")
    with pytest.raises(TypeError, match="ODESolver subclass"):
        odeint(linear_field, torch.ones(1, 3), [0.0, 1.0], method=EulerMaruyama)


def test_divergence_raises_solver_diverged_error():
    class Explosive:
        noise_type, sde_type = "diagonal", "ito"

        def f(self, t, y):
            return y**3

        def g(self, t, y):
            return 0.1 * y

    # y' = y^3 from y(0) = 2 blows up at t = 1/8.
    with pytest.raises(SolverDivergedError, match="between t=0.05 and t=1"):
        sdeint(Explosive(), torch.full((3, 1), 2.0), [0.0, 0.05, 1.0], dt=0.1)
    with pytest.raises(SolverDivergedError, match="NaN/inf"):
        odeint(lambda t, y: y**3, torch.full((3, 1), 2.0), [0.0, 1.0, 2.0], method="euler", dt=0.1)


class ItoMidpointAdditive(EulerMaruyama):
    """A user's own solver: drift at the midpoint predictor, additive noise only."""

    strong_order = 1.0
    noise_types = ("additive",)
    nodes = (0.0, 0.5)

    def step(self, t, h, y, dW):
        f0, g = self.f_and_g(t[0], y)
        f_mid, _ = self.f_and_g(t[1], torch.add(y, f0, alpha=0.5 * h))
        return torch.add(self.diffuse(y, g, dW), f_mid, alpha=h)


def test_custom_solver_class_runs_and_is_checked():
    # OU with sigma = 0 is the ODE y' = -y: the midpoint drift rule is second order.
    sde, y0 = OU(1.0, 0.0), torch.ones(3, 1, dtype=F64)
    errors = [
        (sdeint(sde, y0, [0.0, 1.0], method=ItoMidpointAdditive, dt=dt)[-1] - math.exp(-1))
        .abs()
        .max()
        .item()
        for dt in (0.1, 0.05, 0.025)
    ]
    assert_order([0.1, 0.05, 0.025], errors, 2.0, tol=0.25)
    with pytest.raises(ValueError, match="noise types"):
        sdeint(LinearSDE(0.1, 0.2), y0, [0.0, 1.0], method=ItoMidpointAdditive, dt=0.1)
    with pytest.raises(TypeError, match="SDESolver subclass"):
        sdeint(sde, y0, [0.0, 1.0], method=42, dt=0.1)


def test_chunked_noise_for_long_solves(monkeypatch):
    from probgen.sde import noise

    monkeypatch.setattr(noise, "_CHUNK_ELEMENTS", 5000)  # 20_000 paths: one chunk per step
    sde = OU(0.0, 1.0)  # dX = dW
    n = 20_000
    ys = sdeint(
        sde, torch.zeros(n, 1, dtype=F64), [0.0, 0.5, 2.0], dt=0.1, generator=make_generator(9)
    )
    inc = ys[2, :, 0] - ys[1, :, 0]
    assert_close_mc(inc.var(), 1.5, 1.5 * math.sqrt(2 / n), what="Var W(2) - W(0.5)")
    # increments of disjoint intervals are independent
    assert_close_mc((inc * ys[1, :, 0]).mean(), 0.0, math.sqrt(1.5 * 0.5 / n), what="Cov")


def test_names_and_fused_f_and_g_give_the_same_path():
    class Renamed:
        noise_type, sde_type = "diagonal", "ito"

        def drift_fn(self, t, y):
            return 0.5 * y

        def diffusion_fn(self, t, y):
            return 0.3 * y

    class Fused:
        noise_type, sde_type = "diagonal", "ito"

        def f_and_g(self, t, y):
            return 0.5 * y, 0.3 * y

    y0 = torch.ones(5, 2, dtype=F64)
    grid = BrownianGrid([i / 10 for i in range(11)], (5, 2), dtype=F64, generator=make_generator(0))
    a = sdeint(
        Renamed(),
        y0,
        [0.0, 1.0],
        bm=grid,
        dt=0.1,
        names={"drift": "drift_fn", "diffusion": "diffusion_fn"},
    )
    b = sdeint(Fused(), y0, [0.0, 1.0], bm=grid, dt=0.1)
    # Euler on GBM: X_T = prod_k (1 + 0.5 h + 0.3 dW_k)
    exact = torch.prod(1 + 0.05 + 0.3 * grid.increments_on(grid.times), dim=0)
    torch.testing.assert_close(a[-1], exact)
    torch.testing.assert_close(b[-1], exact)


def test_custom_ode_solver_class():
    from probgen.sde import ODESolver

    class Midpoint(ODESolver):
        order, stages, nodes = 2, 2, (0.0, 0.5)

        def step(self, t, h, y):
            k1 = self.func(t[0], y)
            return torch.add(y, self.func(t[1], torch.add(y, k1, alpha=0.5 * h)), alpha=h)

    y0 = torch.tensor([[1.0, 0.0, -1.0]], dtype=F64)
    exact = y0 @ torch.linalg.matrix_exp(A_ODE).T
    dts = [2.0**-k for k in range(3, 7)]
    errors = []
    for dt in dts:
        ys, nfe = odeint(linear_field, y0, [0.0, 1.0], method=Midpoint, dt=dt, return_nfe=True)
        errors.append((ys[-1] - exact).abs().max().item())
        assert nfe == 2 * round(1 / dt)
    assert_order(dts, errors, 2.0, tol=0.25)


def test_brownian_grid_drives_torchsde_too():
    # dt = 2^-4 makes torchsde's accumulated times exact grid points.
    sde = NeuralDiagonalSDE().to(F64)
    y0 = torch.randn(8, 3, dtype=F64, generator=make_generator(0))
    grid = BrownianGrid([i / 16 for i in range(17)], (8, 3), dtype=F64, generator=make_generator(1))
    ts = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    ref = torchsde.sdeint(sde, y0, ts, bm=grid, method="euler", dt=1 / 16)
    torch.testing.assert_close(sdeint(sde, y0, ts, bm=grid, method="euler", dt=1 / 16), ref)


def test_plain_callable_bm_drives_the_solve_and_logqp_pads_it():
    # Euler on dX = sigma dW with a callable returning (t1 - t0) * c: X_T = sigma c T exactly.
    sde = OUPosteriorBrownianPrior(0.0, 0.5)
    c = torch.tensor([[1.0], [-2.0]], dtype=F64)
    ys = sdeint(sde, torch.zeros(2, 1, dtype=F64), [0.0, 1.0], dt=0.25, bm=lambda a, b: (b - a) * c)
    torch.testing.assert_close(ys[-1], 0.5 * c)
    # with logqp and diagonal noise the callable may return (batch, d) or (batch, d + 1)
    for width in (1, 2):
        cw = c.expand(2, width)
        ys, _ = sdeint(
            sde,
            torch.zeros(2, 1, dtype=F64),
            [0.0, 1.0],
            dt=0.25,
            logqp=True,
            bm=lambda a, b, cw=cw: (b - a) * cw,
        )
        torch.testing.assert_close(ys[-1], 0.5 * c)


class _ParamSDE:
    """dY = a * tanh(Y) dt + b(Y) dW with parameters a (d,) and W (d, d): drift and diffusion depend on both."""

    def __init__(self, a, w, noise_type, sde_type):
        self.a, self.w = a, w
        self.noise_type, self.sde_type = noise_type, sde_type

    def f(self, t, y):
        return self.a * torch.tanh(y)

    def g(self, t, y):
        s = torch.sigmoid(y @ self.w)
        if self.noise_type == "diagonal":
            return s
        return s.unsqueeze(-1) * self.w.unsqueeze(0)  # (batch, d, d) general noise


@pytest.mark.parametrize(
    ("method", "noise_type", "sde_type"),
    [
        ("euler", "diagonal", "ito"),
        ("euler", "general", "ito"),
        ("milstein", "diagonal", "ito"),
        ("heun", "diagonal", "stratonovich"),
        ("heun", "general", "stratonovich"),
    ],
)
def test_gradcheck_through_the_in_place_steps(method, noise_type, sde_type):
    """The steps update fresh tensors in place (``add_``/``mul_``): autograd must still be exact (float64)."""
    g = torch.Generator().manual_seed(3)
    d, batch, n = 2, 3, 4
    times = [k / n for k in range(n + 1)]
    bm = BrownianGrid(times, (batch, d), dtype=torch.float64, generator=g)
    y0 = torch.randn(batch, d, dtype=torch.float64, generator=g, requires_grad=True)
    a = torch.randn(d, dtype=torch.float64, generator=g, requires_grad=True)
    w = (0.5 * torch.randn(d, d, dtype=torch.float64, generator=g)).requires_grad_(True)

    def solve(y0, a, w):
        return sdeint(_ParamSDE(a, w, noise_type, sde_type), y0, times, bm=bm, method=method, dt=1 / n)

    assert torch.autograd.gradcheck(solve, (y0, a, w))
