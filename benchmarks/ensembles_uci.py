"""UCI regression: the default SGLD-ensemble config vs a deep ensemble at the same budget.

The SGLD ensemble is exactly ``models/ensembles/uci_regression.yaml`` (its ``model.init_args``
and batch size are read from the file, with the same rules as ``SGLDEnsemble``: step size
h = ``step_scale`` / N, run length ``run_length(N, B, num_epochs, min_steps)``, burn-in and
warm start as fractions of the run). The deep ensemble (Lakshminarayanan et al. 2017, without
adversarial training) runs the same number of networks, updates and minibatches: heteroscedastic
networks trained by RMSprop (pSGLD at temperature 0, RMSprop learning rate 1e-3 = h N),
the Gaussian prior acting as weight decay, keeping the last iterate.

One hidden layer of 50 ReLU units; the data are the split's training rows (no validation
hold-out: no early stopping or tuning uses it). Test NLL and RMSE on the original target scale,
mean +- standard error over the splits run, next to the published deep-ensemble NLL. For
wine-red, also the NLL on the test rows whose inputs do not appear among the training inputs.
Every split's result is appended to ``--out`` (JSON lines) as soon as it is done.

    python benchmarks/ensembles_uci.py --splits 20 [--datasets boston yacht] [--methods default]
    python benchmarks/ensembles_uci.py --splits 20 --stack-splits --out results.jsonl   # 20 splits as one run

``--stack-splits`` runs all splits of a data set as one ensemble of splits x K vmapped chains,
each split's group seeing only its own training rows (``run_stacked``); per-split results go
to the same file, with ``wall`` = the run's wall time / number of splits.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import yaml

from probgen.data.uci import load_uci
from probgen.ensembles import (
    BayesianEnsemble,
    GaussianLikelihood,
    SamplingSchedule,
    make_prior,
    mlp,
    run_length,
    stack_ensembles,
    steps_of,
)
from probgen.ensembles.predictive import mixture_moments, mixture_nll

PUBLISHED_DE_NLL = {"boston": 2.41, "concrete": 3.06, "energy": 1.38, "yacht": 1.18, "wine-red": 0.94}
METHODS = ("default", "deep ensemble", "sgld", "cyclical sgld")
CONFIG = Path(__file__).resolve().parents[1] / "models" / "ensembles" / "uci_regression.yaml"


def load_config(path: Path = CONFIG) -> tuple[dict, int]:
    cfg = yaml.safe_load(path.read_text())
    return cfg["model"]["init_args"], int(cfg["data"]["init_args"]["batch_size"])


def ensemble_for(method: str, n: int, p: int, split: int, hp: dict, batch_size: int, seed: int = 0,
                 likelihood_kwargs: dict | None = None):
    r"""``(ensemble, schedule, sampler kwargs, steps)`` of one split's run of ``method``.

    ``"default"``: the YAML. ``"deep ensemble"``: ``num_chains`` heteroscedastic networks at
    temperature 0 (RMSprop, learning rate 1e-3), last iterate. ``"sgld"``: one chain of plain
    SGLD at the constant step $hN$ = ``step_scale``; ``"cyclical sgld"``: one chain of plain
    SGLD on the YAML's cyclical schedule from $h_0 N$ = ``step_scale`` (cSGLD, Zhang et al. 2020).
    (A 6,000-step pilot scored on the training rows of boston and yacht splits 0-1, no test row:
    $hN = 10^{-2}$ made cyclical SGLD diverge on yacht, $10^{-3}$ underfit; $3\cdot10^{-3}$,
    the YAML's, was kept.)
    Both single chains keep up to ``num_chains * store_size`` samples (every draw their run offers).
    Everything not named here (likelihood, warm start, prior, run length, burn-in, thinning) is the YAML's;
    ``likelihood_kwargs`` are passed on to ``GaussianLikelihood`` (e.g. the warm-start objective).
    """
    steps = run_length(n, batch_size, hp["num_epochs"], hp["min_steps"])
    deep, single = method == "deep ensemble", method in ("sgld", "cyclical sgld")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    noise = "heteroscedastic" if deep else hp["noise"]
    lik = GaussianLikelihood(noise, scale=hp.get("noise_scale", 1.0), **(likelihood_kwargs or {}))
    torch.manual_seed(seed + split)
    prior = make_prior(hp.get("prior", "gaussian"), hp.get("prior_scale", 1.0))
    store = 1 if deep else hp["store_size"] * (hp["num_chains"] if single else 1)
    ens = BayesianEnsemble(mlp(p, lik.output_dim(1), hp.get("hidden_dims", [50])), lik, prior,
                           num_chains=1 if single else hp["num_chains"], num_data=n,
                           store_size=store, store_policy="last" if deep else "reservoir", seed=seed + split)
    if deep:
        lr = 1e-3 / n
        schedule = SamplingSchedule(lr=lr, schedule="constant", burn_in=steps - 1, thin=1, total_steps=steps)
        return ens, schedule, {"method": "psgld", "lr": lr, "temperature": 0.0}, steps
    lr = hp["step_scale"] / n
    kind = {"sgld": "constant", "cyclical sgld": "cyclical"}.get(method, hp["schedule"])
    schedule = SamplingSchedule(
        lr=lr, schedule=kind, burn_in=steps_of("burn_in", hp["burn_in"], steps), thin=hp["thin"], total_steps=steps,
        num_cycles=hp["num_cycles"], exploration_fraction=hp["exploration_fraction"],
        warm_start=steps_of("warm_start", hp.get("warm_start", 0), steps),
    )
    return ens, schedule, {"method": "sgld" if single else hp["sampler"], "lr": lr,
                           "temperature": hp.get("temperature", 1.0)}, steps


def score(ens: BayesianEnsemble, d: dict, chains=None) -> dict:
    """Test NLL and RMSE (original target scale) of ``chains``' mixture on split ``d``'s test rows,
    and the NLL on the test rows whose inputs are not exact copies of a training input."""
    x, xt, yt, y_std = d["x_train"], d["x_test"], d["y_test"], float(d["y_std"])
    means, variances = ens.per_sample_predictions(xt, chains=chains)
    nll_rows = mixture_nll(means, variances, yt) + math.log(y_std)
    rmse = float((mixture_moments(means, variances)[0] - yt).square().mean().sqrt()) * y_std
    fresh = ~(torch.cdist(xt, x) < 1e-6).any(1)  # wine-red has many duplicated inputs
    # calibration: mean squared standardised error under the mixture's moments (> 1: too narrow,
    # < 1: too wide), and the share of the predictive variance that is the noise heads' own
    mean, var = mixture_moments(means, variances)
    z2 = float(((yt - mean).square() / var).mean())
    aleatoric = float(variances.mean(0).mean() / var.mean())
    return {"nll": float(nll_rows.mean()), "rmse": rmse, "z2": z2, "aleatoric_share": aleatoric,
            "nll_fresh": float(nll_rows[fresh].mean()) if fresh.any() else float("nan"),
            "n_fresh": int(fresh.sum()), "n_test": len(xt), "samples": int(means.shape[0])}


def run(dataset: str, split: int, method: str, hp: dict, batch_size: int, seed: int = 0,
        time_steps: int | None = None, likelihood_kwargs: dict | None = None) -> dict:
    """One split, one ensemble (the unstacked protocol). ``time_steps``: stop after that many
    updates and return only the wall time per update (``ms_per_step``), for timing."""
    d = load_uci(None, dataset, split)
    x, y = d["x_train"], d["y_train"]
    n, p = x.shape
    ens, schedule, kw, steps = ensemble_for(method, n, p, split, hp, batch_size, seed, likelihood_kwargs)
    sampler = ens.make_sampler(seed=seed + split, **kw)
    g = torch.Generator().manual_seed(seed + split)
    perm, pos = torch.randperm(n, generator=g), 0
    t0 = time.perf_counter()
    for _ in range(steps if time_steps is None else time_steps):
        if pos + batch_size > n:
            perm, pos = torch.randperm(n, generator=g), 0
        idx = perm[pos : pos + batch_size]
        pos += batch_size
        ens.train_step(x[idx], y[idx], sampler, schedule)
    wall = time.perf_counter() - t0
    if time_steps is not None:
        return {"ms_per_step": 1e3 * wall / time_steps, "chains": ens.num_chains}
    return {"dataset": dataset, "split": split, "method": method, **score(ens, d), "steps": steps, "wall": wall}


def run_stacked(dataset: str, splits: list[int], method: str, hp: dict, batch_size: int, seed: int = 0,
                time_steps: int | None = None, seeds: list[int] | None = None) -> list[dict]:
    """All ``splits`` of ``dataset`` as one vmapped ensemble of ``len(splits) x K`` chains.

    Split ``r``'s group of ``K`` chains starts where its unstacked run starts (same seed), sees
    only split ``r``'s training rows, in the same minibatch order as the unstacked run
    (``per_chain=True`` minibatches), with the same schedule and $h$ = step_scale / N (the
    splits of a UCI set have the same N); it is scored on its own test rows. The sampler noise
    is drawn for all chains at once, so the chains differ from the unstacked ones by seed noise.
    ``wall`` is the run's wall time / ``len(splits)``. ``time_steps``: as for :func:`run`.
    ``seeds``: each group's seed (default ``seed``; the group of split ``s`` uses ``seeds[i] + s``
    for its initialisation and minibatch order): the same split repeated with other seeds gives
    independent replicate runs of it, i.e. the seed noise of one split's result.
    """
    seeds = [seed] * len(splits) if seeds is None else seeds
    data = [load_uci(None, dataset, s) for s in splits]
    n, p = data[0]["x_train"].shape
    built = [ensemble_for(method, len(d["x_train"]), p, s, hp, batch_size, sd) for s, d, sd in zip(splits, data, seeds)]
    ens = stack_ensembles([b[0] for b in built])  # ValueError if the splits' N differ
    schedule, kw, steps = built[0][1], built[0][2], built[0][3]
    k = built[0][0].num_chains
    sampler = ens.make_sampler(seed=seeds[0] + splits[0], **kw)
    x = torch.stack([d["x_train"] for d in data])  # (R, N, p)
    y = torch.stack([d["y_train"] for d in data])  # (R, N, 1)
    r = len(splits)
    rows = torch.arange(r)[:, None]
    gens = [torch.Generator().manual_seed(sd + s) for s, sd in zip(splits, seeds)]
    perm, pos = torch.stack([torch.randperm(n, generator=g) for g in gens]), 0
    t0 = time.perf_counter()
    for _ in range(steps if time_steps is None else time_steps):
        if pos + batch_size > n:
            perm, pos = torch.stack([torch.randperm(n, generator=g) for g in gens]), 0
        idx = perm[:, pos : pos + batch_size]  # (R, B): each split's own minibatch
        pos += batch_size
        xb = x[rows, idx].unsqueeze(1).expand(r, k, batch_size, p).reshape(r * k, batch_size, p)
        yb = y[rows, idx].unsqueeze(1).expand(r, k, batch_size, 1).reshape(r * k, batch_size, 1)
        ens.train_step(xb, yb, sampler, schedule, per_chain=True)
    wall = time.perf_counter() - t0
    if time_steps is not None:
        return [{"ms_per_step": 1e3 * wall / time_steps, "chains": ens.num_chains}]
    return [{"dataset": dataset, "split": s, "method": method, **score(ens, d, chains=range(i * k, (i + 1) * k)),
             "steps": steps, "wall": wall / r, "wall_total": wall, "stacked": r, "seed": sd}
            for i, (s, d, sd) in enumerate(zip(splits, data, seeds))]


def summarise(results: list[dict]) -> None:
    def ms(vals: list[float]) -> str:
        t = torch.tensor(vals, dtype=torch.float64)
        se = float(t.std() / math.sqrt(len(t))) if len(t) > 1 else float("nan")
        return f"{float(t.mean()):.2f} ± {se:.2f}"

    print("\n| dataset | method | test NLL | test RMSE | NLL, unseen test inputs | published DE NLL | steps | s / split "
          "| run | splits |")
    print("|---|---|---|---|---|---|---|---|---|---|")

    def key(r: dict) -> tuple:
        return r["dataset"], r["method"], r.get("stacked", 1)

    order = {m: i for i, m in enumerate(METHODS)}
    keys = sorted({key(r) for r in results}, key=lambda k: (list(PUBLISHED_DE_NLL).index(k[0]), order[k[1]], k[2]))
    for k in keys:
        ds, m, stacked = k
        rs = [r for r in results if key(r) == k]
        fresh = ms([r["nll_fresh"] for r in rs]) if ds == "wine-red" else "-"
        how = f"{stacked} splits stacked" if stacked > 1 else "one split a run"
        print(f"| {ds} | {m} | {ms([r['nll'] for r in rs])} | {ms([r['rmse'] for r in rs])} | {fresh} | "
              f"{PUBLISHED_DE_NLL[ds]:.2f} | {rs[0]['steps']} | {sum(r['wall'] for r in rs) / len(rs):.0f} | {how} "
              f"| {len(rs)} |")
    calibrated = [k for k in keys if all("z2" in r for r in results if key(r) == k)]
    if calibrated:  # runs scored with the calibration columns
        print("\n| dataset | method | mean z^2 (1: calibrated, < 1: too wide) | noise heads' share of the variance | splits |")
        print("|---|---|---|---|---|")
        for k in calibrated:
            rs = [r for r in results if key(r) == k]
            print(f"| {k[0]} | {k[1]} | {ms([r['z2'] for r in rs])} | {ms([r['aleatoric_share'] for r in rs])} | {len(rs)} |")
    # the same split run alone and inside a stack differs only by the sampler's random draws
    pairs = {}
    for r in results:
        pairs.setdefault((r["dataset"], r["method"], r["split"]), {})[r.get("stacked", 1) > 1] = r
    both = [(k, v[False], v[True]) for k, v in pairs.items() if len(v) == 2]
    if both:
        print("\n| dataset | method | split | NLL alone | NLL stacked | RMSE alone | RMSE stacked |")
        print("|---|---|---|---|---|---|---|")
        for (ds, m, sp), a, b in sorted(both, key=lambda t: (list(PUBLISHED_DE_NLL).index(t[0][0]), t[0][1], t[0][2])):
            print(f"| {ds} | {m} | {sp} | {a['nll']:.2f} | {b['nll']:.2f} | {a['rmse']:.2f} | {b['rmse']:.2f} |")
        print(f"\nstacked - alone over {len(both)} pairs: NLL {ms([b['nll'] - a['nll'] for _, a, b in both])}, "
              f"RMSE {ms([b['rmse'] - a['rmse'] for _, a, b in both])}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=list(PUBLISHED_DE_NLL))
    ap.add_argument("--methods", nargs="+", default=["default", "deep ensemble"])
    ap.add_argument("--splits", type=int, default=20)
    ap.add_argument("--first-split", type=int, default=0)
    ap.add_argument("--config", type=Path, default=CONFIG)
    ap.add_argument("--out", type=Path, default=None, help="append each split's result here (JSON lines)")
    ap.add_argument("--summarise", type=Path, default=None, help="only print the table of a results file")
    ap.add_argument("--time-steps", type=int, default=None,
                    help="only time this many updates of one split unstacked against --splits stacked "
                         "(alternating, --time-rounds rounds; medians), per data set and method")
    ap.add_argument("--time-rounds", type=int, default=3)
    ap.add_argument("--replicates", type=int, default=None,
                    help="seed noise: run split --first-split this many times with seeds 0, 1000, ... as one stack")
    ap.add_argument("--stack-splits", action="store_true",
                    help="run all the splits of a data set as one vmapped ensemble (splits x chains)")
    args = ap.parse_args()
    if args.summarise is not None:
        summarise([json.loads(line) for line in args.summarise.read_text().splitlines() if line.strip()])
        return
    torch.set_num_threads(1)
    hp, batch_size = load_config(args.config)
    results = []

    def emit(r: dict) -> None:
        results.append(r)
        print(json.dumps(r), flush=True)
        if args.out is not None:
            with args.out.open("a") as f:
                f.write(json.dumps(r) + "\n")

    splits = list(range(args.first_split, args.first_split + args.splits))
    if args.replicates is not None:
        for ds in args.datasets:
            for m in args.methods:
                for r in run_stacked(ds, [args.first_split] * args.replicates, m, hp, batch_size,
                                     seeds=[1000 * j for j in range(args.replicates)]):
                    emit(r)
        for ds in args.datasets:
            for m in args.methods:
                rs = [r for r in results if r["dataset"] == ds and r["method"] == m]
                nll = torch.tensor([r["nll"] for r in rs])
                print(f"{ds} {m} split {args.first_split}, {len(rs)} seeds: NLL {float(nll.mean()):.3f}, "
                      f"seed sd {float(nll.std()):.3f} (min {float(nll.min()):.3f}, max {float(nll.max()):.3f})")
        return
    if args.time_steps is not None:
        print("| dataset | method | ms / update, 1 split | ms / update, "
              f"{len(splits)} splits stacked | ms / update / split, stacked | speed-up per split |")
        print("|---|---|---|---|---|---|")
        for ds in args.datasets:
            for m in args.methods:
                one, many = [], []
                for _ in range(args.time_rounds):
                    one.append(run(ds, splits[0], m, hp, batch_size, time_steps=args.time_steps)["ms_per_step"])
                    many.append(run_stacked(ds, splits, m, hp, batch_size, time_steps=args.time_steps)[0]["ms_per_step"])
                a, b = float(torch.tensor(one).median()), float(torch.tensor(many).median())
                print(f"| {ds} | {m} | {a:.2f} | {b:.2f} | {b / len(splits):.2f} | {a * len(splits) / b:.1f}x |", flush=True)
        return
    if args.stack_splits:
        for ds in args.datasets:
            for m in args.methods:
                for r in run_stacked(ds, splits, m, hp, batch_size):
                    emit(r)
        summarise(results)
        return
    for split in splits:
        for ds in args.datasets:
            for m in args.methods:
                emit(run(ds, split, m, hp, batch_size))
    summarise(results)


if __name__ == "__main__":
    main()
