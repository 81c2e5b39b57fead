"""2-D densities with a trained interpolant flow as q: the tilted model p ~ q exp(-E) against q alone.

For one density, in one process (one thread, process CPU time counted for every stage):

1. train a small :class:`~probgen.interpolants.StochasticInterpolant` (``--flow-hidden``,
   ``--flow-steps`` Adam steps with cosine decay, batch 1024, Fourier features of x as in
   ``models/interpolants/checkerboard.yaml``) on fresh samples of the density, and wrap it as
   :class:`~probgen.energy.FlowNoise` (RK4, ``--ode-steps`` steps, exact divergence);
2. compute, once, $\\log q$ on the 5,000 test points and on the 400x400 midpoint grid of
   $[-5.5, 5.5]^2$ (the same grid as the shipped configs), and draw a pool of ``--pool`` samples
   of $q$ by the sampling ODE;
3. train the energy of ``models/energy/<density>.yaml`` (optionally overridden) with the
   compositional objective of the config ($\\gamma_t$ schedule, independent $u_t$ batch): the
   weights of the tilted model under $q$ are $e^{-E_{net}}$ and $\\log q$ of the data is constant in
   $\\theta$, so :func:`~probgen.energy.compositional_loss` is called on $E_{net}$ exactly as
   ``EnergyBasedModel.objective_step`` does with ``base_on_noise=True``; the noise batches are
   drawn (with replacement) from the pool instead of by a fresh ODE solve each step (the one
   difference from the module, which solves the sampling ODE per batch);
4. the test NLL $-\\frac1n\\sum_i[\\log q(x_i) - E(x_i)] + \\log \\sum_{grid} q\\,e^{-E}\\,\\Delta A$,
   and q alone's $-\\frac1n\\sum_i \\log q(x_i) + \\log\\sum_{grid} q\\,\\Delta A$ (the grid
   normalises the discretised $\\log q$, whose own mass is printed), and the ESS of
   $e^{-E_{net}}$ under $q$ on 20,000 pool samples.

    python benchmarks/energy_toy2d_flow.py --density checkerboard --flow-steps 3000 --iters 1500
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import yaml

from probgen.data.toy2d import make_density
from probgen.energy import FlowNoise, build_energy
from probgen.energy.objectives import MovingAverageLogZ, compositional_loss

ROOT = Path(__file__).resolve().parents[1]


def train_flow(density, hidden: list[int], steps: int, seed: int = 0):
    from probgen.interpolants import StochasticInterpolant

    torch.manual_seed(seed)
    cfg = yaml.safe_load((ROOT / "models" / "interpolants" / "checkerboard.yaml").read_text())["model"]["init_args"]
    cfg = {**cfg, "hidden_dims": hidden}
    model = StochasticInterpolant(**cfg)
    opt = torch.optim.AdamW(model.net.parameters(), lr=cfg["lr"])
    warm = min(200, steps // 10 + 1)  # linear warm-up, then cosine decay to 0 (the interpolant config's schedule)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, 0.5 * (1 + math.cos(math.pi * min(s / steps, 1.0))))
    )
    gen = torch.Generator().manual_seed(seed + 10)
    for _ in range(steps):
        x = density.sample(1024, generator=gen).float()
        loss, _ = model._loss(x, model.net)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--density", default="checkerboard")
    parser.add_argument("--flow-hidden", type=int, nargs="+", default=[128, 128, 128])
    parser.add_argument("--flow-steps", type=int, default=3000)
    parser.add_argument("--ode-steps", type=int, default=20)
    parser.add_argument("--pool", type=int, default=200_000)
    parser.add_argument("--iters", type=int, default=1500)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--override", type=yaml.safe_load, default={}, help="YAML dict merged into the config's init_args")
    args = parser.parse_args()
    torch.set_num_threads(1)
    density = make_density(args.density)
    x_test = density.sample(5_000, generator=torch.Generator().manual_seed(1)).float()
    h = density.entropy()
    cfg = {**yaml.safe_load((ROOT / "models" / "energy" / f"{args.density}.yaml").read_text())["model"]["init_args"], **args.override}
    batch = 512
    x_train = density.sample(20_000, generator=torch.Generator().manual_seed(0)).float()

    c0 = time.process_time()
    flow = train_flow(density, args.flow_hidden, args.flow_steps)
    q = FlowNoise.from_interpolant(flow, ema=False, steps=args.ode_steps, solver="rk4", chunk_size=20_000)
    c_flow = time.process_time() - c0

    c0 = time.process_time()
    b, k = float(cfg["grid_bound"]), int(cfg["grid_points"])
    axis = -b + 2 * b * (torch.arange(k, dtype=torch.float32) + 0.5) / k
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    log_cell = 2 * math.log(2 * b / k)
    with torch.no_grad():
        lq_test = q.log_prob(x_test)
        lq_grid = q.log_prob(grid)
        pool = torch.cat([q.sample(20_000, generator=torch.Generator().manual_seed(100 + i)) for i in range(args.pool // 20_000)])
    c_q = time.process_time() - c0
    q_mass = float(torch.logsumexp(lq_grid, 0) + log_cell)
    q_nll = float(-lq_test.mean()) + q_mass
    print(f"# {args.density}: flow q {args.flow_hidden} x {args.flow_steps} steps ({c_flow:.0f} CPU s); log q on test+grid+pool "
          f"({c_q:.0f} CPU s); grid log-mass of q {q_mass:+.4f}; q alone test NLL {q_nll:.3f} (raw {float(-lq_test.mean()):.3f}); H(p) {h:.3f}")
    sys.stdout.flush()

    torch.manual_seed(0)
    energy = build_energy(cfg["energy"])
    estimator = MovingAverageLogZ(gamma=cfg["gamma"], gamma_decay=cfg.get("gamma_decay", 0.0), gamma_offset=cfg.get("gamma_offset", 100.0))
    opt = torch.optim.Adam(energy.parameters(), lr=cfg["lr"])
    m = int(cfg["noise_batch_size"])
    gen = torch.Generator().manual_seed(1)
    zeros = torch.zeros(m)

    @torch.no_grad()
    def evaluate() -> tuple[float, float]:
        neg_e = torch.cat([-energy(grid[i : i + 65536]) for i in range(0, len(grid), 65536)])
        log_z = float(torch.logsumexp(lq_grid + neg_e, 0) + log_cell)
        nll = float((energy(x_test) - lq_test).mean()) + log_z
        lw = -energy(pool[:20_000])
        ess = float(torch.exp(2 * torch.logsumexp(lw, 0) - torch.logsumexp(2 * lw, 0)))
        return nll, ess

    curve, c_train = [], 0.0
    for it in range(1, args.iters + 1):
        c0 = time.process_time()
        xb = x_train[torch.randint(len(x_train), (batch,), generator=gen)]
        xn = pool[torch.randint(len(pool), (m,), generator=gen)]
        xu = pool[torch.randint(len(pool), (m,), generator=gen)] if cfg.get("independent_u") else None
        out = compositional_loss(energy, xb, xn, zeros, estimator, xu, zeros if xu is not None else None)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        c_train += time.process_time() - c0
        if it % args.eval_every == 0 or it == args.iters:
            curve.append((it, *evaluate()))
    final, ess = curve[-1][1], curve[-1][2]
    print(f"# energy {cfg['energy']}, lr {cfg['lr']}, {args.iters} iterations ({c_train:.0f} CPU s)")
    print("| density | q | q alone | tilted test NLL | NLL - H | ESS of e^-E under q (of 20,000) | CPU s (flow + log q + energy) | curve |")
    print("|---|---|---|---|---|---|---|---|")
    curve_s = " ".join(f"{it}:{v:.3f}" for it, v, _ in curve)
    print(f"| {args.density} | flow {args.flow_hidden} x {args.flow_steps} | {q_nll:.3f} | {final:.3f} | {final - h:+.3f} | {ess:.0f} "
          f"| {c_flow:.0f} + {c_q:.0f} + {c_train:.0f} | {curve_s} |")


if __name__ == "__main__":
    main()
