"""Shared samplers: overhead, many-chain throughput and the bias of each method.

Four tables, each measured side by side in one run:

1. ``langevin`` overhead: time per step of ULA / MALA on an MLP energy against the bare
   energy + gradient evaluations they make (the floor), batch 256 in 2-D.
2. Many chains of SGLD on a Bayesian MLP: one ``torch.func.vmap`` of the functional step over
   all chains against a Python loop of one ``SGLD`` optimizer per chain.
3. ULA vs MALA bias on a skewed 1-D Gaussian mixture (closed-form moments) over step sizes.
4. pSGLD's omitted Gamma term: the relative error of the posterior variance on a 2-D Gaussian
   for alpha = 0.99 and 0.999 (preconditioner started at its stationary value).

    python benchmarks/samplers_throughput.py
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, stack_module_state, vmap

from probgen.samplers import SGLD, ess, langevin, psgld_step, sgld_step


def timeit(fn, repeats=3):
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def langevin_overhead(steps=200, batch=256):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, 1))
    for p in net.parameters():
        p.requires_grad_(False)
    energy = lambda x: net(x).squeeze(-1)
    x0 = torch.randn(batch, 2)

    def floor():
        x = x0
        for _ in range(steps):
            x = x.detach().requires_grad_(True)
            e = energy(x)
            (g,) = torch.autograd.grad(e.sum(), x)
            x = x - 1e-3 * g

    t_floor = timeit(floor)
    t_ula = timeit(lambda: langevin(energy, x0, steps, 1e-3, method="ula"))
    t_mala = timeit(lambda: langevin(energy, x0, steps, 1e-3, method="mala"))
    print(f"## langevin overhead ({steps} steps, batch {batch}, 2-64-64-1 SiLU MLP energy)")
    print("| method | ms / step | ratio to bare energy + grad |")
    print("|---|---|---|")
    print(f"| bare energy + grad | {1e3 * t_floor / steps:.3f} | 1.00 |")
    print(f"| ULA | {1e3 * t_ula / steps:.3f} | {t_ula / t_floor:.2f} |")
    print(f"| MALA | {1e3 * t_mala / steps:.3f} | {t_mala / t_floor:.2f} |")
    print()


def many_chains(chains=64, steps=50, n=200, batch=32):
    torch.manual_seed(0)
    x = torch.randn(n, 1)
    y = torch.sin(3 * x) + 0.1 * torch.randn(n, 1)
    models = [nn.Sequential(nn.Linear(1, 50), nn.Tanh(), nn.Linear(50, 1)) for _ in range(chains)]

    def loss_fn(out, yb, params):
        prior = sum((p**2).sum() for p in params) / 2
        return ((out - yb) ** 2).mean() / (2 * 0.01) + prior / n

    def loop():
        opts = [SGLD(m.parameters(), lr=1e-5, num_data=n) for m in models]
        for _ in range(steps):
            idx = torch.randint(n, (batch,))
            for m, opt in zip(models, opts):
                opt.zero_grad()
                loss_fn(m(x[idx]), y[idx], list(m.parameters())).backward()
                opt.step()

    base = models[0]
    params, _ = stack_module_state(models)
    params = {k: v.detach() for k, v in params.items()}

    def chain_loss(p, xb, yb):
        return loss_fn(functional_call(base, p, (xb,)), yb, list(p.values()))

    def chain_step(p, xb, yb):
        return sgld_step(p, grad(chain_loss)(p, xb, yb), 1e-5, n)

    vstep = vmap(chain_step, in_dims=(0, None, None), randomness="different")

    def vectorised():
        p = params
        for _ in range(steps):
            idx = torch.randint(n, (batch,))
            p = vstep(p, x[idx], y[idx])

    t_loop = timeit(loop, 2)
    t_vmap = timeit(vectorised, 2)
    print(f"## SGLD, {chains} chains of a 1-50-1 tanh MLP, batch {batch}, {steps} steps")
    print("| implementation | ms / step (all chains) | speed-up |")
    print("|---|---|---|")
    print(f"| loop of {chains} `SGLD` optimizers | {1e3 * t_loop / steps:.2f} | 1.0x |")
    print(f"| `vmap(sgld_step)` | {1e3 * t_vmap / steps:.2f} | {t_loop / t_vmap:.1f}x |")
    print()


W, M, S = np.array([0.3, 0.7]), np.array([-1.0, 1.2]), np.array([0.6, 0.5])


def mixture_energy(x):
    x = x[:, 0]
    comps = torch.stack(
        [math.log(w) - 0.5 * ((x - m) / s) ** 2 - math.log(s) for w, m, s in zip(W, M, S)], -1
    )
    return -torch.logsumexp(comps, -1)


def ula_vs_mala(n=20000, steps=200):
    rng = np.random.default_rng(0)
    k = rng.choice(2, size=n, p=W)
    x0 = torch.from_numpy(rng.normal(M[k], S[k])).unsqueeze(-1)  # exact draws
    m1 = float((W * M).sum())
    var = float((W * (M**2 + S**2)).sum()) - m1**2
    se_var = var * math.sqrt(2 / n)
    print(f"## ULA vs MALA on 0.3 N(-1, 0.6^2) + 0.7 N(1.2, 0.5^2), {n} chains x {steps} steps")
    se_mean = math.sqrt(var / n)
    print(
        f"exact mean {m1:.4f}, variance {var:.4f}; s.e. of the estimates: mean ~{se_mean:.4f}, "
        f"variance ~{se_var:.4f} (same start and seed in every row)"
    )
    print()
    print("| step h | ULA mean err | ULA var err | MALA mean err | MALA var err | MALA accept |")
    print("|---|---|---|---|---|---|")
    for h in (0.02, 0.05, 0.1, 0.2, 0.4):
        g = torch.Generator().manual_seed(1)
        ula = langevin(mixture_energy, x0, steps, h, generator=g).x[:, 0]
        g = torch.Generator().manual_seed(1)
        mala = langevin(mixture_energy, x0, steps, h, method="mala", generator=g)
        xm = mala.x[:, 0]
        print(
            f"| {h} | {ula.mean() - m1:+.4f} | {ula.var() - var:+.4f} | {xm.mean() - m1:+.4f} "
            f"| {xm.var() - var:+.4f} | {mala.mean_acceptance:.2f} |"
        )
    print()


def psgld_gamma(chains=2048, steps=3000, burn=1000):
    mu = torch.tensor([1.0, -2.0], dtype=torch.float64)
    a = torch.tensor([[2.0, 0.8], [0.8, 1.0]], dtype=torch.float64)
    n, h = 20, 0.002
    cov = torch.linalg.inv(a)
    target = torch.stack([cov[0, 0], cov[1, 1]])
    print(f"## pSGLD without Gamma on N(mu, A^-1) (2-D), h = {h}, {chains} chains x {steps} steps")
    # discretisation bias alone: preconditioned ULA with G fixed at its stationary value
    from scipy.linalg import solve_discrete_lyapunov

    g_star = 1.0 / (1e-5 + torch.sqrt(torch.diag(a) / n**2))
    G = torch.diag(g_star).numpy()
    F = np.eye(2) - h * G @ a.numpy()
    fixed = np.diag(solve_discrete_lyapunov(F, 2 * h * G)) / target.numpy() - 1
    print(f"discretisation bias with G frozen at G* (exact): {fixed[0]:+.3f}, {fixed[1]:+.3f}")
    print()
    print("| alpha | rel. err var[0] | rel. err var[1] | s.e. (rel.) |")
    print("|---|---|---|---|")
    for alpha in (0.99, 0.999):
        torch.manual_seed(0)
        theta = mu + torch.randn(chains, 2, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
        p = {"t": theta}
        s = {"t": (torch.diag(a) / n**2).expand(chains, 2).clone()}
        out = []
        for k in range(steps):
            g = {"t": (p["t"] - mu) @ a / n}
            p, s = psgld_step(p, g, s, h, n, 1.0, alpha, 1e-5)
            if k >= burn:
                out.append(p["t"])
        d = torch.stack(out, 1)
        sq = (d - d.reshape(-1, 2).mean(0)) ** 2
        est = sq.reshape(-1, 2).mean(0)
        se = sq.reshape(-1, 2).std(0) / ess(sq, method="basic").sqrt()
        rel = est / target - 1
        print(f"| {alpha} | {rel[0]:+.3f} | {rel[1]:+.3f} | {float((se / target).max()):.3f} |")
    print()


def main() -> None:
    torch.set_num_threads(1)
    print("# probgen.samplers benchmarks (1 thread)")
    print()
    langevin_overhead()
    many_chains()
    ula_vs_mala()
    psgld_gamma()


if __name__ == "__main__":
    main()
