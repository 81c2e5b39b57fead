"""Class-conditional interpolants on sklearn's 8x8 digits: MLP vs U-Net at equal CPU time.

Trains ``StochasticInterpolant`` (one-sided linear path, velocity objective, class labels
dropped with probability 0.1 for classifier-free guidance) with a ``TimeMLP`` and with the
``UNet`` of ``models/interpolants/digits_conditional.yaml``, each for the same budget of
process CPU time on one thread (constant lr 1e-3, batch 128, EMA 0.999), then prints:

1. bits/dim on held-out test digits under uniform dequantisation on the 17-level grid
   (x = (pixel + u) / 17, centred to [-1, 1]; bpd_scale = 2/17), conditional (w = 1) and
   unconditional (w = 0), RK4 probability-flow ODE with Hutchinson divergence;
2. for guidance w in {0, 1, 3}: the accuracy of an RBF SVM trained on real (dequantised)
   training digits, applied to 50 samples per class (for w = 0 the label is ignored by the
   model, so ~10% is chance);
3. a sample grid (rows: classes 0-9; column blocks: w = 0, 1, 3) written to
   ``docs/assets/digits_conditional_samples.png``.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/interpolants_digits_conditional.py --cpu-minutes 3
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from pathlib import Path

import torch

from probgen.data import DigitsDataModule
from probgen.interpolants import StochasticInterpolant
from probgen.interpolants.likelihood import bits_per_dim

ROOT = Path(__file__).resolve().parents[1]
COMMON = dict(dim=64, num_classes=10, cond_drop_prob=0.1, path="one_sided_linear", gamma="zero", objective="velocity",
              ema_decay=0.999, lr=1e-3, lr_schedule="constant", sample_steps=20, nll_steps=10, nll_divergence="hutchinson",
              nll_num_probes=2, val_nll_samples=64, bpd_scale=2 / 17, plot_every_n_val=0)
MODELS = {
    "mlp": dict(network="mlp", hidden_dims=[512, 512, 512], time_frequencies=8),
    "unet": dict(network="unet", image_shape=[1, 8, 8], unet_channels=16, unet_channel_mults=[1, 2], unet_attention_resolutions=[4]),
}


def train(model: StochasticInterpolant, x: torch.Tensor, y: torch.Tensor, cpu_seconds: float, seed: int) -> tuple[int, float]:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.net.parameters(), lr=model.hparams.lr)
    start, steps = time.process_time(), 0
    while time.process_time() - start < cpu_seconds:
        idx = torch.randint(0, len(x), (128,), generator=g)
        loss, _ = model._loss(x[idx], model.net, generator=g, cond=y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
        with torch.no_grad():
            decay = min(model.hparams.ema_decay, (1 + steps) / (10 + steps))
            torch._foreach_lerp_(list(model.ema_net.parameters()), [p.detach() for p in model.net.parameters()], 1 - decay)
    return steps, time.process_time() - start


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--cpu-minutes", type=float, default=3.0)
    p.add_argument("--nll-points", type=int, default=120)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    dm = DigitsDataModule(task="conditional_generation", dequantize=True, centered=True, seed=args.seed)
    dm.setup()
    (xtr, ytr), (xte, yte) = dm.splits["train"], dm.splits["test"]
    from sklearn.svm import SVC

    clf = SVC(C=10.0, gamma="scale").fit(dm.to_unit(xtr).numpy(), ytr.numpy())
    real_acc = float((torch.as_tensor(clf.predict(dm.to_unit(xte).numpy())) == yte).double().mean())
    print(f"RBF SVM on real dequantised digits: test accuracy {real_acc:.3f} ({len(xte)} test digits)\n")
    labels = torch.arange(10).repeat_interleave(50)
    rows, grids = [], {}
    for name, kw in MODELS.items():
        model = StochasticInterpolant(**COMMON, **kw)
        n_params = sum(q.numel() for q in model.net.parameters())
        steps, cpu = train(model, xtr, ytr, 60 * args.cpu_minutes, args.seed)
        model.eval()
        t0 = time.process_time()
        xs, ys = xte[: args.nll_points], yte[: args.nll_points]
        nll_c = model.nll(xs, generator=torch.Generator().manual_seed(2), cond=ys)
        nll_u = model.nll(xs, generator=torch.Generator().manual_seed(2), cond=None)
        bpd_c, bpd_u = bits_per_dim(-nll_c, 64, 2 / 17), bits_per_dim(-nll_u, 64, 2 / 17)
        se = lambda v: float(v.std()) / math.sqrt(len(v))  # noqa: E731
        accs = {}
        for w in (0.0, 1.0, 3.0):
            s = model.sample(len(labels), generator=torch.Generator().manual_seed(3), cond=labels, guidance=w)
            pred = torch.as_tensor(clf.predict(dm.to_unit(s).clamp(0, 1).numpy()))
            accs[w] = float((pred == labels).double().mean())
            grids[(name, w)] = dm.to_unit(s).clamp(0, 1).reshape(10, 50, 8, 8)[:, :6]
        eval_cpu = time.process_time() - t0
        rows.append((name, n_params, steps, cpu, float(bpd_c.mean()), se(bpd_c), float(bpd_u.mean()), se(bpd_u), accs, eval_cpu))
    print("| network | parameters | steps in budget | train CPU s | bits/dim, w = 1 | bits/dim, w = 0 | accuracy w = 0 | w = 1 | w = 3 | eval CPU s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, n_params, steps, cpu, bc, sc, bu, su, accs, ecpu in rows:
        print(f"| {name} | {n_params:,} | {steps} | {cpu:.0f} | {bc:.3f} +- {sc:.3f} | {bu:.3f} +- {su:.3f} | "
              f"{accs[0.0]:.3f} | {accs[1.0]:.3f} | {accs[3.0]:.3f} | {ecpu:.0f} |")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(MODELS), 3, figsize=(9, 3.3 * len(MODELS)), squeeze=False)
    for i, name in enumerate(MODELS):
        for j, w in enumerate((0.0, 1.0, 3.0)):
            imgs = grids[(name, w)]  # (10, 6, 8, 8)
            canvas = torch.ones(10 * 9, 6 * 9)
            for r in range(10):
                for c in range(6):
                    canvas[r * 9 : r * 9 + 8, c * 9 : c * 9 + 8] = imgs[r, c]
            axes[i, j].imshow(canvas.numpy(), cmap="gray_r")
            axes[i, j].set_title(f"{name}, w = {w:g}")
            axes[i, j].axis("off")
    fig.tight_layout()
    out = ROOT / "docs" / "assets" / "digits_conditional_samples.png"
    fig.savefig(out, dpi=110)
    print(f"\nsample grid: {out.relative_to(ROOT)} (rows: classes 0-9)")


if __name__ == "__main__":
    main()
