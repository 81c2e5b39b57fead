"""Timing of NNGP / Student-t process regression (float64, CPU), measured side by side in one run.

1. Kernel, fit (Cholesky) and predict on 5,000 training points (1,000 test points).
2. A 36-point (alpha, beta) grid scored on validation NLL: one fit whose Cholesky factor and base
   predictive are shared by all 36 priors, against 36 separate fits.

Usage::

    python benchmarks/nngp_timing.py [--n 5000] [--n-grid 2000]
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch

from probgen.nngp import NNGPKernel, StudentTProcess

D = torch.float64


def timed(fn, repeats: int = 1):
    """Best-of-``repeats`` process CPU time (robust on a shared machine) and the wall time of that run."""
    best, out = (float("inf"), float("inf")), None
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        if cpu < best[0]:
            best = (cpu, wall)
    return best, out


def data(n: int, m: int, d: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n + m, d, generator=g, dtype=D)
    y = torch.sin(x[:, 0]) + 0.5 * x[:, 1] + 0.1 * torch.randn(n + m, generator=g, dtype=D)
    return x[:n], y[:n], x[n:], y[n:]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--n-grid", type=int, default=2000)
    args = parser.parse_args()
    torch.distributions.Distribution.set_default_validate_args(False)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, float64")

    # 1. kernel + fit + predict
    x, y, xs, ys = data(args.n, 1000)
    kernel = NNGPKernel(2, "relu", weight_var=2.0, bias_var=0.1).double()
    with torch.no_grad():
        t_kernel, _ = timed(lambda: kernel(x).to_dense())
        tp = StudentTProcess(kernel, 2.0, 2.0, noise=0.01)
        t_fit, _ = timed(lambda: tp.fit(x, y))
        t_pred, dist = timed(lambda: tp.predict(xs, observed=True))
        nll = -dist.log_prob(ys).mean().item()
    print("\nCPU seconds of this process (wall seconds in brackets; the machine may be shared)")
    print("\n| n train | kernel K(X, X) | fit incl. kernel | predict 1,000 | fit + predict | test NLL |")
    print("|---|---|---|---|---|---|")
    print(f"| {args.n} | {t_kernel[0]:.2f} ({t_kernel[1]:.1f}) | {t_fit[0]:.2f} ({t_fit[1]:.1f}) | "
          f"{t_pred[0]:.2f} ({t_pred[1]:.1f}) | {t_fit[0] + t_pred[0]:.2f} ({t_fit[1] + t_pred[1]:.1f}) | {nll:.3f} |")

    # 2. (alpha, beta) grid
    x, y, xv, yv = data(args.n_grid, 500, seed=1)
    values = [0.5, 1.0, 1.5, 2.0, 4.0, 8.0]
    grid = list(itertools.product(values, values))

    def shared():
        tp = StudentTProcess(kernel, noise=0.01).fit(x, y)
        base = tp.base_predict(xv)
        a = torch.tensor([g[0] for g in grid], dtype=D)
        b = torch.tensor([g[1] for g in grid], dtype=D)
        return -tp.predict_from_base(base, True, alpha=a, beta=b).log_prob(yv).mean(-1)

    def separate():
        out = []
        for a, b in grid:
            tp = StudentTProcess(kernel, a, b, noise=0.01).fit(x, y)
            out.append(-tp.predict(xv, observed=True).log_prob(yv).mean())
        return torch.stack(out)

    with torch.no_grad():
        t_shared, s1 = timed(shared, repeats=2)
        t_sep, s2 = timed(separate)
    assert torch.allclose(s1, s2, rtol=1e-8, atol=1e-10), (s1 - s2).abs().max()
    print("\n| n train | 36 priors, one shared fit [CPU s] | 36 separate fits [CPU s] | speed-up | max NLL difference |")
    print("|---|---|---|---|---|")
    print(f"| {args.n_grid} | {t_shared[0]:.2f} | {t_sep[0]:.2f} | {t_sep[0] / t_shared[0]:.1f}x | "
          f"{(s1 - s2).abs().max().item():.1e} |")


if __name__ == "__main__":
    main()
