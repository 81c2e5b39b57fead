"""The shared argument checks (probgen.validation): type, range and message of each."""

import math

import pytest
import torch

from probgen.validation import check_bool, check_choice, check_finite, check_int, check_real, check_reals


@pytest.mark.parametrize(
    "value, bounds, error, allowed",
    [
        (-1.0, {"gt": 0}, ValueError, "> 0"),
        (0.0, {"gt": 0}, ValueError, "> 0"),
        (math.nan, {"gt": 0}, ValueError, "> 0"),
        (math.inf, {"gt": 0}, ValueError, "> 0"),
        (1.0, {"ge": 0, "lt": 1}, ValueError, "in [0, 1)"),
        (-0.1, {"ge": 0, "le": 1}, ValueError, "in [0, 1]"),
        ("0.1", {"gt": 0}, TypeError, "real number"),
        (True, {"gt": 0}, TypeError, "real number"),
        (None, {"gt": 0}, TypeError, "real number"),
    ],
)
def test_check_real_names_argument_value_and_range(value, bounds, error, allowed):
    with pytest.raises(error) as info:
        check_real("lr", value, **bounds)
    message = str(info.value)
    assert message.startswith("lr must be") and allowed in message and repr(value) in message
    assert info.value.argument == "lr"


def test_check_real_accepts_valid_values_and_none_when_allowed():
    assert check_real("lr", 1, gt=0) == 1.0
    assert check_real("lr", torch.tensor(0.5), gt=0) == 0.5
    assert check_real("scale", None, gt=0, allow_none=True) is None
    assert check_real("bound", math.inf, allow_inf=True) == math.inf


@pytest.mark.parametrize("value, error", [(0, ValueError), (-3, ValueError), (2.0, TypeError), (True, TypeError), ("4", TypeError)])
def test_check_int(value, error):
    with pytest.raises(error, match=r"num_chains must be an integer"):
        check_int("num_chains", value, ge=1)


def test_check_choice_lists_the_choices():
    with pytest.raises(ValueError, match=r"sampler must be one of 'sgld', 'psgld', got 'sgdl'"):
        check_choice("sampler", "sgdl", ("sgld", "psgld"))
    assert check_choice("sampler", None, ("sgld",), allow_none=True) is None


def test_check_bool_rejects_ints_and_strings():
    for value in (0, 1, "true"):
        with pytest.raises(TypeError, match="learn_noise must be true or false"):
            check_bool("learn_noise", value)


def test_check_reals_per_element_and_length():
    assert check_reals("weight_var", 2.0, gt=0) == [2.0]
    with pytest.raises(ValueError, match=r"weight_var\[1\] must be a real number > 0, got -1"):
        check_reals("weight_var", [1.0, -1.0], gt=0)
    with pytest.raises(ValueError, match="weight_var must have length 3, got 2"):
        check_reals("weight_var", [1.0, 2.0], gt=0, length=3)


def test_check_finite_counts_and_locates_bad_entries():
    x = torch.zeros(3, 4)
    x[1, 2] = math.nan
    with pytest.raises(ValueError, match=r"x0 contains NaN \(1 of 12 entries, first at index \(1, 2\)\)"):
        check_finite("x0", x)
    x[0, 0] = math.inf
    with pytest.raises(ValueError, match=r"x0 contains NaN and inf \(2 of 12"):
        check_finite("x0", x)
    with pytest.raises(TypeError, match="x0 must be a torch.Tensor"):
        check_finite("x0", [1.0])
    check_finite("x0", torch.ones(2, dtype=torch.float64))
    check_finite("labels", torch.arange(3))  # integer tensors are always finite
