"""Chains: vmap vs sequential execution, the sample store, the mixture predictive."""

import math

import pytest
import torch
from torch import nn

from probgen.ensembles.chains import ChainForward, init_chains, mlp
from probgen.ensembles.ensemble import BayesianEnsemble, SamplingSchedule
from probgen.ensembles.likelihoods import CategoricalLikelihood, GaussianLikelihood
from probgen.ensembles.predictive import (
    gaussian_mixture,
    mixture_moments,
    mixture_nll,
    predictive_entropy,
)
from probgen.ensembles.priors import GaussianPrior, make_prior
from probgen.ensembles.store import SampleStore


def _run(vectorize, method, steps=30, likelihood=None):
    torch.manual_seed(0)
    x = torch.randn(32, 3, dtype=torch.float64)
    y = torch.sin(x.sum(1, keepdim=True))
    net = mlp(3, 1, [16], "tanh").double()
    ens = BayesianEnsemble(net, likelihood or GaussianLikelihood("learnt", 0.5), GaussianPrior(1.0), num_chains=4,
                           num_data=32, store_size=5, vectorize=vectorize, seed=3)
    # scale-adapted SGHMC's lr is epsilon^2 of a preconditioned step: the paper's default 1e-4
    lr = 1e-4 if method == "adaptive_sghmc" else 1e-3
    sampler = ens.make_sampler(method, lr=lr, seed=7)
    schedule = SamplingSchedule(lr=lr, burn_in=10, thin=2)
    for _ in range(steps):
        ens.train_step(x, y, sampler, schedule)
    return ens


@pytest.mark.parametrize("method", ["sgld", "psgld", "sghmc", "adaptive_sghmc"])
def test_vmap_and_sequential_give_the_same_chains(method):
    # scale-adapted SGHMC preconditions by 1/sqrt(V) per weight: for a weight with a tiny
    # gradient that amplifies the rounding difference of the two op orders (1e-14 after 14
    # steps, 1e-9 after 30), so its chains are compared over 14 steps
    steps = 14 if method == "adaptive_sghmc" else 30
    a, b = _run("vmap", method, steps), _run("sequential", method, steps)
    for (name, pa), pb in zip(a.params().items(), b.params().values()):
        torch.testing.assert_close(pa, pb, atol=1e-10, rtol=1e-10, msg=name)
    for va, vb in zip(a.store.samples().values(), b.store.samples().values()):
        torch.testing.assert_close(va, vb, atol=1e-10, rtol=1e-10)


def test_chains_differ_and_follow_the_seed():
    net = mlp(2, 1, [8])
    a, b, c = (init_chains(net, 3, torch.Generator().manual_seed(s)) for s in (0, 0, 1))
    w = a["0.weight"]
    assert not torch.equal(w[0], w[1])
    torch.testing.assert_close(a["0.weight"], b["0.weight"])
    assert not torch.equal(a["0.weight"], c["0.weight"])


def test_chain_forward_matches_per_chain_module():
    net = mlp(2, 3, [5])
    params = init_chains(net, 4, torch.Generator().manual_seed(0))
    x = torch.randn(7, 2)
    out = ChainForward(net)(params, x, chunk_size=3)
    for k in range(4):
        m = mlp(2, 3, [5])
        m.load_state_dict({n: v[k] for n, v in params.items()})
        torch.testing.assert_close(out[k], m(x))


def test_reservoir_store_is_uniform_and_bounded():
    """Each of n offered draws is kept with probability M / n (algorithm R)."""
    m, n, reps = 3, 12, 600
    counts = torch.zeros(n)
    for r in range(reps):
        store = SampleStore({"w": ()}, num_chains=1, capacity=m, seed=r)
        for i in range(n):
            store.add({"w": torch.tensor([float(i)])}, step=i)
        kept = store.samples()["w"][0].long()
        assert len(kept) == m and kept.unique().numel() == m
        assert torch.equal(kept, kept.sort().values)  # returned in drawn order
        counts[kept] += 1
    p = m / n
    se = math.sqrt(reps * p * (1 - p))
    assert ((counts - reps * p).abs() < 4 * se).all(), counts


def test_last_store_keeps_the_most_recent_draws():
    store = SampleStore({"w": (2,)}, num_chains=3, capacity=4, policy="last")
    for i in range(11):
        store.add({"w": torch.full((3, 2), float(i))}, step=100 + i)
    assert torch.equal(store.samples()["w"][:, :, 0], torch.tensor([[7.0, 8, 9, 10]] * 3))
    assert torch.equal(store.steps(), torch.tensor([107, 108, 109, 110]))
    assert store.value_0.shape == (3, 4, 2)  # preallocated: memory does not grow


def test_gaussian_mixture_moments_and_nll():
    means = torch.tensor([[[0.0]], [[2.0]]], dtype=torch.float64)  # S=2, batch=1, D=1
    var = torch.tensor([[[1.0]], [[4.0]]], dtype=torch.float64)
    mean, v = mixture_moments(means, var)
    assert float(mean) == pytest.approx(1.0) and float(v) == pytest.approx((1 + 0 + 4 + 4) / 2 - 1)
    y = torch.tensor([[0.5]], dtype=torch.float64)
    dens = 0.5 * (math.exp(-0.125) / math.sqrt(2 * math.pi) + math.exp(-2.25 / 8) / math.sqrt(8 * math.pi))
    assert float(mixture_nll(means, var, y)) == pytest.approx(-math.log(dens))
    dist = gaussian_mixture(means, var)
    assert float(-dist.log_prob(y)) == pytest.approx(-math.log(dens))
    assert float(dist.variance) == pytest.approx(float(v))


def test_predictive_entropy_of_disagreeing_samples():
    probs = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    assert float(predictive_entropy(probs)) == pytest.approx(math.log(2))


def test_learnt_noise_prior_is_the_gamma_density_in_log_scale():
    lik = GaussianLikelihood("learnt", precision_concentration=2.0, precision_rate=3.0)
    log_scale = torch.tensor([0.3], dtype=torch.float64)
    tau = math.exp(-0.6)
    f64 = {"dtype": torch.float64}
    gamma = torch.distributions.Gamma(torch.tensor(2.0, **f64), torch.tensor(3.0, **f64)).log_prob(torch.tensor(tau, **f64))
    assert float(lik.prior_log_prob({"log_scale": log_scale})) == pytest.approx(float(gamma) + math.log(2 * tau))


def test_categorical_ensemble_runs_and_predicts_probabilities():
    torch.manual_seed(0)
    x, y = torch.randn(40, 2), torch.randint(0, 3, (40,))
    ens = BayesianEnsemble(mlp(2, 3, [8]), CategoricalLikelihood(), make_prior("laplace", 0.5), num_chains=2,
                           num_data=40, store_size=3)
    sampler = ens.make_sampler("psgld", lr=1e-3)
    for _ in range(5):
        ens.train_step(x, y, sampler, SamplingSchedule(lr=1e-3))
    p = ens.predictive(x).probs
    torch.testing.assert_close(p.sum(1), torch.ones(40))


def test_cyclical_schedule_turns_noise_and_collection_off_while_exploring():
    s = SamplingSchedule(lr=0.1, schedule="cyclical", total_steps=100, num_cycles=2, exploration_fraction=0.6)
    lr0, noise0, keep0 = s.at(0)
    assert lr0 == pytest.approx(0.1) and not noise0 and not keep0
    assert s.at(40)[1:] == (True, True) and s.at(50)[1] is False


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="schedule"):
        SamplingSchedule(schedule="linear")
    with pytest.raises(ValueError, match="policy"):
        SampleStore({"w": ()}, 1, 2, policy="fifo")
    with pytest.raises(ValueError, match="noise"):
        GaussianLikelihood("none")
    with pytest.raises(ValueError, match="vectorize"):
        ChainForward(nn.Linear(1, 1), vectorize="jit")
    with pytest.raises(TypeError, match="labels"):
        CategoricalLikelihood().log_prob(torch.zeros(1, 2, 3), torch.zeros(2), {})


@pytest.mark.parametrize("method", ["sgld", "psgld", "sghmc"])
def test_elementwise_updates_on_stacked_chains_equal_the_vmapped_update(method, monkeypatch):
    # the elementwise updates skip vmap and run on the (K, ...) tensors: bit for bit the same chains
    import probgen.ensembles.sampler as sampler_module

    direct = _run("vmap", method, steps=20)
    monkeypatch.setattr(sampler_module, "_ELEMENTWISE", frozenset())
    vmapped = _run("vmap", method, steps=20)
    for (name, pa), pb in zip(direct.params().items(), vmapped.params().values()):
        assert torch.equal(pa, pb), name
