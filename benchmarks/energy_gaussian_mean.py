"""1-D Gaussian mean estimation: compositional vs NCE vs the biased minibatch estimate.

The paper's toy study (Jiang et al. 2023, Sec. 5): data $\\mathcal N(\\mu^*, 1)$, model
$E_\\mu(x) = (x - \\mu)^2 / 2$ (unit precision, only the mean is learnt), a fixed noise
$q = \\mathcal N(0, 1)$, so the distance $\\mu^*$ measures the mismatch between $q$ and the data.
Start $\\mu_0 = 0$; fresh data and noise batches (n = m = 128) every iteration. NCE gets the
exact $\\log Z$ (its most favourable setting, as in Liu et al. 2022's landscape analysis).

Prints, per mismatch, optimiser and objective: the median (over seeds) of the first iteration
with $|\\mu_t - \\mu^*| < 10^{-2}$, how many seeds got there within ``MAX_ITERS``, the mean error over
the last 500 iterations, and the NCE / compositional iteration ratio.

    python benchmarks/energy_gaussian_mean.py [--mismatch 0.5 1 2 3] [--objectives ...] [--optimisers sgd adam]
        [--gamma-decay 1.0] [--independent-u]

``--gamma-decay a`` runs the compositional objectives with $\\gamma_t = 0.1 (1 + t/10)^{-a}$;
``--independent-u`` updates $u_t$ from a second, independent noise batch.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import torch

from probgen.energy import (
    GaussianNoise,
    MovingAverageLogZ,
    QuadraticEnergy,
    compositional_loss,
    minibatch_loss,
    nce_loss,
)

MAX_ITERS = 2000
SEEDS = (0, 1, 2)
N = M = 128
TOL = 1e-2
MISMATCH = (0.5, 1.0, 2.0, 3.0)
OPTIMISERS = {"sgd": lambda p: torch.optim.SGD(p, lr=0.1), "adam": lambda p: torch.optim.Adam(p, lr=0.05)}
OBJECTIVES = ("compositional", "storm", "minibatch", "nce")


GAMMA_DECAY = 0.0
INDEPENDENT_U = False


def run(objective: str, mu_star: float, optimiser: str, seed: int) -> tuple[int | None, float]:
    gen = torch.Generator().manual_seed(seed)
    energy = QuadraticEnergy(1, mean=[0.0], precision=1.0, learn_precision=False).double()
    q = GaussianNoise(1).double()
    opt = OPTIMISERS[optimiser]([energy.mean])
    est = MovingAverageLogZ(gamma=0.1, storm=objective == "storm", gamma_decay=GAMMA_DECAY, gamma_offset=10.0)
    log_z = torch.tensor(0.5 * math.log(2 * math.pi), dtype=torch.float64)
    hit, tail = None, []
    for t in range(1, MAX_ITERS + 1):
        x = mu_star + torch.randn(N, 1, generator=gen, dtype=torch.float64)
        xn = q.sample(M, gen)
        lq = q.log_prob(xn)
        if objective in ("compositional", "storm"):
            extra = ()
            if INDEPENDENT_U:
                xu = q.sample(M, gen)
                extra = (xu, q.log_prob(xu))
            out = compositional_loss(energy, x, xn, lq, est, *extra)
        elif objective == "minibatch":
            out = minibatch_loss(energy, x, xn, lq)
        else:
            out = nce_loss(energy, x, q.log_prob(x), xn, lq, log_z)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        err = abs(float(energy.mean.detach()) - mu_star)
        if hit is None and err < TOL:
            hit = t
        if t > MAX_ITERS - 500:
            tail.append(float(energy.mean.detach()) - mu_star)
    return hit, sum(tail) / len(tail)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mismatch", type=float, nargs="+", default=list(MISMATCH))
    parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=OBJECTIVES)
    parser.add_argument("--optimisers", nargs="+", default=list(OPTIMISERS), choices=list(OPTIMISERS))
    parser.add_argument("--gamma-decay", type=float, default=0.0)
    parser.add_argument("--independent-u", action="store_true")
    args = parser.parse_args()
    global GAMMA_DECAY, INDEPENDENT_U
    GAMMA_DECAY, INDEPENDENT_U = args.gamma_decay, args.independent_u
    if "nce" not in args.objectives:
        parser.error("--objectives must include nce (the ratio column is relative to it)")
    torch.set_num_threads(1)
    start = time.time()
    print(f"# 1-D Gaussian mean, q = N(0, 1), n = m = {N}, tol {TOL}, {MAX_ITERS} iterations max, seeds {SEEDS}, "
          f"gamma_decay {GAMMA_DECAY}, independent u {INDEPENDENT_U}")
    print("| mu* (mismatch) | optimiser | objective | iterations to 1e-2 (median) | reached | mean error, last 500 its | NCE / this |")
    print("|---|---|---|---|---|---|---|")
    for mu_star in args.mismatch:
        for optimiser in args.optimisers:
            rows = {}
            for objective in args.objectives:
                res = [run(objective, mu_star, optimiser, s) for s in SEEDS]
                hits = [h if h is not None else math.inf for h, _ in res]
                rows[objective] = (statistics.median(hits), sum(h < math.inf for h in hits), statistics.mean(b for _, b in res))
            for objective, (med, reached, bias) in rows.items():
                nce = rows["nce"][0]
                ratio = nce / med if math.isfinite(med) and math.isfinite(nce) else (math.inf if math.isfinite(med) else math.nan)
                med_s = f"{med:.0f}" if math.isfinite(med) else f"> {MAX_ITERS}"
                ratio_s = f"{ratio:.2f}" if math.isfinite(ratio) else ("> " + f"{MAX_ITERS / med:.1f}" if math.isfinite(med) else "n/a")
                print(f"| {mu_star} | {optimiser} | {objective} | {med_s} | {reached}/{len(SEEDS)} | {bias:+.4f} | {ratio_s} |")
            sys.stdout.flush()
    print(f"# wall time {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
