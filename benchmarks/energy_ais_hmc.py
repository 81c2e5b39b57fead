"""AIS with MALA vs HMC transitions on a 2-D Gaussian mixture with closed-form log Z.

Target $e^{-E} = \\sum_i w_i e^{-E_i}$, two Gaussian components (weights 0.3 / 0.7, precisions
4 I and [[1, 0.3], [0.3, 2]], means (-2, 0) and (2, 1)), initial q = N(0, 4 I); the same target
as ``tests/samplers/test_samplers_ais.py``. For each transition and number of levels: forward AIS
(1000 chains, sigmoid schedule, one transition per level, adapted step), the error of
$\\log \\hat Z$ against the exact value in units of its reported standard error, the ESS, the
acceptance and the process CPU seconds (one thread), over ``--seeds`` seeds.

    python benchmarks/energy_ais_hmc.py --levels 10 30 100 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from probgen.energy import GaussianNoise, QuadraticEnergy, SoftMinEnergy
from probgen.samplers import ais, sigmoid_betas

DT = torch.float64


def target():
    e1 = QuadraticEnergy(2, mean=torch.tensor([-2.0, 0.0], dtype=DT), precision=4.0).double()
    e2 = QuadraticEnergy(2, mean=torch.tensor([2.0, 1.0], dtype=DT), precision=torch.tensor([[1.0, 0.3], [0.3, 2.0]], dtype=DT)).double()
    w = (0.3, 0.7)
    log_z = math.log(sum(wi * math.exp(float(e.log_partition().detach())) for wi, e in zip(w, (e1, e2))))
    return SoftMinEnergy([e1, e2], weights=list(w)).double(), log_z


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[10, 30, 100])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--num-leapfrog", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    energy, log_z = target()
    q = GaussianNoise(2, cov=4.0 * torch.eye(2, dtype=DT)).double()
    print(f"# 2-D mixture, exact log Z {log_z:.4f}, 1000 chains, one transition per level, HMC with {args.num_leapfrog} leapfrog steps")
    print("| transition | levels | log Z - exact (mean over seeds) | max abs error / s.e. | mean ESS (of 1000) | acceptance | CPU s per run |")
    print("|---|---|---|---|---|---|---|")
    for k in args.levels:
        for transition in ("mala", "hmc"):
            errs, zs, ess, acc, cpu = [], [], [], [], 0.0
            for s in args.seeds:
                c0 = time.process_time()
                r = ais(energy, q, 1000, sigmoid_betas(k), step_size=0.3, transition=transition,
                        num_leapfrog=args.num_leapfrog, generator=torch.Generator().manual_seed(s))
                cpu += time.process_time() - c0
                errs.append(float(r.log_z) - log_z)
                zs.append(abs(errs[-1]) / float(r.std_err))
                ess.append(float(r.ess))
                acc.append(r.acceptance)
            n = len(args.seeds)
            print(f"| {transition} | {k} | {sum(errs) / n:+.4f} | {max(zs):.1f} | {sum(ess) / n:.0f} | {sum(acc) / n:.2f} | {cpu / n:.2f} |")


if __name__ == "__main__":
    main()
