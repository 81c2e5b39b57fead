"""Toy datamodules of the ensembles family: shapes, labels, seeding, the gap."""

import pytest
import torch

from probgen.data.classification2d import GapRegression1D, Spirals, TwoMoons, make_two_moons


@pytest.mark.parametrize("cls,k", [(TwoMoons, 2), (Spirals, 2)])
def test_classification_splits(cls, k):
    dm = cls(num_train=101, num_test=50, seed=3)
    dm.setup()
    x, y = dm.splits["train"]
    assert x.shape == (101, 2) and y.dtype == torch.long and set(y.tolist()) == set(range(k))
    assert abs(int((y == 0).sum()) - int((y == 1).sum())) <= 1
    again = cls(num_train=101, num_test=50, seed=3)
    again.setup()
    assert torch.equal(again.splits["test"][0], dm.splits["test"][0])
    assert dm.num_classes == k


def test_two_moons_without_noise_lie_on_the_unit_half_circles():
    x, y = make_two_moons(200, noise=0.0, generator=torch.Generator().manual_seed(0))
    upper = x[y == 0]
    torch.testing.assert_close(upper.norm(dim=1), torch.ones(len(upper)))
    lower = x[y == 1] - torch.tensor([1.0, 0.5])
    torch.testing.assert_close(lower.norm(dim=1), torch.ones(len(lower)))


def test_gap_regression_has_no_training_inputs_in_the_gap():
    dm = GapRegression1D(num_train=200)
    dm.setup()
    x = dm.splits["train"][0]
    assert x.shape == (200, 1) and (x.abs() >= 0.3).all() and (x.abs() <= 1).all()
    assert dm.splits["test"][0].shape == (200, 1)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_train"):
        TwoMoons(num_train=0)
    with pytest.raises(ValueError, match="num_classes"):
        Spirals(num_classes=1)
    with pytest.raises(ValueError, match="noise"):
        GapRegression1D(noise=0.0)
