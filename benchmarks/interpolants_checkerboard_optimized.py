"""Checkerboard NLL of the optimised interpolant against the default, at one CPU budget.

Two arms, run one after the other on one thread, each with the same total budget of process
CPU time ``--cpu-minutes``:

* ``default``: ``models/interpolants/checkerboard.yaml`` as it is (one-sided linear path,
  velocity objective), trained for the whole budget;
* ``learnt``: first ``--interp-minutes`` of the budget learn the interpolant between
  $N(0, I)$ and the checkerboard with the max-min objective
  (:func:`~probgen.interpolants.optimize.optimize_interpolant`, a ``LearnedPath`` and a
  ``LearnedGamma`` started at the linear path with $\\gamma = $ ``--gamma-init``
  $\\sqrt{t(1-t)}$, and a network drift :class:`~probgen.interpolants.TimeMLP` whose divergence
  is exact by autograd); then the rest of the budget trains the config's network and optimiser on
  the frozen learnt interpolant (two-sided, velocity objective with antithetic noise).

Both report the held-out NLL (nats; floor ln 32 = 3.466) by the config's RK4 probability-flow
ODE (50 steps, exact divergence) on the first ``--n-test`` test points, with the same
calibrated cosine schedule length rule as ``benchmarks/interpolants_checkerboard.py``.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/interpolants_checkerboard_optimized.py --cpu-minutes 3 --interp-minutes 0.75
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from interpolants_checkerboard import CPUBudget, calibrate  # noqa: E402


def learn_interpolant(args):
    """Max-min optimisation of (alpha, beta, gamma) between N(0, I) and the checkerboard."""
    from probgen.data.toy2d import Checkerboard
    from probgen.interpolants import Interpolant, TimeMLP
    from probgen.interpolants.optimize import LearnedGamma, LearnedPath, maxmin_objective, optimize_interpolant

    torch.manual_seed(args.seed)
    dens = Checkerboard()
    path, gamma = LearnedPath(args.path_degree), LearnedGamma(args.gamma_degree, init_scale=args.gamma_init)
    interpolant = Interpolant(path=path, gamma=gamma)
    drift = TimeMLP(2, 2, [128, 128], "silu", 8, 6, 8.0)
    base = lambda n: torch.randn(n, 2)  # noqa: E731
    target = lambda n: dens.sample(n).float()  # noqa: E731
    budget = 60 * args.interp_minutes
    if budget == 0:  # ablation: the starting interpolant, unoptimised
        print(f"interpolant: not optimised (--interp-minutes 0): linear path, gamma^2/(t(1-t)) = {args.gamma_init ** 2:.4f}")
        path.requires_grad_(False)
        gamma.requires_grad_(False)
        return interpolant, 0.0
    c0 = time.process_time()
    # calibrate the outer-step cost on a throw-away copy, then one schedule of that length
    import copy

    probe_i = Interpolant(path=copy.deepcopy(path), gamma=copy.deepcopy(gamma))
    t0 = time.process_time()
    optimize_interpolant(probe_i, copy.deepcopy(drift), base, target, args.eps, steps=5, batch_size=args.interp_batch,
                         inner_steps=args.inner_steps)
    per = (time.process_time() - t0) / 5
    steps = max(1, int((budget - (time.process_time() - c0)) / per))
    hist = optimize_interpolant(interpolant, drift, base, target, args.eps, steps=steps, batch_size=args.interp_batch,
                                inner_steps=args.inner_steps, lr_drift=args.lr_drift, lr_interpolant=args.lr_interpolant)
    cpu = time.process_time() - c0
    # the action of the learnt and of the starting interpolant under the learnt drift's refit
    with torch.no_grad():
        tt = torch.tensor([0.25, 0.5, 0.75])
        g2 = (gamma.gamma(tt) ** 2 / (tt * (1 - tt))).tolist()
        a, b = path.alpha(tt).tolist(), path.beta(tt).tolist()
    g = torch.Generator().manual_seed(5)
    x0, x1 = torch.randn(8192, 2, generator=g), dens.sample(8192, g).float()
    t = 1e-3 + (1 - 2e-3) * torch.rand(8192, generator=g)
    z = torch.randn(8192, 2, generator=g)
    final = float(maxmin_objective(interpolant, drift, x0, x1, args.eps, t=t, z=z).detach())
    print(f"interpolant: {steps} outer steps x {args.inner_steps} drift steps, batch {args.interp_batch}, eps={args.eps}, "
          f"{cpu:.0f} CPU s; objective (-1/2 action) first 20 mean {sum(hist[:20]) / min(20, len(hist)):.4f}, "
          f"last 20 mean {sum(hist[-20:]) / min(20, len(hist)):.4f}, final on 8192 fixed draws {final:.4f}")
    print(f"learnt alpha(1/4, 1/2, 3/4) = {', '.join(f'{v:.3f}' for v in a)} (linear 0.750, 0.500, 0.250); "
          f"beta = {', '.join(f'{v:.3f}' for v in b)}; gamma^2/(t(1-t)) = {', '.join(f'{v:.4f}' for v in g2)} "
          f"(start {args.gamma_init ** 2:.4f})")
    path.requires_grad_(False)
    gamma.requires_grad_(False)
    return interpolant, cpu


def train_arm(args, name: str, interpolant=None, spent: float = 0.0):
    import lightning as L

    from probgen.data.toy2d import Toy2D
    from probgen.interpolants import StochasticInterpolant
    from probgen.interpolants.objectives import valid_time_interval

    cfg = yaml.safe_load((ROOT / args.config).read_text())
    init = dict(cfg["model"]["init_args"])
    if interpolant is not None:
        init.update(path="linear", gamma="brownian", antithetic=True)
    L.seed_everything(cfg.get("seed_everything", 0))
    model = StochasticInterpolant(**init)
    if interpolant is not None:
        model.interpolant = interpolant
        model.t_min, model.t_max = valid_time_interval(interpolant, model.objective)
    data = Toy2D(**cfg["data"]["init_args"])
    budget_s = 60 * args.cpu_minutes - spent
    per_step = calibrate(model, data)
    trainer_cfg = dict(cfg.get("trainer", {}))
    trainer_cfg["max_steps"] = min(trainer_cfg["max_steps"], int(budget_s / (1.15 * per_step)))
    for k in ("val_check_interval", "check_val_every_n_epoch"):
        trainer_cfg.pop(k, None)
    budget = CPUBudget(budget_s)
    out = ROOT / "benchmarks" / "results" / "interpolants"
    out.mkdir(parents=True, exist_ok=True)
    trainer_cfg.update(enable_progress_bar=False, default_root_dir=str(out), limit_val_batches=0, num_sanity_val_steps=0,
                       callbacks=[budget.callback], enable_checkpointing=False, logger=False)
    trainer = L.Trainer(**trainer_cfg)
    c0, w0 = time.process_time(), time.perf_counter()
    trainer.fit(model, datamodule=data)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    print(f"[{name}] velocity: {per_step * 1e3:.1f} CPU ms/step, {trainer.global_step} steps in {cpu / 60:.2f} CPU min "
          f"({wall / 60:.2f} wall min); t in [{model.t_min}, {model.t_max}]")
    data.setup()
    x = data.splits["test"][0][: args.n_test].double()
    model = model.double().eval()
    c0 = time.process_time()
    nll = torch.cat([model.nll(xb) for xb in x.split(2000)])
    ev = time.process_time() - c0
    se = float(nll.std()) / math.sqrt(len(nll))
    print(f"[{name}] NLL {float(nll.mean()):.4f} +- {se:.4f} nats on {len(x)} test points (RK4 {model.hparams.nll_steps} steps, "
          f"exact divergence; {ev:.0f} CPU s); total training CPU {(spent + cpu) / 60:.2f} min")
    return float(nll.mean()), se, nll


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="models/interpolants/checkerboard.yaml")
    p.add_argument("--cpu-minutes", type=float, default=3.0, help="total training budget of each arm (process CPU minutes)")
    p.add_argument("--interp-minutes", type=float, default=0.75, help="part of the learnt arm's budget spent on the interpolant")
    p.add_argument("--eps", type=float, default=0.0, help="diffusion of the max-min objective (0: the ODE's path-length action)")
    p.add_argument("--path-degree", type=int, default=2)
    p.add_argument("--gamma-degree", type=int, default=2)
    p.add_argument("--gamma-init", type=float, default=0.5)
    p.add_argument("--inner-steps", type=int, default=4)
    p.add_argument("--interp-batch", type=int, default=512)
    p.add_argument("--lr-drift", type=float, default=3e-3)
    p.add_argument("--lr-interpolant", type=float, default=1e-2)
    p.add_argument("--n-test", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arms", nargs="+", default=["learnt", "default"], choices=["learnt", "default"])
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
          f"args {vars(args)}")
    res = {}
    for arm in args.arms:
        if arm == "learnt":
            interpolant, spent = learn_interpolant(args)
            res[arm] = train_arm(args, arm, interpolant, spent)
        else:
            res[arm] = train_arm(args, arm)
    if len(res) == 2:
        d = res["learnt"][2] - res["default"][2]  # same test points: paired difference
        print(f"learnt - default: {float(d.mean()):+.4f} +- {float(d.std()) / math.sqrt(len(d)):.4f} nats (paired)")


if __name__ == "__main__":
    main()
