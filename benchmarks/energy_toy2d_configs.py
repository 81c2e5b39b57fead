"""2-D densities with the shipped configs: test NLL (grid log Z) against the entropy, per objective.

For each density the model is built from ``models/energy/<density>.yaml`` (its ``init_args``,
optionally with the objective overridden), ``q`` is fitted to the 20,000 (``--n-train``) training points and the
model is trained by a plain loop over ``objective_step`` (the same step the CLI runs) for
``--iters`` iterations with the config's batch size. Every ``--eval-every`` iterations the test NLL
on 5,000 held-out points is computed with $\\log Z$ from the config's midpoint grid; the table
gives the final NLL, the first evaluated iteration within 0.05 nats of the final one, the NLL of
``q`` alone, the true entropy $H(p)$ (NLL - H = KL(p || p_theta) >= 0 up to the test mean's Monte
Carlo error) and the process CPU seconds of training (``time.process_time``, one thread).

    python benchmarks/energy_toy2d_configs.py --densities checkerboard --iters 1500 [--objectives compositional nce]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import yaml

from probgen.data.toy2d import make_density
from probgen.energy import OBJECTIVES, EnergyBasedModel

DENSITIES = ("checkerboard", "eight_gaussians", "two_moons", "rings")
CONFIGS = Path(__file__).resolve().parents[1] / "models" / "energy"


OVERRIDE: dict = {}


def build(density: str, objective: str | None) -> tuple[EnergyBasedModel, int]:
    cfg = yaml.safe_load((CONFIGS / f"{density}.yaml").read_text())
    init = {**cfg["model"]["init_args"], **OVERRIDE}
    if objective is not None:
        init["objective"] = objective
    return EnergyBasedModel(**init), int(cfg["data"]["init_args"]["batch_size"])


@torch.no_grad()
def test_nll(model: EnergyBasedModel, x_test: torch.Tensor) -> float:
    log_z, _ = model.log_partition()
    return float(model.energy(x_test).mean() + log_z)


def run(density: str, objective: str | None, iters: int, eval_every: int, x_train, x_test) -> dict:
    torch.manual_seed(0)
    model, batch = build(density, objective)
    model.fit_noise(x_train)
    q_nll = float(-model.noise.log_prob(x_test).mean())
    opt = model.configure_optimizers()
    gen = torch.Generator().manual_seed(1)
    curve, cpu = [], 0.0
    for it in range(1, iters + 1):
        start = time.process_time()
        out = model.objective_step(x_train[torch.randint(len(x_train), (batch,), generator=gen)])
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        cpu += time.process_time() - start
        if it % eval_every == 0 or it == iters:
            curve.append((it, test_nll(model, x_test)))
    final = curve[-1][1]
    within = next(it for it, v in curve if abs(v - final) < 0.05)
    return {"nll": final, "within": within, "q_nll": q_nll, "cpu": cpu, "curve": curve}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--densities", nargs="+", default=list(DENSITIES), choices=DENSITIES)
    parser.add_argument("--objectives", nargs="+", default=[None], choices=[*OBJECTIVES, None], type=lambda s: None if s == "config" else s,
                        help="objectives to compare ('config': the YAML's own)")
    parser.add_argument("--iters", type=int, default=1500)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--n-train", type=int, default=20_000, help="training points (q is fitted to them too)")
    parser.add_argument("--override", type=yaml.safe_load, default={}, help="YAML/JSON dict merged into init_args")
    args = parser.parse_args()
    OVERRIDE.update(args.override)
    torch.set_num_threads(1)
    print(f"# shipped configs{' with ' + str(args.override) if args.override else ''}, {args.n_train} training points, {args.iters} iterations, test NLL (nats) with the grid log Z, 5,000 test points")
    print("| density | objective | H(p) | q alone | test NLL | NLL - H | first eval within 0.05 of final | train CPU s | curve |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.densities:
        density = make_density(name)
        x_train = density.sample(args.n_train, generator=torch.Generator().manual_seed(0)).float()
        x_test = density.sample(5_000, generator=torch.Generator().manual_seed(1)).float()
        h = density.entropy()
        for objective in args.objectives:
            r = run(name, objective, args.iters, args.eval_every, x_train, x_test)
            curve = " ".join(f"{it}:{v:.3f}" for it, v in r["curve"])
            label = objective or "config (" + build(name, None)[0].hparams.objective + ")"
            print(f"| {name} | {label} | {h:.3f} | {r['q_nll']:.3f} | {r['nll']:.3f} | {r['nll'] - h:+.3f} | {r['within']} | {r['cpu']:.0f} | {curve} |")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
