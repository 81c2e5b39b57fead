"""generate / log_likelihood report a NaN in the user's tensor under the user's name."""

import math

import pytest
import torch

from probgen.interpolants import generate, log_likelihood


def _velocity(t, x):
    return -x


def _with_nan(shape=(4, 2)):
    x = torch.zeros(*shape)
    x[1, 0] = math.nan
    return x


@pytest.mark.parametrize("method, solver", [("ode", "rk4"), ("ode", "dopri5"), ("sde", "euler")])
def test_generate_names_x0(method, solver):
    with pytest.raises(ValueError, match=r"^x0 contains NaN"):
        generate(_velocity, _with_nan(), steps=4, method=method, solver=solver, score=_velocity, eps=0.5)


def test_log_likelihood_names_x1():
    with pytest.raises(ValueError, match=r"^x1 contains NaN"):
        log_likelihood(_velocity, _with_nan(), lambda z: -(z**2).sum(-1), steps=4)
