"""Couplings: minibatch OT is the exact optimal assignment and keeps the marginals."""

import itertools

import pytest
import torch

from probgen.interpolants import IndependentCoupling, MinibatchOTCoupling, make_coupling


def test_ot_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(6, 2, generator=g), torch.randn(6, 2, generator=g)
    y0, y1 = MinibatchOTCoupling()(x0, x1)
    torch.testing.assert_close(y1, x1)
    best = min(
        float(((x0[list(p)] - x1) ** 2).sum()) for p in itertools.permutations(range(6))
    )
    assert float(((y0 - x1) ** 2).sum()) == pytest.approx(best, rel=1e-6)
    # a permutation of the base samples: marginal unchanged
    torch.testing.assert_close(torch.sort(y0[:, 0]).values, torch.sort(x0[:, 0]).values)


def test_independent_and_names():
    x0, x1 = torch.randn(3, 2), torch.randn(3, 2)
    a, b = IndependentCoupling()(x0, x1)
    assert a is x0 and b is x1
    assert isinstance(make_coupling("ot"), MinibatchOTCoupling)
    with pytest.raises(ValueError, match="coupling must be one of"):
        make_coupling("sinkhorn")
    with pytest.raises(ValueError, match="same shape"):
        MinibatchOTCoupling()(torch.zeros(3, 2), torch.zeros(4, 2))
