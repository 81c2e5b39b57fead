"""torchsde / torchdiffeq drop-in behaviour of sdeint and odeint (ideas from their own test suites).

torchsde's tests/test_sdeint.py runs every method with and without ``logqp`` and a user
``BrownianInterval`` of size ``d + 1``, on ``ts = linspace(0, 0.3, 5)`` with ``dt = 0.05``
(which does not divide the spacing 0.075); torchdiffeq's tests run tuple states, fixed-grid
options, events and gradients with respect to ``t``. Each gap is checked here against the
library itself with the same noise, or against a closed form.
"""

import math
import warnings

import pytest
import torch
import torchdiffeq
import torchsde

from probgen.sde import compat, odeint, sdeint
from probgen.testing import assert_order

F64 = torch.float64


class NonlinearSDE(torch.nn.Module):
    """A diagonal SDE with time-dependent drift and a state-dependent diffusion; prior drift h."""

    noise_type = "diagonal"

    def __init__(self, sde_type="ito"):
        super().__init__()
        self.sde_type = sde_type

    def f(self, t, y):
        return -y + torch.sin(t)

    def g(self, t, y):
        return 0.3 * torch.cos(y)

    def h(self, t, y):
        return -0.5 * y


def _torchsde_problem(d_noise=3):
    y0 = torch.ones(4, 3, dtype=F64)
    ts = torch.linspace(0.0, 0.3, 5, dtype=F64)
    bm = torchsde.BrownianInterval(0.0, 0.3, size=(4, d_noise), dtype=F64, entropy=11)
    return y0, ts, bm


@pytest.mark.parametrize("method", ["euler", "milstein"])
def test_interpolate_reproduces_torchsde_where_dt_does_not_divide_ts(method):
    y0, ts, bm = _torchsde_problem()
    sde = NonlinearSDE()
    ref = torchsde.sdeint(sde, y0, ts, bm, method, 0.05)
    # default: probgen re-grids (4 steps of 0.075 / 2 per interval), so the paths differ
    regrid = sdeint(sde, y0, ts, bm, method, 0.05)
    assert (regrid - ref).abs().max() > 1e-3
    ours = sdeint(sde, y0, ts, bm, method, 0.05, interpolate=True)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


def test_interpolate_float32_times_accumulate_like_torchsde():
    sde = NonlinearSDE()
    y0 = torch.ones(4, 3)
    ts = torch.tensor([0.0, 0.1, 0.7, 1.0])
    bm = torchsde.BrownianInterval(0.0, 1.0, size=(4, 3), entropy=5)
    ref = torchsde.sdeint(sde, y0, ts, bm, "euler", 0.03)
    torch.testing.assert_close(sdeint(sde, y0, ts, bm, "euler", 0.03, interpolate=True), ref)


def test_torchsde_positional_order_and_extra():
    y0, ts, bm = _torchsde_problem(d_noise=4)
    sde = NonlinearSDE()
    # torchsde's positional order: bm, method, dt, adaptive, rtol, atol, dt_min, options, names, logqp, extra
    ys, log_ratio, extra = sdeint(
        sde, y0, ts, bm, "euler", 0.05, False, 1e-5, 1e-4, 1e-5, None, None, True, True
    )
    assert extra == ()
    ref_ys, ref_lr = torchsde.sdeint(sde, y0, ts, bm, "euler", 0.05, logqp=True)
    by_keyword = sdeint(sde, y0, ts, bm, method="euler", dt=0.05, logqp=True)
    torch.testing.assert_close((ys, log_ratio), by_keyword)
    ours_i = sdeint(sde, y0, ts, bm, "euler", 0.05, logqp=True, interpolate=True)
    torch.testing.assert_close(ours_i[0], ref_ys, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours_i[1], ref_lr, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="extra_solver_state"):
        sdeint(sde, y0, ts, bm, "euler", 0.05, extra_solver_state=(y0,))


def test_reversible_heun_extra_solver_state_passes_through():
    y0, ts, _ = _torchsde_problem()
    sde = NonlinearSDE("stratonovich")
    bm = torchsde.BrownianInterval(0.0, 0.3, size=(4, 3), dtype=F64, entropy=3)
    ys, extra = sdeint(sde, y0, ts, bm, "reversible_heun", 0.05, extra=True)
    ref, ref_extra = torchsde.sdeint(sde, y0, ts, bm, "reversible_heun", 0.05, extra=True)
    torch.testing.assert_close(ys, ref)
    assert len(extra) == 3
    # starting from a given extra state: torchsde's answer with the same state
    state = tuple(e * 1.1 for e in ref_extra)
    again = sdeint(sde, y0, ts, bm, "reversible_heun", 0.05, extra_solver_state=state)
    torch.testing.assert_close(
        again, torchsde.sdeint(sde, y0, ts, bm, "reversible_heun", 0.05, extra_solver_state=state)
    )


@pytest.mark.parametrize("method", ["srk", "midpoint"])
def test_logqp_on_delegated_methods_sizes_the_brownian_motion_d_plus_1(method):
    y0, ts, _ = _torchsde_problem()
    sde = NonlinearSDE("ito" if method == "srk" else "stratonovich")
    ys, log_ratio = sdeint(
        sde, y0, ts, None, method, 0.05, logqp=True
    )  # was "Noise sizes not consistent"
    assert ys.shape == (5, 4, 3) and log_ratio.shape == (4, 4)
    levy = "space-time" if method == "srk" else "none"
    bm = torchsde.BrownianInterval(
        0.0, 0.3, size=(4, 4), dtype=F64, levy_area_approximation=levy, entropy=2
    )
    ref = torchsde.sdeint(sde, y0, ts, bm, method, 0.05, logqp=True)
    ours = sdeint(sde, y0, ts, bm, method, 0.05, logqp=True)
    torch.testing.assert_close(ours[0], ref[0])
    torch.testing.assert_close(ours[1], ref[1])


class GeneralNoise:
    noise_type = "general"
    sde_type = "ito"

    def f(self, t, y):
        return -y

    def g(self, t, y):
        return 0.1 * torch.ones(y.shape[0], y.shape[1], 2, dtype=y.dtype)


def test_default_method_per_sde_and_warning(monkeypatch):
    monkeypatch.setattr(compat, "_warned", set())
    y0, ts, bm = _torchsde_problem()
    for sde, ours, theirs in [
        (NonlinearSDE("ito"), "euler", "srk"),
        (NonlinearSDE("stratonovich"), "heun", "midpoint"),
    ]:
        with pytest.warns(UserWarning, match=f"uses {ours!r}.*would use {theirs!r}"):
            ys = sdeint(sde, y0, ts, bm, dt=0.05)
        torch.testing.assert_close(ys, sdeint(sde, y0, ts, bm, ours, 0.05))
        with warnings.catch_warnings():  # once per process and SDE kind
            warnings.simplefilter("error")
            sdeint(sde, y0, ts, bm, dt=0.05)
    with warnings.catch_warnings():  # Ito general noise: torchsde's default is euler too
        warnings.simplefilter("error")
        bm2 = torchsde.BrownianInterval(0.0, 0.3, size=(4, 2), dtype=F64)
        ys = sdeint(GeneralNoise(), y0, ts, bm2, dt=0.05, interpolate=True)
    torch.testing.assert_close(ys, torchsde.sdeint(GeneralNoise(), y0, ts, bm2, dt=0.05))


# ---------------------------------------------------------------------------------------------
# odeint against torchdiffeq
# ---------------------------------------------------------------------------------------------


def field(t, y):
    return -y * torch.cos(t)


def field_exact(t, y0):
    return y0 * torch.exp(-torch.sin(t))


@pytest.mark.parametrize(
    "ours,theirs,reverse",
    [("rk38", "rk4", False), ("euler", "euler", True), ("heun", "heun2", False)],
)
def test_fixed_step_options_step_size_match_torchdiffeq(ours, theirs, reverse):
    y0 = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    t = torch.linspace(0.0, 2.0, 5, dtype=F64)
    t = t.flip(0) if reverse else t
    count = [0]

    def counted(s, y):
        count[0] += 1
        return field(s, y)

    ref = torchdiffeq.odeint(counted, y0, t, method=theirs, options={"step_size": 0.15})
    ys, nfe = odeint(field, y0, t, method=ours, options={"step_size": 0.15}, return_nfe=True)
    assert nfe == count[0]  # was 4 x 4 = 16 for rk4: step_size was ignored
    torch.testing.assert_close(ys, ref, rtol=1e-13, atol=1e-13)


def test_grid_constructor_and_unknown_options():
    y0 = torch.tensor([1.0, 2.0], dtype=F64)
    t = torch.tensor([0.0, 0.5, 1.3], dtype=F64)

    def grid(func, y, s):
        return torch.linspace(float(s[0]), float(s[-1]), 12, dtype=s.dtype)

    ref = torchdiffeq.odeint(field, y0, t, method="rk4", options={"grid_constructor": grid})
    torch.testing.assert_close(
        odeint(field, y0, t, method="rk38", options={"grid_constructor": grid}), ref
    )
    with pytest.raises(ValueError, match="step_siz"):
        odeint(field, y0, t, method="rk4", options={"step_siz": 0.1})
    with pytest.raises(ValueError, match="either dt"):
        odeint(field, y0, t, method="rk4", dt=0.1, options={"step_size": 0.1})


def test_perturb_evaluates_inside_the_step_at_a_discontinuity():
    # y' = 1[t > 1], y(0) = 0: y(2) = 1. Euler on the grid 0, 0.5, ..., 2 evaluates at t = 1 exactly,
    # which without perturb takes the left value 0 (y = 0.5); with perturb, 1 + ulp (y = 1, exact).
    def step_field(t, y):
        return (t > 1.0).to(y.dtype) * torch.ones_like(y)

    y0 = torch.zeros(1, dtype=F64)
    t = torch.tensor([0.0, 2.0], dtype=F64)
    plain = odeint(step_field, y0, t, method="euler", dt=0.5)
    perturbed = odeint(step_field, y0, t, method="euler", dt=0.5, options={"perturb": True})
    assert plain[-1].item() == 0.5 and perturbed[-1].item() == 1.0
    ref = torchdiffeq.odeint(
        step_field, y0, t, method="euler", options={"step_size": 0.5, "perturb": True}
    )
    torch.testing.assert_close(
        odeint(step_field, y0, t, method="euler", options={"step_size": 0.5, "perturb": True}), ref
    )


def test_rk38_is_fourth_order_on_closed_form():
    y0 = torch.tensor([1.0, -0.5], dtype=F64)
    t = torch.tensor([0.0, 2.0], dtype=F64)
    exact = field_exact(t[-1], y0)
    dts = [0.25, 0.125, 0.0625, 0.03125]  # h = 0.5 is pre-asymptotic here (local slope 4.6)
    errors = [
        (odeint(field, y0, t, method="rk38", dt=h)[-1] - exact).abs().max().item() for h in dts
    ]
    assert_order(dts, errors, 4.0)


def test_tuple_state_matches_closed_form_and_torchdiffeq():
    def tuple_field(t, y):
        return field(t, y[0]), 2.0 * y[1]

    y0 = (torch.tensor([1.0, 3.0], dtype=F64), torch.ones(2, 2, dtype=F64))
    t = torch.linspace(0.0, 1.0, 4, dtype=F64)
    a, b = odeint(tuple_field, y0, t, method="dopri5", rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(a, field_exact(t[:, None], y0[0]), rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(
        b, torch.exp(2 * t)[:, None, None].expand(4, 2, 2), rtol=1e-8, atol=1e-8
    )
    (a4, b4), nfe = odeint(tuple_field, y0, t, method="rk38", dt=0.1, return_nfe=True)
    assert nfe == 4 * 3 * 4 and a4.shape == (4, 2) and b4.shape == (4, 2, 2)
    # on y' = 2y every 4-stage 4th-order RK step multiplies by R(z) = 1 + z + z^2/2 + z^3/6 + z^4/24,
    # z = 2h; here 12 steps of h = 1/12
    z = 2.0 / 12
    r = 1 + z + z**2 / 2 + z**3 / 6 + z**4 / 24
    torch.testing.assert_close(b4[-1], torch.full((2, 2), r**12, dtype=F64), rtol=1e-12, atol=0)


# fixed grid: torchdiffeq finds the root of the linear interpolant within the step, whose error is
# at most h^2/8 max|y''| = 1.25e-5 in y, i.e. 1.25e-5 / |y'(t*)| = 2.5e-5 in t
@pytest.mark.parametrize(
    "method,options,tol", [("dopri5", None, 1e-6), ("rk38", {"step_size": 0.01}, 2.5e-5)]
)
def test_event_fn_is_delegated_and_finds_the_closed_form_time(method, options, tol):
    # y' = -y, y(0) = 1 reaches 1/2 at t = log 2
    y0 = torch.ones(1, dtype=F64)
    event_t, ys = odeint(
        lambda t, y: -y,
        y0,
        torch.tensor([0.0], dtype=F64),
        method=method,
        options=options,
        event_fn=lambda t, y: y[0] - 0.5,
    )
    assert abs(event_t.item() - math.log(2.0)) < tol
    assert ys.shape == (2, 1) and abs(ys[-1].item() - 0.5) < 1e-6


def test_gradient_with_respect_to_t_and_pointer():
    # y' = -y: y(T) = y0 exp(-(T - t0)), so d y(T) / dT = -y(T) and d y(T) / d t0 = y(T)
    y0 = torch.tensor([2.0], dtype=F64)
    t = torch.tensor([0.2, 1.5], dtype=F64, requires_grad=True)
    ys = odeint(lambda s, y: -y, y0, t, method="dopri5", rtol=1e-10, atol=1e-12)
    (grad,) = torch.autograd.grad(ys[-1].sum(), t)
    yT = 2.0 * math.exp(-1.3)
    torch.testing.assert_close(grad, torch.tensor([yT, -yT], dtype=F64), rtol=1e-6, atol=1e-8)
    with pytest.raises(ValueError, match="rk38"):
        odeint(lambda s, y: -y, y0, t, method="rk4")
