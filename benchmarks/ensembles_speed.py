"""Speed: K = 16 chains through one vmapped forward vs 16 chains run one after another.

Same network (an MLP), same minibatches, same number of steps, same sampler (SGLD):

* ``vmap``: one :class:`~probgen.ensembles.BayesianEnsemble` with K = 16 (one batched forward,
  one backward, one vmapped sampler step per step);
* ``loop``: the same ensemble with ``vectorize="sequential"`` (a Python loop over chains
  inside each step);
* ``16 runs``: 16 independent K = 1 ensembles, run one after the other (the plain way to
  get 16 chains).

Timings alternate between the variants (``--repeats`` rounds) and report the median, so
that load from other jobs hits all of them alike.

    python benchmarks/ensembles_speed.py [--device cuda] [--steps 200]

``--scaling 1 4 16 64``: instead, the wall time per step of K vmapped chains of the UCI default
network (13-50-2 ReLU, heteroscedastic Gaussian, pSGLD, batch 32) for each K, and the
projected wall time of a 30,000-step run (per-step time x 30,000; the step cost is flat over a
run, the store is preallocated).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from probgen.ensembles import (
    BayesianEnsemble,
    GaussianLikelihood,
    GaussianPrior,
    SamplingSchedule,
    mlp,
)


def make(k: int, vectorize: str, dims: tuple[int, list[int]], n: int, device: str) -> tuple:
    torch.manual_seed(0)
    d_in, hidden = dims
    ens = BayesianEnsemble(mlp(d_in, 1, hidden), GaussianLikelihood("learnt", 0.5), GaussianPrior(1.0),
                           num_chains=k, num_data=n, store_size=20, vectorize=vectorize).to(device)
    return ens, ens.make_sampler("sgld", lr=1e-5)


def timed(runs: list[tuple], batches: list, device: str) -> float:
    sch = SamplingSchedule(lr=1e-5, burn_in=len(batches) // 2, thin=5)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for ens, sampler in runs:
        for x, y in batches:
            ens.train_step(x, y, sampler, sch)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def scaling(ks: list[int], steps: int, repeats: int, device: str) -> None:
    n, d_in = 512, 13
    g = torch.Generator().manual_seed(0)
    data_x, data_y = torch.randn(n, d_in, generator=g), torch.randn(n, 1, generator=g)
    batches = [(data_x[i % 16 * 32:(i % 16 + 1) * 32].to(device), data_y[i % 16 * 32:(i % 16 + 1) * 32].to(device))
               for i in range(steps)]
    sch = SamplingSchedule(lr=3e-3 / n, burn_in=steps // 2, thin=10)

    def run(k: int) -> float:
        torch.manual_seed(0)
        ens = BayesianEnsemble(mlp(d_in, 2, [50]), GaussianLikelihood("heteroscedastic", 1.0), GaussianPrior(1.0),
                               num_chains=k, num_data=n, store_size=50).to(device)
        sampler = ens.make_sampler("psgld", lr=3e-3 / n)
        for x, y in batches[:5]:  # warm-up
            ens.train_step(x, y, sampler, sch)
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for x, y in batches:
            ens.train_step(x, y, sampler, sch)
        if device == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / steps

    times: dict[int, list[float]] = {k: [] for k in ks}
    for _ in range(repeats):  # alternate K within each round so load hits all alike
        for k in ks:
            times[k].append(run(k))
    print(f"device {device}, UCI default network, pSGLD, batch 32, {steps} steps; median of {repeats} rounds\n")
    print("| chains K | ms / step (all chains) | ms / step / chain | 30,000-step run (s) | vs K=1 |")
    print("|---|---|---|---|---|")
    base = statistics.median(times[ks[0]])
    for k in ks:
        t = statistics.median(times[k])
        print(f"| {k} | {1e3 * t:.2f} | {1e3 * t / k:.3f} | {3e4 * t:.0f} | {t / base:.2f}x |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chains", type=int, default=16)
    ap.add_argument("--scaling", type=int, nargs="+", default=None, help="chain counts K to time, e.g. 1 4 16 64")
    args = ap.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(1)
    if args.scaling:
        scaling(args.scaling, args.steps, args.repeats, args.device)
        return
    k = args.chains
    print(f"device {args.device}, K = {k}, {args.steps} SGLD steps, batch 32; median of {args.repeats} rounds\n")
    print("| network | vmap (s) | loop in step (s) | 16 separate runs (s) | speed-up vs loop | speed-up vs runs |")
    print("|---|---|---|---|---|---|")
    for label, dims in (("MLP 13-50-1 (UCI)", (13, [50])), ("MLP 64-100-100-1", (64, [100, 100]))):
        n = 512
        g = torch.Generator().manual_seed(0)
        data_x, data_y = torch.randn(n, dims[0], generator=g), torch.randn(n, 1, generator=g)
        batches = [(data_x[i % 16 * 32:(i % 16 + 1) * 32].to(args.device), data_y[i % 16 * 32:(i % 16 + 1) * 32].to(args.device))
                   for i in range(args.steps)]
        times = {"vmap": [], "loop": [], "runs": []}
        timed([make(k, "vmap", dims, n, args.device)], batches[:5], args.device)  # warm-up
        for _ in range(args.repeats):
            times["vmap"].append(timed([make(k, "vmap", dims, n, args.device)], batches, args.device))
            times["loop"].append(timed([make(k, "sequential", dims, n, args.device)], batches, args.device))
            times["runs"].append(timed([make(1, "vmap", dims, n, args.device) for _ in range(k)], batches, args.device))
        med = {key: statistics.median(v) for key, v in times.items()}
        print(f"| {label} | {med['vmap']:.2f} | {med['loop']:.2f} | {med['runs']:.2f} | "
              f"{med['loop'] / med['vmap']:.1f}x | {med['runs'] / med['vmap']:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
