"""FractionalSDE / LatentFractionalSDE: every argument checked at construction, by its own name."""

import math

import pytest

from probgen.fractional import FractionalSDE, LatentFractionalSDE
from probgen.testing import assert_rejects_argument

FRACTIONAL = [
    ("dim", 0), ("n_ou", -1), ("gamma_max", 0.0), ("horizon", 0.0), ("kind", "type3"), ("white", "no"),
    ("hurst", 0.0), ("hurst", 1.0), ("hurst", math.nan), ("drift", "linear"), ("diffusion", "x"), ("sigma", 0.0),
    ("control", "x"), ("control_hidden", 0), ("control_depth", -1), ("context", "x"), ("obs_std", 0.0),
    ("dt", 0.0), ("dt", -1.0), ("lr", 0.0), ("lr", -1.0), ("hurst_lr", 0.0), ("sample_points", 1), ("x0", math.nan),
    ("theta", math.inf),
]
LATENT = [
    ("latent_dim", 0), ("n_ou", -1), ("hurst", 0.0), ("hidden", 0), ("context_dim", 0), ("content_dim", 0),
    ("control_hidden", 0), ("obs_std", 0.0), ("dt", 0.0), ("num_cond_frames", 0), ("lr", 0.0),
    ("frame_size", 0), ("kind", "x"), ("hurst_lr", -1.0),
]


@pytest.mark.parametrize("name, value", FRACTIONAL, ids=[f"{n}={v}" for n, v in FRACTIONAL])
def test_fractional_sde_rejects_bad_arguments(name, value):
    assert_rejects_argument(FractionalSDE, name, value)


@pytest.mark.parametrize("name, value", LATENT, ids=[f"{n}={v}" for n, v in LATENT])
def test_latent_fractional_sde_rejects_bad_arguments(name, value):
    assert_rejects_argument(LatentFractionalSDE, name, value)


def test_sample_condition_is_a_time_value_pair_for_one_dimension():
    with pytest.raises(ValueError, match="sample_condition must have length 2, got 1 values"):
        FractionalSDE(sample_condition=[1.0])
    with pytest.raises(ValueError, match="sample_condition needs dim = 1, got dim=2"):
        FractionalSDE(dim=2, sample_condition=[1.0, 0.0])
    with pytest.raises(ValueError, match=r"sample_condition\[0\] must be a real number > 0, got 0.0"):
        FractionalSDE(sample_condition=[0.0, 1.0])
