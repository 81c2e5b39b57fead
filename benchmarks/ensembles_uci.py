"""UCI regression: SGLD ensemble vs cyclical SGLD vs deep ensemble, all run by probgen.

One hidden layer of 50 ReLU units (as in Hernandez-Lobato & Adams 2015 and Lakshminarayanan
et al. 2017); test NLL and RMSE on the original target scale, mean +- standard error over
the splits run, next to the published deep-ensemble NLL.

    python benchmarks/ensembles_uci.py --splits 5 [--datasets boston yacht] [--steps 4000]
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from probgen.data.uci import load_uci
from probgen.ensembles import (
    BayesianEnsemble,
    GaussianLikelihood,
    GaussianPrior,
    SamplingSchedule,
    mlp,
)
from probgen.ensembles.predictive import mixture_moments, mixture_nll

PUBLISHED_DE_NLL = {"boston": 2.41, "concrete": 3.06, "energy": 1.38, "yacht": 1.18, "wine-red": 0.94}

# the three methods: same network, same number of steps and minibatches; only the sampler differs
METHODS = {
    "SGLD ensemble": {"num_chains": 8, "sampler": "psgld", "schedule": "constant", "temperature": 1.0, "noise": "learnt",
                          "store_size": 40, "policy": "reservoir", "lr_scale": 3.0},
    "cyclical SGLD": {"num_chains": 8, "sampler": "psgld", "schedule": "cyclical", "temperature": 1.0, "noise": "learnt",
                          "store_size": 40, "policy": "reservoir", "lr_scale": 3.0},
    "deep ensemble": {"num_chains": 5, "sampler": "psgld", "schedule": "constant", "temperature": 0.0, "noise": "heteroscedastic",
                          "store_size": 1, "policy": "last", "lr_scale": None},
}


def run(dataset: str, split: int, method: str, steps: int, batch_size: int = 32, seed: int = 0) -> dict:
    cfg = METHODS[method]
    d = load_uci(None, dataset, split)
    x, y, xt, yt = d["x_train"], d["y_train"], d["x_test"], d["y_test"]
    n, p = x.shape
    y_std = float(d["y_std"])
    lik = GaussianLikelihood(cfg["noise"], scale=0.5, precision_concentration=1.0, precision_rate=0.1)
    torch.manual_seed(seed + split)
    ens = BayesianEnsemble(mlp(p, lik.output_dim(1), [50]), lik, GaussianPrior(1.0), num_chains=cfg["num_chains"],
                           num_data=n, store_size=cfg["store_size"], store_policy=cfg["policy"], seed=seed + split)
    # pSGLD moves each weight by ~ h N per step (RMSprop-normalised gradient): h N = 1e-3
    lr = (cfg["lr_scale"] or 1.0) * 1e-3 / n
    burn_in = steps // 2
    thin = max(1, (steps - burn_in) // (4 * cfg["store_size"]))
    schedule = SamplingSchedule(lr=lr, schedule=cfg["schedule"], burn_in=burn_in if cfg["temperature"] else steps - 1,
                                thin=thin, total_steps=steps, num_cycles=4, exploration_fraction=0.5)
    sampler = ens.make_sampler(cfg["sampler"], lr=lr, temperature=cfg["temperature"], seed=seed + split)
    g = torch.Generator().manual_seed(seed + split)
    perm, pos = torch.randperm(n, generator=g), 0
    t0 = time.perf_counter()
    for _ in range(steps):
        if pos + batch_size > n:
            perm, pos = torch.randperm(n, generator=g), 0
        idx = perm[pos : pos + batch_size]
        pos += batch_size
        ens.train_step(x[idx], y[idx], sampler, schedule)
    wall = time.perf_counter() - t0
    means, variances = ens.per_sample_predictions(xt)
    nll = float(mixture_nll(means, variances, yt).mean()) + math.log(y_std)
    rmse = float((mixture_moments(means, variances)[0] - yt).square().mean().sqrt()) * y_std
    return {"nll": nll, "rmse": rmse, "wall": wall, "samples": means.shape[0]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=list(PUBLISHED_DE_NLL))
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--splits", type=int, default=5)
    ap.add_argument("--steps", type=int, default=4000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for ds in args.datasets:
        for m in args.methods:
            res = [run(ds, s, m, args.steps) for s in range(args.splits)]
            nll = torch.tensor([r["nll"] for r in res])
            rmse = torch.tensor([r["rmse"] for r in res])
            se = lambda t: float(t.std() / math.sqrt(len(t))) if len(t) > 1 else float("nan")
            rows.append((ds, m, float(nll.mean()), se(nll), float(rmse.mean()), se(rmse),
                         sum(r["wall"] for r in res) / len(res), len(res)))
            print(f"{ds:10s} {m:15s} NLL {rows[-1][2]:.3f} +- {rows[-1][3]:.3f}  RMSE {rows[-1][4]:.3f} +- "
                  f"{rows[-1][5]:.3f}  {rows[-1][6]:.1f} s/split  ({len(res)} splits)", flush=True)
    print("\n| dataset | method | test NLL | test RMSE | published DE NLL | s / split | splits |")
    print("|---|---|---|---|---|---|---|")
    for ds, m, nll, nse, rm, rse, wall, k in rows:
        print(f"| {ds} | {m} | {nll:.2f} ± {nse:.2f} | {rm:.2f} ± {rse:.2f} | {PUBLISHED_DE_NLL[ds]:.2f} | {wall:.0f} | {k} |")


if __name__ == "__main__":
    main()
