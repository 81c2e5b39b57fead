"""UCI regression with NNGP, Student-t (inverse gamma) and Burr XII scale mixtures (Lee et al. 2022, Table 1).

Protocol (the authors' ``regression.py`` / ``reg.sh``): inputs and targets standardised on the
training part; 80/10/10 train/validation/test (here: the standard 90/10 split files, with 1/9 of
the training rows held out for validation); for every split, every kernel configuration of the
paper's grid and every noise level, the Gaussian NNGP (readout variance 1 or 4), the inverse-gamma
prior (alpha, beta in {0.5, 1, 1.5, 2, 4, 8}) and the Burr XII prior (c, d in {1, 2, 3}) are fitted
and the configuration with the lowest validation NLL is scored on the test part: test NLL per
point on standardised targets, mean +- std over splits.

Differences from the authors' code, on purpose: the predictive is that of y (observation noise
included) rather than of f; the Burr XII posterior over sigma^2 is integrated by Gauss-Legendre
quadrature in log sigma^2 instead of 1,000 importance samples; the noise is
eps * mean(diag K) with eps = 10^(-6 + e/2), e = 5..9 (neural-tangents' relative ``diag_reg``),
and scales with sigma^2 for the mixtures (conjugate).

One kernel matrix per configuration on train+val+test rows is computed once; every fit reuses
it (:class:`PrecomputedKernel`), and one Cholesky factor per (kernel, noise) serves all 47 prior
settings through ``share_fit`` / ``predict_from_base``.

Usage::

    python benchmarks/nngp_uci.py --splits 20 --datasets boston concrete energy yacht wine-red
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import time

import numpy as np
import torch
from gpytorch.kernels import Kernel

from probgen.data.uci import load_uci
from probgen.exceptions import ProbgenNumericalError
from probgen.nngp import BurrXII, GaussianProcess, NNGPKernel, ScaleMixtureGP, StudentTProcess
from probgen.nngp.fitting import PAPER_GRID

PAPER = {  # test NLL, NNGP / inverse gamma / Burr XII (Lee et al. 2022, Table 1)
    "boston": (1.14, 1.08, 1.06),
    "concrete": (0.44, 0.44, 0.38),
    "energy": (-1.30, -1.45, -1.41),
    "yacht": (-1.35, -1.38, -1.36),
    "wine-red": (0.16, 0.15, 0.19),
}
D = torch.float64


class PrecomputedKernel(Kernel):
    """Looks up a fixed kernel matrix: inputs are row indices ``(n, 1)`` into it."""

    has_lengthscale = False

    def __init__(self, matrix: torch.Tensor) -> None:
        super().__init__()
        self.matrix = matrix

    def forward(self, x1, x2, diag=False, **params):
        i, j = x1[..., 0].long(), x2[..., 0].long()
        if diag:
            return self.matrix[i, j]
        return self.matrix[i][:, j]


def search(x: torch.Tensor, n_tr: int, n_va: int, y_tr, y_va, y_te, grid: dict, observed: bool = True,
           test_mask: torch.Tensor | None = None) -> dict[str, tuple[float, float, dict, float]]:
    """The paper's model selection on one train/validation/test partition of the rows of ``x``.

    ``x`` holds the train, validation and test rows in that order (standardised). Returns, per
    model, ``(validation NLL, test NLL, chosen configuration, test NLL on the rows of test_mask)``.
    """
    idx = torch.arange(len(x), dtype=D)[:, None]
    i_tr, i_va, i_te = idx[:n_tr], idx[n_tr : n_tr + n_va], idx[n_tr + n_va :]
    best = {m: (math.inf, math.nan, {}, math.nan) for m in ("nngp", "invgamma", "burr12")}

    def test_nll(dist):
        lp = dist.log_prob(y_te)
        return -lp.mean().item(), (-lp[test_mask].mean().item() if test_mask is not None else math.nan)

    burr = {(c, dd): BurrXII(torch.tensor(c, dtype=D), torch.tensor(dd, dtype=D))
            for c, dd in itertools.product(grid["burr_c"], grid["burr_d"])}
    ab = torch.tensor(list(itertools.product(grid["alpha"], grid["beta"])), dtype=D)
    a_grid, b_grid = ab[:, 0], ab[:, 1]
    for depth, wv, bv, act in itertools.product(grid["depth"], grid["weight_var"], grid["bias_var"],
                                                grid["activation"]):
        # the paper's network: hidden layers (wv, bv), readout weight variance 1 and no bias
        kernel = NNGPKernel(depth, act, weight_var=[wv] * depth + [1.0], bias_var=[bv] * depth + [0.0]).double()
        with torch.no_grad():
            K = kernel(x).to_dense()
        pk = PrecomputedKernel(K)
        mean_diag = K.diagonal()[:n_tr].mean().item()
        for eps in grid["noise"]:
            cfg = dict(depth=depth, weight_var=wv, bias_var=bv, activation=act, eps=eps)
            with torch.no_grad():
                try:
                    sm = ScaleMixtureGP(pk, next(iter(burr.values())),
                                        noise=eps * mean_diag).fit(i_tr, y_tr)
                except ProbgenNumericalError:
                    continue
                val, test = sm.base_predict(i_va), sm.base_predict(i_te)
                for lv in grid["readout_var"]:
                    gp = GaussianProcess(pk, scale=lv, noise=eps * mean_diag).share_fit(sm)
                    score = -gp.predict_from_base(val, observed=observed).log_prob(y_va).mean().item()
                    if score < best["nngp"][0]:
                        nll, sub = test_nll(gp.predict_from_base(test, observed=observed))
                        best["nngp"] = (score, nll, {**cfg, "readout_var": lv}, sub)
                tp = StudentTProcess(pk, noise=eps * mean_diag).share_fit(sm)
                scores = -tp.predict_from_base(val, observed, alpha=a_grid, beta=b_grid).log_prob(y_va).mean(-1)
                k = int(scores.argmin())
                if scores[k].item() < best["invgamma"][0]:
                    a, b = a_grid[k].item(), b_grid[k].item()
                    nll, sub = test_nll(tp.predict_from_base(test, observed, alpha=a, beta=b))
                    best["invgamma"] = (scores[k].item(), nll, {**cfg, "alpha": a, "beta": b}, sub)
                for (c, dd), prior in burr.items():
                    post = sm.scale_posterior(prior)
                    score = -sm.predict_from_base(val, observed, posterior=post).log_prob(y_va).mean().item()
                    if score < best["burr12"][0]:
                        nll, sub = test_nll(sm.predict_from_base(test, observed, posterior=post))
                        best["burr12"] = (score, nll, {**cfg, "c": c, "d": dd}, sub)
    return best


def duplicate_rows(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
                   y_test: torch.Tensor) -> torch.Tensor:
    """``(m,)`` bool: test rows whose inputs and target equal a training row exactly."""
    train = torch.cat([x_train, y_train.reshape(len(y_train), -1)], 1)
    test = torch.cat([x_test, y_test.reshape(len(y_test), -1)], 1)
    return (test[:, None, :] == train[None, :, :]).all(-1).any(-1)


def run_split(dataset: str, split: int, grid: dict, root, observed: bool = True):
    d = load_uci(root, dataset, split, val_fraction=1.0 / 9.0, dtype=D, seed=split)
    x = torch.cat([d["x_train"], d["x_val"], d["x_test"]])
    y_tr, y_va, y_te = d["y_train"][:, 0], d["y_val"][:, 0], d["y_test"][:, 0]
    dup = duplicate_rows(torch.cat([d["x_train"], d["x_val"]]), torch.cat([y_tr, y_va]), d["x_test"], y_te)
    best = search(x, len(y_tr), len(y_va), y_tr, y_va, y_te, grid, observed, test_mask=~dup)
    return best, int(dup.sum())


def _standardise(x: np.ndarray, y: np.ndarray, rows: list[np.ndarray]):
    """Standardise with the first part's mean and std (numpy's, as ``load_uci``); rows concatenated."""
    x_mean, x_std = x[rows[0]].mean(0), x[rows[0]].std(0)
    x_std[x_std == 0] = 1.0
    y_mean, y_std = y[rows[0]].mean(), y[rows[0]].std()
    cat = np.concatenate(rows)
    return (torch.as_tensor((x[cat] - x_mean) / x_std, dtype=D),
            torch.as_tensor((y[cat] - y_mean) / y_std, dtype=D))


def paper_split_boston(root, grid: dict, observed: bool, reshuffles: int = 10) -> dict:
    """The authors' boston protocol (Lee et al. 2022, their ``regression.py``).

    Rows in scikit-learn's order (that of ``housing.data``, the same as the UCI ``data.txt``),
    permuted by ``np.random.RandomState(10)``: the first 404 train, the next 50 validation, the
    last 52 test. Hyperparameters are chosen once, by validation NLL on that partition; then the
    454 train+validation rows are reshuffled 10 times (``RandomState(r)``, r = 0..9; the test rows
    stay), every model is refitted with its chosen configuration on each reshuffle's 404 training
    rows (standardised on them) and scored on the 52 test rows. Returns the mean and std of the
    10 test NLLs per model and the chosen configurations.
    """
    root = root or os.environ.get("PROBGEN_UCI_ROOT") or os.path.join("..", "shared", "data", "uci")
    data = np.loadtxt(os.path.join(root, "bostonHousing", "data.txt"))
    x_raw, y_raw = data[:, :-1], data[:, -1]
    perm = np.random.RandomState(10).permutation(len(data))
    pool, test = perm[:454], perm[454:]
    x, y = _standardise(x_raw, y_raw, [pool[:404], pool[404:], test])
    chosen = search(x, 404, 50, y[:404], y[404:454], y[454:], grid, observed)
    nlls = {m: [] for m in chosen}
    for r in range(reshuffles):
        p = pool[np.random.RandomState(r).permutation(len(pool))]
        x, y = _standardise(x_raw, y_raw, [p[:404], p[404:], test])
        for m, (_, _, cfg, _) in chosen.items():
            one = {**grid, "depth": [cfg["depth"]], "weight_var": [cfg["weight_var"]],
                   "bias_var": [cfg["bias_var"]], "activation": [cfg["activation"]], "noise": [cfg["eps"]]}
            for key, name in (("readout_var", "readout_var"), ("alpha", "alpha"), ("beta", "beta"),
                              ("burr_c", "c"), ("burr_d", "d")):
                if name in cfg:
                    one[key] = [cfg[name]]
            nlls[m].append(search(x, 404, 50, y[:404], y[404:454], y[454:], one, observed)[m][1])
    return {m: (float(np.mean(v)), float(np.std(v)), chosen[m][2], v) for m, v in nlls.items()}


def summarize(rows: list[dict]) -> None:
    """Print the markdown table from per-split result rows (the first row per dataset and split counts)."""
    rows = list({(r["dataset"], r["split"]): r for r in reversed(rows)}.values())
    print("\n| dataset | splits | NNGP (ours) | NNGP (paper) | inverse gamma (ours) | IG (paper) "
          "| Burr XII (ours) | Burr (paper) |")
    print("|---|---|---|---|---|---|---|---|")
    for ds in PAPER:
        mine = [r for r in rows if r["dataset"] == ds]
        if not mine:
            continue
        cells = []
        for k, m in enumerate(("nngp", "invgamma", "burr12")):
            v = torch.tensor([r[m] for r in mine])
            std = v.std().item() if len(v) > 1 else float("nan")
            cells += [f"{v.mean().item():.2f} ± {std:.2f}", f"{PAPER[ds][k]:.2f}"]
        print(f"| {ds} | {len(mine)} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(PAPER))
    parser.add_argument("--splits", type=int, default=20)
    parser.add_argument("--first-split", type=int, default=0)
    parser.add_argument("--split-ids", type=int, nargs="+", default=None,
                        help="run exactly these splits (overrides --splits/--first-split)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--root", default=None, help="UCI folder (default $PROBGEN_UCI_ROOT or ../shared/data/uci)")
    parser.add_argument("--small-grid", action="store_true", help="depth {1, 4}, 3 noise levels")
    parser.add_argument("--latent", action="store_true",
                        help="score y under the predictive of f (no noise), as the authors' code does")
    parser.add_argument("--out", default=None, help="append one JSON line per (dataset, split) here")
    parser.add_argument("--paper-split", action="store_true",
                        help="boston only: the authors' single RandomState(10) split, one hyperparameter "
                             "choice, 10 train/validation reshuffles (paper_split_boston)")
    parser.add_argument("--extended-noise", action="store_true",
                        help="add noise levels 0.1, 0.316 and 1 (x mean diag K) to the paper's 3e-5..3e-2")
    parser.add_argument("--summarize", default=None, help="only print the table from a --out file")
    args = parser.parse_args()
    if args.summarize:
        with open(args.summarize) as f:
            summarize([json.loads(line) for line in f if line.strip()])
        return
    grid = dict(PAPER_GRID)
    if args.small_grid:
        grid.update(depth=[1, 4], noise=[10.0 ** (-6 + e / 2) for e in (5, 7, 9)])
    if args.extended_noise:
        grid["noise"] = list(grid["noise"]) + [10.0 ** (-6 + e / 2) for e in (10, 11, 12)]
    torch.distributions.Distribution.set_default_validate_args(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.paper_split:
        t0 = time.process_time()
        out = paper_split_boston(args.root, grid, observed=not args.latent)
        scored = "y" if not args.latent else "f"
        for m, (mean, std, cfg, values) in out.items():
            paper = PAPER["boston"][("nngp", "invgamma", "burr12").index(m)]
            print(f"boston paper split, scored on {scored}: {m} {mean:.3f} ± {std:.3f} (paper {paper:.2f}); "
                  f"chosen {cfg}; per reshuffle " + " ".join(f"{v:.2f}" for v in values))
        print(f"CPU time {time.process_time() - t0:.0f} s")
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps({"dataset": "boston", "protocol": "paper-split", "scored_on": scored,
                                    **{m: out[m][0] for m in out}, "std": {m: out[m][1] for m in out},
                                    "chosen": {m: out[m][2] for m in out},
                                    "extended_noise": args.extended_noise}) + "\n")
        return
    rows = []
    # splits outermost: an interrupted run still covers every dataset equally
    splits = args.split_ids or range(args.first_split, args.first_split + args.splits)
    done = set()
    if args.out and os.path.exists(args.out):  # resume: skip what the --out file already holds
        with open(args.out) as f:
            done = {(r["dataset"], r["split"]) for r in map(json.loads, filter(str.strip, f))}
    for split in splits:
        for ds in args.datasets:
            if (ds, split) in done:
                continue
            t0 = time.perf_counter()
            best, n_dup = run_split(ds, split, grid, args.root, observed=not args.latent)
            row = {"dataset": ds, "split": split, **{m: best[m][1] for m in best},
                   "dedup": {m: best[m][3] for m in best}, "test_duplicates": n_dup,
                   "chosen": {m: best[m][2] for m in best}, "seconds": time.perf_counter() - t0,
                   "extended_noise": args.extended_noise, "scored_on": "f" if args.latent else "y"}
            rows.append(row)
            print(f"{ds} split {split}: " + "  ".join(f"{m} {best[m][1]:.3f}" for m in best)
                  + f"  | without the {n_dup} test rows that duplicate a training row: "
                  + "  ".join(f"{m} {best[m][3]:.3f}" for m in best)
                  + f"  ({row['seconds']:.0f} s)", flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
    summarize(rows)


if __name__ == "__main__":
    main()
