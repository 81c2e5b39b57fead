"""Stationary bias of the compositional gradient at the optimum: constant vs decaying gamma, shared vs independent u_t.

The 1-D Gaussian mean problem (Jiang et al. 2023, Sec. 5): data N(mu*, 1), model
$E_\\mu(x) = (x - \\mu)^2/2$, q = N(0, 1), mismatch mu* = 2. $Z$ does not depend on $\\mu$, so at
$\\mu = \\mu^*$ the exact NLL gradient is 0 and the noise term $\\nabla\\hat g_t / u_t$ of the
compositional gradient should average to 0; its mean is the stationary bias of $\\mu$ (curvature 1).
``R`` independent estimators run at once (``MovingAverageLogZ`` is elementwise); the table gives
the mean over steps ``T/2..T`` and the standard error over estimators.

    python benchmarks/energy_stationary_bias.py [--chains 1000] [--steps 400] [--mismatch 2]
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from probgen.energy import MovingAverageLogZ

CASES = ((0.0, False), (0.0, True), (1.0, False), (0.5, False), (1.0, True))


def bias(mu: float, gamma_decay: float, independent: bool, R: int, m: int, T: int, seed: int = 0) -> tuple[float, float]:
    gen = torch.Generator().manual_seed(seed)
    est = MovingAverageLogZ(0.1, gamma_decay=gamma_decay, gamma_offset=10.0)

    def batch():
        xn = torch.randn(R, m, generator=gen, dtype=torch.float64)  # q = N(0, 1)
        log_w = -0.5 * (xn - mu) ** 2 + 0.5 * xn**2  # -E - log q, up to the constant log sqrt(2 pi)
        return torch.logsumexp(log_w, 1) - math.log(m), (log_w.exp() * (xn - mu)).mean(1)

    tail = []
    for t in range(T):
        log_g, grad_g = batch()
        log_u = est.update(batch()[0] if independent else log_g)
        if t >= T // 2:
            tail.append(grad_g * torch.exp(-log_u))
    per = torch.stack(tail).mean(0)
    return float(per.mean()), float(per.std()) / math.sqrt(R)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--noise-batch", type=int, default=128)
    parser.add_argument("--mismatch", type=float, default=2.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"# mu* = {args.mismatch}, m = {args.noise_batch}, gamma_0 = 0.1, t0 = 10, {args.chains} estimators, steps {args.steps // 2}-{args.steps}")
    print("| gamma_t | u_t from | mean gradient at mu* (= stationary bias of mu) | s.e. | CPU s |")
    print("|---|---|---|---|---|")
    for decay, independent in CASES:
        start = time.process_time()
        b, se = bias(args.mismatch, decay, independent, args.chains, args.noise_batch, args.steps)
        label = "constant 0.1" if decay == 0 else f"0.1 (1 + t/10)^-{decay:g}"
        print(f"| {label} | {'independent batch' if independent else 'same batch'} | {b:+.4f} | {se:.4f} | {time.process_time() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
