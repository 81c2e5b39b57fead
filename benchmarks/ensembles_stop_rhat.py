"""How many updates the predictive R-hat stop saves on a UCI split, and what it costs in NLL.

One run of ``models/ensembles/uci_regression.yaml`` (as ``benchmarks/ensembles_uci.py`` runs
it: same data, seeds, minibatches, schedule) with the run-control store on
(``recent_size = diag_draws``): every ``check_every`` steps after burn-in the predictive
R-hat (max over the first 64 training inputs) and bulk ESS (min) of the last ``diag_draws``
draws per chain are computed exactly as ``SGLDEnsemble(stop_rhat=..., stop_ess=...)`` does,
and the test NLL / RMSE of the mixture kept so far are scored. The first check at which each
threshold holds is where ``SGLDEnsemble`` would have stopped; the last row is the full run.
Scoring at the checks does not change the chain (no randomness is drawn).

    python benchmarks/ensembles_stop_rhat.py --dataset yacht --split 0 [--stop-rhat 1.05 1.1] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from probgen.data.uci import load_uci
from probgen.ensembles import (
    BayesianEnsemble,
    GaussianLikelihood,
    SamplingSchedule,
    chain_diagnostics,
    make_prior,
    mlp,
    run_length,
    steps_of,
)
from probgen.ensembles.predictive import mixture_moments, mixture_nll

import sys

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ensembles_uci import load_config  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="yacht")
    ap.add_argument("--split", type=int, default=0)
    ap.add_argument("--stop-rhat", type=float, nargs="+", default=[1.1, 1.05, 1.02])
    ap.add_argument("--check-every", type=int, default=1000)
    ap.add_argument("--diag-draws", type=int, default=50)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    hp, batch_size = load_config()
    d = load_uci(None, args.dataset, args.split)
    x, y, xt, yt = d["x_train"], d["y_train"], d["x_test"], d["y_test"]
    n, p = x.shape
    y_std = float(d["y_std"])
    steps = run_length(n, batch_size, hp["num_epochs"], hp["min_steps"])
    seed = args.split
    lik = GaussianLikelihood(hp["noise"], scale=hp.get("noise_scale", 1.0))
    torch.manual_seed(seed)
    ens = BayesianEnsemble(mlp(p, lik.output_dim(1), hp.get("hidden_dims", [50])), lik,
                           make_prior(hp.get("prior", "gaussian"), hp.get("prior_scale", 1.0)),
                           num_chains=hp["num_chains"], num_data=n, store_size=hp["store_size"],
                           store_policy="reservoir", seed=seed, recent_size=args.diag_draws)
    lr = hp["step_scale"] / n
    burn_in = steps_of("burn_in", hp["burn_in"], steps)
    schedule = SamplingSchedule(lr=lr, schedule=hp["schedule"], burn_in=burn_in, thin=hp["thin"], total_steps=steps,
                                num_cycles=hp["num_cycles"], exploration_fraction=hp["exploration_fraction"],
                                warm_start=steps_of("warm_start", hp.get("warm_start", 0), steps))
    sampler = ens.make_sampler(hp["sampler"], lr=lr, temperature=hp.get("temperature", 1.0), seed=seed)
    g = torch.Generator().manual_seed(seed)
    perm, pos = torch.randperm(n, generator=g), 0
    checks = []
    t0 = time.perf_counter()
    for step in range(steps):
        if pos + batch_size > n:
            perm, pos = torch.randperm(n, generator=g), 0
        idx = perm[pos : pos + batch_size]
        pos += batch_size
        ens.train_step(x[idx], y[idx], sampler, schedule)
        done = step + 1 - burn_in
        last = step + 1 == steps
        if (done > 0 and done % args.check_every == 0 and len(ens.recent) >= 4) or last:
            diag = chain_diagnostics(ens, x[:64], source="recent")
            means, variances = ens.per_sample_predictions(xt)
            nll = float(mixture_nll(means, variances, yt).mean()) + math.log(y_std)
            rmse = float((mixture_moments(means, variances)[0] - yt).square().mean().sqrt()) * y_std
            checks.append({"step": step + 1, "rhat": diag["rhat_pred_max"], "ess": diag["ess_pred_min"],
                           "kept": len(ens.store), "nll": nll, "rmse": rmse, "wall": time.perf_counter() - t0})
            print(json.dumps(checks[-1]), flush=True)
    print(f"\n{args.dataset} split {args.split}: {steps} updates, burn-in {burn_in}, checks every {args.check_every}")
    print("| stop | stops after (updates) | saved | R-hat there | ESS there | test NLL | test RMSE |")
    print("|---|---|---|---|---|---|---|")
    full = checks[-1]
    for thr in args.stop_rhat:
        hit = next((c for c in checks if c["rhat"] <= thr), None)
        if hit is None:
            print(f"| R-hat <= {thr:g} | never (runs to {steps}) | 0 % | - | - | {full['nll']:.3f} | {full['rmse']:.3f} |")
        else:
            print(f"| R-hat <= {thr:g} | {hit['step']} | {100 * (1 - hit['step'] / steps):.0f} % | {hit['rhat']:.3f} | "
                  f"{hit['ess']:.0f} | {hit['nll']:.3f} | {hit['rmse']:.3f} |")
    print(f"| full run | {steps} | - | {full['rhat']:.3f} | {full['ess']:.0f} | {full['nll']:.3f} | {full['rmse']:.3f} |")
    if args.out is not None:
        with args.out.open("a") as f:
            f.write(json.dumps({"dataset": args.dataset, "split": args.split, "checks": checks}) + "\n")


if __name__ == "__main__":
    main()
