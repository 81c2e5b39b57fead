"""The figure at the top of each family's docs page (and on the home page), drawn from runs.

Each subcommand trains a small model on the CPU (a couple of minutes at most), plots it against
its reference and writes ``docs/assets/<family>_figure.png``; it prints what it measured, so the
caption's numbers come from the same run.

- ``fractional``: (a) the fBM bridge (H = 0.3, X(0) = 0, X(2) = 0 observed with std 0.1): learnt
  posterior paths and std against the analytic bridge std; (b) learnt H against true H on
  simulated fOU paths, beside the argmax of the exact log-likelihood under the same prior
  (what the ELBO would reach with the optimal control).
- ``nngp``: NNGP (Gaussian) against Student-t process predictive bands on 12 heavy-tailed points.
- ``ensembles``: SGLD-ensemble and deep-ensemble predictive bands against NUTS (Pyro) on the 1-D
  regression with a gap.
- ``energy``: learnt densities $e^{-E_\\theta}/Z_\\theta$ (compositional objective, grid $Z$)
  against the true densities, with the test NLL and the true entropy.

    python benchmarks/docs_figures.py fractional nngp ensembles energy [--out docs/assets]

The interpolant figure (``docs/assets/checkerboard_samples.png``) comes from
``probgen sample`` on the default checkerboard model (see the home page).
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
DPI = 80  # keeps every PNG well under 200 KB


def _benchmark(name: str):
    """Import ``benchmarks/<name>.py`` (a script, not a package) to reuse its helpers."""
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _save(fig, out: Path, name: str) -> None:
    path = out / f"{name}_figure.png"
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")


def fractional(out: Path, quick: bool) -> None:
    from probgen.fractional import FractionalSDE, fbm_bridge_std

    hurst_bench = _benchmark("fractional_hurst")
    fig, (ax_b, ax_h) = plt.subplots(1, 2, figsize=(11, 3.8))

    # (a) the bridge: the paper's Sec. 5.1 set-up, K = 12, gamma_max = 40 (docs/benchmarks.md); the guided
    # family is the Euler chain's exact posterior here, so nothing is trained
    start = time.process_time()
    torch.manual_seed(0)
    bridge = FractionalSDE(n_ou=12, gamma_max=40.0, horizon=2.0, hurst=0.3, learn_hurst=False, theta=0.0,
                           obs_std=0.1, dt=0.01, sample_points=201, transition="guided", context="next_obs",
                           sample_condition=[2.0, 0.0])
    with torch.no_grad():
        xs = bridge.sample(512 if quick else 4096)[..., 0]
    grid = torch.linspace(0, 2, 201)
    exact = fbm_bridge_std(grid, 0.3, 2.0, 0.1)
    err = (xs.std(0) - exact).abs()
    print(f"bridge H=0.3 (guided, {xs.shape[0]} paths): std abs error mean {err.mean():.4f} max {err.max():.4f} "
          f"({time.process_time() - start:.0f} CPU s)")
    ax_b.plot(grid, xs[:30].T, color="0.3", alpha=0.15, lw=0.7)
    ax_b.fill_between(grid, -2 * exact, 2 * exact, color="C0", alpha=0.2, label="analytic bridge, ±2 std")
    ax_b.plot(grid, 2 * xs.std(0), "--", color="C1", label="guided posterior, ±2 std")
    ax_b.plot(grid, -2 * xs.std(0), "--", color="C1")
    ax_b.set(title="fBM bridge, H = 0.3 (guided, no training)", xlabel="t", ylabel="X(t)")
    ax_b.legend(loc="lower left", fontsize=8)

    # (b) Hurst recovery: fractional_hurst.py with the shipped fou_hurst.yaml's settings, one seed
    start = time.process_time()
    true_h = [0.2, 0.4, 0.6, 0.8] if not quick else [0.3, 0.7]
    iters_h = 10 if quick else 100
    learnt, mle = [], []
    for h in true_h:
        r = hurst_bench.run(h, seed=0, iters=iters_h, n_ou=10, gamma_max=20.0, dt=0.02, n_obs=20, num_paths=256,
                            batch=64, warmup=0, hidden=16, control="affine", transition="guided", fix_theta=True,
                            lr=0.01, hurst_lr=0.05, obs_noise=0.05, depth=1, with_mle=True)
        learnt.append(r[0])
        mle.append(r[4])
        print(f"true H {h}: learnt H {learnt[-1]:.3f} (guided ELBO, {iters_h} iterations), "
              f"closed-form MLE of the K = 10 model {mle[-1]:.3f}")
    print(f"Hurst recovery: {time.process_time() - start:.0f} CPU s")
    ax_h.plot([0, 1], [0, 1], "k:", lw=1, label="truth")
    ax_h.plot(true_h, mle, "s", color="C2", label="closed-form MLE (K = 10 model)")
    ax_h.plot(true_h, learnt, "o-", color="C3", label=f"learnt by the guided ELBO ({iters_h} it.)")
    ax_h.set(title="learnt H against true H (fOU paths)", xlabel="true H", ylabel="H", xlim=(0, 1), ylim=(0, 1))
    ax_h.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    _save(fig, out, "fractional")


def nngp(out: Path, quick: bool) -> None:
    from probgen.data.synthetic import heavy_tail_regression
    from probgen.nngp import GaussianProcess, NNGPKernel, StudentTProcess, fit_hyperparameters

    start = time.process_time()
    d = torch.float64
    g = torch.Generator().manual_seed(3)
    x, y = heavy_tail_regression(12, noise_df=2.0, noise_scale=0.2, generator=g, dtype=d)
    x_test, y_test = heavy_tail_regression(2000, noise_df=2.0, noise_scale=0.2, generator=g, dtype=d)
    y, y_test = y[:, 0], y_test[:, 0]

    def kernel():
        return NNGPKernel(2, "relu", weight_var=2.0, bias_var=0.5).double()

    models = {"NNGP (Gaussian process)": GaussianProcess(kernel(), scale=1.0, noise=0.1),
              "Student-t process (inverse-gamma scale)": StudentTProcess(kernel(), alpha=2.0, beta=2.0, noise=0.1)}
    grid = torch.linspace(-3.0, 3.0, 241, dtype=d)[:, None]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
    for ax, (name, model) in zip(axes, models.items()):
        fit_hyperparameters(model, x, y, steps=10 if quick else 150, lr=0.05)
        with torch.no_grad():
            nll = -model.predict(x_test, observed=True).log_prob(y_test).mean().item()
            draws = model.predict(grid, observed=True).sample((4000,))
        lo, mid, hi = torch.quantile(draws, torch.tensor([0.025, 0.5, 0.975], dtype=d), dim=0)
        ax.fill_between(grid[:, 0], lo, hi, alpha=0.3, label="95% predictive band")
        ax.plot(grid[:, 0], mid, label="predictive median")
        ax.plot(grid[:, 0], torch.sin(3 * grid[:, 0]) + 0.5 * grid[:, 0], "k--", lw=1, label="sin 3x + x/2")
        ax.scatter(x[:, 0], y, s=12, c="C3", zorder=3, label="12 training points")
        ax.axvspan(-3, -2, color="0.9", zorder=0)
        ax.axvspan(2, 3, color="0.9", zorder=0)
        ax.set(title=f"{name}\ntest NLL on [-2, 2]: {nll:.2f}", xlabel="x", ylim=(-6, 6))
        print(f"{name}: test NLL {nll:.3f} (2000 points, t_2 noise)")
    axes[0].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    print(f"nngp: {time.process_time() - start:.0f} CPU s")
    _save(fig, out, "nngp")


def ensembles(out: Path, quick: bool) -> None:
    import pyro
    from pyro.infer import MCMC, NUTS

    from probgen.data.classification2d import GapRegression1D
    from probgen.ensembles import mixture_moments

    nuts_bench = _benchmark("ensembles_nuts")
    torch.set_default_dtype(torch.float64)  # Pyro's priors follow the default dtype
    dm = GapRegression1D(num_train=40, noise=nuts_bench.SIGMA)
    dm.setup()
    x, y = (t.double() for t in dm.splits["train"])
    grid = torch.linspace(-1.5, 1.5, 121)[:, None]

    start = time.process_time()
    pyro.set_rng_seed(0)
    warmup, samples = (20, 20) if quick else (150, 200)
    mcmc = MCMC(NUTS(nuts_bench.pyro_model, target_accept_prob=0.9, max_tree_depth=5 if not quick else 3),
                num_samples=samples, warmup_steps=warmup, disable_progbar=True)
    mcmc.run(x, y)
    names = {"w1": "0.weight", "b1": "0.bias", "w2": "2.weight", "b2": "2.bias"}
    f_nuts = nuts_bench.forward({names[k]: v for k, v in mcmc.get_samples().items()}, grid)[..., 0]
    nuts_cpu = time.process_time() - start
    bands = {"NUTS (Pyro)": (f_nuts.mean(0), (f_nuts.var(0) + nuts_bench.SIGMA**2).sqrt())}
    print(f"NUTS: 1 chain, {warmup} warm-up + {samples} draws, tree depth <= 5, {nuts_cpu:.0f} CPU s")
    steps = 200 if quick else 4000
    for name, temperature in (("SGLD ensemble (K=8)", 1.0), ("deep ensemble (K=8, T=0)", 0.0)):
        start = time.process_time()
        ens, _ = nuts_bench.run_ensemble(x, y, num_chains=8, temperature=temperature, steps=steps)
        m, v = mixture_moments(*ens.per_sample_predictions(grid))
        bands[name] = (m[:, 0], v[:, 0].sqrt())
        in_gap = grid[:, 0].abs() < 0.3
        ratio = (bands[name][1] / bands["NUTS (Pyro)"][1])[in_gap].mean()
        print(f"{name}: {steps} steps, {time.process_time() - start:.0f} CPU s; "
              f"predictive sd / NUTS sd in the gap {ratio:.2f}")
    torch.set_default_dtype(torch.float32)

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
    ref_mean, ref_sd = bands["NUTS (Pyro)"]
    for ax, name in zip(axes, ("SGLD ensemble (K=8)", "deep ensemble (K=8, T=0)")):
        mean, sd = bands[name]
        ax.fill_between(grid[:, 0], ref_mean - 2 * ref_sd, ref_mean + 2 * ref_sd, color="0.6", alpha=0.35,
                        label="NUTS, mean ± 2 sd")
        ax.plot(grid[:, 0], mean - 2 * sd, color="C0", lw=1.5, label=f"{name.split(' (')[0]}, mean ± 2 sd")
        ax.plot(grid[:, 0], mean + 2 * sd, color="C0", lw=1.5)
        ax.plot(grid[:, 0], mean, color="C0", lw=1, ls="--")
        ax.scatter(x[:, 0], y[:, 0], s=8, c="k", zorder=3)
        ax.axvspan(-0.3, 0.3, color="C1", alpha=0.08, zorder=0)
        ax.set(title=f"{name} against NUTS", xlabel="x", ylim=(-3, 3))
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    _save(fig, out, "ensembles")


def energy(out: Path, quick: bool) -> None:
    from probgen.data.toy2d import make_density
    from probgen.energy import EnergyBasedModel, log_partition_grid

    bound, points = 4.5, 150
    axis = torch.linspace(-bound, bound, points)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1).reshape(-1, 2)
    names = ("eight_gaussians", "two_moons", "rings")
    fig, axes = plt.subplots(2, len(names), figsize=(3.2 * len(names), 6.2))
    iters = 30 if quick else 1500
    for col, name in enumerate(names):
        start = time.process_time()
        density = make_density(name)
        x_train = density.sample(20_000, generator=torch.Generator().manual_seed(0)).float()
        x_test = density.sample(5_000, generator=torch.Generator().manual_seed(1)).float()
        torch.manual_seed(0)
        model = EnergyBasedModel(dim=2, objective="compositional", noise="mixture",
                                 noise_kwargs={"num_components": 8, "scale": 1.2}, noise_batch_size=512,
                                 gamma=0.1, lr=1e-3, grid_bound=5.5, grid_points=400)
        model.fit_noise(x_train)
        opt = model.configure_optimizers()
        gen = torch.Generator().manual_seed(1)
        for _ in range(iters):
            out_ = model.objective_step(x_train[torch.randint(len(x_train), (256,), generator=gen)])
            opt.zero_grad()
            out_.loss.backward()
            opt.step()
        with torch.no_grad():
            nll = float(model.energy(x_test).mean() + model.log_partition()[0])
            log_z = log_partition_grid(model.energy, -bound, bound, points)
            learnt = (-model.energy(grid) - log_z).exp().reshape(points, points)
            truth = density.log_prob(grid.double()).exp().reshape(points, points)
        entropy = float(density.entropy())
        vmax = float(truth.max())
        for row, (img, title) in enumerate(((truth, f"true {name}\nentropy {entropy:.2f}"),
                                            (learnt, f"learnt (compositional)\ntest NLL {nll:.2f}"))):
            ax = axes[row, col]
            ax.imshow(img, origin="lower", extent=[-bound, bound, -bound, bound], vmin=0, vmax=vmax, cmap="magma")
            ax.set_title(title, fontsize=9)
            ax.set_xticks([]), ax.set_yticks([])
        print(f"{name}: {iters} iterations, test NLL {nll:.3f} vs entropy {entropy:.3f} "
              f"({time.process_time() - start:.0f} CPU s)")
    fig.tight_layout()
    _save(fig, out, "energy")


FIGURES = {"fractional": fractional, "nngp": nngp, "ensembles": ensembles, "energy": energy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("figures", nargs="+", choices=sorted(FIGURES))
    parser.add_argument("--out", type=Path, default=HERE.parent / "docs" / "assets")
    parser.add_argument("--quick", action="store_true", help="tiny runs: checks that the script works")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.figures:
        FIGURES[name](args.out, args.quick)


if __name__ == "__main__":
    main()
