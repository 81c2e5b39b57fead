"""Couplings: minibatch OT is the exact optimal assignment and keeps the marginals."""

import itertools

import pytest
import torch

from probgen.interpolants import IndependentCoupling, MinibatchOTCoupling, SinkhornCoupling, make_coupling, sinkhorn_plan


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
        make_coupling("sinkhorn_ot")
    with pytest.raises(ValueError, match="same shape"):
        MinibatchOTCoupling()(torch.zeros(3, 2), torch.zeros(4, 2))


def test_sinkhorn_two_point_closed_form():
    """2x2 uniform marginals: P11 = P22 = p, P12 = P21 = 1/2 - p with p^2 / (1/2 - p)^2 =
    exp(-(C11 + C22 - C12 - C21) / eps) (the Gibbs form's cross-ratio)."""
    C = torch.tensor([[0.0, 2.0], [1.5, 0.3]], dtype=torch.float64)
    for eps in (0.3, 1.0, 5.0):
        r = torch.exp(-(C[0, 0] + C[1, 1] - C[0, 1] - C[1, 0]) / eps).sqrt()
        p = float(r / (2 * (1 + r)))
        expected = torch.tensor([[p, 0.5 - p], [0.5 - p, p]], dtype=torch.float64)
        # Sinkhorn contracts by tanh(log(r^2) / 4)^2 per iteration (0.981 at eps = 0.3): 3000 iterations converge
        torch.testing.assert_close(sinkhorn_plan(C, eps, iters=3000), expected, atol=1e-10, rtol=0)


def test_sinkhorn_coupling_limits():
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(6, 2, generator=g), torch.randn(6, 2, generator=g)
    # small reg: the plan concentrates on the exact OT assignment
    y0, _ = MinibatchOTCoupling()(x0, x1)
    s0, s1 = SinkhornCoupling(reg=1e-3, iters=2000)(x0, x1, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(s1, x1)
    torch.testing.assert_close(s0, y0)
    # large reg: the plan tends to the independent coupling 1/n^2
    P = SinkhornCoupling(reg=1e4).plan(x0, x1)
    torch.testing.assert_close(P, torch.full((6, 6), 1 / 36, dtype=torch.float64), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="reg"):
        SinkhornCoupling(reg=0.0)
