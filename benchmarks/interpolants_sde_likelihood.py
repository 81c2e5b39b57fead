"""The SDE likelihood estimator on an OU model with a closed-form density.

b = 0, s(t, x) = -2x, eps = 1, rho_0 = N(0, 1): the model's forward SDE dX = -2X dt + sqrt(2) dW
gives X_1 ~ N(0, 1/2 + e^{-4}/2). Prints, per point x in {0, 1, 2}: the closed form; the mean of
the per-path values L (probgen's estimator before issue #15, a Jensen lower bound); the
log-mean-exp over K paths (today's ``log_likelihood(method="sde")``) with its standard error at
several step counts; and the Richardson extrapolation of the two finest, which removes Euler's
O(dt) bias. One thread, CPU time reported.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/interpolants_sde_likelihood.py --paths 20000
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from probgen.interpolants import log_likelihood


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--paths", type=int, default=20000)
    p.add_argument("--steps", type=int, nargs="+", default=[25, 50, 100, 200])
    args = p.parse_args()
    torch.set_num_threads(1)
    start = time.process_time()
    b = lambda t, x: torch.zeros_like(x)  # noqa: E731
    s = lambda t, x: -2.0 * x  # noqa: E731
    base = lambda x: -0.5 * x.pow(2).sum(-1) - 0.5 * math.log(2 * math.pi)  # noqa: E731
    x = torch.tensor([[0.0], [1.0], [2.0]], dtype=torch.float64)
    var = 0.5 + 0.5 * math.exp(-4.0)
    exact = -0.5 * math.log(2 * math.pi * var) - x[:, 0] ** 2 / (2 * var)
    K = args.paths
    L = log_likelihood(b, x.repeat(K, 1), base, steps=max(args.steps), method="sde", score=s, eps=1.0, num_paths=1,
                       divergence="hutchinson", generator=torch.Generator().manual_seed(0)).reshape(K, 3)
    fmt = lambda v, e: f"{v:+.4f} +- {e:.4f}"  # noqa: E731
    print(f"K = {K} paths per point; Rademacher Hutchinson (exact in 1-d)\n")
    print("| estimate | x = 0 | x = 1 | x = 2 |")
    print("|---|---|---|---|")
    print("| closed form log p_1(x) | " + " | ".join(f"{float(v):.4f}" for v in exact) + " |")
    m, e = L.mean(0), L.std(0) / math.sqrt(K)
    print(f"| mean of L ({max(args.steps)} steps; old estimator) | " + " | ".join(fmt(float(a), float(c)) for a, c in zip(m, e)) + " |")
    runs = {}
    for i, steps in enumerate(args.steps):
        lp, se = log_likelihood(b, x, base, steps=steps, method="sde", score=s, eps=1.0, num_paths=K, divergence="hutchinson",
                                generator=torch.Generator().manual_seed(100 + i), return_stderr=True)
        runs[steps] = (lp, se)
        print(f"| log-mean-exp, {steps} steps | " + " | ".join(fmt(float(a), float(c)) for a, c in zip(lp, se)) + " |")
    (lp1, se1), (lp2, se2) = runs[args.steps[-2]], runs[args.steps[-1]]
    rich, rse = 2 * lp2 - lp1, torch.sqrt(4 * se2**2 + se1**2)
    print(f"| Richardson {args.steps[-2]}/{args.steps[-1]} | " + " | ".join(fmt(float(a), float(c)) for a, c in zip(rich, rse)) + " |")
    print("\nerrors against the closed form (estimate - exact):")
    for steps, (lp, se) in runs.items():
        print(f"  {steps:4d} steps: " + ", ".join(f"{float(a - x_):+.4f}" for a, x_ in zip(lp, exact)))
    print(f"  Richardson: " + ", ".join(f"{float(a - x_):+.4f}" for a, x_ in zip(rich, exact)))
    print(f"\nCPU time {time.process_time() - start:.1f} s")


if __name__ == "__main__":
    main()
