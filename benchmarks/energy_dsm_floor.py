"""The checkerboard NLL floor of denoising score matching: the test NLL of the smoothed target.

DSM with noise level sigma learns the score of $p_\\sigma = p * N(0, \\sigma^2 I)$, not of $p$, so
its best possible test NLL is $\\mathbb E_p[-\\log p_\\sigma(x)] = H(p) + KL(p \\| p_\\sigma)$. For the
checkerboard (uniform on 32 unit squares) $p_\\sigma$ is closed form: per square a product of
$\\Phi((b - x)/\\sigma) - \\Phi((a - x)/\\sigma)$. Monte Carlo over 200,000 exact samples.

    python benchmarks/energy_dsm_floor.py [--sigmas 0.05 0.1 0.2]
"""

from __future__ import annotations

import argparse
import math

import torch

from probgen.data.toy2d import make_density


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sigmas", nargs="+", type=float, default=[0.05, 0.1, 0.2])
    parser.add_argument("--n", type=int, default=200_000)
    args = parser.parse_args()
    x = make_density("checkerboard").sample(args.n, generator=torch.Generator().manual_seed(1)).double()
    ij = torch.tensor([(i, j) for i in range(8) for j in range(8) if (i + j) % 2 == 0], dtype=torch.float64)
    lo, hi = ij - 4, ij - 3  # (32, 2) corners of the dark squares
    normal = torch.distributions.Normal(0.0, 1.0)
    print(f"| sigma | E_p[-log p_sigma] | s.e. | H(p) = ln 32 |")
    print("|---|---|---|---|")
    for s in args.sigmas:
        mass = (normal.cdf((hi[None] - x[:, None]) / s) - normal.cdf((lo[None] - x[:, None]) / s)).prod(-1).sum(-1) / 32
        nll = -mass.log()
        print(f"| {s} | {float(nll.mean()):.4f} | {float(nll.std() / math.sqrt(args.n)):.4f} | {math.log(32):.4f} |")


if __name__ == "__main__":
    main()
