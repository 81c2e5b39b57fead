"""probgen.sde.sdeint vs torchsde.sdeint: same SDE, method, dt and device, timed side by side.

Cases (issue 2): a neural diagonal SDE (d=4, drift and diffusion each an MLP with one hidden
layer of 64 units, 200 Euler steps) at batch 32 and 1024, forward only (under
``torch.no_grad``) and forward + backward (``loss = ys[-1].square().mean()``); a linear SDE
(geometric Brownian motion, d=4) at batch 65536, forward only. For each case it also prints
the overhead floor: probgen's solve time divided by the time of the bare drift and diffusion
evaluations the solve makes (200 calls of each on a fixed state, same grad mode), and divided
by that plus the time of drawing the Brownian increments alone (one ``randn``), which any
solver must also do and which dominates the cheap linear SDE.

Runs are interleaved (probgen, torchsde, bare, noise, probgen, ...) so that CPU contention
from other jobs hits all columns alike; each column reports the minimum (``--stat median``
for the median) of ``--repeats`` runs, in process CPU time on CPU (wall time on CUDA).

    python benchmarks/sde_vs_torchsde.py [--repeats 15] [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torchsde
from torch import nn

import probgen.sde as psde


class NeuralSDE(nn.Module):
    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, d: int = 4, hidden: int = 64) -> None:
        super().__init__()
        self.drift = nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, d))
        self.diffusion = nn.Sequential(
            nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, d), nn.Sigmoid()
        )

    def f(self, t, y):
        return self.drift(y)

    def g(self, t, y):
        return self.diffusion(y)


class LinearSDE(nn.Module):
    """Geometric Brownian motion dX = mu X dt + sigma X dW, diagonal noise."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, d: int = 4) -> None:
        super().__init__()
        self.mu = nn.Parameter(torch.linspace(-0.5, 0.5, d))
        self.sigma = nn.Parameter(torch.linspace(0.1, 0.4, d))

    def f(self, t, y):
        return self.mu * y

    def g(self, t, y):
        return self.sigma * y


class FreeSDE:
    """f and g return fixed tensors: what is left is the solver's own cost per step."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, batch: int, d: int, device) -> None:
        self.F = torch.randn(batch, d, device=device)
        self.G = torch.rand(batch, d, device=device)

    def f(self, t, y):
        return self.F

    def g(self, t, y):
        return self.G


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_runner(kind: str, sde, y0, steps: int, backward: bool, device):
    ts = torch.tensor([0.0, 1.0], device=device)
    dt = 1.0 / steps
    params = list(sde.parameters())

    if kind == "probgen":

        def solve():
            return psde.sdeint(sde, y0, ts, method="euler", dt=dt)
    else:

        def solve():
            return torchsde.sdeint(sde, y0, ts, method="euler", dt=dt)

    if backward:

        def run():
            ys = solve()
            loss = ys[-1].square().mean()
            torch.autograd.grad(loss, params)
            sync(device)
    else:

        def run():
            with torch.no_grad():
                solve()
            sync(device)

    return run


def bare_runner(sde, y0, steps: int, backward: bool, device):
    """The overhead floor: ``steps`` evaluations of f and g on a fixed state, nothing else.

    With ``backward``, the same evaluations are differentiated with respect to the parameters
    and the state (a solver's backward needs both), with unit cotangents, so no extra
    graph nodes are added.
    """
    t = torch.tensor(0.0, device=device)
    params = list(sde.parameters())

    if backward:
        y = y0.detach().clone().requires_grad_(True)
        ones = torch.ones_like(y0)

        def run():
            outs = []
            for _ in range(steps):
                outs.append(sde.f(t, y))
                outs.append(sde.g(t, y))
            torch.autograd.grad(outs, params + [y], grad_outputs=[ones] * len(outs))
            sync(device)
    else:

        def run():
            with torch.no_grad():
                for _ in range(steps):
                    sde.f(t, y0)
                    sde.g(t, y0)
            sync(device)

    return run


def noise_runner(y0, steps: int, device):
    """Drawing the Brownian increments alone (one randn of the whole grid), as any solver must."""

    def run():
        torch.randn(steps, *y0.shape, device=device).mul_((1.0 / steps) ** 0.5)
        sync(device)

    return run


def time_interleaved(runners: dict, repeats: int, clock, stat) -> dict:
    for run in runners.values():  # warm-up
        run()
        run()
    samples = {k: [] for k in runners}
    for _ in range(repeats):
        for k, run in runners.items():
            t0 = clock()
            run()
            samples[k].append(clock() - t0)
    return {k: stat(v) for k, v in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--cases", default="all", help="comma-separated subset of case names")
    parser.add_argument(
        "--clock",
        choices=["process", "wall"],
        default=None,
        help="process CPU time (default on CPU: robust to other jobs on a shared "
        "machine when threads=1) or wall time (default on CUDA)",
    )
    parser.add_argument(
        "--stat",
        choices=["min", "median"],
        default="min",
        help="summary of the repeats: min (timeit's advice: noise from other jobs only adds) or median",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    clock_name = args.clock or ("wall" if device.type == "cuda" else "process")
    clock = time.perf_counter if clock_name == "wall" else time.process_time
    stat = min if args.stat == "min" else statistics.median
    torch.manual_seed(0)

    cases = [
        ("neural d=4, batch 32, forward", NeuralSDE, 32, False),
        ("neural d=4, batch 32, fwd+bwd", NeuralSDE, 32, True),
        ("neural d=4, batch 1024, forward", NeuralSDE, 1024, False),
        ("neural d=4, batch 1024, fwd+bwd", NeuralSDE, 1024, True),
        ("linear d=4, batch 65536, forward", LinearSDE, 65536, False),
    ]
    if args.cases != "all":
        wanted = [c.strip() for c in args.cases.split(",")]
        cases = [c for c in cases if any(w in c[0] for w in wanted)]

    print(
        f"# torch {torch.__version__}, torchsde {torchsde.__version__}, device {device}, "
        f"threads {torch.get_num_threads()}, {platform.processor() or platform.machine()}, "
        f"{args.steps} Euler steps, {args.stat} of {args.repeats}, {clock_name} time"
    )
    header = (
        f"| {'case':34s} | probgen ms | torchsde ms | speed-up | bare f,g ms | overhead "
        "| noise ms | vs f,g+noise |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for name, cls, batch, backward in cases:
        sde = cls().to(device)
        y0 = torch.randn(batch, 4, device=device)
        runners = {
            "probgen": make_runner("probgen", sde, y0, args.steps, backward, device),
            "torchsde": make_runner("torchsde", sde, y0, args.steps, backward, device),
            "bare": bare_runner(sde, y0, args.steps, backward, device),
            "noise": noise_runner(y0, args.steps, device),
        }
        t = time_interleaved(
            runners, args.repeats, clock, min if args.stat == "min" else statistics.median
        )
        print(
            f"| {name:34s} | {1e3 * t['probgen']:10.2f} | {1e3 * t['torchsde']:11.2f} | "
            f"{t['torchsde'] / t['probgen']:7.2f}x | {1e3 * t['bare']:11.2f} | "
            f"{t['probgen'] / t['bare']:7.2f}x | {1e3 * t['noise']:8.2f} | "
            f"{t['probgen'] / (t['bare'] + t['noise']):11.2f}x |",
            flush=True,
        )

    # The solvers' own cost per step, with f and g free (cached tensors), batch 32, forward.
    free = FreeSDE(32, 4, device)
    y0 = torch.randn(32, 4, device=device)
    ts = torch.tensor([0.0, 1.0], device=device)

    def solve_with(lib):
        def run():
            with torch.no_grad():
                lib.sdeint(free, y0, ts, method="euler", dt=1.0 / args.steps)
            sync(device)

        return run

    t = time_interleaved(
        {"probgen": solve_with(psde), "torchsde": solve_with(torchsde)}, args.repeats, clock, stat
    )
    print(
        f"\nsolver cost per step with free f and g (batch 32, forward): probgen "
        f"{1e6 * t['probgen'] / args.steps:.1f} us, torchsde {1e6 * t['torchsde'] / args.steps:.1f} us"
    )


if __name__ == "__main__":
    main()
