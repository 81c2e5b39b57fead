"""probgen.testing: the shipped order fit and Monte Carlo checks."""

import math

import pytest
import torch

from probgen.testing import (
    assert_close_mc,
    assert_mean_close,
    assert_order,
    assert_var_close,
    fit_order,
    fixed_seed,
    make_generator,
)


def test_fit_order_recovers_exact_power_law():
    dts = [2.0**-k for k in range(2, 8)]
    assert fit_order(dts, [3.0 * h**1.5 for h in dts]) == pytest.approx(1.5, abs=1e-12)
    assert fit_order(torch.tensor(dts), torch.tensor([0.1 * h**0.5 for h in dts])) == pytest.approx(
        0.5, abs=1e-6
    )


def test_assert_order_raises_outside_margin_and_bad_input():
    dts = [2.0**-k for k in range(2, 7)]
    errors = [h**0.5 for h in dts]
    assert assert_order(dts, errors, 0.5) == pytest.approx(0.5)
    with pytest.raises(AssertionError, match="fitted order 0.500"):
        assert_order(dts, errors, 1.0)
    with pytest.raises(ValueError, match="positive"):
        fit_order(dts, [0.0] * len(dts))
    with pytest.raises(ValueError, match="same length"):
        fit_order(dts, errors[:2])


def test_moment_checks_accept_truth_and_reject_shift():
    x = torch.randn(20_000, 3, generator=make_generator(0), dtype=torch.float64) * 2.0 + 1.0
    assert_mean_close(x, 1.0)
    assert_var_close(x, 4.0)
    with pytest.raises(AssertionError, match="sample mean"):
        assert_mean_close(x, 1.0 + 10 * 2.0 / math.sqrt(20_000))
    with pytest.raises(AssertionError, match="sample variance"):
        assert_var_close(x, 4.5)
    with pytest.raises(AssertionError):
        assert_close_mc(1.0, 1.5, 0.1)


def test_fixed_seed_restores_global_state():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with fixed_seed(7):
        a = torch.rand(2)
    with fixed_seed(7):
        b = torch.rand(2)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(torch.rand(3), expected)
