"""2-D densities: test NLL of each objective with the grid log Z, against the true entropy.

For each density (checkerboard, eight Gaussians, two moons, rings) and each objective of
``EnergyBasedModel`` the same energy (a 3x128 SiLU MLP with envelope 0.01), the same
Gaussian-mixture q (8 components fitted to the data, covariances inflated 1.2x) and the same
Adam schedule are trained for ``--iters`` iterations (CD: 10 ULA steps of size 0.005 per iteration); the test NLL uses $\\log Z$ from a 400x400
midpoint grid on $[-5.5, 5.5]^2$. The gap NLL - H(p) is KL(p || p_theta) >= 0 (up to Monte
Carlo error of the test mean). "q itself" is the NLL of the fitted mixture q: the bar that an
energy trained with q must clear.

    python benchmarks/energy_toy2d.py [--iters 1000] [--densities checkerboard rings ...]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from probgen.data.toy2d import make_density
from probgen.energy import OBJECTIVES, EnergyBasedModel

DENSITIES = ("checkerboard", "eight_gaussians", "two_moons", "rings")


def train_and_score(objective: str, x_train, x_test, iters: int) -> tuple[float, float]:
    torch.manual_seed(0)
    model = EnergyBasedModel(
        dim=2, objective=objective, noise="mixture", noise_kwargs={"num_components": 8, "scale": 1.2},
        noise_batch_size=512, gamma=0.1, lr=1e-3, langevin_steps=10, langevin_step_size=0.005, cd_alpha=0.1,
        buffer_size=10_000, dsm_sigma=0.1, grid_bound=5.5, grid_points=400,
    )
    model.fit_noise(x_train)
    opt = model.configure_optimizers()
    gen = torch.Generator().manual_seed(1)
    start = time.time()
    for _ in range(iters):
        idx = torch.randint(len(x_train), (256,), generator=gen)
        out = model.objective_step(x_train[idx])
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    with torch.no_grad():
        log_z, _ = model.log_partition()
        nll = float(model.energy(x_test).mean() + log_z)
    return nll, time.time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=1000)
    parser.add_argument("--densities", nargs="+", default=list(DENSITIES), choices=DENSITIES)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"# 2-D densities: test NLL (nats), grid log Z, {args.iters} Adam iterations, batch 256, noise batch 512")
    print("| density | H(p) | q itself | " + " | ".join(OBJECTIVES) + " |")
    print("|---|---|---|" + "---|" * len(OBJECTIVES))
    times = {o: 0.0 for o in OBJECTIVES}
    for name in args.densities:
        density = make_density(name)
        x_train = density.sample(20_000, generator=torch.Generator().manual_seed(0)).float()
        x_test = density.sample(5_000, generator=torch.Generator().manual_seed(1)).float()
        entropy = density.entropy()
        model = EnergyBasedModel(dim=2, noise="mixture", noise_kwargs={"num_components": 8, "scale": 1.2})
        model.fit_noise(x_train)
        q_nll = float(-model.noise.log_prob(x_test).mean())
        cells = []
        for objective in OBJECTIVES:
            nll, secs = train_and_score(objective, x_train, x_test, args.iters)
            times[objective] += secs
            cells.append(f"{nll:.3f}")
        print(f"| {name} | {entropy:.3f} | {q_nll:.3f} | " + " | ".join(cells) + " |")
        sys.stdout.flush()
    print(f"| train seconds (all {len(args.densities)}) | | | " + " | ".join(f"{times[o]:.0f}" for o in OBJECTIVES) + " |")


if __name__ == "__main__":
    main()
