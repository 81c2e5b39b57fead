"""fBM bridge (Daems et al. 2024, Sec. 5.1): posterior std of the learnt bridge vs the analytic one.

For each Hurst index, trains the control of a type I fractional SDE (theta = 0, sigma = 1,
X(0) = 0, X(2) = 0 observed with std 0.1, 200 Euler steps) for ``--iters`` Adam steps on 32
paths per step, then draws 256 posterior paths and compares their std on the 201-point grid
with the analytic fBM-bridge std. Also prints the floor that the Markov approximation and the
Euler scheme alone leave (the exact std of the discretised linear prior's bridge, a closed
form), for our weights (horizon 2) and for the official code's (horizon 6, the Riemann-Liouville
normaliser in the type I right-hand side).

    python benchmarks/fractional_bridge.py --hurst 0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.9 --iters 1000

``--transition guided`` draws the posterior paths from the guided proposal of the backward filter
(``FractionalSDE(transition="guided")``), which for this linear prior is the exact posterior of the
Euler chain: its error is the floor plus Monte Carlo error, with no training (``--iters 0``).
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from probgen.fractional import FractionalSDE, fbm_bridge_std
from probgen.sde.fbm import MarkovFBM

T, STEPS, OBS_STD = 2.0, 200, 0.1
OFFICIAL = {0.3: (0.092, 0.188), 0.7: (0.035, 0.063)}  # mean / max abs error, issue's anchors


def euler_bridge_std(m: MarkovFBM, scale: float = 1.0) -> torch.Tensor:
    """Exact bridge std of the Euler-discretised Markov prior (X, Y) on the 201-point grid."""
    g, w = m.gammas.double(), m.omegas.double() * scale
    k, dt = len(g), T / STEPS
    F = torch.zeros(k + 1, k + 1, dtype=torch.float64)
    F[1:, 1:] = torch.diag(-g)
    F[0, 1:] = -g * w
    M = torch.eye(k + 1, dtype=torch.float64) + dt * F
    v = torch.cat([w.sum().view(1), torch.ones(k, dtype=torch.float64)])
    P = torch.zeros(k + 1, k + 1, dtype=torch.float64)
    if m.kind == "type1":
        P[1:, 1:] = 1 / (g[:, None] + g[None, :])
    covs = [P]
    for _ in range(STEPS):  # covariance recursion of a linear Gaussian chain (closed form)
        P = M @ P @ M.T + dt * torch.outer(v, v)
        covs.append(P)
    cross, R = [], torch.eye(k + 1, dtype=torch.float64)
    for n in range(STEPS, -1, -1):
        cross.append((covs[n] @ R)[0, 0])
        R = M.T @ R
    cross = torch.stack(cross[::-1])
    var = torch.stack([p[0, 0] for p in covs])
    return (var - cross**2 / (cross[-1] + OBS_STD**2)).clamp_min(0).sqrt()


def run(hurst: float, iters: int, n_ou: int, gamma_max: float, hidden: int, lr: float, seed: int,
        paths: int, control: str = "affine", batch: int = 32, context: str = "next_obs",
        transition: str = "girsanov") -> dict:
    torch.manual_seed(seed)
    condition = context == "next_obs" or transition == "guided"
    model = FractionalSDE(dim=1, n_ou=n_ou, gamma_max=gamma_max, horizon=T, kind="type1", hurst=hurst,
                          learn_hurst=False, drift="ou", theta=0.0, control=control, control_hidden=hidden, obs_std=OBS_STD,
                          context=context, sample_condition=[T, 0.0] if condition else None,
                          dt=T / STEPS, lr=lr, sample_points=STEPS + 1, transition=transition)
    opt = model.configure_optimizers()
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(iters, 1), eta_min=lr / 10)
    values, times = torch.zeros(batch, 1, 1), torch.full((batch, 1), T)
    start = time.perf_counter()
    for _ in range(iters):
        loss = -model.elbo(values, times)["elbo"].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    per_iter = (time.perf_counter() - start) / max(iters, 1)
    ts = torch.linspace(0, T, STEPS + 1, dtype=torch.float64)
    exact = fbm_bridge_std(ts, hurst, T, OBS_STD)
    out = {"hurst": hurst, "s_per_iter": per_iter}
    with torch.no_grad():
        for n in (256, paths):
            xs = model.sample(n, generator=torch.Generator().manual_seed(1000 + seed))[..., 0].double()
            err = (xs.std(0) - exact).abs()
            out[f"mean_{n}"], out[f"max_{n}"] = float(err.mean()), float(err.max())
    m = MarkovFBM(hurst, n_ou, gamma_max, T, "type1", dtype=torch.float64)
    out["floor"] = float((euler_bridge_std(m) - exact).abs().mean())
    off = MarkovFBM(hurst, 5, 20.0, 6.0, "type1", dtype=torch.float64)
    c = math.sqrt(math.gamma(2 * hurst + 1) * math.sin(math.pi * hurst))
    out["floor_official"] = float((euler_bridge_std(off, 1 / c) - exact).abs().mean())
    prior_sd = float(off.covariance(torch.tensor([T], dtype=torch.float64))[0, 0]).__pow__(0.5) / c
    out["official_prior_sd_err"] = prior_sd / T**hurst - 1
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--hurst", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    p.add_argument("--iters", type=int, default=1000)
    p.add_argument("--n-ou", type=int, default=12)
    p.add_argument("--gamma-max", type=float, default=40.0)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--control", default="affine", choices=["mlp", "affine"])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--context", default="next_obs", choices=["none", "next_obs"])
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--paths", type=int, default=4096)
    p.add_argument("--transition", default="girsanov", choices=["girsanov", "gaussian", "guided"],
                   help="guided: the backward filter's guided proposal (exact for this linear prior; --iters 0 is enough)")
    a = p.parse_args()
    torch.set_num_threads(1)
    cpu0 = time.process_time()
    print(f"# K={a.n_ou}, gamma_max={a.gamma_max}, iters={a.iters}, {a.control} control 2x{a.hidden} tanh, context {a.context}, "
          f"transition {a.transition}, batch {a.batch_size}, Adam lr {a.lr} cosine to lr/10, seed {a.seed}, torch threads=1")
    print(f"| H | mean abs err (256) | max abs err (256) | mean / max ({a.paths} paths) | approx+Euler floor | "
          "official floor (T=6) | official prior sd err at t=2 | official anchor mean / max | s / iter |")
    print("|---|---|---|---|---|---|---|---|---|")
    for h in a.hurst:
        r = run(h, a.iters, a.n_ou, a.gamma_max, a.hidden, a.lr, a.seed, a.paths, a.control, a.batch_size, a.context,
                a.transition)
        anchor = OFFICIAL.get(round(h, 2))
        anchor_s = f"{anchor[0]:.3f} / {anchor[1]:.3f}" if anchor else "-"
        print(f"| {h:.1f} | {r['mean_256']:.4f} | {r['max_256']:.4f} | {r[f'mean_{a.paths}']:.4f} / "
              f"{r[f'max_{a.paths}']:.4f} | {r['floor']:.4f} | {r['floor_official']:.4f} | "
              f"{100 * r['official_prior_sd_err']:+.1f}% | {anchor_s} | {r['s_per_iter']:.3f} |", flush=True)
    print(f"# total CPU time {(time.process_time() - cpu0) / 60:.1f} min (1 thread)")


if __name__ == "__main__":
    main()
