"""Agreement with HMC: NUTS (Pyro) vs SGLD ensemble vs deep ensemble on a small Bayesian MLP.

Data: :class:`probgen.data.classification2d.GapRegression1D` (40 points, a gap in the
inputs, known noise std 0.1). Network 1 -> 20 tanh -> 1, prior N(0, 1) on every weight,
Gaussian likelihood with the known noise. NUTS (Pyro, 2 chains of 200 warm-up + 300 draws,
tree depth <= 6, on the shared CPU) is the reference posterior.
For every method we draw predictive samples y ~ p(y | x, D) on a grid of 61 inputs in
[-1.5, 1.5] and report the 1-D Wasserstein-2 distance to NUTS's predictive, averaged over the
grid (in the gap and outside it), plus wall time. The "NUTS split" row (W2 between the two
NUTS chains) is the Monte Carlo floor.

    python benchmarks/ensembles_nuts.py [--quick]
"""

from __future__ import annotations

import argparse
import time

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import MCMC, NUTS

from probgen.data.classification2d import GapRegression1D
from probgen.ensembles import (
    BayesianEnsemble,
    GaussianLikelihood,
    GaussianPrior,
    SamplingSchedule,
    mlp,
)

SIGMA, HIDDEN = 0.1, 20


def forward(params: dict, x: torch.Tensor) -> torch.Tensor:
    """``(S, n, 1)`` outputs of the 1-H-1 tanh network for ``S`` stacked parameter sets."""
    h = torch.tanh(x @ params["0.weight"].transpose(-1, -2) + params["0.bias"][:, None, :])
    return h @ params["2.weight"].transpose(-1, -2) + params["2.bias"][:, None, :]


def pyro_model(x, y):
    p = {
        "0.weight": pyro.sample("w1", dist.Normal(0.0, 1.0).expand([HIDDEN, 1]).to_event(2)),
        "0.bias": pyro.sample("b1", dist.Normal(0.0, 1.0).expand([HIDDEN]).to_event(1)),
        "2.weight": pyro.sample("w2", dist.Normal(0.0, 1.0).expand([1, HIDDEN]).to_event(2)),
        "2.bias": pyro.sample("b2", dist.Normal(0.0, 1.0).expand([1]).to_event(1)),
    }
    f = forward({k: v[None] for k, v in p.items()}, x)[0]
    pyro.sample("y", dist.Normal(f, SIGMA).to_event(2), obs=y)


def w2_1d(a: torch.Tensor, b: torch.Tensor, q: int = 200) -> torch.Tensor:
    """1-D W2 between sample sets, per column: ``a (n, G)``, ``b (m, G)`` -> ``(G,)`` (quantile matching)."""
    levels = (torch.arange(q, dtype=a.dtype) + 0.5) / q
    return (torch.quantile(a, levels, dim=0) - torch.quantile(b, levels, dim=0)).square().mean(0).sqrt()


def predictive_draws(f: torch.Tensor, num: int, g: torch.Generator) -> torch.Tensor:
    """``num`` draws of y = f_s(x) + sigma eps with s uniform over the rows of ``f (S, G)``."""
    idx = torch.randint(0, len(f), (num,), generator=g)
    return f[idx] + SIGMA * torch.randn(num, f.shape[1], generator=g, dtype=f.dtype)


def run_ensemble(x, y, num_chains, temperature, steps, schedule="constant", lr=2e-5, store=50, seed=0):
    net = mlp(1, 1, [HIDDEN], "tanh").double()
    ens = BayesianEnsemble(net, GaussianLikelihood("fixed", SIGMA), GaussianPrior(1.0), num_chains=num_chains,
                           num_data=len(x), store_size=store if temperature else 1,
                           store_policy="reservoir" if temperature else "last", seed=seed)
    sampler = ens.make_sampler("sgld", lr=lr, temperature=temperature, seed=seed)
    sch = SamplingSchedule(lr=lr, schedule=schedule, burn_in=steps // 2 if temperature else steps - 1,
                           thin=max(1, steps // (4 * store)), total_steps=steps, num_cycles=4, exploration_fraction=0.3)
    t0 = time.perf_counter()
    for _ in range(steps):
        ens.train_step(x, y, sampler, sch)
    wall = time.perf_counter() - t0
    return ens, wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="short runs (a smoke check, not the reported numbers)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)  # Pyro's priors follow the default dtype
    dm = GapRegression1D(num_train=40, noise=SIGMA)
    dm.setup()
    x, y = (t.double() for t in dm.splits["train"])
    grid = torch.linspace(-1.5, 1.5, 61, dtype=torch.float64)[:, None]
    in_gap = (grid.abs() < 0.3).squeeze(1)
    warmup, samples = (30, 30) if args.quick else (200, 300)
    steps = 300 if args.quick else 6000

    t0 = time.perf_counter()
    draws = []
    for chain_seed in (0, 1):  # two independent chains, run one after the other on one core
        pyro.set_rng_seed(chain_seed)
        kernel = NUTS(pyro_model, target_accept_prob=0.9, max_tree_depth=6)
        mcmc = MCMC(kernel, num_samples=samples, warmup_steps=warmup, disable_progbar=True)
        mcmc.run(x, y)
        draws.append(mcmc.get_samples())
    nuts_wall = time.perf_counter() - t0
    names = {"w1": "0.weight", "b1": "0.bias", "w2": "2.weight", "b2": "2.bias"}
    f_nuts = [forward({names[k]: v for k, v in d.items()}, grid)[..., 0] for d in draws]  # 2 x (samples, G)
    g = torch.Generator().manual_seed(0)
    num = 4000
    ref = predictive_draws(torch.cat(f_nuts), num, g)
    rows = [("NUTS split (MC floor)", w2_1d(predictive_draws(f_nuts[0], num, g), predictive_draws(f_nuts[1], num, g)),
             nuts_wall, 2 * samples)]

    configs = [
        ("SGLD ensemble (K=8)", {"num_chains": 8, "temperature": 1.0}),
        ("cyclical SGLD ensemble (K=8)", {"num_chains": 8, "temperature": 1.0, "schedule": "cyclical", "lr": 8e-5}),
        ("single SGLD chain (K=1)", {"num_chains": 1, "temperature": 1.0, "store": 400}),
        ("deep ensemble (K=8, T=0)", {"num_chains": 8, "temperature": 0.0}),
    ]
    for name, cfg in configs:
        ens, wall = run_ensemble(x, y, steps=steps, **cfg)
        f = ens.per_sample_predictions(grid)[0][..., 0]
        rows.append((name, w2_1d(predictive_draws(f, num, g), ref), wall, f.shape[0]))

    print("| method | W2 to NUTS, mean over grid | in the gap | outside | wall (s) | samples |")
    print("|---|---|---|---|---|---|")
    for name, w2, wall, s in rows:
        print(f"| {name} | {float(w2.mean()):.3f} | {float(w2[in_gap].mean()):.3f} | "
              f"{float(w2[~in_gap].mean()):.3f} | {wall:.0f} | {s} |")


if __name__ == "__main__":
    main()
