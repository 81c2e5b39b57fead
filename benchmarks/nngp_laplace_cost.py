"""LaplaceGPClassifier on digits: fit/predict cost, the scale posterior, and a kernel grid.

``--part cost``: CPU seconds of one fit (type-II ML scale, and an inverse-gamma(2, 2) prior)
and of predicting 500 test digits, at n = 300, 500, 1000 (one thread).
``--part posterior``: the posterior over log sigma^2 at n = 500 for inverse-gamma(2, 2) and
Burr XII(2, 2): nodes, its mean and std, E[sigma^2], the quadrature error estimate.
``--part kernels``: the type-II-ML softmax NNGP at n = 300 over depth {1, 2, 4} x
weight_var {1, 2, 4} x bias_var {0, 0.1, 1}: clean test NLL and ECE on 500 digits.

    python benchmarks/nngp_laplace_cost.py --part cost posterior kernels
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch
from torch.distributions import InverseGamma

from probgen.data.digits import load_digits_tensors
from probgen.metrics import ece
from probgen.nngp import BurrXII, LaplaceGPClassifier, NNGPKernel

D = torch.float64


def kernel(depth=2, wv=2.0, bv=0.1) -> NNGPKernel:
    return NNGPKernel(depth, "relu", weight_var=[wv] * depth + [1.0], bias_var=[bv] * depth + [0.0]).double()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", nargs="+", default=["cost", "posterior", "kernels"],
                        choices=["cost", "posterior", "kernels"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    pixels, labels = load_digits_tensors(dtype=D)
    x = pixels / 16.0
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    test = perm[1000:1500]
    ig = InverseGamma(torch.tensor(2.0, dtype=D), torch.tensor(2.0, dtype=D))
    if "cost" in args.part:
        print("| n train | fit, type-II ML scale | fit, inverse-gamma prior | predict 500 (prior) |")
        print("|---|---|---|---|")
        for n in (300, 500, 1000):
            times = []
            for prior in (None, ig):
                clf = LaplaceGPClassifier(kernel(), prior=prior, scale=None)
                t0 = time.process_time()
                clf.fit(x[perm[:n]], labels[perm[:n]])
                times.append(time.process_time() - t0)
            t0 = time.process_time()
            clf.predict_proba(x[test])
            times.append(time.process_time() - t0)
            print(f"| {n} | " + " | ".join(f"{t:.1f}" for t in times) + " |", flush=True)
    if "posterior" in args.part:
        for name, prior in (("inverse gamma(2, 2)", ig), ("Burr XII(2, 2)", BurrXII(torch.tensor(2.0, dtype=D),
                                                                                    torch.tensor(2.0, dtype=D)))):
            post = LaplaceGPClassifier(kernel(), prior=prior).fit(x[perm[:500]], labels[perm[:500]]).posterior
            w, t = post.log_weights.exp(), post.log_scale
            mean = (w * t).sum()
            sd = (w * (t - mean) ** 2).sum().sqrt()
            print(f"n 500, {name}: {len(t)} nodes, log sigma^2 mean {mean:.3f} sd {sd:.3f}, "
                  f"E[sigma^2] {post.mean().item():.0f}, quadrature error {post.quadrature_error:.1e}", flush=True)
    if "kernels" in args.part:
        print("| depth | weight_var | bias_var | clean NLL | ECE |")
        print("|---|---|---|---|---|")
        for depth, wv, bv in itertools.product([1, 2, 4], [1.0, 2.0, 4.0], [0.0, 0.1, 1.0]):
            clf = LaplaceGPClassifier(kernel(depth, wv, bv), scale=None).fit(x[perm[:300]], labels[perm[:300]])
            p = clf.predict_proba(x[test], 256, generator=torch.Generator().manual_seed(0))
            y = labels[test]
            nll = -p[torch.arange(len(y)), y].log().mean().item()
            print(f"| {depth} | {wv} | {bv} | {nll:.3f} | {ece(p.float(), y).item():.3f} |", flush=True)


if __name__ == "__main__":
    main()
