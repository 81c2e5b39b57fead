"""MECO vs NCE speed on one 2-D density: constant gamma, the decaying gamma_t schedule, and NCE.

Every variant trains the shipped ``models/energy/<density>.yaml`` (tilted model p ~ q exp(-E),
q the config's Gaussian mixture fitted to the training points, the same Fourier-feature energy,
optimiser, batch sizes and seed) by the loop of :mod:`benchmarks.energy_toy2d_configs` (a plain
loop over ``EnergyBasedModel.objective_step``) and evaluates the test NLL on 5,000 held-out
points with the grid $\\log Z$ every ``--eval-every`` iterations. Variants:

- ``meco-const``: the compositional objective with a constant $\\gamma = 0.1$ and $u_t$ from the
  same noise batch (the paper's estimator, ``gamma_decay=0, independent_u=False``);
- ``meco-decay``: the config's own $\\gamma_t = 0.1 (1 + t/100)^{-1/2}$ with an independent $u_t$ batch;
- ``meco-decay1``: $\\gamma_t = 0.1 (1 + t/100)^{-1}$, same batch;
- ``nce``: NCE with the same q, energy and budget.

Prints, per variant, the final test NLL, the first evaluated iteration within 0.05 nats of the final
NLL, the best NLL on the curve, the process CPU seconds of training and the curve.

    python benchmarks/energy_meco_nce_speed.py --density checkerboard --iters 3000 --eval-every 100 --n-train 200000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import energy_toy2d_configs as base

from probgen.data.toy2d import make_density

VARIANTS = {
    "meco-const": ("compositional", {"gamma_decay": 0.0, "independent_u": False}),
    "meco-decay": ("compositional", {}),
    "meco-decay1": ("compositional", {"gamma_decay": 1.0, "independent_u": False}),
    "nce": ("nce", {}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--density", default="checkerboard", choices=base.DENSITIES)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--iters", type=int, default=3000)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--n-train", type=int, default=200_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    density = make_density(args.density)
    x_train = density.sample(args.n_train, generator=torch.Generator().manual_seed(0)).float()
    x_test = density.sample(5_000, generator=torch.Generator().manual_seed(1)).float()
    h = density.entropy()
    print(f"# {args.density}, shipped config, {args.n_train} training points, {args.iters} iterations, test NLL every {args.eval_every}")
    print("| variant | H(p) | q alone | final test NLL | best on curve | first eval within 0.05 of final | train CPU s | curve |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.variants:
        objective, override = VARIANTS[name]
        base.OVERRIDE.clear()
        base.OVERRIDE.update(override)
        start = time.time()
        r = base.run(args.density, objective, args.iters, args.eval_every, x_train, x_test)
        curve = " ".join(f"{it}:{v:.3f}" for it, v in r["curve"])
        best = min(v for _, v in r["curve"])
        print(f"| {name} | {h:.3f} | {r['q_nll']:.3f} | {r['nll']:.3f} | {best:.3f} | {r['within']} | {r['cpu']:.0f} | {curve} |"
              f"  <!-- wall {time.time() - start:.0f} s -->")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
