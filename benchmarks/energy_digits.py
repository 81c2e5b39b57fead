"""Digits (8x8, 64-d) energy models tilted against a good q: q alone, MECO/NCE/DSM, AIS brackets, OOD, samples.

Stages (each appends its lines to ``benchmarks/results/energy/digits.md`` and prints them):

- ``flow``: train an unconditional interpolant flow q (U-Net or MLP velocity, one-sided linear
  path from N(0, I), data in [0, 1] as the energy sees them) on the training split for a budget of
  process CPU seconds, save it as a Lightning-style checkpoint that ``FlowNoise.from_checkpoint``
  (``noise: flow``) loads, and report its test NLL (Hutchinson, fixed probes).
- ``q``: test NLL of every candidate q alone (Gaussian, mixtures, flows).
- ``train``: the tilted model p ~ q exp(-E_conv) per objective with the chosen q; saves the
  energies.
- ``eval``: AIS bracket of log Z (forward AIS from q, reverse AIS from test digits), test NLL
  in nats per image and bits/dim on the 17-level grid, OOD AUROCs.
- ``samples``: MALA samples of the tilted model (step by a short pilot), a png, and their quality
  (an RBF SVM's confidence, MMD^2 to the test digits).
- ``flowcheck``: a flow q's test NLL at 10/20/40 rk4 steps and 2/8 Hutchinson probes.

Data: classes 0-7 of scikit-learn's digits (1,010 training, 216 validation, 217 test images),
dequantised ``x = (pixel + u) / 17`` (``probgen.data.digits``); classes 8 and 9 held out.

    OMP_NUM_THREADS=1 python benchmarks/energy_digits.py flow --network unet --cpu-seconds 180
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import torch

from probgen.data.digits import NUM_LEVELS, DigitsDataModule

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "energy"
LOG = RESULTS / "digits.md"
BPD_OFFSET = 64 * math.log(NUM_LEVELS)  # -log of the grid cell volume (1/17)^64


def bits_per_dim(nll_nats: float) -> float:
    """Bits/dim on the 17-level grid of an NLL in nats per image of x = (pixel + u) / 17."""
    return (nll_nats + BPD_OFFSET) / (64 * math.log(2))


def emit(line: str) -> None:
    print(line)
    sys.stdout.flush()
    RESULTS.mkdir(parents=True, exist_ok=True)
    with LOG.open("a") as f:
        f.write(line + "\n")


def load_splits():
    dm = DigitsDataModule(task="generation", held_out_classes=(8, 9), seed=0)
    dm.setup()
    return dm, {k: v[0] for k, v in dm.splits.items()}


def load_avg() -> str:
    return "load %.1f" % os.getloadavg()[0]


# -- flow q ------------------------------------------------------------------------------------
FLOW_NETS = {
    "unet": dict(network="unet", image_shape=[1, 8, 8], unet_channels=16, unet_channel_mults=[1, 2], unet_attention_resolutions=[4]),
    "mlp": dict(network="mlp", hidden_dims=[512, 512, 512], time_frequencies=8),
}


def flow_model(network: str):
    from probgen.interpolants import StochasticInterpolant

    return StochasticInterpolant(
        dim=64, path="one_sided_linear", gamma="zero", objective="velocity", base="gaussian", ema_decay=0.999, lr=1e-3,
        lr_schedule="constant", sample_method="ode", sample_solver="rk4", sample_steps=10, nll_solver="rk4", nll_steps=10,
        nll_divergence="hutchinson", nll_num_probes=2, val_nll_samples=64, bpd_scale=1 / NUM_LEVELS, plot_every_n_val=0,
        **FLOW_NETS[network],
    )


def stage_flow(args) -> None:
    torch.manual_seed(args.seed)
    _, s = load_splits()
    x = s["train"]
    model = flow_model(args.network)
    g = torch.Generator().manual_seed(args.seed)
    opt = torch.optim.AdamW(model.net.parameters(), lr=model.hparams.lr)
    start, steps = time.process_time(), 0
    while time.process_time() - start < args.cpu_seconds:
        idx = torch.randint(0, len(x), (128,), generator=g)
        loss, _ = model._loss(x[idx], model.net, generator=g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
        with torch.no_grad():
            decay = min(model.hparams.ema_decay, (1 + steps) / (10 + steps))
            torch._foreach_lerp_(list(model.ema_net.parameters()), [p.detach() for p in model.net.parameters()], 1 - decay)
    cpu = time.process_time() - start
    path = RESULTS / f"digits_flow_{args.network}.ckpt"
    RESULTS.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    emit(f"flow {args.network}: {steps} steps in {cpu:.0f} CPU s ({load_avg()}), saved {path.relative_to(ROOT)}")



# -- q candidates, cached log q --------------------------------------------------------------
MIXTURE = dict(num_components=64, diagonal=True, min_var=3e-4, seed=0)
CONV = {"kind": "conv", "side": 8, "channels": 32}


def q_kwargs(q: str) -> dict:
    """EnergyBasedModel noise arguments of the q named ``q``."""
    if q == "mixture":
        return dict(noise="mixture", noise_kwargs=dict(MIXTURE))
    if q == "gaussian":
        return dict(noise="gaussian", noise_kwargs={})
    if q.startswith("flow_"):
        ckpt = RESULTS / f"digits_{q}.ckpt"
        return dict(noise="flow", noise_kwargs={"checkpoint": str(ckpt), "steps": 10, "solver": "rk4", "num_probes": 2, "chunk_size": 256})
    raise ValueError(q)


def eval_sets(s: dict) -> dict:
    from probgen.data.digits import corrupt_digits

    gen = torch.Generator().manual_seed(0)
    out = {"val": s["val"], "test": s["test"]}
    for kind in ("noise", "blur", "rotation"):
        out[kind] = corrupt_digits(s["test"], kind, 1.0, generator=gen)
    out["classes 8, 9"] = s["ood"]
    return out


def build(q: str, objective: str = "compositional", tilted: bool = True, lr: float = 5e-4, **kw):
    from probgen.energy import EnergyBasedModel

    torch.manual_seed(0)
    model = EnergyBasedModel(
        dim=64, energy=dict(CONV, envelope=0.0 if tilted else 0.1), objective=objective, base_on_noise=tilted,
        noise_batch_size=256, gamma=0.1, gamma_decay=0.5, gamma_offset=100.0, independent_u=True, lr=lr,
        langevin_steps=10, langevin_step_size=1e-4, langevin_method="ula", cd_alpha=0.1, dsm_sigma=0.05,
        sample_method="mala", **q_kwargs(q), **kw,
    )
    return model


class QCache:
    """log q of every evaluation set and a pool of q samples, computed once per q (saved)."""

    def __init__(self, q: str, model, sets: dict, pool: int) -> None:
        path = RESULTS / f"digits_cache_{q}.pt"
        if path.is_file():
            c = torch.load(path, weights_only=True)
        else:
            t = time.process_time()
            with torch.no_grad():
                c = {"log_q": {k: model.noise.log_prob(v) for k, v in sets.items()}}
                g = torch.Generator().manual_seed(12345)
                c["pool"] = torch.cat([model.noise.sample(min(1000, pool - i), g) for i in range(0, pool, 1000)])
            c["cpu_s"] = time.process_time() - t
            torch.save(c, path)
        self.log_q, self.pool, self.cpu_s = c["log_q"], c["pool"], c["cpu_s"]


def nll_is(tilt, pool: torch.Tensor, tilted: bool, noise=None) -> tuple[float, float]:
    """(log Z, ESS) by importance sampling from q's pool (tilted: weights e^{-E_net}, else e^{-E}/q)."""
    with torch.no_grad():
        e = torch.cat([tilt(c) for c in pool.split(2000)])
        log_w = -e if tilted else -e - torch.cat([noise.log_prob(c) for c in pool.split(2000)])
        lse = torch.logsumexp(log_w, 0)
        log_z = float(lse - math.log(len(pool)))
        ess = float(torch.exp(2 * lse - torch.logsumexp(2 * log_w, 0)))
    return log_z, ess


def stage_q(args) -> None:
    from probgen.metrics import auroc

    _, s = load_splits()
    sets = eval_sets(s)
    emit(f"\n## q alone ({load_avg()})\n")
    emit("| q | test NLL nats | bits/dim | " + " | ".join(f"AUROC {k}" for k in list(sets)[2:]) + " | fit/eval CPU s |")
    emit("|---|---|---|" + "---|" * (len(sets) - 2) + "---|")
    for q in args.q:
        t = time.process_time()
        model = build(q)
        model.fit_noise(s["train"])
        c = QCache(q, model, sets, args.pool)
        nll = float(-c.log_q["test"].mean())
        se = float(c.log_q["test"].std()) / math.sqrt(len(s["test"]))
        cells = [f"{float(auroc(-c.log_q['test'], -c.log_q[k])):.3f}" for k in list(sets)[2:]]
        emit(f"| {q} | {nll:.2f} +- {se:.2f} | {bits_per_dim(nll):.3f} | " + " | ".join(cells) + f" | {time.process_time() - t + c.cpu_s:.0f} |")


def use_training_pool(model, q: str, size: int) -> None:
    """Noise batches of a flow q drawn with replacement from a fixed pool of its samples.

    A U-Net flow sample costs ~40 network evaluations, so fresh noise batches (2 x 256 per MECO
    step) would dominate training; the pool (a different seed from the evaluation pool) is drawn
    once and saved. Overfitting to the pool shows in the validation NLL, which uses the other pool.
    """
    path = RESULTS / f"digits_train_pool_{q}.pt"
    if path.is_file():
        pool = torch.load(path, weights_only=True)
    else:
        t = time.process_time()
        g = torch.Generator().manual_seed(777)
        with torch.no_grad():
            pool = torch.cat([model.noise.sample(min(1000, size - i), g) for i in range(0, size, 1000)])
        torch.save(pool, path)
        emit(f"training pool of {q}: {size} samples in {time.process_time() - t:.0f} CPU s ({load_avg()})")
    gen = torch.Generator().manual_seed(778)

    def sample(n: int, generator=None):
        return pool[torch.randint(len(pool), (n,), generator=gen)]

    model.noise.sample = sample


def stage_train(args) -> None:
    _, s = load_splits()
    sets = eval_sets(s)
    x = s["train"]
    for q in args.q:
        for objective in args.objectives:
            tilted = not args.untilted
            model = build(q, objective, tilted, lr=args.lr)
            model.fit_noise(x)
            c = QCache(q, model, sets, args.pool)
            if q.startswith("flow_"):
                use_training_pool(model, q, args.train_pool)
            opt = model.configure_optimizers()
            g = torch.Generator().manual_seed(1)
            best, best_state, best_it, hist = float("inf"), None, 0, []
            cpu = 0.0
            for it in range(1, args.iters + 1):
                t = time.process_time()
                out = model.objective_step(x[torch.randint(len(x), (128,), generator=g)])
                opt.zero_grad()
                out.loss.backward()
                opt.step()
                cpu += time.process_time() - t
                if it % args.eval_every == 0 or it == args.iters:
                    with torch.no_grad():
                        e_val = model.tilt(s["val"]).mean() if tilted else model.energy(s["val"]).mean()
                    log_z, ess = nll_is(model.tilt if tilted else model.energy, c.pool[: args.val_pool], tilted, model.noise)
                    val = float(e_val) + log_z - (float(c.log_q["val"].mean()) if tilted else 0.0)
                    if tilted:  # NLL gain of the tilt over q alone on a training subset and on validation
                        with torch.no_grad():
                            gain_tr = -(float(model.tilt(x[:256]).mean()) + log_z)
                        hist.append(f"{it}:{val:.2f} (gain train {gain_tr:+.2f}, val {-(float(e_val) + log_z):+.2f})")
                    else:
                        hist.append(f"{it}:{val:.2f}")
                    if val < best:
                        best, best_it = val, it
                        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            name = f"{q}_{objective}" + ("" if tilted else "_untilted") + args.tag
            torch.save({"state_dict": best_state, "q": q, "objective": objective, "tilted": tilted, "lr": args.lr}, RESULTS / f"digits_model_{name}.pt")
            emit(f"train {name}: lr {args.lr:g}, {args.iters} iterations, {cpu:.0f} CPU s ({load_avg()}); best val NLL {best:.2f} at {best_it} "
                 f"(IS, {args.val_pool} q samples); val NLL by iteration {'; '.join(hist)}")

def load_model(name: str, s: dict):
    saved = torch.load(RESULTS / f"digits_model_{name}.pt", weights_only=True)
    model = build(saved["q"], saved["objective"], saved["tilted"], lr=saved.get("lr", 5e-4))
    model.fit_noise(s["train"])
    model.load_state_dict(saved["state_dict"])
    return model.eval(), saved


def stage_eval(args) -> None:
    from probgen.energy import log_partition_ais, log_partition_ais_flow
    from probgen.metrics import auroc

    _, s = load_splits()
    sets = eval_sets(s)
    ood = list(sets)[2:]
    emit(f"\n## eval: AIS bracket ({args.chains} chains, {args.levels} sigmoid levels, 1 MALA step each; reverse AIS from the "
         f"{len(s['test'])} test digits), IS from {args.pool} q samples ({load_avg()})\n")
    emit("| model | test NLL, IS (ESS) | NLL bracket AIS [fwd, rev] | width | AIS ESS | bits/dim [fwd, rev] | "
         + " | ".join(f"AUROC {k}" for k in ood) + " | eval CPU s |")
    emit("|---|---|---|---|---|---|" + "---|" * len(ood) + "---|")
    for name in args.models:
        t = time.process_time()
        model, saved = load_model(name, s)
        tilted = saved["tilted"]
        c = QCache(saved["q"], model, sets, args.pool)
        f = model.tilt if tilted else model.energy
        with torch.no_grad():
            score = {k: f(v) - (c.log_q[k] if tilted else 0.0) for k, v in sets.items()}  # -log p + log Z
        log_z, ess = nll_is(f, c.pool, tilted, model.noise)
        e_test = float(score["test"].mean())
        g = torch.Generator().manual_seed(7)
        if saved["q"].startswith("flow_") and tilted:  # anneal in the flow's base space: no log q needed
            n = args.flow_chains
            br = log_partition_ais_flow(model.tilt, model.noise, n, args.flow_levels, x_target=s["test"][:n], step_size=0.05, generator=g)
        else:
            br = log_partition_ais(model.energy, model.noise, args.chains, args.levels, x_target=s["test"], step_size=args.step_size, generator=g)
        lo, up = e_test + float(br.lower), e_test + float(br.upper)
        cells = [f"{float(auroc(score['test'], score[k])):.3f}" for k in ood]
        emit(f"| {name} | {e_test + log_z:.2f} ({ess:.0f}) | [{lo:.2f}, {up:.2f}] | {up - lo:.2f} | {float(br.ess):.0f} | "
             f"[{bits_per_dim(lo):.3f}, {bits_per_dim(up):.3f}] | " + " | ".join(cells) + f" | {time.process_time() - t:.0f} |")


def mmd2(a: torch.Tensor, b: torch.Tensor, bandwidth: float) -> float:
    """Unbiased MMD^2 with the RBF kernel exp(-|x - y|^2 / (2 h^2))."""
    def k(x, y):
        return torch.exp(-torch.cdist(x.double(), y.double()).pow(2) / (2 * bandwidth**2))

    kaa, kbb, kab = k(a, a), k(b, b), k(a, b)
    n, m = len(a), len(b)
    return float((kaa.sum() - kaa.diagonal().sum()) / (n * (n - 1)) + (kbb.sum() - kbb.diagonal().sum()) / (m * (m - 1)) - 2 * kab.mean())


def stage_samples(args) -> None:
    """MALA samples of a tilted model from q, a png, and sample quality (classifier confidence, MMD to test digits)."""
    from sklearn.svm import SVC

    from probgen.data.digits import load_digits_tensors
    from probgen.samplers import langevin

    dm, s = load_splits()
    sets = eval_sets(s)
    model, saved = load_model(args.models[0], s)
    c = QCache(saved["q"], model, sets, args.pool)
    # classifier on real dequantised training digits of classes 0-7 (labels from the same split)
    pixels, labels = load_digits_tensors()
    keep = labels < 8
    gsplit = torch.Generator().manual_seed(0)
    xd = (pixels[keep] + torch.rand(pixels[keep].shape, generator=gsplit)) / NUM_LEVELS
    yd = labels[keep]
    perm = torch.randperm(len(xd), generator=torch.Generator().manual_seed(1))
    ntr = int(0.7 * len(xd))
    clf = SVC(C=10.0, gamma="scale", probability=True, random_state=0).fit(xd[perm[:ntr]].numpy(), yd[perm[:ntr]].numpy())
    real_conf = clf.predict_proba(xd[perm[ntr:]].numpy()).max(1)
    real_acc = float((clf.predict(xd[perm[ntr:]].numpy()) == yd[perm[ntr:]].numpy()).mean())
    n = args.num_samples
    x0 = c.pool[-n:]
    t = time.process_time()
    h = args.step_size
    for trial in (1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6):  # pilot: the largest step with MALA acceptance >= 0.5
        pilot = langevin(model.energy, x0[:100], 30, trial, method="mala", generator=torch.Generator().manual_seed(2))
        if pilot.mean_acceptance >= 0.5:
            h = trial
            break
    args.step_size = h
    res = langevin(model.energy, x0, args.sample_steps, h, method="mala", generator=torch.Generator().manual_seed(3))
    cpu = time.process_time() - t
    test = s["test"]
    bw = float(torch.cdist(test, test).median())
    emit(f"\n## samples of {args.models[0]}: MALA from q, {args.sample_steps} steps of h = {args.step_size:g}, {n} chains, "
         f"acceptance {res.mean_acceptance:.2f}, {cpu:.0f} CPU s ({load_avg()}); RBF SVM on real digits 0-7: held-out accuracy "
         f"{real_acc:.3f}, mean confidence {real_conf.mean():.3f}\n")
    emit("| samples | mean SVM confidence | fraction with confidence > 0.9 | MMD^2 to test digits (RBF, h = median distance) |")
    emit("|---|---|---|---|")
    train_ref = s["train"][torch.randperm(len(s["train"]), generator=torch.Generator().manual_seed(4))[:n]]
    for label, xs in (("training digits (reference)", train_ref), ("q alone", x0), ("tilted model (MALA)", res.x)):
        conf = clf.predict_proba(xs.clamp(0, 1).numpy()).max(1)
        emit(f"| {label} | {conf.mean():.3f} | {(conf > 0.9).mean():.3f} | {mmd2(xs, test, bw):.4f} |")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(7, 3.8))
    for ax, (label, xs) in zip(axes, (("q alone", x0), ("tilted model, MALA", res.x))):
        canvas = torch.ones(6 * 9, 10 * 9)
        for i in range(60):
            r, col = divmod(i, 10)
            canvas[r * 9 : r * 9 + 8, col * 9 : col * 9 + 8] = xs[i].clamp(0, 1).reshape(8, 8)
        ax.imshow(canvas.numpy(), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(label)
        ax.axis("off")
    fig.tight_layout()
    out = ROOT / "docs" / "assets" / "energy_digits_samples.png"
    fig.savefig(out, dpi=90)
    emit(f"\nsample grid: {out.relative_to(ROOT)}")



def stage_flowcheck(args) -> None:
    """Discretisation and probe error of a flow q's test log q: rk4 steps x Hutchinson probes."""
    from probgen.energy import FlowNoise

    _, s = load_splits()
    x = s["test"]
    emit(f"\n## {args.q[0]}: test NLL of q alone by solver steps and probes ({load_avg()})\n")
    emit("| rk4 steps | probes | test NLL nats | bits/dim | CPU s |")
    emit("|---|---|---|---|---|")
    for steps, probes in ((10, 2), (20, 2), (40, 2), (10, 8)):
        q = FlowNoise.from_checkpoint(RESULTS / f"digits_{args.q[0]}.ckpt", steps=steps, solver="rk4", num_probes=probes, chunk_size=256)
        t = time.process_time()
        with torch.no_grad():
            nll = -q.log_prob(x)
        m, se = float(nll.mean()), float(nll.std()) / math.sqrt(len(x))
        emit(f"| {steps} | {probes} | {m:.2f} +- {se:.2f} | {bits_per_dim(m):.3f} | {time.process_time() - t:.0f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stage", choices=["flow", "q", "train", "eval", "samples", "flowcheck"])
    p.add_argument("--network", default="unet", choices=list(FLOW_NETS))
    p.add_argument("--cpu-seconds", type=float, default=180.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--q", nargs="+", default=["mixture"])
    p.add_argument("--objectives", nargs="+", default=["compositional", "nce"])
    p.add_argument("--untilted", action="store_true")
    p.add_argument("--iters", type=int, default=1500)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--pool", type=int, default=20000)
    p.add_argument("--val-pool", type=int, default=5000)
    p.add_argument("--train-pool", type=int, default=10000)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--tag", default="")
    p.add_argument("--models", nargs="+", default=["mixture_compositional"])
    p.add_argument("--chains", type=int, default=500)
    p.add_argument("--levels", type=int, default=500)
    p.add_argument("--step-size", type=float, default=1e-5)
    p.add_argument("--flow-chains", type=int, default=64)
    p.add_argument("--flow-levels", type=int, default=50)
    p.add_argument("--num-samples", type=int, default=500)
    p.add_argument("--sample-steps", type=int, default=1000)
    args = p.parse_args()
    torch.set_num_threads(1)
    {"flow": stage_flow, "q": stage_q, "train": stage_train, "eval": stage_eval, "samples": stage_samples, "flowcheck": stage_flowcheck}[args.stage](args)


if __name__ == "__main__":
    main()
