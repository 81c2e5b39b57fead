"""Digits classification: the paper's Gaussian-likelihood classifier against the softmax (Laplace) one.

Five classifiers on one NNGP kernel (depth 2, ReLU, weight variance 2, bias variance 0.1, readout
variance 1), trained on ``--n-train`` random 8x8 digits (pixels / 16) and tested on the rest:

* ``gauss NNGP``, ``gauss t``: the paper's classifiers (Lee et al. 2022, sec. 5.2), a GP or Student-t
  process (inverse gamma) regressed on one-hot labels; kernel variances, noise and readout scale
  (or alpha, beta) fitted by the marginal likelihood (40 Adam steps); class probabilities
  $P(\\arg\\max_k f_k = c)$ by Monte Carlo.
* ``softmax NNGP``: softmax likelihood by Laplace, readout scale by type-II maximum likelihood.
* ``softmax t``: the same with an inverse-gamma(2, 2) prior on the readout scale integrated out.
* ``softmax Burr``: the same with a Burr XII(2, 2) prior.

Test sets: clean, and corrupted (Gaussian noise std 0.25, blur std 1 pixel, rotation 30 degrees:
``probgen.data.digits.corrupt_digits`` at severity 1). Held-out classes: trained on digits 0-7 only,
AUROC of the predictive entropy for telling 8s and 9s from in-distribution test digits.
Mean +- std over ``--seeds`` random splits.

Usage::

    python benchmarks/nngp_digits.py --seeds 3 --n-train 700 --out benchmarks/results/nngp/digits.jsonl
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.distributions import InverseGamma

from probgen.data.digits import corrupt_digits, load_digits_tensors
from probgen.metrics import auroc, ece
from probgen.nngp import (
    BurrXII,
    GaussianProcess,
    LaplaceGPClassifier,
    NNGPKernel,
    StudentTProcess,
    class_probabilities,
    fit_hyperparameters,
    one_hot_targets,
)

D = torch.float64
SHIFTS = (("clean", None), ("noise", "noise"), ("blur", "blur"), ("rotation", "rotation"))
MODELS = ("gauss NNGP", "gauss t", "softmax NNGP", "softmax t", "softmax Burr")


def kernel() -> NNGPKernel:
    return NNGPKernel(2, "relu", weight_var=[2.0, 2.0, 1.0], bias_var=[0.1, 0.1, 0.0]).double()


def fit_model(name: str, x: torch.Tensor, labels: torch.Tensor, num_classes: int, steps: int):
    """A fitted classifier and a function ``x -> (m, C)`` class probabilities."""
    gen = torch.Generator().manual_seed(0)
    if name.startswith("gauss"):
        model = (GaussianProcess(kernel(), noise=0.1) if name == "gauss NNGP"
                 else StudentTProcess(kernel(), alpha=2.0, beta=2.0, noise=0.1))
        fit_hyperparameters(model, x, one_hot_targets(labels, num_classes), steps=steps, lr=0.05)
        return lambda xt: class_probabilities(model.predict(xt, observed=True), 512, generator=gen)
    prior = {"softmax NNGP": None,
             "softmax t": InverseGamma(torch.tensor(2.0, dtype=D), torch.tensor(2.0, dtype=D)),
             "softmax Burr": BurrXII(torch.tensor(2.0, dtype=D), torch.tensor(2.0, dtype=D))}[name]
    model = LaplaceGPClassifier(kernel(), prior=prior, scale=None, num_classes=num_classes).fit(x, labels)
    return lambda xt: model.predict_proba(xt, 512, generator=gen)


def run_seed(seed: int, n_train: int, steps: int) -> list[dict]:
    pixels, labels = load_digits_tensors(dtype=D)
    x = pixels / 16.0
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    tr, te = perm[:n_train], perm[n_train:]
    gen = torch.Generator().manual_seed(seed + 100)
    tests = {s: x[te] if kind is None else corrupt_digits(x[te], kind, 1.0, generator=gen) for s, kind in SHIFTS}
    # held-out classes: train on 0-7
    seen = labels < 8
    perm_in, perm_out = perm[seen[perm]], perm[~seen[perm]]
    tr_in, te_in = perm_in[:n_train], perm_in[n_train:]
    rows = []
    for name in MODELS:
        t0 = time.process_time()
        proba = fit_model(name, x[tr], labels[tr], 10, steps)
        with torch.no_grad():
            stacked = proba(torch.cat(list(tests.values())))  # one call: the mixture factors are built once
        for (shift, _), probs in zip(SHIFTS, stacked.split(len(te))):
            y = labels[te]
            rows.append({"seed": seed, "model": name, "test": shift,
                         "accuracy": (probs.argmax(-1) == y).double().mean().item(),
                         "nll": -probs[torch.arange(len(y)), y].clamp_min(1e-12).log().mean().item(),
                         "ece": ece(probs.float(), y).item()})
        proba_in = fit_model(name, x[tr_in], labels[tr_in], 8, steps)
        with torch.no_grad():
            p = proba_in(torch.cat([x[te_in], x[perm_out]]))
        entropy = -(p * p.clamp_min(1e-12).log()).sum(-1)
        rows.append({"seed": seed, "model": name, "test": "held-out classes",
                     "auroc": auroc(entropy[: len(te_in)], entropy[len(te_in):]).item()})
        print(f"seed {seed} {name:13s} " + "  ".join(
            f"{r['test']} acc {r['accuracy']:.3f} nll {r['nll']:.3f}" for r in rows[-5:-1])
            + f"  AUROC {rows[-1]['auroc']:.3f}  ({time.process_time() - t0:.0f} CPU s)", flush=True)
    return rows


def summarize(rows: list[dict]) -> None:
    seeds = sorted({r["seed"] for r in rows})
    print(f"\n{len(seeds)} seeds. Accuracy / NLL / ECE, mean ± std over seeds\n")
    print("| model | " + " | ".join(s for s, _ in SHIFTS) + " | held-out classes AUROC |")
    print("|---|" + "---|" * (len(SHIFTS) + 1))

    def ms(vals):
        v = torch.tensor(vals, dtype=D)
        return f"{v.mean():.3f} ± {v.std():.3f}" if len(v) > 1 else f"{v.mean():.3f}"

    for name in MODELS:
        cells = []
        for shift, _ in SHIFTS:
            sel = [r for r in rows if r["model"] == name and r["test"] == shift]
            if not sel:
                cells.append("")
                continue
            cells.append(" / ".join(ms([r[k] for r in sel]) for k in ("accuracy", "nll", "ece")))
        sel = [r["auroc"] for r in rows if r["model"] == name and r["test"] == "held-out classes"]
        if sel:
            print(f"| {name} | " + " | ".join(cells) + f" | {ms(sel)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--n-train", type=int, default=700)
    parser.add_argument("--steps", type=int, default=40, help="Adam steps for the Gaussian-likelihood models")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None, help="append one JSON line per result here")
    parser.add_argument("--summarize", default=None, help="only print the table from an --out file")
    args = parser.parse_args()
    if args.summarize:
        with open(args.summarize) as f:
            summarize([json.loads(line) for line in f if line.strip()])
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for seed in range(args.seeds):
        new = run_seed(seed, args.n_train, args.steps)
        rows += new
        if args.out:
            with open(args.out, "a") as f:
                f.writelines(json.dumps(r) + "\n" for r in new)
    summarize(rows)


if __name__ == "__main__":
    main()
