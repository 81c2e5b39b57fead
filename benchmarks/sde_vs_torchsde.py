"""probgen.sde (eager and compile=True) vs torchsde, diffrax and torchdiffeq, timed side by side in one run.

Cases (issue 16): a neural diagonal SDE (d=4, drift and diffusion each an MLP with one hidden
layer of 64 tanh units, the diffusion ending in a sigmoid; 200 Euler steps on [0, 1]) at batch
32 and 1024, forward only (no grad) and forward + backward (``loss = ys[-1].square().mean()``,
gradient with respect to the parameters: plain backprop through the steps for probgen and
torchsde, diffrax's default ``RecursiveCheckpointAdjoint``); a linear SDE (geometric Brownian
motion, d=4) at batch 65,536, forward; and ``odeint`` RK4 (the neural drift as an ODE, batch 32,
200 steps) against ``torchdiffeq.odeint`` (``rk4``: the 3/8 rule, with ``step_size``).

Columns: probgen eager; probgen ``compile=True`` (``torch.compile`` of ``--chunk`` unrolled
steps, Brownian increments drawn before the loop); torchsde (its default ``BrownianInterval``);
diffrax (JAX on CPU, ``jax.jit`` of ``jax.vmap`` over the batch of ``diffeqsolve`` with
``Euler`` and increments drawn on the step grid inside the jitted call, the same network
weights). Ratios: torchsde / probgen eager
and diffrax / probgen compiled (above 1: probgen is faster). Compile times (first call, wall
clock, which includes inductor's C++ compiler processes) are printed separately; they are
paid once per shape and step size (and cached on disk by inductor across processes).

Runs are interleaved (eager, compiled, torchsde, diffrax, eager, ...) so contention from other
jobs hits all columns alike; each column reports the minimum (``--stat median`` for the median)
of ``--repeats`` runs, in process CPU time (all threads of the process: JAX's too).

    python benchmarks/sde_vs_torchsde.py [--repeats 15] [--threads 1] [--cases all] [--chunk 10]
    python benchmarks/sde_vs_torchsde.py --tanh-bench   # eager vs inductor tanh/exp/sigmoid
    python benchmarks/sde_vs_torchsde.py --elbo          # fOU bridge ELBO iteration vs its network's floor

diffrax is optional (``pip install probgen[bench]``); without it that column reads "-".
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)

import torch
import torchdiffeq
import torchsde
from torch import nn

import probgen.sde as psde
from probgen.sde import compiled

D = 4


class NeuralSDE(nn.Module):
    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, d: int = D, hidden: int = 64) -> None:
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

    def __init__(self, d: int = D) -> None:
        super().__init__()
        self.mu = nn.Parameter(torch.linspace(-0.5, 0.5, d))
        self.sigma = nn.Parameter(torch.linspace(0.1, 0.4, d))

    def f(self, t, y):
        return self.mu * y

    def g(self, t, y):
        return self.sigma * y


class ODEField(nn.Module):
    def __init__(self, sde: NeuralSDE) -> None:
        super().__init__()
        self.net = sde.drift

    def forward(self, t, y):
        return self.net(y)


def sde_runner(lib: str, sde, y0, steps: int, backward: bool):
    ts = torch.tensor([0.0, 1.0])
    dt = 1.0 / steps
    params = list(sde.parameters())
    if lib == "torchsde":

        def solve():
            return torchsde.sdeint(sde, y0, ts, method="euler", dt=dt)
    else:
        comp = lib == "compiled"

        def solve():
            return psde.sdeint(sde, y0, ts, method="euler", dt=dt, compile=comp)

    if backward:

        def run():
            torch.autograd.grad(solve()[-1].square().mean(), params)
    else:

        def run():
            with torch.no_grad():
                solve()

    return run


def ode_runner(lib: str, field, y0, steps: int):
    ts = torch.tensor([0.0, 1.0])
    if lib == "torchdiffeq":

        def run():
            with torch.no_grad():
                torchdiffeq.odeint(field, y0, ts, method="rk4", options={"step_size": 1.0 / steps})
    else:
        comp = lib == "compiled"

        def run():
            with torch.no_grad():
                psde.odeint(field, y0, ts, method="rk4", dt=1.0 / steps, compile=comp)

    return run


def diffrax_runner(sde, y0, steps: int, backward: bool, linear: bool):
    """jit(vmap(diffeqsolve)) with Euler, on the torch module's weights; increments drawn per call.

    The Brownian path is a minimal ``AbstractBrownianPath`` over increments drawn on the step
    grid (UnsafeBrownianPath cannot be differentiated through RecursiveCheckpointAdjoint, and
    VirtualBrownianTree costs far more than the solve).
    """
    try:
        import diffrax
        import jax
        import jax.numpy as jnp
        import lineax
    except ImportError:
        return None
    if linear:
        params = {
            "mu": jnp.asarray(sde.mu.detach().numpy()),
            "sigma": jnp.asarray(sde.sigma.detach().numpy()),
        }

        def drift(t, y, p):
            return p["mu"] * y

        def diffusion(t, y, p):
            return lineax.DiagonalLinearOperator(p["sigma"] * y)
    else:

        def layers(seq):
            return [
                (jnp.asarray(m.weight.detach().numpy()), jnp.asarray(m.bias.detach().numpy()))
                for m in seq
                if isinstance(m, nn.Linear)
            ]

        params = {"drift": layers(sde.drift), "diff": layers(sde.diffusion)}

        def mlp(p, y):
            (w1, b1), (w2, b2) = p
            return jnp.tanh(y @ w1.T + b1) @ w2.T + b2

        def drift(t, y, p):
            return mlp(p["drift"], y)

        def diffusion(t, y, p):
            return lineax.DiagonalLinearOperator(jax.nn.sigmoid(mlp(p["diff"], y)))

    import equinox as eqx

    class GridBrownian(diffrax.AbstractBrownianPath):
        """Increments pre-drawn on the grid t_k = k dt, as probgen's fast path draws them."""

        increments: jax.Array
        dt: float = eqx.field(static=True)
        shape: jax.ShapeDtypeStruct = eqx.field(static=True)
        levy_area: type = eqx.field(static=True, default=diffrax.BrownianIncrement)

        @property
        def t0(self):
            return 0.0

        @property
        def t1(self):
            return self.dt * self.increments.shape[0]

        def evaluate(self, t0, t1=None, left=True, use_levy=False):
            return self.increments[jnp.round(t0 / self.dt).astype(jnp.int32)]

    def solve_one(p, y, inc):
        bm = GridBrownian(inc, 1.0 / steps, jax.ShapeDtypeStruct(y.shape, y.dtype))
        terms = diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diffusion, bm))
        sol = diffrax.diffeqsolve(
            terms,
            diffrax.Euler(),
            0.0,
            1.0,
            dt0=1.0 / steps,
            y0=y,
            args=p,
            saveat=diffrax.SaveAt(t1=True),
            max_steps=steps + 1,
        )
        return sol.ys[0]

    batch = y0.shape[0]
    ys0 = jnp.asarray(y0.numpy())
    keys = jax.random.PRNGKey(0)

    def solve(p, y, key):  # the noise is drawn inside the timed call, as in probgen and torchsde
        inc = jax.random.normal(key, (batch, steps, y.shape[1])) * (1.0 / steps) ** 0.5
        return jax.vmap(solve_one, in_axes=(None, 0, 0))(p, y, inc)

    if backward:
        fn = jax.jit(jax.grad(lambda p, y, k: jnp.mean(solve(p, y, k) ** 2)))
    else:
        fn = jax.jit(solve)

    def run():
        jax.block_until_ready(fn(params, ys0, keys))

    return run


def first_call(run) -> float:
    t0 = time.perf_counter()
    run()
    return time.perf_counter() - t0


def time_interleaved(runners: dict, repeats: int, stat) -> dict:
    for run in runners.values():  # warm-up (compiles on the first call)
        run()
    samples = {k: [] for k in runners}
    for _ in range(repeats):
        for k, run in runners.items():
            t0 = time.process_time()
            run()
            samples[k].append(time.process_time() - t0)
    return {k: stat(v) for k, v in samples.items()}


def tanh_bench(repeats: int = 7, calls: int = 200) -> None:
    """Eager aten (MKL VML) vs inductor's generated tanh / exp: microseconds per call on (1024, 64).

    Explains why the compiled chunk was slower than eager at batch 1024 (issue 16): inductor's
    CPU kernels call Sleef (``Sleef_tanhf16_u10``), aten calls MKL's vector math.
    """
    x = torch.randn(1024, 64)

    def per_call(fn) -> float:
        fn(x)
        samples = []
        for _ in range(repeats):
            t0 = time.process_time()
            for _ in range(calls):
                fn(x)
            samples.append((time.process_time() - t0) / calls)
        return 1e6 * statistics.median(samples)

    print(f"# load {os.getloadavg()[0]:.1f}; median of {repeats} x {calls} calls, process CPU time")
    print("| op | eager us | compiled us | compiled, cpp.use_decompose_tanh us |")
    print("|---|---|---|---|")
    with torch.no_grad():
        for name, op in (("tanh", torch.tanh), ("exp", torch.exp), ("sigmoid", torch.sigmoid)):
            plain = torch.compile(lambda x, op=op: op(x), dynamic=False)
            decomposed = torch.compile(
                lambda x, op=op: op(x), dynamic=False, options={"cpp.use_decompose_tanh": True}
            )
            print(f"| {name} | {per_call(op):.1f} | {per_call(plain):.1f} | {per_call(decomposed):.1f} |",
                  flush=True)


def elbo_bench(repeats: int = 5) -> None:
    """One fOU-bridge ELBO iteration at the official sizes vs the floor of its control network alone.

    The model: ``FractionalSDE`` with K = 5 OU processes (gamma_max 10, so gamma_max dt = 0.3), horizon 6, H = 0.3, a control MLP of
    2 x 1000 tanh layers, no context, 200 Euler steps (dt = 0.03), batch 32; one iteration is
    the ELBO forward, backward and an Adam step. The floor: the same control MLP (its input has
    the model's width) evaluated on a (32, K + 3) input 200 times in a chain, with a scalar loss,
    backward and Adam: what any solver must pay. Interleaved; median of ``repeats``.
    """
    from probgen.fractional import FractionalSDE

    batch, k, steps, horizon = 32, 5, 200, 6.0
    torch.manual_seed(0)
    model = FractionalSDE(dim=1, n_ou=k, gamma_max=10.0, horizon=horizon, hurst=0.3, learn_hurst=False,
                          theta=0.0, control="mlp", control_hidden=1000, control_depth=2, context="none",
                          obs_std=0.1, dt=horizon / steps)
    opt = model.configure_optimizers()
    values, times = torch.zeros(batch, 1, 1), torch.full((batch, 1), horizon)
    width = next(m for m in model.modules() if isinstance(m, nn.Linear)).in_features
    net = nn.Sequential(nn.Linear(width, 1000), nn.Tanh(), nn.Linear(1000, 1000), nn.Tanh(), nn.Linear(1000, 1))
    net_opt = torch.optim.Adam(net.parameters(), 1e-3)

    def elbo_iteration():
        loss = -model.elbo(values, times)["elbo"].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def floor_iteration():
        z = torch.zeros(batch, width)
        total = 0.0
        for _ in range(steps):
            u = net(z)
            z = z + 0.01 * u  # chained, so the backward runs through every step
            total = total + u.square().mean()
        net_opt.zero_grad(set_to_none=True)
        total.backward()
        net_opt.step()

    t = time_interleaved({"elbo": elbo_iteration, "floor": floor_iteration}, repeats, statistics.median)
    print(f"# fOU bridge ELBO iteration, official sizes; load {os.getloadavg()[0]:.1f}; median of {repeats}, "
          "process CPU time")
    print(f"| ELBO iteration s | control-MLP floor s | ELBO / floor |\n|---|---|---|\n"
          f"| {t['elbo']:.3f} | {t['floor']:.3f} | {t['elbo'] / t['floor']:.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--chunk", type=int, default=compiled.DEFAULT_CHUNK)
    parser.add_argument("--cpp-wrapper", action="store_true", help="inductor's C++ wrapper")
    parser.add_argument("--no-compiled", action="store_true", help="skip the compiled column")
    parser.add_argument("--cases", default="all", help="comma-separated substrings of case names")
    parser.add_argument("--stat", choices=["min", "median"], default="min")
    parser.add_argument(
        "--no-decompose-tanh",
        action="store_true",
        help="compile with inductor's default Sleef tanh (compiled.COMPILE_OPTIONS = {})",
    )
    parser.add_argument(
        "--tanh-bench",
        action="store_true",
        help="only time eager vs compiled tanh/exp on a (1024, 64) tensor, and exit",
    )
    parser.add_argument(
        "--elbo",
        action="store_true",
        help="only time the fOU bridge ELBO iteration (official sizes) against its network's floor",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.tanh_bench:
        tanh_bench()
        return
    if args.elbo:
        elbo_bench(args.repeats)
        return
    compiled.DEFAULT_CHUNK = args.chunk
    if args.no_decompose_tanh:
        compiled.COMPILE_OPTIONS = {}
    if args.cpp_wrapper:
        import torch._inductor.config as inductor_config

        inductor_config.cpp_wrapper = True
    stat = min if args.stat == "min" else statistics.median
    torch.manual_seed(0)
    try:
        import diffrax
        import jax

        peer = f"jax {jax.__version__}, diffrax {diffrax.__version__}"
    except ImportError:
        peer = "diffrax not installed"

    cases = [
        ("neural d=4, batch 32, forward", "sde", NeuralSDE, 32, False),
        ("neural d=4, batch 32, fwd+bwd", "sde", NeuralSDE, 32, True),
        ("neural d=4, batch 1024, forward", "sde", NeuralSDE, 1024, False),
        ("neural d=4, batch 1024, fwd+bwd", "sde", NeuralSDE, 1024, True),
        ("linear d=4, batch 65536, forward", "sde", LinearSDE, 65536, False),
        ("odeint rk4, neural d=4, batch 32", "ode", NeuralSDE, 32, False),
    ]
    if args.cases != "all":
        wanted = [c.strip() for c in args.cases.split(",")]
        cases = [c for c in cases if any(w in c[0] for w in wanted)]

    print(
        f"# torch {torch.__version__}, torchsde {torchsde.__version__}, torchdiffeq "
        f"{torchdiffeq.__version__}, {peer}; threads {torch.get_num_threads()}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load "
        f"{os.getloadavg()[0]:.1f}; {args.steps} steps, chunk {args.chunk}"
        f"{', cpp_wrapper' if args.cpp_wrapper else ''}; compile options {compiled.COMPILE_OPTIONS}; "
        f"{args.stat} of {args.repeats}, "
        "process CPU time",
        flush=True,
    )
    header = (
        "| case | probgen eager ms | probgen compiled ms | torchsde / torchdiffeq ms | diffrax ms "
        "| torchsde / eager | diffrax / compiled | compile s |"
    )
    print(header)
    print("|---" * 8 + "|", flush=True)
    for name, kind, cls, batch, backward in cases:
        torch.manual_seed(0)
        model = cls()
        y0 = torch.randn(batch, D)
        repeats = args.repeats if batch <= 1024 else max(3, args.repeats // 3)
        if kind == "sde":
            runners = {"eager": sde_runner("eager", model, y0, args.steps, backward)}
            if not args.no_compiled:
                runners["compiled"] = sde_runner("compiled", model, y0, args.steps, backward)
            runners["peer"] = sde_runner("torchsde", model, y0, args.steps, backward)
            dfx = diffrax_runner(model, y0, args.steps, backward, linear=cls is LinearSDE)
        else:
            field = ODEField(model)
            runners = {"eager": ode_runner("eager", field, y0, args.steps)}
            if not args.no_compiled:
                runners["compiled"] = ode_runner("compiled", field, y0, args.steps)
            runners["peer"] = ode_runner("torchdiffeq", field, y0, args.steps)
            dfx = None
        compile_s = first_call(runners["compiled"]) if "compiled" in runners else float("nan")
        if dfx is not None:
            runners["diffrax"] = dfx
        t = time_interleaved(runners, repeats, stat)
        comp = t.get("compiled", float("nan"))
        dif = t.get("diffrax", float("nan"))
        print(
            f"| {name} | {1e3 * t['eager']:.2f} | {1e3 * comp:.2f} | {1e3 * t['peer']:.2f} | "
            f"{1e3 * dif:.2f} | {t['peer'] / t['eager']:.2f}x | {dif / comp:.2f}x | {compile_s:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
