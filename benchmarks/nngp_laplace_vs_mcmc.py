"""How much of the softmax classifier's under-confidence is the Laplace approximation's?

On a small digits problem, at one fixed readout scale $\\sigma^2$ (the type-II maximum-likelihood
scale of the Laplace evidence), compare the Laplace predictive of
:class:`~probgen.nngp.LaplaceGPClassifier` with the exact posterior predictive of the same model,
sampled by elliptical slice sampling (Murray, Adams, MacKay 2010) on the $nC$ latent values:
$f_c \\sim \\mathcal N(0, \\sigma^2 K)$ independently, $y_i \\sim \\mathrm{Cat}(\\mathrm{softmax}(f_i))$.
Test points are predicted by $f_* \\mid f \\sim \\mathcal N(K_{*}^\\top K^{-1} f, \\sigma^2(k_{**} -
k_*^\\top K^{-1} k_*))$ per class, averaged over the chain.

Usage::

    python benchmarks/nngp_laplace_vs_mcmc.py --n-train 200 --iterations 20000
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from probgen.data.digits import load_digits_tensors
from probgen.metrics import ece
from probgen.nngp import LaplaceGPClassifier, NNGPKernel
from probgen.samplers import ess, rhat

D = torch.float64


def elliptical_slice(log_lik, chol, f0, iterations, generator, thin=10):
    """Elliptical slice sampling for a zero-mean Gaussian prior with covariance ``chol chol^T`` per column."""
    f, ll = f0.clone(), log_lik(f0)
    out, trace = [], []
    for it in range(iterations):
        nu = chol @ torch.randn(f.shape, dtype=f.dtype, generator=generator)
        log_y = ll + math.log(torch.rand((), dtype=f.dtype, generator=generator).item())
        theta = 2 * math.pi * torch.rand((), dtype=f.dtype, generator=generator).item()
        lo, hi = theta - 2 * math.pi, theta
        while True:
            prop = f * math.cos(theta) + nu * math.sin(theta)
            ll_prop = log_lik(prop)
            if ll_prop > log_y:
                f, ll = prop, ll_prop
                break
            lo, hi = (theta, hi) if theta < 0 else (lo, theta)
            theta = lo + (hi - lo) * torch.rand((), dtype=f.dtype, generator=generator).item()
        trace.append(ll)
        if it % thin == 0:
            out.append(f.clone())
    return torch.stack(out), torch.tensor(trace, dtype=D)


def scores(probs, y):
    return ((probs.argmax(-1) == y).double().mean().item(),
            -probs[torch.arange(len(y)), y].clamp_min(1e-12).log().mean().item(), ece(probs.float(), y).item())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-train", type=int, default=200)
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--iterations", type=int, default=20000)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    pixels, labels = load_digits_tensors(dtype=D)
    x = pixels / 16.0
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(args.seed))
    tr, te = perm[: args.n_train], perm[args.n_train : args.n_train + args.n_test]
    kernel = NNGPKernel(2, "relu", weight_var=[2.0, 2.0, 1.0], bias_var=[0.1, 0.1, 0.0]).double()
    laplace = LaplaceGPClassifier(kernel, scale=None).fit(x[tr], labels[tr])
    s = math.exp(laplace.modes[0].log_scale)
    p_lap = laplace.predict_proba(x[te], 2000, generator=torch.Generator().manual_seed(1))
    _, mean_lap, cov_lap = laplace.predict_latent(x[te])

    with torch.no_grad():
        K = s * kernel(x[tr]).to_dense()
        K_cross = s * kernel(x[tr], x[te]).to_dense()
        k_diag = s * kernel(x[te], diag=True)
    chol = torch.linalg.cholesky(K + 1e-8 * K.diagonal().mean() * torch.eye(len(tr), dtype=D))
    A = torch.cholesky_solve(K_cross, chol)  # K^-1 K_*, (n, m)
    cond_sd = (k_diag - (K_cross * A).sum(0)).clamp_min(0).sqrt()  # (m,)
    Y = torch.nn.functional.one_hot(labels[tr], 10).to(D)

    def log_lik(f):
        return ((Y * f).sum() - torch.logsumexp(f, -1).sum()).item()

    g = torch.Generator().manual_seed(args.seed + 10)
    t0 = time.process_time()
    chains, traces = [], []
    for c in range(args.chains):
        f0 = laplace.modes[0].f if c == 0 else torch.zeros_like(laplace.modes[0].f)  # one chain from 0
        samples, trace = elliptical_slice(log_lik, chol, f0, args.iterations, g)
        chains.append(samples[len(samples) // 2 :])  # drop the first half as burn-in
        traces.append(trace[len(trace) // 2 :])
    seconds = time.process_time() - t0
    stacked = torch.stack(traces)
    r_hat, n_eff = rhat(stacked).item(), ess(stacked).item()
    f_all = torch.cat(chains)  # (S, n, C)
    eps = torch.randn(len(f_all), len(te), 10, dtype=D, generator=g)
    cond_mean = torch.einsum("nm,snc->smc", A, f_all)  # E[f_* | f] per draw
    p_mcmc = torch.softmax(cond_mean + cond_sd[None, :, None] * eps, -1).mean(0)
    mean_mcmc = cond_mean.mean(0)
    y = labels[te]
    print(f"n_train {args.n_train}, sigma^2 (type-II ML of the Laplace evidence) {s:.1f}; "
          f"ESS chains {args.chains} x {args.iterations} ({seconds:.0f} CPU s), rank R-hat of the log-likelihood {r_hat:.3f}, its ESS {n_eff:.0f}")
    print("| predictive | accuracy | NLL | ECE | mean abs latent mean | mean latent sd |")
    print("|---|---|---|---|---|---|")
    sd_lap = cov_lap[0].diagonal(dim1=-2, dim2=-1).sqrt().mean().item()
    sd_mcmc = cond_mean.var(0).add(cond_sd[:, None] ** 2).sqrt().mean().item()  # total variance
    for name, p, mu, sd in (("Laplace", p_lap, mean_lap[0], sd_lap), ("elliptical slice (exact)", p_mcmc, mean_mcmc,
                                                                       sd_mcmc)):
        acc, nll, cal = scores(p, y)
        print(f"| {name} | {acc:.3f} | {nll:.3f} | {cal:.3f} | {mu.abs().mean().item():.2f} | {sd:.2f} |")


if __name__ == "__main__":
    main()
