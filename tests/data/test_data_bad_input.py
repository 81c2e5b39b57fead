"""Every DataModule checks its arguments at construction, naming the bad one."""

import math

import pytest

from probgen.testing import assert_rejects_argument
from probgen.data import (
    DigitsDataModule,
    FOUBridge,
    FOUPaths,
    GapRegression1D,
    GaussianDataModule,
    HeavyTailRegression,
    MovingDigits,
    Spirals,
    Toy2D,
    TwoMoons,
    UCIRegression,
)

CASES = [
    (Toy2D, "batch_size", 0), (Toy2D, "batch_size", 1.5), (Toy2D, "eval_batch_size", 0), (Toy2D, "num_workers", -1),
    (Toy2D, "seed", "a"), (Toy2D, "n_train", 0), (Toy2D, "name", "checkers"),
    (TwoMoons, "num_train", 0), (TwoMoons, "noise", -0.1), (Spirals, "num_classes", 1), (Spirals, "turns", 0.0),
    (GapRegression1D, "noise", 0.0), (GapRegression1D, "num_grid", 0),
    (DigitsDataModule, "task", "gen"), (DigitsDataModule, "dequantize", "yes"),
    (FOUPaths, "hurst", 1.0), (FOUPaths, "sigma", 0.0), (FOUPaths, "horizon", -1.0), (FOUPaths, "n_obs", 0),
    (FOUPaths, "fine", 0), (FOUPaths, "kind", "type3"), (FOUPaths, "obs_noise", -1.0), (FOUPaths, "num_val", 0),
    (FOUBridge, "obs_time", 0.0), (FOUBridge, "obs_value", math.nan), (FOUBridge, "num_paths", 0),
    (GaussianDataModule, "dim", 0), (GaussianDataModule, "std", 0.0), (GaussianDataModule, "n_val", 0),
    (MovingDigits, "num_frames", 1), (MovingDigits, "canvas", 8), (MovingDigits, "frame_dt", 0.0),
    (MovingDigits, "velocity_noise", -1.0),
    (HeavyTailRegression, "num_test", 0), (HeavyTailRegression, "noise_df", 0.0), (HeavyTailRegression, "input_dim", 0),
    (UCIRegression, "dtype", "float16"), (UCIRegression, "split", -1), (UCIRegression, "val_fraction", 1.0),
]


@pytest.mark.parametrize("cls, name, value", CASES, ids=[f"{c.__name__}-{n}={v}" for c, n, v in CASES])
def test_bad_argument_raises_at_construction_naming_it(cls, name, value):
    assert_rejects_argument(cls, name, value)
