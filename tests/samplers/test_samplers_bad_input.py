"""Bad input to the shared samplers and diagnostics: every case raises, naming what is wrong."""

import math

import pytest
import torch

from probgen.exceptions import SamplerDivergedError
from probgen.samplers import PSGLD, SGHMC, SGLD, ess, rhat

OPTIMIZERS = {"SGLD": SGLD, "PSGLD": PSGLD, "SGHMC": SGHMC}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_step_with_non_finite_gradient_raises_and_leaves_parameters(name, bad):
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(3))
    b = torch.nn.Parameter(torch.randn(2, 2))
    c = torch.nn.Parameter(torch.randn(4))
    opt = OPTIMIZERS[name]([{"params": [a]}, {"params": [b, c]}], lr=1e-3, num_data=10)
    before = [p.detach().clone() for p in (a, b, c)]
    (a.sum() + b.sum() + (c * torch.tensor([1.0, bad, 1.0, 1.0])).sum()).backward()
    with pytest.raises(SamplerDivergedError, match=rf"{name}\.step: the gradient of parameter 1 of param group 1 \(shape \(4,\)\) contains NaN or inf"):
        opt.step()
    for p, p0 in zip((a, b, c), before):  # no group was updated, not even the finite one
        assert torch.equal(p.detach(), p0)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_step_with_finite_gradients_still_moves(name):
    p = torch.nn.Parameter(torch.zeros(3))
    opt = OPTIMIZERS[name]([p], lr=1e-2, num_data=1, temperature=0.0)
    p.sum().backward()
    opt.step()
    assert torch.all(p.detach() < 0)


def _chains(bad=None):
    x = torch.randn(4, 100, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    if bad is not None:
        x[2, 37] = bad
    return x


@pytest.mark.parametrize("bad, kind", [(math.nan, "NaN"), (math.inf, "inf"), (-math.inf, "inf")])
@pytest.mark.parametrize("call", [
    pytest.param(lambda x: rhat(x), id="rhat-rank"),
    pytest.param(lambda x: rhat(x, method="split"), id="rhat-split"),
    pytest.param(lambda x: ess(x), id="ess-bulk"),
    pytest.param(lambda x: ess(x, method="basic"), id="ess-basic"),
    pytest.param(lambda x: ess(x, method="tail"), id="ess-tail"),
])
def test_diagnostics_reject_non_finite_draws(call, bad, kind):
    with pytest.raises(ValueError, match=rf"chains contains {kind} \(1 of 400 entries, first at index \(2, 37\)\)"):
        call(_chains(bad))


def test_diagnostics_of_finite_draws_are_unchanged_by_the_check():
    x = _chains()
    assert 0.99 < float(rhat(x)) < 1.05
    assert 100 < float(ess(x)) < 800


@pytest.mark.parametrize("method", ["bulk", "basic", "tail"])
def test_ess_of_a_constant_quantity_is_the_number_of_draws(method):
    # ArviZ's _ess: max - min below float resolution -> ary.size (of the split chains: an odd
    # draw count loses its middle draw), not S log10(S) from the tau floor
    x = torch.full((4, 101), 2.5, dtype=torch.float64)
    assert float(ess(x, method=method)) == 400.0


def test_tail_ess_when_both_quantile_indicators_are_constant():
    # 2.5% of the draws are 0, the rest 1: the 5% and 95% quantiles are both 1, so both
    # indicators x <= q are constant (all true) and ArviZ's tail ESS is the draw count
    x = torch.ones(4, 200, dtype=torch.float64)
    x[:, ::40] = 0.0
    assert float(torch.quantile(x.flatten(), 0.05)) == 1.0
    assert float(ess(x, method="tail")) == 800.0
    assert float(ess(x, method="basic")) < 800.0 * math.log10(800.0)  # a finite, non-degenerate estimate


@pytest.mark.parametrize("make, match", [
    (lambda p: SGLD(p, lr=0.0, num_data=1), "lr must be finite and > 0, got 0"),
    (lambda p: SGLD(p, lr=math.nan, num_data=1), "lr must be finite and > 0, got nan"),
    (lambda p: SGLD(p, lr=0.1, num_data=0), "num_data must be finite and > 0, got 0"),
    (lambda p: SGLD(p, lr=0.1, num_data=1, temperature=-1), "temperature must be finite and >= 0, got -1"),
    (lambda p: PSGLD(p, lr=0.1, num_data=1, alpha=1.0), r"alpha must lie in \[0, 1\), got 1.0"),
    (lambda p: PSGLD(p, lr=0.1, num_data=1, eps=0.0), "eps must be finite and > 0, got 0"),
    (lambda p: SGHMC(p, lr=0.1, num_data=1, friction=0.0), r"friction must lie in \(0, 1\], got 0"),
    (lambda p: SGHMC(p, lr=0.1, num_data=1, friction=math.nan), r"friction must lie in \(0, 1\], got nan"),
    (lambda p: SGLD(p, lr=0.1, num_data=1, generator=0), "generator must be a torch.Generator"),
    (lambda p: SGLD(p, lr="0.1", num_data=1), "lr must be a real number or a tensor, got str"),
    (lambda p: SGHMC(p, lr=0.1, num_data=1, friction="high"), "friction must be a real number or a tensor, got str"),
    (lambda p: PSGLD(p, lr=0.1, num_data=1, alpha=None), "alpha must be a real number or a tensor, got NoneType"),
])
def test_optimizer_constructors_reject_bad_hyperparameters(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make([torch.nn.Parameter(torch.zeros(2))])


@pytest.mark.parametrize("call, match", [
    (lambda: rhat(torch.randn(10)), r"chains must have shape \(n_chains, n_draws, ...\), got shape \(10,\)"),
    (lambda: rhat(torch.randn(4, 3)), "chains need at least 4 draws, got 3"),
    (lambda: rhat(torch.randn(4, 10), method="bulk"), "method must be 'rank' or 'split', got 'bulk'"),
    (lambda: ess(torch.randn(4, 10), method="mean"), "method must be 'bulk', 'basic' or 'tail', got 'mean'"),
])
def test_diagnostics_reject_bad_shapes_and_methods(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_langevin_reports_a_nan_start_as_bad_input():
    from probgen.samplers import langevin

    x0 = torch.zeros(3, 2)
    x0[2, 1] = math.nan
    with pytest.raises(ValueError, match=r"^x0 contains NaN \(1 of 6 entries, first at index \(2, 1\)\)"):
        langevin(lambda x: x.square().sum(-1), x0, 3, 0.1)
