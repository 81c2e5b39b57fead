"""Cost of one ELBO step (forward + backward + Adam) with K OU processes vs the Brownian K = 0.

Same batch (32 paths), network (control MLP 2x64 tanh) and 200 Euler steps of the shared
solver; the variants are timed in interleaved rounds so that load from other jobs hits all
of them alike, and the median per-round ratio to K = 0 is reported.

    python benchmarks/fractional_cost.py --rounds 10 --steps-per-round 5
    python benchmarks/fractional_cost.py --ks 0 5 10 --transition guided
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from probgen.fractional import FractionalSDE


def make(k: int, transition: str = "girsanov") -> FractionalSDE:
    torch.manual_seed(0)
    return FractionalSDE(n_ou=k, white=k == 0, gamma_max=20.0, horizon=2.0, hurst=0.3, learn_hurst=k > 0,
                         context="none", obs_std=0.1, dt=0.01, transition="girsanov" if k == 0 else transition)


def step(model: FractionalSDE, opt: torch.optim.Optimizer, values: torch.Tensor, times: torch.Tensor) -> None:
    loss = -model.elbo(values, times)["elbo"].mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--ks", type=int, nargs="+", default=[0, 5, 12])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--steps-per-round", type=int, default=5)
    p.add_argument("--transition", default="girsanov", choices=["girsanov", "gaussian", "guided"],
                   help="the variational family of the K > 0 variants (K = 0 stays the Girsanov Brownian baseline)")
    a = p.parse_args()
    torch.set_num_threads(1)
    values, times = torch.zeros(32, 1, 1), torch.full((32, 1), 2.0)
    models = {k: make(k, a.transition) for k in a.ks}
    opts = {k: m.configure_optimizers() for k, m in models.items()}
    for k in a.ks:  # warm-up
        step(models[k], opts[k], values, times)
    times_per = {k: [] for k in a.ks}
    for _ in range(a.rounds):
        for k in a.ks:
            start = time.perf_counter()
            for _ in range(a.steps_per_round):
                step(models[k], opts[k], values, times)
            times_per[k].append((time.perf_counter() - start) / a.steps_per_round)
    base = times_per[a.ks[0]]
    print("| K | median s / step | median ratio to K = 0 (per round) |")
    print("|---|---|---|")
    for k in a.ks:
        ratio = statistics.median(t / b for t, b in zip(times_per[k], base))
        print(f"| {k} | {statistics.median(times_per[k]):.4f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
