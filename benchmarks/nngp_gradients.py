"""Gradient accuracy of the NNGP kernels per activation (float64, CPU), issue 14's cases.

1. ``k11``: $\\partial_{k_{11}} \\mathbb E[\\tanh u \\tanh v]$ at correlation 1, variance 9,
   64 Gauss-Hermite points, against the accurate value $\\tfrac12 \\mathbb E[\\phi''(u)\\phi(u)]$
   (Price's theorem, adaptive quadrature) and against a central finite difference of
   the computed value (step $10^{-5}$, toward larger ``k11`` so that the 2x2 covariance stays PSD).
2. ``jacobian``: for every activation, the largest gap between the autograd Jacobian of a
   depth-2 kernel (4 points in 3-d, $\\sigma_w^2 = 2.5$, $\\sigma_b^2 = 0.1$) with respect to the
   inputs and the raw variances, and central finite differences (step $10^{-6}$), at 24 and 64
   Gauss-Hermite points; and the asymmetry $|J_{ij} - J_{ji}|$ of the Hessian-free check
   ``d K.sum() / d x``.
3. ``weight_var``: $\\partial_{\\sigma_w^2} \\sum_{ij} K_{ij}$ for 20 points in 3-d (scale 2),
   $\\sigma_w^2 = 3$, $\\sigma_b^2 = 0.1$, by autograd and by a central finite difference
   (step $10^{-6}$), depth 1 and 2.

Usage::

    python benchmarks/nngp_gradients.py [--part k11,jacobian,weight_var]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from scipy import integrate

from probgen.nngp import NNGPKernel
from probgen.nngp.kernels import ACTIVATIONS, quadrature_expectation, quadrature_points

D = torch.float64


def part_k11() -> None:
    phi = torch.tanh
    k = torch.tensor(9.0, dtype=D)
    k11 = k.clone().requires_grad_(True)
    val = quadrature_expectation(phi, k11.view(1, 1), k.view(1, 1), k.view(1, 1), num_points=64)
    (g,) = torch.autograd.grad(val.sum(), k11)
    # accurate 0.5 E[phi''(u) phi(u)], u ~ N(0, 9), by adaptive quadrature
    def integrand(u):
        t = np.tanh(u)
        return -2 * t * (1 - t * t) * t * np.exp(-u * u / 18.0) / math.sqrt(18.0 * math.pi)

    exact = 0.5 * integrate.quad(integrand, -60, 60, points=[0.0], limit=400)[0]
    h = 1e-5

    def f(a):
        kk = torch.tensor(a, dtype=D).view(1, 1)
        return float(quadrature_expectation(phi, kk, k.view(1, 1), k.view(1, 1), num_points=64))

    fd = (f(9.0 + 2 * h) - f(9.0)) / (2 * h)  # one-sided: k11 < k12 is not a covariance
    print(f"k11 gradient at rho=1, var 9, 64 points: autograd {g.item():+.5f}, "
          f"one-sided FD of the computed value {fd:+.5f}, accurate 0.5 E[phi'' phi] {exact:+.5f}")
    kernel_points = quadrature_points(9.0)
    val = quadrature_expectation(phi, k11.view(1, 1), k.view(1, 1), k.view(1, 1), num_points=kernel_points)
    (g,) = torch.autograd.grad(val.sum(), k11)
    print(f"  with the variance rule ({kernel_points} points, what NNGPKernel uses at variance 9): {g.item():+.5f}")


def _kernel_fn(depth, act, points):
    kernel = NNGPKernel(depth, act, weight_var=2.5, bias_var=0.1, num_quadrature_points=points).double()

    def fn(raw_w, raw_b, x):
        params = {"raw_weight_var": raw_w, "raw_bias_var": raw_b}
        return torch.func.functional_call(kernel, params, (x,)).to_dense()

    return kernel, fn


def _numerical_jacobian(fn, inputs, eps=1e-6):
    cols = []
    for i, inp in enumerate(inputs):
        flat = inp.detach().reshape(-1)
        for j in range(flat.numel()):
            plus = [t.detach().clone() for t in inputs]
            minus = [t.detach().clone() for t in inputs]
            plus[i].view(-1)[j] += eps
            minus[i].view(-1)[j] -= eps
            cols.append(((fn(*plus) - fn(*minus)) / (2 * eps)).reshape(-1))
    return torch.stack(cols, 1)


def part_jacobian() -> None:
    gen = torch.Generator().manual_seed(4)
    x = 1.5 * torch.randn(4, 3, generator=gen, dtype=D)
    print(f"{'activation':>10} {'points':>6} {'max |J_ad - J_fd|':>18} {'max |J_fd|':>11} {'gradcheck':>9}")
    for act in ACTIVATIONS:
        for points in (24, 64):
            kernel, fn = _kernel_fn(2, act, points)
            inputs = (kernel.raw_weight_var.detach().clone(), kernel.raw_bias_var.detach().clone(), x.clone())
            jac_ad = torch.autograd.functional.jacobian(fn, inputs)
            jac_ad = torch.cat([j.reshape(16, -1) for j in jac_ad], 1)
            jac_fd = _numerical_jacobian(fn, inputs)
            ok = torch.autograd.gradcheck(fn, tuple(t.requires_grad_(True) for t in inputs), atol=1e-6,
                                          raise_exception=False)
            err = (jac_ad - jac_fd).abs().max().item()
            print(f"{act:>10} {points:>6} {err:18.2e} {jac_fd.abs().max().item():11.3g} {str(ok):>9}")


def part_weight_var() -> None:
    gen = torch.Generator().manual_seed(0)
    x = 2.0 * torch.randn(20, 3, generator=gen, dtype=D)
    print(f"{'activation':>10} {'depth':>5} {'autograd':>10} {'finite diff':>12}")
    for act in ACTIVATIONS:
        for depth in (1, 2):
            wv = torch.tensor(3.0, dtype=D, requires_grad=True)
            bv = torch.tensor([0.1] * (depth + 1), dtype=D)
            kernel = NNGPKernel(depth, act, weight_var=3.0, bias_var=0.1).double()

            def total(w):
                from probgen.nngp.kernels import nngp_covariance
                return nngp_covariance(x, x, w.expand(depth + 1), bv, activation=act,
                                       num_points=kernel.num_quadrature_points).sum()

            (g,) = torch.autograd.grad(total(wv), wv)
            h = 1e-6
            with torch.no_grad():
                fd = (total(wv + h) - total(wv - h)) / (2 * h)
            print(f"{act:>10} {depth:>5} {g.item():10.4f} {fd.item():12.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", default="k11,jacobian,weight_var")
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.process_time()
    for part in args.part.split(","):
        print(f"== {part}")
        {"k11": part_k11, "jacobian": part_jacobian, "weight_var": part_weight_var}[part]()
    print(f"CPU time {time.process_time() - t0:.1f} s")


if __name__ == "__main__":
    main()
