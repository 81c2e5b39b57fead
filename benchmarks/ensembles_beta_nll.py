"""UCI regression: the heteroscedastic warm start, mean-first vs beta-NLL (Seitzer et al. 2022).

Both arms are ``models/ensembles/uci_regression.yaml`` run by ``benchmarks/ensembles_uci.py``'s
``run`` (same data, seeds, minibatches, schedule and budget); only the objective of the
warm-start steps (the first 25 % of the run, inside burn-in) differs:

* ``mean-first``: the shipped default, the mean fitted under the fixed std ``noise_scale``
  and the variance head on the mean's detached residuals;
* ``beta-NLL (beta)``: each point's Gaussian NLL weighted by the stop-gradient
  $\\sigma^{2\\beta}$ (``GaussianLikelihood(warm_start_objective="beta_nll", beta=...)``);
* ``no warm start`` (with ``--no-warm-start``): the exact likelihood from step 0.

After the warm start every arm samples the same exact posterior, so the comparison is about
how well each start sets the chains up within the fixed budget.

    python benchmarks/ensembles_beta_nll.py --dataset energy --splits 2 [--beta 0.5] [--no-warm-start] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ensembles_uci  # noqa: E402  (the shared UCI runner)


def run_arm(arm: str, dataset: str, split: int, hp: dict, batch_size: int, beta: float) -> dict:
    hp = dict(hp)
    objective = "mean_first"
    if arm.startswith("beta-NLL"):
        objective = "beta_nll"
    elif arm == "no warm start":
        hp["warm_start"] = 0
    result = ensembles_uci.run(dataset, split, "default", hp, batch_size,
                               likelihood_kwargs={"warm_start_objective": objective, "beta": beta})
    return {**result, "method": arm}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="energy")
    ap.add_argument("--splits", type=int, default=2)
    ap.add_argument("--beta", type=float, default=0.5)
    ap.add_argument("--no-warm-start", action="store_true", help="also run the exact likelihood from step 0")
    ap.add_argument("--only-no-warm-start", action="store_true", help="run only the no-warm-start arm")
    ap.add_argument("--out", type=Path, default=None, help="append each run's result here (JSON lines)")
    ap.add_argument("--summarise", type=Path, default=None, help="only print the table of a results file")
    args = ap.parse_args()
    if args.summarise is not None:
        ensembles_uci.summarise([json.loads(x) for x in args.summarise.read_text().splitlines() if x.strip()])
        return
    torch.set_num_threads(1)
    hp, batch_size = ensembles_uci.load_config()
    arms = ["mean-first", f"beta-NLL ({args.beta:g})"] + (["no warm start"] if args.no_warm_start else [])
    if args.only_no_warm_start:
        arms = ["no warm start"]
    results = []
    for split in range(args.splits):
        for arm in arms:
            r = run_arm(arm, args.dataset, split, hp, batch_size, args.beta)
            results.append(r)
            print(json.dumps(r), flush=True)
            if args.out is not None:
                with args.out.open("a") as f:
                    f.write(json.dumps(r) + "\n")
    ensembles_uci.summarise(results)


if __name__ == "__main__":
    main()
