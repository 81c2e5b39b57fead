"""Per-chain minibatches: R data sets stacked as R groups of K chains in one vmapped run."""

import copy

import pytest
import torch

from probgen.ensembles import (
    BayesianEnsemble,
    CategoricalLikelihood,
    ChainForward,
    GaussianLikelihood,
    GaussianPrior,
    SamplingSchedule,
    init_chains,
    mlp,
    stack_ensembles,
)

K, B, P, N = 8, 16, 3, 40


def _ensemble(seed, likelihood=None, vectorize="vmap"):
    lik = likelihood or GaussianLikelihood("heteroscedastic", scale=0.5)
    out = lik.output_dim(1) if not isinstance(lik, CategoricalLikelihood) else 3
    return BayesianEnsemble(mlp(P, out, [12], "tanh").double(), lik, GaussianPrior(1.0), num_chains=K, num_data=N,
                            store_size=3, store_policy="last", vectorize=vectorize, seed=seed)


def _data(seed, classes=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, P, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (N,), generator=g) if classes else torch.sin(x.sum(1, keepdim=True)) + 0.1 * x[:, :1]
    return x, y


def _batches(seed, steps):
    g = torch.Generator().manual_seed(100 + seed)
    return [torch.randperm(N, generator=g)[:B] for _ in range(steps)]


def _schedule(steps):
    # deterministic (temperature 0) pSGLD, with a mean-first warm start and collection at the end
    return SamplingSchedule(lr=1e-2 / N, schedule="constant", burn_in=steps - 3, thin=1, total_steps=steps,
                            warm_start=steps // 3)


@pytest.mark.parametrize("vectorize", ["vmap", "sequential"])
def test_two_stacked_data_sets_equal_the_two_separate_runs(vectorize):
    steps = 30
    data = [_data(0), _data(1)]
    idx = [_batches(0, steps), _batches(1, steps)]
    separate = []
    for r in range(2):
        ens = _ensemble(10 + r, vectorize=vectorize)
        sampler = ens.make_sampler("psgld", lr=1e-2 / N, temperature=0.0)
        for t in range(steps):
            ens.train_step(data[r][0][idx[r][t]], data[r][1][idx[r][t]], sampler, _schedule(steps))
        separate.append(ens)

    big = stack_ensembles([_ensemble(10, vectorize=vectorize), _ensemble(11, vectorize=vectorize)])
    assert big.num_chains == 2 * K
    sampler = big.make_sampler("psgld", lr=1e-2 / N, temperature=0.0)
    for t in range(steps):
        x = torch.cat([data[r][0][idx[r][t]].expand(K, B, P) for r in range(2)])
        y = torch.cat([data[r][1][idx[r][t]].expand(K, B, 1) for r in range(2)])
        big.train_step(x, y, sampler, _schedule(steps), per_chain=True)

    for j, name in enumerate(big.names):
        want = torch.cat([e.chains[j].detach() for e in separate])
        torch.testing.assert_close(big.chains[j].detach(), want, rtol=1e-10, atol=1e-12, msg=name)
    xt = torch.randn(7, P, dtype=torch.float64)
    for r, chains in enumerate([range(K), slice(K, 2 * K)]):
        got, want = big.per_sample_predictions(xt, chains=chains), separate[r].per_sample_predictions(xt)
        assert got[0].shape == (3 * K, 7, 1)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        yt = torch.randn(7, 1, dtype=torch.float64)
        torch.testing.assert_close(big.predictive_log_prob(xt, yt, chains=chains),
                                   separate[r].predictive_log_prob(xt, yt), rtol=1e-10, atol=1e-12)


def test_per_chain_losses_are_each_chains_own_gaussian_nll():
    ens = _ensemble(3, GaussianLikelihood("fixed", scale=0.7))
    x = torch.randn(K, B, P, dtype=torch.float64)
    y = torch.randn(K, B, 1, dtype=torch.float64)
    losses, out = ens.chain_losses(x, y, per_chain=True)
    assert losses.shape == (K,) and out.shape == (K, B, 1)
    net, _ = ens.split(ens.params())
    w2 = sum(v.square().flatten(1).sum(1) for v in net.values())
    d = sum(v[0].numel() for v in net.values())
    for k in range(K):  # closed form: mean Gaussian NLL of chain k on its own rows + Gaussian prior / N
        f = torch.func.functional_call(ens.network, {n: v[k] for n, v in net.items()}, (x[k],))
        nll = 0.5 * torch.log(torch.tensor(2 * torch.pi * 0.49, dtype=torch.float64)) + (y[k] - f).square() / (2 * 0.49)
        prior = -0.5 * w2[k] - 0.5 * d * torch.log(torch.tensor(2 * torch.pi, dtype=torch.float64))
        torch.testing.assert_close(losses[k], nll.mean() - prior / N, rtol=1e-12, atol=1e-12)


def test_per_chain_labels_for_classification():
    ens = _ensemble(4, CategoricalLikelihood())
    x = torch.randn(K, B, P, dtype=torch.float64)
    y = torch.randint(0, 3, (K, B))
    losses, out = ens.chain_losses(x, y, per_chain=True)
    logp = out.log_softmax(-1).gather(-1, y[..., None]).squeeze(-1)
    net, _ = ens.split(ens.params())
    torch.testing.assert_close(losses, -logp.mean(1) - ens.prior.log_prob(net) / N)


@pytest.mark.parametrize(
    "x_shape, y_shape, name",
    [((B, P), (K, B, 1), "x"), ((K - 1, B, P), (K, B, 1), "x"), ((K, B, P), (B, 1), "y"),
     ((K, B, P), (K + 1, B, 1), "y"), ((K, B, P), (K, B - 1, 1), "x and y")],
)
def test_mismatched_chain_dims_raise_naming_the_argument(x_shape, y_shape, name):
    ens = _ensemble(0)
    with pytest.raises(ValueError, match=f"^{name} must"):
        ens.chain_losses(torch.randn(x_shape, dtype=torch.float64), torch.randn(y_shape, dtype=torch.float64),
                         per_chain=True)


def test_chain_selection_and_stacking_errors():
    ens = _ensemble(0)
    with pytest.raises(ValueError, match="chains must be non-empty indices in \\[0, 8\\)"):
        ens.sample_set("chains", chains=[0, 8])
    with pytest.raises(TypeError, match="chains must be"):
        ens.sample_set("chains", chains=1.5)
    assert ens.sample_set("chains", chains=3)["0.weight"].shape == (1, 12, P)
    with pytest.raises(ValueError, match="ensembles must hold"):
        stack_ensembles([])
    other = BayesianEnsemble(mlp(P, 2, [12], "tanh").double(), GaussianLikelihood("heteroscedastic"), num_chains=K,
                             num_data=N + 1)
    with pytest.raises(ValueError, match="must share num_data"):
        stack_ensembles([ens, other])
    wider = BayesianEnsemble(mlp(P, 2, [13], "tanh").double(), GaussianLikelihood("heteroscedastic"), num_chains=K,
                             num_data=N)
    with pytest.raises(ValueError, match="other parameters"):
        stack_ensembles([ens, wider])


@pytest.mark.parametrize("per_chain", [False, True])
def test_batched_matmul_mlp_path_equals_the_per_chain_modules(per_chain):
    net = torch.nn.Sequential(torch.nn.Linear(P, 6), torch.nn.GELU(), torch.nn.Linear(6, 5, bias=False),
                              torch.nn.Tanh(), torch.nn.Linear(5, 2)).double()
    fwd = ChainForward(net)
    assert fwd.linear_stack is not None
    params = init_chains(net, 4, torch.Generator().manual_seed(1))
    x = torch.randn(4, 9, P, dtype=torch.float64) if per_chain else torch.randn(9, P, dtype=torch.float64)
    out = fwd(params, x, per_chain=per_chain)
    for k in range(4):  # oracle: the module itself with chain k's weights
        m = copy.deepcopy(net)
        m.load_state_dict({n: v[k] for n, v in params.items()})
        torch.testing.assert_close(out[k], m(x[k] if per_chain else x), rtol=1e-12, atol=1e-12)


def test_networks_with_other_layers_take_the_vmap_path():
    net = torch.nn.Sequential(torch.nn.Linear(P, 6), torch.nn.LayerNorm(6), torch.nn.Linear(6, 1)).double()
    fwd = ChainForward(net)
    assert fwd.linear_stack is None
    params = init_chains(net, 3, torch.Generator().manual_seed(2))
    x = torch.randn(3, 5, P, dtype=torch.float64)
    out = fwd(params, x, per_chain=True)
    for k in range(3):
        m = copy.deepcopy(net)
        m.load_state_dict({n: v[k] for n, v in params.items()})
        torch.testing.assert_close(out[k], m(x[k]), rtol=1e-12, atol=1e-12)
