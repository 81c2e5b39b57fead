"""Bad input to the shared solvers and fBM: each raises ValueError/TypeError naming the argument."""

import math

import pytest
import torch

from probgen.sde import MarkovFBM, fbm_covariance, odeint, sample_fbm, sdeint


class OU(torch.nn.Module):
    noise_type, sde_type = "diagonal", "ito"

    def f(self, t, y):
        return -y

    def g(self, t, y):
        return torch.ones_like(y)


Y0 = torch.zeros(3, 2)
NAN_Y0 = torch.zeros(3, 2).index_fill_(0, torch.tensor([1]), math.nan)


@pytest.mark.parametrize("call, error, match", [
    (lambda: sdeint(OU(), Y0, [0.0, 1.0], dt=0.0), ValueError, "dt must be positive and finite, got dt=0.0"),
    (lambda: sdeint(OU(), Y0, [0.0, 1.0], dt=-1.0), ValueError, "dt must be positive and finite"),
    (lambda: sdeint(OU(), Y0, [0.0, 1.0], dt=math.nan), ValueError, "dt must be positive and finite"),
    (lambda: sdeint(OU(), Y0, [1.0, 0.0], dt=0.1), ValueError, "ts must be strictly increasing"),
    (lambda: sdeint(OU(), Y0, [0.0, math.nan], dt=0.1), ValueError, "ts must be finite"),
    (lambda: sdeint(OU(), torch.zeros(3), [0.0, 1.0], dt=0.1), ValueError, r"y0 must have shape \(batch, d\)"),
    (lambda: sdeint(OU(), Y0.long(), [0.0, 1.0], dt=0.1), TypeError, "y0 must have a floating dtype"),
    (lambda: sdeint(OU(), NAN_Y0, [0.0, 1.0], dt=0.1), ValueError, "y0 contains NaN"),
    (lambda: sdeint(OU(), Y0, [0.0, 1.0], method="foo", dt=0.1), ValueError, "method='foo' is unknown"),
    (lambda: sdeint(OU(), Y0, [0.0, 1.0], method="heun", dt=0.1), ValueError, "method='heun' solves stratonovich"),
    (lambda: odeint(lambda t, y: -y, Y0, [0.0, 1.0], dt=0.0), ValueError, "dt must be positive and finite"),
    (lambda: odeint(lambda t, y: -y, Y0, [0.0, 0.0, 1.0]), ValueError, "ts must be strictly increasing or strictly decreasing"),
    (lambda: odeint(lambda t, y: -y, Y0, [0.0, 1.0], method="bad"), ValueError, "method='bad' is unknown"),
    (lambda: odeint(lambda t, y: -y, NAN_Y0, [0.0, 1.0]), ValueError, "y0 contains NaN"),
    (lambda: MarkovFBM(0.0), ValueError, r"hurst must lie in the open interval \(0, 1\), got 0.0"),
    (lambda: MarkovFBM(1.0), ValueError, r"hurst must lie in the open interval \(0, 1\), got 1.0"),
    (lambda: MarkovFBM(math.nan), ValueError, "hurst must lie in the open interval"),
    (lambda: MarkovFBM(0.3, n_ou=0), ValueError, "n_ou must be an integer >= 1, got 0"),
    (lambda: MarkovFBM(0.3, gamma_max=-1.0), ValueError, "gamma_max must be positive and finite, got -1"),
    (lambda: MarkovFBM(0.3, horizon=0.0), ValueError, "horizon must be positive and finite, got 0"),
    (lambda: MarkovFBM(0.3, kind="type3"), ValueError, "kind must be one of"),
    (lambda: fbm_covariance(torch.linspace(0.1, 1, 5), 1.5), ValueError, "hurst must lie in the open interval"),
    (lambda: fbm_covariance(torch.tensor([0.1, math.nan]), 0.5), ValueError, "ts contains NaN or inf"),
    (lambda: sample_fbm(torch.linspace(0.1, 1, 5), -1.0, 3), ValueError, "hurst must lie in the open interval"),
    (lambda: sample_fbm(torch.linspace(0.1, 1, 5), 0.5, 0), ValueError, "num_samples must be a positive integer, got 0"),
])
def test_bad_input_raises_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("solve", [
    pytest.param(lambda y0, name: sdeint(OU(), y0, [0.0, 1.0], dt=0.1, y0_name=name), id="sdeint"),
    pytest.param(lambda y0, name: odeint(lambda t, y: -y, y0, [0.0, 1.0], y0_name=name), id="odeint"),
    pytest.param(lambda y0, name: odeint(lambda t, y: -y, y0, [0.0, 1.0], method="dopri5", y0_name=name), id="dopri5"),
])
def test_callers_name_the_initial_state(solve):
    with pytest.raises(ValueError, match=r"^x0 contains NaN \(2 of 6 entries, first at index \(1, 0\)\)"):
        solve(NAN_Y0, "x0")
