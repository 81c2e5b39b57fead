"""Memory and time of NNGP / Student-t process fitting at large n (float64, CPU), exact against iterative.

For each n: one step of ``fit_hyperparameters`` (kernel, $\\log p(y)$ and its gradient with respect
to the kernel variances and the noise), then the predictive on 1,000 test points, with
``solver="cholesky"`` and ``solver="iterative"`` (CG + stochastic Lanczos quadrature through
linear_operator's ``inv_quad_logdet``, 16 probes, pivoted-Cholesky preconditioner of rank 100).
Each (n, solver) runs in a fresh subprocess, so the peak resident memory (``ru_maxrss``) is that
run's own. Data: $d = 8$, $y = \\sin x_1 + x_2/2 + 0.1\\varepsilon$; kernel: depth-2 ReLU NNGP.

Usage::

    MALLOC_MMAP_THRESHOLD_=65536 python benchmarks/nngp_scale.py --n 1000 5000 10000 --model t
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

D = torch.float64


def one_run(n: int, solver: str, model: str, threads: int) -> dict:
    from probgen.nngp import GaussianProcess, NNGPKernel, StudentTProcess

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    m = 1000
    x = torch.randn(n + m, 8, generator=g, dtype=D)
    y = torch.sin(x[:, 0]) + 0.5 * x[:, 1] + 0.1 * torch.randn(n + m, generator=g, dtype=D)
    kernel = NNGPKernel(2, "relu", weight_var=2.0, bias_var=0.1).double()
    cls = StudentTProcess if model == "t" else GaussianProcess
    proc = cls(kernel, noise=0.05, solver=solver).double()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    c0, w0 = time.process_time(), time.perf_counter()
    lml = proc.fit(x[:n], y[:n]).log_marginal_likelihood()
    (-lml / n).backward()
    c1, w1 = time.process_time(), time.perf_counter()
    with torch.no_grad():
        proc.fit(x[:n], y[:n])
        nll = -proc.predict(x[n:], observed=True).log_prob(y[n:]).mean().item()
    c2, w2 = time.process_time(), time.perf_counter()
    return {"n": n, "solver": solver, "model": model, "lml_per_point": lml.item() / n,
            "grad_weight_var": kernel.raw_weight_var.grad.item(), "test_nll": nll,
            "step_cpu_s": c1 - c0, "step_wall_s": w1 - w0, "predict_cpu_s": c2 - c1, "predict_wall_s": w2 - w1,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, "rss_before_gb": base,
            "nxn_gb": 8 * n * n / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 5000, 10000])
    parser.add_argument("--solvers", nargs="+", default=["cholesky", "iterative"])
    parser.add_argument("--model", choices=["gp", "t"], default="t")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="append one JSON line per run")
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(int(args.one[0]), args.one[1], args.model, args.threads)))
        return
    print(f"{'n':>6} {'solver':>9} {'-log p(y)/n':>11} {'d/d raw wv':>11} {'test NLL':>9} "
          f"{'step CPU s':>10} {'pred CPU s':>10} {'peak RSS GB':>11} {'n x n GB':>8}")
    for n in args.n:
        for solver in args.solvers:
            cmd = [sys.executable, __file__, "--one", str(n), solver, "--model", args.model,
                   "--threads", str(args.threads)]
            res = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True,
                                            env=os.environ).stdout.strip().splitlines()[-1])
            print(f"{n:>6} {solver:>9} {-res['lml_per_point']:11.5f} {res['grad_weight_var']:11.4f} "
                  f"{res['test_nll']:9.5f} {res['step_cpu_s']:10.1f} {res['predict_cpu_s']:10.1f} "
                  f"{res['peak_rss_gb']:11.2f} {res['nxn_gb']:8.2f}", flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
