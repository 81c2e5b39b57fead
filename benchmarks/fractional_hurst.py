"""Hurst-index recovery: learn H (through a sigmoid) and theta of fOU paths by variational inference.

For each true H, simulates fOU paths exactly (probgen.data.fou: exact fBM + pathwise solution;
theta = 1, sigma = 1 known, 20 observations on (0, 2]), then maximises the ELBO of a type I
fractional SDE (K OU processes, drift -theta x) jointly over H, theta and the control network,
which sees the next observation. Prints the learnt H and theta per seed and their mean +- std.

    python benchmarks/fractional_hurst.py --hurst 0.2 0.3 0.4 0.5 0.6 0.7 0.8 --seeds 0 --iters 400

``--elbo-at H1 H2 ...`` instead trains the control with the model's H fixed at each given value
(theta fixed at the truth, 1) on the data of the first ``--hurst``, and prints the final ELBO
on all paths next to the exact log-likelihood at that H: the variational gap per H.

``--transition guided`` uses the guided proposals of a backward filter (``FractionalSDE(transition="guided")``),
whose ELBO is the exact log-likelihood of the K-term model; ``--mle`` prints that model's
closed-form maximum-likelihood H beside the learnt one. ``--transition gaussian`` uses the learnt-variance family with the exact update on observation
steps (``FractionalSDE(transition="gaussian")``); ``--context all_obs`` adds the backward-GRU
summary of the remaining observations; ``--fix-theta`` keeps theta at the truth (1).

``--gap-table`` prints, in closed form (``probgen.fractional.oracle``, no training), the exact
log-likelihood per model H and the best ELBO of each family on the solver's step grid, with
the decomposition of the Girsanov family's deficit.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from probgen.data.fou import simulate_fou
from probgen.fractional import FractionalSDE
from probgen.fractional.oracle import backward_messages, fou_chain, girsanov_gap, log_likelihood, prior_start_elbo
from probgen.sde.fbm import MarkovFBM


def exact_log_likelihood(values: torch.Tensor, times: torch.Tensor, hurst: float, theta: float, n_ou: int,
                         gamma_max: float, dt: float, obs_std: float) -> float:
    """Mean log-likelihood of paths under the model's prior, the Euler-discretised linear-Gaussian
    system (X, Y_1..Y_K) with the Markov weights at ``hurst`` (a closed form: Gaussian with the
    covariance of the linear recursion). This is what the ELBO reaches with the optimal control."""
    m = MarkovFBM(hurst, n_ou, gamma_max, 2.0, "type1", dtype=torch.float64)
    g, w = m.gammas, m.omegas
    k = len(g)
    F = torch.zeros(k + 1, k + 1, dtype=torch.float64)
    F[1:, 1:] = torch.diag(-g)
    F[0, 1:] = -g * w
    F[0, 0] = -theta
    M = torch.eye(k + 1, dtype=torch.float64) + dt * F
    v = torch.cat([w.sum().view(1), torch.ones(k, dtype=torch.float64)])
    P = torch.zeros(k + 1, k + 1, dtype=torch.float64)
    P[1:, 1:] = 1 / (g[:, None] + g[None, :])
    idx = [round(float(t) / dt) for t in times]
    covs = [P]
    for _ in range(idx[-1]):  # covariance recursion of the linear chain
        P = M @ P @ M.T + dt * torch.outer(v, v)
        covs.append(P)
    n = len(idx)
    C = torch.zeros(n, n, dtype=torch.float64)
    for a in range(n):
        R = torch.eye(k + 1, dtype=torch.float64)
        for b in range(a, n):
            if b > a:
                R = R @ torch.linalg.matrix_power(M.T, idx[b] - idx[b - 1])
            C[a, b] = C[b, a] = (covs[idx[a]] @ R)[0, 0]
    C = C + obs_std**2 * torch.eye(n, dtype=torch.float64)
    dist = torch.distributions.MultivariateNormal(torch.zeros(n, dtype=torch.float64), C)
    return float(dist.log_prob(values.double()).mean())


def oracle(values: torch.Tensor, times: torch.Tensor, hurst: float, theta: float, n_ou: int, gamma_max: float,
           dt: float, obs_std: float) -> dict[str, float]:
    """Closed forms on sdeint's step grid, mean per path: exact log-lik, the learnt-variance family's best ELBO
    with Y(0) from its prior, the Girsanov family's best ELBO and its deficit (data-independent)."""
    m = MarkovFBM(hurst, n_ou, gamma_max, 2.0, "type1", dtype=torch.float64)
    chain = fou_chain(m, theta, 1.0, times, dt, obs_std)
    v = values.double()
    msg = backward_messages(chain, v)
    ll = float(log_likelihood(chain, v, msg).mean())
    start = float(prior_start_elbo(chain, msg).mean())
    gap = float(girsanov_gap(msg))
    return {"ll": ll, "gaussian": start, "girsanov": start - gap, "gap": gap, "y0": ll - start}


def mle_hurst(values: torch.Tensor, times: torch.Tensor, n_ou: int, gamma_max: float, dt: float,
              tol: float = 1e-3) -> float:
    """The maximum-likelihood H of the K-term model (theta = 1) on these paths: golden-section search of the
    closed-form log-likelihood over H in [0.05, 0.95] (unimodal in every case we printed with --profile)."""
    def f(h: float) -> float:
        return oracle(values, times, h, 1.0, n_ou, gamma_max, dt, 0.05)["ll"]

    lo, hi, r = 0.05, 0.95, (math.sqrt(5) - 1) / 2
    a, b = hi - r * (hi - lo), lo + r * (hi - lo)
    fa, fb = f(a), f(b)
    while hi - lo > tol:
        if fa > fb:
            hi, b, fb = b, a, fa
            a = hi - r * (hi - lo)
            fa = f(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + r * (hi - lo)
            fb = f(b)
    return 0.5 * (lo + hi)


def run(hurst: float, seed: int, iters: int, n_ou: int, gamma_max: float, dt: float, n_obs: int,
        num_paths: int, batch: int, warmup: int, hidden: int, control: str, transition: str = "girsanov",
        context: str = "next_obs", fix_theta: bool = False, lr: float = 3e-3,
        hurst_lr: float = 2e-2, obs_noise: float = 0.0, posterior_y0: bool = False, depth: int = 2,
        with_mle: bool = False) -> tuple[float, float, float, float, float]:
    gen = torch.Generator().manual_seed(seed)
    times, paths = simulate_fou(num_paths, hurst, theta=1.0, sigma=1.0, horizon=2.0, n_obs=n_obs, generator=gen)
    if obs_noise > 0:  # observations drawn with the model's own noise
        paths = paths + obs_noise * torch.randn(paths.shape, generator=gen)
    values = paths.unsqueeze(-1)
    mle = mle_hurst(values, times, n_ou, gamma_max, dt) if with_mle else float("nan")
    torch.manual_seed(seed)
    model = FractionalSDE(n_ou=n_ou, gamma_max=gamma_max, horizon=2.0, kind="type1", hurst=0.5, learn_hurst=True,
                          drift="ou", theta=1.0 if fix_theta else 0.5, learn_theta=not fix_theta, sigma=1.0,
                          context=context, obs_std=0.05, dt=dt, lr=lr, hurst_lr=hurst_lr, control=control,
                          control_hidden=hidden, control_depth=depth, transition=transition, posterior_y0=posterior_y0)
    opt = model.configure_optimizers()
    model.sde.hurst_raw.requires_grad_(False)  # warm-up: fit the control (and theta) at H = 0.5 first
    start = time.perf_counter()
    trace = []
    for it in range(iters):
        if it == warmup:
            model.sde.hurst_raw.requires_grad_(True)
        idx = torch.randint(0, num_paths, (batch,), generator=gen)
        loss = -model.elbo(values[idx], times)["elbo"].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        trace.append((model.sde.hurst.item(), model.sde.theta.item()))
    per_iter = (time.perf_counter() - start) / iters
    tail = trace[int(0.8 * iters):]  # average of the last 20% of iterates
    h = sum(t[0] for t in tail) / len(tail)
    th = sum(t[1] for t in tail) / len(tail)
    return h, th, per_iter, -loss.item(), mle


def elbo_at(true_h: float, model_h: float, seed: int, iters: int, a,
            transition: str | None = None) -> tuple[float, float, float]:
    """Train the control at a fixed H (theta = 1); return (ELBO mean over all paths, its MC std, exact log-lik)."""
    gen = torch.Generator().manual_seed(seed)
    times, paths = simulate_fou(a.num_paths, true_h, theta=1.0, sigma=1.0, horizon=2.0, n_obs=a.n_obs, generator=gen)
    if a.obs_noise > 0:
        paths = paths + a.obs_noise * torch.randn(paths.shape, generator=gen)
    values = paths.unsqueeze(-1)
    torch.manual_seed(seed)
    model = FractionalSDE(n_ou=a.n_ou, gamma_max=a.gamma_max, horizon=2.0, kind="type1", hurst=model_h,
                          learn_hurst=False, drift="ou", theta=1.0, learn_theta=False, sigma=1.0, context="next_obs",
                          obs_std=0.05, dt=a.dt, lr=a.lr, control=a.control, control_hidden=a.hidden,
                          control_depth=a.depth, transition=transition or a.transition)
    opt = model.configure_optimizers()
    for _ in range(iters):
        idx = torch.randint(0, a.num_paths, (a.batch,), generator=gen)
        loss = -model.elbo(values[idx], times)["elbo"].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        elbos = torch.stack([model.elbo(values, times)["elbo"].mean() for _ in range(4)])
    ll = oracle(values, times, model_h, 1.0, a.n_ou, a.gamma_max, a.dt, 0.05)["ll"]
    return elbos.mean().item(), elbos.std().item(), ll


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--hurst", type=float, nargs="+", default=[0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--iters", type=int, default=400)
    p.add_argument("--n-ou", type=int, default=5)
    p.add_argument("--gamma-max", type=float, default=20.0)
    p.add_argument("--dt", type=float, default=0.02)
    p.add_argument("--n-obs", type=int, default=20)
    p.add_argument("--num-paths", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--warmup", type=int, default=100, help="iterations with H frozen at 0.5")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--depth", type=int, default=2, help="hidden layers of the control (the guided family's residual)")
    p.add_argument("--mle", action="store_true",
                   help="also print the closed-form maximum-likelihood H of the K-term model on each seed's paths")
    p.add_argument("--control", default="affine", choices=["mlp", "affine"])
    p.add_argument("--elbo-at", type=float, nargs="+", default=None,
                   help="fixed model H values: print the trained ELBO and exact log-likelihood at each")
    p.add_argument("--profile", action="store_true",
                   help="print the exact log-likelihood profile over H instead of training")
    p.add_argument("--transition", default="girsanov", choices=["girsanov", "gaussian", "guided"])
    p.add_argument("--context", default="next_obs", choices=["next_obs", "all_obs", "attention"])
    p.add_argument("--fix-theta", action="store_true", help="keep theta at the truth (1)")
    p.add_argument("--obs-noise", type=float, default=0.0,
                   help="std of Gaussian noise added to the simulated observations (the model assumes 0.05)")
    p.add_argument("--posterior-y0", action="store_true", help="learn q(Y(0) | y) (FractionalSDE(posterior_y0=True))")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--hurst-lr", type=float, default=2e-2)
    p.add_argument("--argmax", action="store_true",
                   help="closed-form argmax over H (step 0.025) of the exact log-lik and of each family's best ELBO")
    p.add_argument("--family-table", action="store_true",
                   help="per --hurst (data and model H equal, theta = 1): each family's ELBO after --iters iterations "
                        "and its closed-form optimum, against the exact log-likelihood")
    p.add_argument("--families", nargs="+", default=["girsanov", "gaussian", "guided"],
                   choices=["girsanov", "gaussian", "guided"], help="the families of --family-table")
    p.add_argument("--gap-table", action="store_true",
                   help="closed-form ELBO optimum of each family per model H on the first --hurst's data")
    a = p.parse_args()
    torch.set_num_threads(1)
    cpu0 = time.process_time()
    if a.argmax:
        fine = [round(0.15 + 0.025 * i, 3) for i in range(29)]
        print(f"# argmax over model H in {fine[0]}..{fine[-1]} (step 0.025), theta = 1, K={a.n_ou}, "
              f"gamma_max={a.gamma_max}, dt={a.dt}, {a.num_paths} paths, data noise std {a.obs_noise}, seed {a.seeds[0]}")
        print("| true H | exact log-lik | best ELBO, gaussian family (Y0 from prior) | best ELBO, Girsanov family |")
        print("|---|---|---|---|")
        for h in a.hurst:
            gen = torch.Generator().manual_seed(a.seeds[0])
            times, paths = simulate_fou(a.num_paths, h, theta=1.0, sigma=1.0, horizon=2.0, n_obs=a.n_obs, generator=gen)
            if a.obs_noise > 0:
                paths = paths + a.obs_noise * torch.randn(paths.shape, generator=gen)
            os_ = [oracle(paths.unsqueeze(-1), times, g, 1.0, a.n_ou, a.gamma_max, a.dt, 0.05) for g in fine]
            best = [fine[max(range(len(fine)), key=lambda i, k=k: os_[i][k])] for k in ("ll", "gaussian", "girsanov")]
            print(f"| {h} | {best[0]} | {best[1]} | {best[2]} |", flush=True)
        return
    if a.family_table:
        print(f"# data: {a.num_paths} paths per true H (seed {a.seeds[0]}, noise std {a.obs_noise}), 20 obs; model H = true H, "
              f"theta = 1, K={a.n_ou}, gamma_max={a.gamma_max}, dt={a.dt}; each family trained {a.iters} iterations "
              f"(batch {a.batch}, lr {a.lr}, {a.control} control {a.depth}x{a.hidden}, next-obs context), then its "
              "ELBO on all paths (4 passes); optimum: the family's closed form (Y0 from its prior for girsanov / "
              "gaussian); nats per path")
        print("| H | exact log-lik | " + " | ".join(f"{f}: trained / optimum" for f in a.families) + " | CPU s |")
        print("|---|---|" + "---|" * len(a.families) + "---|")
        for h in a.hurst:
            c0 = time.process_time()
            cells, ll = [], None
            for fam in a.families:
                e, sd, ll = elbo_at(h, h, a.seeds[0], a.iters, a, transition=fam)
                gen = torch.Generator().manual_seed(a.seeds[0])
                times, paths = simulate_fou(a.num_paths, h, theta=1.0, sigma=1.0, horizon=2.0, n_obs=a.n_obs, generator=gen)
                if a.obs_noise > 0:
                    paths = paths + a.obs_noise * torch.randn(paths.shape, generator=gen)
                o = oracle(paths.unsqueeze(-1), times, h, 1.0, a.n_ou, a.gamma_max, a.dt, 0.05)
                best = {"girsanov": o["girsanov"], "gaussian": o["gaussian"], "guided": o["ll"]}[fam]
                cells.append(f"{e:.2f} ± {sd:.2f} / {best:.2f}")
            print(f"| {h} | {ll:.2f} | " + " | ".join(cells) + f" | {time.process_time() - c0:.0f} |", flush=True)
        return
    if a.gap_table:
        times, paths = simulate_fou(a.num_paths, a.hurst[0], theta=1.0, sigma=1.0, horizon=2.0, n_obs=a.n_obs,
                                    generator=torch.Generator().manual_seed(a.seeds[0]))
        values = paths.unsqueeze(-1)
        grid = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
        print(f"# data: true H {a.hurst[0]}, {a.num_paths} paths, {a.n_obs} obs (std 0.05 in the model), K={a.n_ou}, "
              f"gamma_max={a.gamma_max}, dt={a.dt}, theta = 1; closed forms, nats per path")
        print("| model H | sum omega | rho = v0^2 h / s^2 | exact log-lik | best ELBO, gaussian family (Y0 from prior) "
              "| best ELBO, Girsanov family | Girsanov deficit | of which 20 x 1/2 (rho - log(1 + rho)) | Y0 term "
              "| guided family at zero residual (run, float64) | its gap |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for h in grid:
            o = oracle(values, times, h, 1.0, a.n_ou, a.gamma_max, a.dt, 0.05)
            guided = FractionalSDE(n_ou=a.n_ou, gamma_max=a.gamma_max, horizon=2.0, hurst=h, theta=1.0, obs_std=0.05,
                                   dt=a.dt, context="next_obs", control="affine", transition="guided").double()
            with torch.no_grad():
                g_elbo = float(guided.elbo(values.double(), times.double())["elbo"].mean())
            v0 = float(MarkovFBM(h, a.n_ou, a.gamma_max, 2.0, "type1", dtype=torch.float64).omegas.sum())
            rho = v0**2 * (2.0 / a.n_obs / round(2.0 / a.n_obs / a.dt)) / 0.05**2
            local = a.n_obs * 0.5 * (rho - math.log1p(rho))
            print(f"| {h} | {v0:.3f} | {rho:.2f} | {o['ll']:.2f} | {o['gaussian']:.2f} | {o['girsanov']:.2f} | "
                  f"{o['gap']:.2f} | {local:.2f} | {o['y0']:.2f} | {g_elbo:.2f} | {o['ll'] - g_elbo:.1e} |", flush=True)
        return
    if a.elbo_at:
        print(f"# data: true H {a.hurst[0]}, seed {a.seeds[0]}; control trained {a.iters} iters at fixed H, theta = 1")
        print("| model H | ELBO per path (+- MC std) | exact log-lik | gap |")
        print("|---|---|---|---|")
        for h in a.elbo_at:
            e, sd, ll = elbo_at(a.hurst[0], h, a.seeds[0], a.iters, a)
            print(f"| {h} | {e:.2f} +- {sd:.2f} | {ll:.2f} | {ll - e:.2f} |", flush=True)
        return
    if a.profile:
        grid = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
        print(f"# exact mean log-likelihood per path (20 obs, obs std 0.05) of the K={a.n_ou}, gamma_max="
              f"{a.gamma_max}, dt={a.dt} Markov-Euler prior with theta = 1 (the ELBO's optimum); argmax marked *")
        print("| true H | " + " | ".join(f"H={h}" for h in grid) + " | argmax |")
        print("|---|" + "---|" * (len(grid) + 1))
        for h in a.hurst:
            times, paths = simulate_fou(a.num_paths, h, theta=1.0, sigma=1.0, horizon=2.0, n_obs=a.n_obs,
                                        generator=torch.Generator().manual_seed(a.seeds[0]))
            lls = [exact_log_likelihood(paths, times, g, 1.0, a.n_ou, a.gamma_max, a.dt, 0.05) for g in grid]
            best = grid[max(range(len(grid)), key=lambda i: lls[i])]
            print(f"| {h:.1f} | " + " | ".join(f"{v:.2f}" for v in lls) + f" | {best} |", flush=True)
        return
    print(f"# K={a.n_ou}, gamma_max={a.gamma_max}, dt={a.dt}, {a.n_obs} obs on (0, 2], {a.num_paths} paths, "
          f"batch {a.batch}, {a.iters} iters ({a.warmup} with H frozen at 0.5), {a.control} control {a.depth}x{a.hidden}, "
          f"transition {a.transition}, context {a.context}, theta {'fixed at 1' if a.fix_theta else 'learnt'}, "
          f"lr {a.lr}, hurst lr {a.hurst_lr}, data noise std {a.obs_noise}, q(Y0) {a.posterior_y0}, seeds {a.seeds}; H and theta averaged "
          "over the last 20% of iterates")
    print("| true H | learnt H (per seed) | mean +- std | abs err | learnt theta (true 1) | s / iter | "
          "closed-form MLE of H (per seed) | MLE mean +- std |")
    print("|---|---|---|---|---|---|---|---|")
    for h in a.hurst:
        rs = [run(h, s, a.iters, a.n_ou, a.gamma_max, a.dt, a.n_obs, a.num_paths, a.batch, a.warmup, a.hidden,
                  a.control, a.transition, a.context, a.fix_theta, a.lr, a.hurst_lr, a.obs_noise, a.posterior_y0,
                  a.depth, a.mle)
              for s in a.seeds]
        hs = [r[0] for r in rs]
        mean = statistics.fmean(hs)
        std = statistics.stdev(hs) if len(hs) > 1 else float("nan")
        thetas = ", ".join(f"{r[1]:.2f}" for r in rs)
        mles = [r[4] for r in rs]
        mle_sd = statistics.stdev(mles) if len(mles) > 1 else float("nan")
        print(f"| {h:.1f} | {', '.join(f'{x:.3f}' for x in hs)} | {mean:.3f} +- {std:.3f} | {abs(mean - h):.3f} | "
              f"{thetas} | {statistics.fmean(r[2] for r in rs):.3f} | {', '.join(f'{x:.3f}' for x in mles)} | "
              f"{statistics.fmean(mles):.3f} +- {mle_sd:.3f} |", flush=True)
    print(f"# total CPU time {(time.process_time() - cpu0) / 60:.1f} min (1 thread)")


if __name__ == "__main__":
    main()
