"""UCI regression: the default SGLD-ensemble config vs a deep ensemble at the same budget.

The SGLD ensemble is exactly ``models/ensembles/uci_regression.yaml`` (its ``model.init_args``
and batch size are read from the file, with the same rules as ``SGLDEnsemble``: step size
h = ``step_scale`` / N, run length ``run_length(N, B, num_epochs, min_steps)``, burn-in and
warm start as fractions of the run). The deep ensemble (Lakshminarayanan et al. 2017, without
adversarial training) runs the same number of networks, updates and minibatches: heteroscedastic
networks trained by RMSprop (pSGLD at temperature 0, RMSprop learning rate 1e-3 = h N),
the Gaussian prior acting as weight decay, keeping the last iterate.

One hidden layer of 50 ReLU units; the data are the split's training rows (no validation
hold-out: no early stopping or tuning uses it). Test NLL and RMSE on the original target scale,
mean +- standard error over the splits run, next to the published deep-ensemble NLL. For
wine-red, also the NLL on the test rows whose inputs do not appear among the training inputs.
Every split's result is appended to ``--out`` (JSON lines) as soon as it is done.

    python benchmarks/ensembles_uci.py --splits 20 [--datasets boston yacht] [--methods default]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import yaml

from probgen.data.uci import load_uci
from probgen.ensembles import (
    BayesianEnsemble,
    GaussianLikelihood,
    SamplingSchedule,
    make_prior,
    mlp,
    run_length,
    steps_of,
)
from probgen.ensembles.predictive import mixture_moments, mixture_nll

PUBLISHED_DE_NLL = {"boston": 2.41, "concrete": 3.06, "energy": 1.38, "yacht": 1.18, "wine-red": 0.94}
CONFIG = Path(__file__).resolve().parents[1] / "models" / "ensembles" / "uci_regression.yaml"


def load_config(path: Path = CONFIG) -> tuple[dict, int]:
    cfg = yaml.safe_load(path.read_text())
    return cfg["model"]["init_args"], int(cfg["data"]["init_args"]["batch_size"])


def run(dataset: str, split: int, method: str, hp: dict, batch_size: int, seed: int = 0) -> dict:
    d = load_uci(None, dataset, split)
    x, y, xt, yt = d["x_train"], d["y_train"], d["x_test"], d["y_test"]
    n, p = x.shape
    y_std = float(d["y_std"])
    steps = run_length(n, batch_size, hp["num_epochs"], hp["min_steps"])
    deep = method == "deep ensemble"
    noise = "heteroscedastic" if deep else hp["noise"]
    lik = GaussianLikelihood(noise, scale=hp.get("noise_scale", 1.0))
    torch.manual_seed(seed + split)
    prior = make_prior(hp.get("prior", "gaussian"), hp.get("prior_scale", 1.0))
    ens = BayesianEnsemble(mlp(p, lik.output_dim(1), hp.get("hidden_dims", [50])), lik, prior,
                           num_chains=hp["num_chains"], num_data=n,
                           store_size=1 if deep else hp["store_size"], store_policy="last" if deep else "reservoir",
                           seed=seed + split)
    if deep:
        lr = 1e-3 / n
        schedule = SamplingSchedule(lr=lr, schedule="constant", burn_in=steps - 1, thin=1, total_steps=steps)
        sampler = ens.make_sampler("psgld", lr=lr, temperature=0.0, seed=seed + split)
    else:
        lr = hp["step_scale"] / n
        burn_in = steps_of("burn_in", hp["burn_in"], steps)
        schedule = SamplingSchedule(
            lr=lr, schedule=hp["schedule"], burn_in=burn_in, thin=hp["thin"], total_steps=steps,
            num_cycles=hp["num_cycles"], exploration_fraction=hp["exploration_fraction"],
            warm_start=steps_of("warm_start", hp.get("warm_start", 0), steps),
        )
        sampler = ens.make_sampler(hp["sampler"], lr=lr, temperature=hp.get("temperature", 1.0), seed=seed + split)
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
    nll_rows = mixture_nll(means, variances, yt) + math.log(y_std)
    rmse = float((mixture_moments(means, variances)[0] - yt).square().mean().sqrt()) * y_std
    # test rows whose inputs are not exact copies of a training input (wine-red has many)
    fresh = ~(torch.cdist(xt, x) < 1e-6).any(1)
    return {"dataset": dataset, "split": split, "method": method, "nll": float(nll_rows.mean()), "rmse": rmse,
            "nll_fresh": float(nll_rows[fresh].mean()) if fresh.any() else float("nan"),
            "n_fresh": int(fresh.sum()), "n_test": len(xt), "steps": steps, "wall": wall,
            "samples": int(means.shape[0])}


def summarise(results: list[dict]) -> None:
    def ms(vals: list[float]) -> str:
        t = torch.tensor(vals, dtype=torch.float64)
        se = float(t.std() / math.sqrt(len(t))) if len(t) > 1 else float("nan")
        return f"{float(t.mean()):.2f} ± {se:.2f}"

    print("\n| dataset | method | test NLL | test RMSE | NLL, unseen test inputs | published DE NLL | steps | s / split | splits |")
    print("|---|---|---|---|---|---|---|---|---|")
    keys = sorted({(r["dataset"], r["method"]) for r in results}, key=lambda k: (list(PUBLISHED_DE_NLL).index(k[0]), k[1]))
    for ds, m in keys:
        rs = [r for r in results if r["dataset"] == ds and r["method"] == m]
        fresh = ms([r["nll_fresh"] for r in rs]) if ds == "wine-red" else "-"
        print(f"| {ds} | {m} | {ms([r['nll'] for r in rs])} | {ms([r['rmse'] for r in rs])} | {fresh} | "
              f"{PUBLISHED_DE_NLL[ds]:.2f} | {rs[0]['steps']} | {sum(r['wall'] for r in rs) / len(rs):.0f} | {len(rs)} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=list(PUBLISHED_DE_NLL))
    ap.add_argument("--methods", nargs="+", default=["default", "deep ensemble"])
    ap.add_argument("--splits", type=int, default=20)
    ap.add_argument("--first-split", type=int, default=0)
    ap.add_argument("--config", type=Path, default=CONFIG)
    ap.add_argument("--out", type=Path, default=None, help="append each split's result here (JSON lines)")
    ap.add_argument("--summarise", type=Path, default=None, help="only print the table of a results file")
    args = ap.parse_args()
    if args.summarise is not None:
        summarise([json.loads(line) for line in args.summarise.read_text().splitlines() if line.strip()])
        return
    torch.set_num_threads(1)
    hp, batch_size = load_config(args.config)
    results = []
    for split in range(args.first_split, args.first_split + args.splits):
        for ds in args.datasets:
            for m in args.methods:
                r = run(ds, split, m, hp, batch_size)
                results.append(r)
                print(json.dumps(r), flush=True)
                if args.out is not None:
                    with args.out.open("a") as f:
                        f.write(json.dumps(r) + "\n")
    summarise(results)


if __name__ == "__main__":
    main()
