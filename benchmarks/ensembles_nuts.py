"""Agreement with HMC: NUTS (Pyro) vs SGLD ensembles vs deep ensemble on a small Bayesian MLP.

Data: :class:`probgen.data.classification2d.GapRegression1D` (40 points, a gap in the
inputs, noise std 0.1). Network 1 -> 20 tanh -> 1. Two models, each with its own NUTS
reference (Pyro, 2 chains of ``--warmup`` warm-up + ``--draws`` draws, tree depth <= 6,
JIT-compiled: ~2x faster on this CPU):

* ``gaussian``: prior N(0, 1) on every weight, Gaussian likelihood with the known noise std
  0.1. Rows: SGLD / cyclical SGLD / single chain / deep ensemble, and scale-adapted SGHMC
  (Springenberg et al. 2016; ``sampler="adaptive_sghmc"``).
* ``hierarchical``: w ~ N(0, 1/lambda_g) with a Gamma(2, 2) hyperprior on one precision per
  parameter tensor, noise precision tau ~ Gamma(2, 0.02) (prior mean 100, std 0.1): the SGLD
  ensemble with Gibbs draws of lambda and tau after every step, from step 0 or (as
  ``SGLDEnsemble(gibbs_start=0.25)``) from a quarter of the run, the precisions held at their
  initial values (1, 100) before (:class:`~probgen.ensembles.HierarchicalGaussianPrior`,
  ``GaussianLikelihood("gibbs")``).

For every method we draw predictive samples y ~ p(y | x, D) on a grid of 61 inputs in
[-1.5, 1.5] (with each sample's own noise precision in the hierarchical model) and report the
1-D Wasserstein-2 distance to NUTS's predictive, averaged over the grid (in the gap and outside
it), plus wall time. The "NUTS split" row (W2 between the two NUTS chains) is the Monte Carlo
floor. ``--nuts-cache DIR`` saves NUTS's draws (and reuses them when present).

    python benchmarks/ensembles_nuts.py [--models gaussian hierarchical] [--methods ...] [--quick]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import MCMC, NUTS

from probgen.data.classification2d import GapRegression1D
from probgen.ensembles import (
    BayesianEnsemble,
    GaussianLikelihood,
    GaussianPrior,
    HierarchicalGaussianPrior,
    SamplingSchedule,
    gibbs_hyperpriors,
    mlp,
)

SIGMA, HIDDEN = 0.1, 20
LAM_A, LAM_B = 2.0, 2.0      # hierarchical model: Gamma hyperprior on each tensor's weight precision
TAU_A, TAU_B = 2.0, 0.02     # and on the noise precision (prior mean 100: std 0.1)
SHAPES = {"0.weight": [HIDDEN, 1], "0.bias": [HIDDEN], "2.weight": [1, HIDDEN], "2.bias": [1]}


def forward(params: dict, x: torch.Tensor) -> torch.Tensor:
    """``(S, n, 1)`` outputs of the 1-H-1 tanh network for ``S`` stacked parameter sets."""
    h = torch.tanh(x @ params["0.weight"].transpose(-1, -2) + params["0.bias"][:, None, :])
    return h @ params["2.weight"].transpose(-1, -2) + params["2.bias"][:, None, :]


def pyro_model(x, y):
    p = {k: pyro.sample(k, dist.Normal(0.0, 1.0).expand(v).to_event(len(v))) for k, v in SHAPES.items()}
    f = forward({k: v[None] for k, v in p.items()}, x)[0]
    pyro.sample("y", dist.Normal(f, SIGMA).to_event(2), obs=y)


def pyro_hierarchical_model(x, y):
    p = {}
    for k, v in SHAPES.items():
        lam = pyro.sample(f"lam_{k}", dist.Gamma(LAM_A, LAM_B))
        p[k] = pyro.sample(k, dist.Normal(0.0, lam.rsqrt()).expand(v).to_event(len(v)))
    tau = pyro.sample("tau", dist.Gamma(TAU_A, TAU_B))
    f = forward({k: v[None] for k, v in p.items()}, x)[0]
    pyro.sample("y", dist.Normal(f, tau.rsqrt()).to_event(2), obs=y)


def w2_1d(a: torch.Tensor, b: torch.Tensor, q: int = 200) -> torch.Tensor:
    """1-D W2 between sample sets, per column: ``a (n, G)``, ``b (m, G)`` -> ``(G,)`` (quantile matching)."""
    levels = (torch.arange(q, dtype=a.dtype) + 0.5) / q
    return (torch.quantile(a, levels, dim=0) - torch.quantile(b, levels, dim=0)).square().mean(0).sqrt()


def predictive_draws(f: torch.Tensor, num: int, g: torch.Generator, scale: torch.Tensor | float = SIGMA) -> torch.Tensor:
    """``num`` draws of y = f_s(x) + sigma_s eps with s uniform over the rows of ``f (S, G)``
    (``scale``: the noise std, a float or one per row ``(S,)``)."""
    idx = torch.randint(0, len(f), (num,), generator=g)
    sd = scale[idx][:, None] if torch.is_tensor(scale) else scale
    return f[idx] + sd * torch.randn(num, f.shape[1], generator=g, dtype=f.dtype)


def run_ensemble(x, y, num_chains, temperature, steps, schedule="constant", lr=2e-5, store=50, seed=0,
                 sampler="sgld", hierarchical=False, gibbs_start=0.0, **sampler_kw):
    net = mlp(1, 1, [HIDDEN], "tanh").double()
    if hierarchical:
        lik = GaussianLikelihood("gibbs", SIGMA, precision_concentration=TAU_A, precision_rate=TAU_B)
        prior = HierarchicalGaussianPrior(LAM_A, LAM_B, groups="tensor")
    else:
        lik, prior = GaussianLikelihood("fixed", SIGMA), GaussianPrior(1.0)
    ens = BayesianEnsemble(net, lik, prior, num_chains=num_chains,
                           num_data=len(x), store_size=store if temperature else 1,
                           store_policy="reservoir" if temperature else "last", seed=seed)
    burn_in = steps // 2 if temperature else steps - 1
    opt = ens.make_sampler(sampler, lr=lr, temperature=temperature, seed=seed, adapt_steps=max(1, burn_in),
                           **sampler_kw)
    sch = SamplingSchedule(lr=lr, schedule=schedule, burn_in=burn_in,
                           thin=max(1, steps // (4 * store)), total_steps=steps, num_cycles=4, exploration_fraction=0.3)
    t0 = time.perf_counter()
    for step in range(steps):
        ens.train_step(x, y, opt, sch)
        if hierarchical and step >= gibbs_start * steps:
            gibbs_hyperpriors(ens, x, y, step=step, seed=seed)
    wall = time.perf_counter() - t0
    return ens, wall


METHODS = {
    "gaussian": [
        ("SGLD ensemble (K=8)", {"num_chains": 8, "temperature": 1.0}),
        ("cyclical SGLD ensemble (K=8)", {"num_chains": 8, "temperature": 1.0, "schedule": "cyclical", "lr": 8e-5}),
        ("single SGLD chain (K=1)", {"num_chains": 1, "temperature": 1.0, "store": 400}),
        ("deep ensemble (K=8, T=0)", {"num_chains": 8, "temperature": 0.0}),
        ("scale-adapted SGHMC ensemble (K=8)", {"num_chains": 8, "temperature": 1.0, "sampler": "adaptive_sghmc",
                                                "lr": 1e-4, "friction": 0.05}),
    ],
    "hierarchical": [
        ("SGLD + Gibbs hyperpriors ensemble (K=8), Gibbs from step 0",
         {"num_chains": 8, "temperature": 1.0, "hierarchical": True}),
        ("SGLD + Gibbs hyperpriors ensemble (K=8), Gibbs from 25 % of the run",
         {"num_chains": 8, "temperature": 1.0, "hierarchical": True, "gibbs_start": 0.25}),
    ],
}


def nuts_draws(model: str, x, y, warmup: int, samples: int, cache: Path | None) -> tuple[list[dict], float]:
    """Two independent NUTS chains (run one after the other on one core), cached on disk if asked."""
    path = cache / f"nuts_{model}_{warmup}_{samples}.pt" if cache is not None else None
    if path is not None and path.exists():
        saved = torch.load(path, weights_only=True)
        return saved["draws"], float(saved["wall"])
    fn = pyro_model if model == "gaussian" else pyro_hierarchical_model
    t0 = time.perf_counter()
    draws = []
    for chain_seed in (0, 1):
        pyro.set_rng_seed(chain_seed)
        kernel = NUTS(fn, target_accept_prob=0.9, max_tree_depth=6, jit_compile=True, ignore_jit_warnings=True)
        mcmc = MCMC(kernel, num_samples=samples, warmup_steps=warmup, disable_progbar=True)
        mcmc.run(x, y)
        draws.append({k: v.detach() for k, v in mcmc.get_samples().items()})
    wall = time.perf_counter() - t0
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"draws": draws, "wall": wall}, path)
    return draws, wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="short runs (a smoke check, not the reported numbers)")
    ap.add_argument("--models", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--methods", nargs="+", default=None, help="row names to run (default: all of each model)")
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--draws", type=int, default=300)
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--nuts-cache", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)  # Pyro's priors follow the default dtype
    dm = GapRegression1D(num_train=40, noise=SIGMA)
    dm.setup()
    x, y = (t.double() for t in dm.splits["train"])
    grid = torch.linspace(-1.5, 1.5, 61, dtype=torch.float64)[:, None]
    in_gap = (grid.abs() < 0.3).squeeze(1)
    warmup, samples = (30, 30) if args.quick else (args.warmup, args.draws)
    steps = 300 if args.quick else args.steps
    num = 4000
    for model in args.models:
        draws, nuts_wall = nuts_draws(model, x, y, warmup, samples, None if args.quick else args.nuts_cache)
        f_nuts = [forward({k: d[k] for k in SHAPES}, grid)[..., 0] for d in draws]  # 2 x (samples, G)
        sd_nuts = [d["tau"].rsqrt() if "tau" in d else SIGMA for d in draws]
        g = torch.Generator().manual_seed(0)
        ref = predictive_draws(torch.cat(f_nuts), num, g,
                               torch.cat(sd_nuts) if torch.is_tensor(sd_nuts[0]) else SIGMA)
        floor = w2_1d(predictive_draws(f_nuts[0], num, g, sd_nuts[0]), predictive_draws(f_nuts[1], num, g, sd_nuts[1]))
        rows = [("NUTS split (MC floor)", floor, nuts_wall, 2 * samples)]
        for name, cfg in METHODS[model]:
            if args.methods is not None and name not in args.methods:
                continue
            ens, wall = run_ensemble(x, y, steps=steps, **cfg)
            with torch.no_grad():
                out, lik = ens.predict_outputs(grid)
            f = out[..., 0]
            sd = lik["log_scale"].exp() if "log_scale" in lik else SIGMA
            rows.append((name, w2_1d(predictive_draws(f, num, g, sd), ref), wall, f.shape[0]))
        print(f"\nmodel: {model}; NUTS 2 x ({warmup} + {samples}), ensembles {steps} steps")
        print("| method | W2 to NUTS, mean over grid | in the gap | outside | wall (s) | samples |")
        print("|---|---|---|---|---|---|")
        for name, w2, wall, s in rows:
            print(f"| {name} | {float(w2.mean()):.3f} | {float(w2[in_gap].mean()):.3f} | "
                  f"{float(w2[~in_gap].mean()):.3f} | {wall:.0f} | {s} |")


if __name__ == "__main__":
    main()
