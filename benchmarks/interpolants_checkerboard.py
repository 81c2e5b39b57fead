"""Stochastic interpolants on the checkerboard: NLL, MMD, sample quality vs NFE, throughput.

Trains ``models/interpolants/checkerboard.yaml`` on one thread within a budget of process CPU
time (the cosine schedule's length is set from a calibration of the step cost), then prints, in
one run:

1. held-out NLL (nats; floor ln 32 = 3.466) by the RK4 probability-flow ODE with exact
   divergence, and by dopri5 on a subset;
2. the MMD^2 ratio test: biased RBF MMD^2 between 5,000 model and 5,000 true samples over
   the same statistic between two independent true sets, medians over 5 draws;
3. sample quality (MMD^2, energy distance) against NFE for ODE solvers and SDEs;
4. training throughput of the probgen objective against an inline flow-matching loss
   equivalent to torchcfm's ``ConditionalFlowMatcher(sigma=0)`` on the same network and
   batch (torchcfm itself pulls torchvision, which probgen does not allow).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/interpolants_checkerboard.py --cpu-minutes 10
    python benchmarks/interpolants_checkerboard.py --ckpt path/to.ckpt   # skip training
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


def build(config_path: Path, max_steps: int | None):
    from probgen.data.toy2d import Toy2D
    from probgen.interpolants import StochasticInterpolant

    cfg = yaml.safe_load(config_path.read_text())
    model = StochasticInterpolant(**cfg["model"]["init_args"])
    data = Toy2D(**cfg["data"]["init_args"])
    trainer_cfg = dict(cfg.get("trainer", {}))
    if max_steps is not None:
        trainer_cfg["max_steps"] = max_steps
    return cfg, model, data, trainer_cfg


class CPUBudget:
    """Stops training when the process CPU time spent in it reaches ``seconds`` (1 thread, so CPU
    time measures work done even when the machine's cores are shared with other jobs)."""

    def __init__(self, seconds: float) -> None:
        import lightning as L

        budget = self

        class _Callback(L.Callback):
            def on_train_start(self, trainer, pl_module):
                budget.start = time.process_time()

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                if time.process_time() - budget.start >= seconds:
                    trainer.should_stop = True

        self.callback = _Callback()
        self.start = time.process_time()


def calibrate(model, data, steps: int = 40) -> float:
    """CPU seconds per training step (loss, backward, Adam) of this model and batch size."""
    data.setup()
    x = data.splits["train"][0][: data.batch_size]
    net = copy.deepcopy(model.net)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    for i in range(steps + 5):
        if i == 5:
            t0 = time.process_time()
        loss, _ = model._loss(x, net)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.process_time() - t0) / steps


def train(args) -> tuple[object, object, float, int]:
    import lightning as L

    cfg, model, data, trainer_cfg = build(ROOT / args.config, args.max_steps)
    L.seed_everything(cfg.get("seed_everything", 0))
    budget_s = 60 * args.cpu_minutes
    if args.max_steps is None:
        per_step = calibrate(model, data)
        # Lightning's loop, logging and the EMA update cost about 15% on top of the bare step
        trainer_cfg["max_steps"] = min(trainer_cfg["max_steps"], int(budget_s / (1.15 * per_step)))
        print(f"calibration: {per_step * 1e3:.1f} CPU ms per step -> max_steps {trainer_cfg['max_steps']} "
              "(cosine schedule length)")
    out = ROOT / "benchmarks" / "results" / "interpolants"
    out.mkdir(parents=True, exist_ok=True)
    budget = CPUBudget(budget_s)
    trainer_cfg.update(
        enable_progress_bar=False,
        default_root_dir=str(out),
        limit_val_batches=0,  # evaluation happens below, outside the training budget
        num_sanity_val_steps=0,
        callbacks=[budget.callback],
        enable_checkpointing=False,
    )
    trainer_cfg.pop("val_check_interval", None)
    trainer_cfg.pop("check_val_every_n_epoch", None)
    trainer = L.Trainer(**trainer_cfg)
    t0, c0 = time.perf_counter(), time.process_time()
    trainer.fit(model, datamodule=data)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    ckpt = out / "checkerboard_last.ckpt"
    trainer.save_checkpoint(ckpt)
    print(f"trained {trainer.global_step} steps (batch {data.batch_size}) in {cpu / 60:.2f} CPU min, {wall / 60:.2f} wall min "
          f"(machine shared: the wall/CPU ratio is the contention); checkpoint {ckpt}")
    return model, data, wall, trainer.global_step


def load(args):
    from probgen.cli import load_checkpoint_into

    _, model, data, _ = build(ROOT / args.config, None)
    load_checkpoint_into(model, args.ckpt)
    return model, data


def nll_table(model, data, n_test: int) -> None:
    data.setup()
    x = data.splits["test"][0][:n_test].double()
    model = model.double().eval()
    t0 = time.perf_counter()
    nll = torch.cat([model.nll(xb) for xb in x.split(2000)])
    t_rk4 = time.perf_counter() - t0
    se = nll.std() / math.sqrt(len(nll))
    hp = model.hparams
    print("\n## Held-out NLL (nats; entropy floor ln 32 = 3.4657)\n")
    print("| estimator | points | NLL | s.e. | seconds |")
    print("|---|---|---|---|---|")
    print(f"| RK4 probability flow, {hp.nll_steps} steps, exact divergence | {len(x)} | {nll.mean():.4f} | {se:.4f} | {t_rk4:.0f} |")
    from probgen.interpolants import log_likelihood

    sub = x[:1000]
    t0 = time.perf_counter()
    lp = log_likelihood(model.velocity_field(), sub, model.base.log_prob, divergence="exact", solver="dopri5",
                        rtol=1e-6, atol=1e-6, t_span=(model.t_min, model.t_max))
    t_dp = time.perf_counter() - t0
    print(f"| dopri5 (rtol=atol=1e-6), exact divergence | {len(sub)} | {-lp.mean():.4f} | {lp.std() / math.sqrt(len(sub)):.4f} | {t_dp:.0f} |")
    print(f"| RK4 on the same {len(sub)} points | {len(sub)} | {nll[:len(sub)].mean():.4f} | | |")
    model.float()


def mmd_ratio(model, data, draws: int = 5, n: int = 5000) -> None:
    from probgen.metrics import median_bandwidth, mmd2

    dens = data.density
    g = torch.Generator().manual_seed(123)
    h_med = float(median_bandwidth(dens.sample(n, g), dens.sample(n, g)))
    rows = []
    for h in (h_med, 0.2):
        model_stats, true_stats = [], []
        for i in range(draws):
            gi = torch.Generator().manual_seed(1000 + i)
            xm = model.sample(n, generator=gi).double()
            a, b = dens.sample(n, gi).double(), dens.sample(n, gi).double()
            model_stats.append(float(mmd2(xm, a, bandwidth=h)))
            true_stats.append(float(mmd2(b, a, bandwidth=h)))
        mm, mt = statistics.median(model_stats), statistics.median(true_stats)
        rows.append((h, mm, mt, mm / mt))
    print(f"\n## MMD^2 ratio test ({n} vs {n} samples, biased RBF, median of {draws} draws; model: RK4 ODE, "
          f"{model.hparams.sample_steps} steps)\n")
    print("| bandwidth h | MMD^2(model, true) | MMD^2(true, true) | ratio (target <= 2) |")
    print("|---|---|---|---|")
    for h, mm, mt, r in rows:
        label = f"{h:.3f} (median heuristic)" if h == h_med else f"{h:.3f}"
        print(f"| {label} | {mm:.2e} | {mt:.2e} | {r:.2f} |")


def nfe_table(model, data, n: int = 5000) -> None:
    from probgen.metrics import energy_distance, median_bandwidth, mmd2

    dens = data.density
    g = torch.Generator().manual_seed(7)
    ref = dens.sample(n, g).double()
    ref2 = dens.sample(n, g).double()
    h = float(median_bandwidth(ref, ref2))
    rows = [("true vs true (floor)", "-", float(mmd2(ref2, ref, bandwidth=h)), float(mmd2(ref2, ref, bandwidth=0.2)),
             float(energy_distance(ref2, ref)), 0.0)]
    configs = []
    for steps in (4, 8, 16, 32, 64, 128):
        configs.append((f"ODE euler, {steps} steps", dict(method="ode", solver="euler", steps=steps)))
    for steps in (4, 8, 16, 32, 64):
        configs.append((f"ODE heun, {steps} steps", dict(method="ode", solver="heun", steps=steps)))
    for steps in (2, 4, 8, 16, 32):
        configs.append((f"ODE rk4, {steps} steps", dict(method="ode", solver="rk4", steps=steps)))
    for eps in (0.1, 0.5, 1.0):
        for steps in (32, 128, 512):
            configs.append((f"SDE euler-maruyama, eps={eps}(1-t), {steps} steps",
                            dict(method="sde", solver="euler", steps=steps, eps=eps, eps_schedule="vanishing")))
    from probgen.interpolants import generate

    for name, kw in configs:
        gi = torch.Generator().manual_seed(11)
        t0 = time.perf_counter()
        x = model.sample(n, generator=gi, **kw).double()
        sec = time.perf_counter() - t0
        nfe = kw["steps"] * {"euler": 1, "heun": 2, "rk4": 4}[kw["solver"]]
        rows.append((name, nfe, float(mmd2(x, ref, bandwidth=h)), float(mmd2(x, ref, bandwidth=0.2)),
                     float(energy_distance(x, ref)), sec))
    for tol in (1e-2, 1e-3, 1e-5):
        gi = torch.Generator().manual_seed(11)
        x0 = model.base.sample(n, gi, torch.float32, "cpu")
        t0 = time.perf_counter()
        with torch.no_grad():
            x, nfe = generate(model.velocity_field(), x0, method="ode", solver="dopri5", rtol=tol, atol=tol,
                              t_span=(model.t_min, model.t_max), return_nfe=True)
        sec = time.perf_counter() - t0
        x = x.double()
        rows.append((f"ODE dopri5, rtol=atol={tol:g}", nfe, float(mmd2(x, ref, bandwidth=h)),
                     float(mmd2(x, ref, bandwidth=0.2)), float(energy_distance(x, ref)), sec))
    print(f"\n## Sample quality vs NFE ({n} samples vs {n} true; MMD^2 biased RBF at h={h:.3f} (median) and h=0.2)\n")
    print("| sampler | NFE | MMD^2 (median h) | MMD^2 (h=0.2) | energy distance | seconds |")
    print("|---|---|---|---|---|---|")
    for name, nfe, m1, m2, e, sec in rows:
        print(f"| {name} | {nfe} | {m1:.2e} | {m2:.2e} | {e:.4f} | {sec:.1f} |")


def throughput(batch: int = 1024, rounds: int = 5, steps: int = 40) -> None:
    from probgen.data.toy2d import Checkerboard
    from probgen.interpolants import Interpolant, TimeMLP, make_objective

    dens = Checkerboard()
    torch.manual_seed(0)
    data = dens.sample(batch * 64)
    interpolant = Interpolant("one_sided_linear", "zero")
    objective = make_objective("velocity")

    def make():
        net = TimeMLP(2, 2, [256, 256, 256], "silu", 8)
        return net, torch.optim.Adam(net.parameters(), 1e-3)

    def probgen_step(net, opt, x1):
        t = torch.rand(len(x1))
        fields = lambda tt, xx: {"b": net(tt, xx)}  # noqa: E731
        loss, _ = objective.loss(fields, interpolant, torch.randn_like(x1), x1, t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def cfm_step(net, opt, x1):
        # torchcfm ConditionalFlowMatcher(sigma=0): t ~ U, x_t = t x1 + (1 - t) x0, u_t = x1 - x0, MSE mean
        x0 = torch.randn_like(x1)
        t = torch.rand(len(x1))
        xt = t[:, None] * x1 + (1 - t[:, None]) * x0
        loss = ((net(t, xt) - (x1 - x0)) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    rates = {"probgen": [], "cfm": []}
    nets = {"probgen": make(), "cfm": make()}
    steps_fn = {"probgen": probgen_step, "cfm": cfm_step}
    for r in range(rounds):  # interleaved rounds, so that load changes hit both alike
        for name in ("probgen", "cfm"):
            net, opt = nets[name]
            t0 = time.perf_counter()
            for i in range(steps):
                j = (r * steps + i) % 64
                steps_fn[name](net, opt, data[j * batch : (j + 1) * batch])
            rates[name].append(steps / (time.perf_counter() - t0))
    p, c = statistics.median(rates["probgen"]), statistics.median(rates["cfm"])
    print(f"\n## Training throughput (batch {batch}, TimeMLP 3x256 SiLU, Adam; median of {rounds} interleaved rounds of {steps} steps)\n")
    print("| loss | steps/s | ratio |")
    print("|---|---|---|")
    print(f"| probgen VelocityObjective (one-sided linear) | {p:.1f} | {p / c:.2f} |")
    print(f"| inline torchcfm-equivalent CFM loss (sigma=0) | {c:.1f} | 1.00 |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="models/interpolants/checkerboard.yaml")
    parser.add_argument("--max-steps", type=int, default=None, help="override trainer.max_steps")
    parser.add_argument("--cpu-minutes", type=float, default=10.0, help="training budget in process CPU minutes")
    parser.add_argument("--ckpt", default=None, help="evaluate this checkpoint instead of training")
    parser.add_argument("--n-test", type=int, default=10000)
    parser.add_argument("--skip", nargs="*", default=[], choices=["nll", "mmd", "nfe", "throughput"])
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    if args.ckpt:
        model, data = load(args)
    else:
        model, data, _, _ = train(args)
    model.eval()
    if "nll" not in args.skip:
        nll_table(model, data, args.n_test)
    if "mmd" not in args.skip:
        mmd_ratio(model, data)
    if "nfe" not in args.skip:
        nfe_table(model, data)
    if "throughput" not in args.skip:
        throughput()


if __name__ == "__main__":
    main()
