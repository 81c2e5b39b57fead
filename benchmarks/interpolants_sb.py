"""The optimised interpolant against the closed-form Gaussian Schrodinger bridge.

rho_0 = N(0, a^2), rho_1 = N(m, b^2) in 1-D, reference sqrt(2 eps) W. The SB coupling has
Cov(X_0, X_1) = sqrt(eps^2 + a^2 b^2) - eps, and with the linear path the SB is the interpolant
gamma = sqrt(2 sqrt(eps^2 + a^2 b^2) t(1 - t)). Each run learns gamma (``LearnedGamma``, from
0.5 sqrt(t(1-t))), optionally with a path correction (``LearnedPath``), by the max-min objective
(``optimize_interpolant`` with an ``AffineDrift``), then reports:

- ``cov (learnt gamma, exact fields)``: the coupling of the learnt interpolant itself, from its
  closed-form b_F = b + eps s (``GaussianMixtureFields``): the forward SDE is linear, so
  Cov(X_0, X_1) = a^2 dm_1/dm_0 with m the RK4 solution of the mean ODE (optimisation error only);
- ``cov (learnt drift, MC)``: pairs (X_0, X_1) from the learnt drift's SDE (Heun, 200 steps,
  ``--paths`` paths) with the standard error of the sample covariance;
- the same for the starting interpolant (closed form), to show the size of the effect;
- the learnt gamma^2 / (t(1-t)) at t = 1/4, 1/2, 3/4 against 2 sqrt(eps^2 + a^2 b^2).

One thread; CPU time per run reported.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/interpolants_sb.py
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from probgen.data.toy2d import GaussianMixture
from probgen.interpolants import GaussianMixtureFields, Interpolant, LinearPath, generate
from probgen.interpolants.optimize import AffineDrift, LearnedGamma, LearnedPath, forward_bridge, optimize_interpolant


def exact_coupling(interp: Interpolant, a: float, b: float, m: float, eps: float) -> float:
    """a^2 d E[X_1 | X_0 = x] / dx for the learnt interpolant's exact forward drift (linear in x)."""
    f = GaussianMixtureFields(
        interp, GaussianMixture([[0.0]], stds=torch.tensor([a])), GaussianMixture([[m]], stds=torch.tensor([b]))
    )
    lo, hi = interp.t_bounds
    bF = lambda t, x: f.velocity(t, x) + eps * f.score(t, x)  # noqa: E731
    with torch.no_grad():
        m1 = generate(bF, torch.tensor([[-1.0], [1.0]], dtype=torch.float64), steps=400, solver="rk4", t_span=(lo, hi))
    return a**2 * float(m1[1, 0] - m1[0, 0]) / 2.0


def run(a, b, m, eps, seed, gamma_degree, path_degree, steps, inner, paths):
    torch.manual_seed(seed)
    gam = LearnedGamma(degree=gamma_degree, init_scale=0.5)
    path = LinearPath() if path_degree is None else LearnedPath(degree=path_degree)
    interp = Interpolant(path, gam)
    drift = AffineDrift(1, width=32, diagonal=True).double()
    start_cov = exact_coupling(interp, a, b, m, eps)
    c0 = time.process_time()
    optimize_interpolant(
        interp,
        drift,
        lambda n: a * torch.randn(n, 1, dtype=torch.float64),
        lambda n: m + b * torch.randn(n, 1, dtype=torch.float64),
        eps,
        steps=steps,
        inner_steps=inner,
        batch_size=512,
        lr_drift=1e-2,
        lr_interpolant=3e-2,
    )
    cpu = time.process_time() - c0
    g = torch.Generator().manual_seed(1000 + seed)
    x0 = a * torch.randn(paths, 1, generator=g, dtype=torch.float64)
    with torch.no_grad():
        x1 = forward_bridge(drift, x0, eps, steps=200, solver="heun", generator=g)
        tt = torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)
        g2 = (gam.gamma(tt) ** 2 / (tt * (1 - tt))).tolist()
    d0, d1 = (x0 - x0.mean())[:, 0], (x1 - x1.mean())[:, 0]
    mc, se = float((d0 * d1).mean()), float((d0 * d1).std()) / math.sqrt(paths)
    return dict(start=start_cov, exact=exact_coupling(interp, a, b, m, eps), mc=mc, se=se, var1=float(d1.var()), g2=g2, cpu=cpu)


def run_isotropic(eps, seed, steps, inner, paths, d=2):
    """rho0 = N(0, I), rho1 = N((2, -1), 0.25 I): the SB cross-covariance is c I with the 1-D c."""
    torch.manual_seed(seed)
    gam = LearnedGamma(degree=0, init_scale=0.5)
    interp = Interpolant(LinearPath(), gam)
    drift = AffineDrift(d, width=32).double()  # full A(t): nothing assumes the answer is isotropic
    m = torch.tensor([2.0, -1.0], dtype=torch.float64)
    c0 = time.process_time()
    optimize_interpolant(
        interp,
        drift,
        lambda n: torch.randn(n, d, dtype=torch.float64),
        lambda n: m + 0.5 * torch.randn(n, d, dtype=torch.float64),
        eps,
        steps=steps,
        inner_steps=inner,
        batch_size=512,
        lr_drift=1e-2,
        lr_interpolant=3e-2,
    )
    cpu = time.process_time() - c0
    g = torch.Generator().manual_seed(1000 + seed)
    x0 = torch.randn(paths, d, generator=g, dtype=torch.float64)
    with torch.no_grad():
        x1 = forward_bridge(drift, x0, eps, steps=200, solver="heun", generator=g)
    d0, d1 = x0 - x0.mean(0), x1 - x1.mean(0)
    prod = d0[:, :, None] * d1[:, None, :]  # (n, d, d)
    C, se = prod.mean(0), prod.std(0) / math.sqrt(paths)
    return C, se, cpu


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--paths", type=int, default=20000)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--inner", type=int, default=4)
    p.add_argument("--only-isotropic", action="store_true", help="run only the 2-D isotropic case")
    args = p.parse_args()
    torch.set_num_threads(1)
    a, b, m = 1.0, 0.5, 2.0
    configs = [  # (eps, seed, gamma degree, path degree or None)
        (0.5, 0, 0, None),
        (0.5, 1, 0, None),
        (0.5, 2, 0, None),
        (0.5, 0, 3, None),
        (0.5, 0, 2, 2),
        (0.1, 0, 0, None),
        (1.0, 0, 0, None),
    ]
    eps = 0.5
    C, se, cpu = run_isotropic(eps, 0, args.steps, args.inner, args.paths)
    c_sb = math.sqrt(eps**2 + a**2 * b**2) - eps
    z = ((C - c_sb * torch.eye(2, dtype=torch.float64)) / se).abs().max()
    print(f"2-D isotropic, eps = {eps}: SB cross-covariance {c_sb:.4f} I; learnt (MC, {args.paths} pairs) "
          f"[[{C[0, 0]:.4f}, {C[0, 1]:.4f}], [{C[1, 0]:.4f}, {C[1, 1]:.4f}]], s.e. about {float(se.max()):.4f}; "
          f"largest |error| / s.e. = {float(z):.2f}; {cpu:.0f} CPU s")
    if args.only_isotropic:
        return
    print(f"rho0 = N(0, {a}^2), rho1 = N({m}, {b}^2); {args.steps} outer x {args.inner} inner steps, batch 512")
    print("| eps | seed | learnt | SB cov (closed form) | start cov | learnt cov, exact fields | learnt drift cov, MC +- s.e. | Var X1 (target 0.25) | gamma^2/(t(1-t)) at 1/4, 1/2, 3/4 (SB value) | CPU s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for eps, seed, gd, pd in configs:
        r = run(a, b, m, eps, seed, gd, pd, args.steps, args.inner, args.paths)
        c_sb = math.sqrt(eps**2 + a**2 * b**2) - eps
        what = f"gamma deg {gd}" + ("" if pd is None else f" + path deg {pd}")
        g2 = ", ".join(f"{v:.3f}" for v in r["g2"])
        print(
            f"| {eps} | {seed} | {what} | {c_sb:.4f} | {r['start']:.4f} | {r['exact']:.4f} | {r['mc']:.4f} +- {r['se']:.4f} | "
            f"{r['var1']:.4f} | {g2} ({2 * math.sqrt(eps**2 + a**2 * b**2):.3f}) | {r['cpu']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
