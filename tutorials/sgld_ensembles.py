# %% [markdown]
# # SGLD Bayesian ensembles
#
# Stochastic-gradient Langevin dynamics (SGLD) samples a network's posterior; running K
# chains at once and averaging the predictions of all kept samples gives the **Bayesian
# mixture predictive** $p(y\mid x,\mathcal D)\approx\frac1S\sum_s p(y\mid x,\theta_s)$.
# A deep ensemble is the same computation with the noise turned off (temperature 0).
#
# This tutorial:
# 1. compares predictive bands of an SGLD ensemble, a deep ensemble and NUTS on 1-D regression with a gap;
# 2. draws uncertainty maps on two moons;
# 3. trains on a UCI set through the Lightning module and reads NLL / RMSE on the original scale;
# 4. checks convergence across chains with R-hat and ESS.

# %%
import math
import os

import lightning as L
import matplotlib.pyplot as plt
import torch

from probgen.data.classification2d import GapRegression1D, TwoMoons
from probgen.ensembles import (
    BayesianEnsemble,
    CategoricalLikelihood,
    GaussianLikelihood,
    GaussianPrior,
    SamplingSchedule,
    SGLDEnsemble,
    chain_diagnostics,
    mixture_moments,
    mlp,
    predictive_entropy,
)

SMOKE = os.environ.get("PROBGEN_SMOKE") == "1"
torch.manual_seed(0)
torch.set_default_dtype(torch.float64)

# %% [markdown]
# ## 1. Regression with a gap: SGLD ensemble, deep ensemble, NUTS
#
# 40 points of $y=\sin 3x + x + \varepsilon$, $\varepsilon\sim\mathcal N(0, 0.1^2)$, with no
# data in $(-0.3, 0.3)$. Network 1-20-1 (tanh), prior $\mathcal N(0,1)$ on every weight.

# %%
SIGMA = 0.1
dm = GapRegression1D(num_train=40, noise=SIGMA)
dm.setup()
x, y = (t.double() for t in dm.splits["train"])
grid = torch.linspace(-1.5, 1.5, 121)[:, None]
steps = 100 if SMOKE else 10000


def fit(num_chains, temperature, steps, lr=2e-5, schedule="constant"):
    ens = BayesianEnsemble(mlp(1, 1, [20], "tanh").double(), GaussianLikelihood("fixed", SIGMA), GaussianPrior(1.0),
                           num_chains=num_chains, num_data=len(x), store_size=50 if temperature else 1,
                           store_policy="reservoir" if temperature else "last", seed=0)
    sampler = ens.make_sampler("sgld", lr=lr, temperature=temperature)
    schedule = SamplingSchedule(lr=lr, schedule=schedule, burn_in=steps // 2 if temperature else steps - 1,
                                thin=max(1, steps // 200), total_steps=steps, num_cycles=4, exploration_fraction=0.3)
    for _ in range(steps):
        ens.train_step(x, y, sampler, schedule)
    return ens


sgld = fit(8, 1.0, steps)
deep = fit(8, 0.0, steps)

# %% [markdown]
# NUTS (Pyro) on the same model is the reference (shortened in smoke mode).

# %%
import pyro
import pyro.distributions as dist
from pyro.infer import MCMC, NUTS


def pyro_model(x, y):
    w1 = pyro.sample("w1", dist.Normal(0.0, 1.0).expand([20, 1]).to_event(2))
    b1 = pyro.sample("b1", dist.Normal(0.0, 1.0).expand([20]).to_event(1))
    w2 = pyro.sample("w2", dist.Normal(0.0, 1.0).expand([1, 20]).to_event(2))
    b2 = pyro.sample("b2", dist.Normal(0.0, 1.0).expand([1]).to_event(1))
    f = torch.tanh(x @ w1.T + b1) @ w2.T + b2
    pyro.sample("y", dist.Normal(f, SIGMA).to_event(2), obs=y)


pyro.set_rng_seed(0)
kernel = NUTS(pyro_model, max_tree_depth=2 if SMOKE else 7)
mcmc = MCMC(kernel, num_samples=10 if SMOKE else 500, warmup_steps=10 if SMOKE else 300, disable_progbar=True)
mcmc.run(x, y)
s = mcmc.get_samples()
f_nuts = (torch.tanh(grid @ s["w1"].transpose(1, 2) + s["b1"][:, None]) @ s["w2"].transpose(1, 2) + s["b2"][:, None])[..., 0]

# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 4), sharey=True)
bands = {
    "NUTS": (f_nuts.mean(0), (f_nuts.var(0) + SIGMA**2).sqrt()),
}
for name, ens in (("SGLD ensemble (K=8)", sgld), ("deep ensemble (K=8)", deep)):
    m, v = mixture_moments(*ens.per_sample_predictions(grid))
    bands[name] = (m[:, 0], v[:, 0].sqrt())
for ax, (name, ens) in zip(axes, (("SGLD ensemble (K=8)", sgld), ("deep ensemble (K=8)", deep), ("NUTS", None))):
    mean, sd = bands[name]
    ax.fill_between(grid[:, 0], mean - 2 * sd, mean + 2 * sd, alpha=0.3, label="±2 sd")
    ax.plot(grid[:, 0], mean, lw=2, label="predictive mean")
    if name != "NUTS":
        ax.plot(grid[:, 0], bands["NUTS"][0], "k--", lw=1, label="NUTS mean")
    ax.scatter(x[:, 0], y[:, 0], s=10, c="k")
    ax.set_title(name)
    ax.set_ylim(-3, 3)
axes[0].legend(loc="upper left")
plt.tight_layout()
plt.show()

# %% [markdown]
# The deep ensemble's spread comes only from different initialisations; the SGLD ensemble
# also samples around each mode, and its band in the gap is closer to NUTS's. The benchmark
# `benchmarks/ensembles_nuts.py` measures the distance (W2) between these predictives.

# %% [markdown]
# ## 2. Two moons: uncertainty maps
#
# Classification: the predictive averages class probabilities over samples; the entropy of
# the averaged probabilities is high near the boundary and (for a Bayesian ensemble) away
# from the data.

# %%
torch.set_default_dtype(torch.float32)
moons = TwoMoons(num_train=300, num_test=500, noise=0.15)
moons.setup()
xm, ym = moons.splits["train"]
csteps = 60 if SMOKE else 4000
maps = {}
for name, temperature in (("SGLD ensemble", 1.0), ("deep ensemble", 0.0)):
    ens = BayesianEnsemble(mlp(2, 2, [32, 32]), CategoricalLikelihood(), GaussianPrior(1.0), num_chains=8,
                           num_data=len(xm), store_size=30 if temperature else 1,
                           store_policy="reservoir" if temperature else "last", seed=1)
    sampler = ens.make_sampler("sgld", lr=1e-4, temperature=temperature)
    sch = SamplingSchedule(lr=1e-4, burn_in=csteps // 2 if temperature else csteps - 1, thin=10)
    g = torch.Generator().manual_seed(0)
    for t in range(csteps):
        idx = torch.randint(0, len(xm), (100,), generator=g)
        ens.train_step(xm[idx], ym[idx], sampler, sch)
    xx, yy, pts = moons.grid(resolution=60 if SMOKE else 150, margin=1.5)
    maps[name] = predictive_entropy(ens.per_sample_predictions(pts)).reshape(xx.shape)
    xt, yt = moons.splits["test"]
    acc = float((ens.predictive(xt).probs.argmax(1) == yt).float().mean())
    print(f"{name}: test accuracy {acc:.3f}")

fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
for ax, (name, ent) in zip(axes, maps.items()):
    im = ax.contourf(xx, yy, ent, levels=20, cmap="magma", vmin=0, vmax=math.log(2))
    ax.scatter(xm[:, 0], xm[:, 1], c=ym, s=6, cmap="coolwarm", edgecolors="none")
    ax.set_title(f"{name}: predictive entropy")
fig.colorbar(im, ax=axes, shrink=0.8)
plt.show()

# %% [markdown]
# ## 3. UCI regression with the Lightning module
#
# `SGLDEnsemble` is the LightningModule. The cell below is a short constant-step run of it;
# the shipped default, `models/ensembles/uci_regression.yaml` (cyclical pSGLD, heteroscedastic
# with a mean-first warm start, 30,000 updates, input dimension read from the data), runs
# from the command line:
#
# ```bash
# probgen fit --config models/ensembles/uci_regression.yaml
# probgen test --config models/ensembles/uci_regression.yaml --ckpt_path last
# ```
#
# Metrics are logged on the original target scale (the datamodule standardises targets and
# the module multiplies back by its `y_std`).

# %%
from pathlib import Path

from probgen.data.uci import UCIRegression

candidates = [Path(os.environ.get("PROBGEN_UCI_ROOT", "../shared/data/uci")), Path("../../shared/data/uci")]
if "__file__" in globals():  # run as a script: relative to the repository
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data" / "uci")
root = next((c for c in candidates if (c / "yacht" / "data.txt").exists()), candidates[0])
have_uci = (root / "yacht" / "data.txt").exists()
if have_uci:
    L.seed_everything(0)
    uci = UCIRegression(root=str(root), dataset="yacht", split=0, batch_size=32)
    max_steps = 20 if SMOKE else 3000
    model = SGLDEnsemble(input_dim=6, output_dim=1, hidden_dims=[50], noise="learnt", noise_scale=0.5,
                         num_chains=8, sampler="psgld", lr=3e-3 / 277, burn_in=max_steps // 2, thin=10,
                         store_size=40)
    trainer = L.Trainer(max_steps=max_steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, uci)
    metrics = trainer.test(model, uci, verbose=False)[0]
    print({k: round(v, 3) for k, v in metrics.items()})
else:
    print("UCI data not found; skipping")

# %% [markdown]
# Published deep ensembles reach a test NLL of 1.18 on yacht (Lakshminarayanan et al. 2017);
# `benchmarks/ensembles_uci.py` runs the full comparison over splits (results in
# `docs/benchmarks.md`).
#
# ## 4. Diagnostics across chains
#
# Split-$\hat R$ (rank-normalised) and bulk ESS of the predictions at some inputs, and of a
# few weights. Weight $\hat R$ is large whenever chains sit in different (permutation-
# equivalent) modes, which is expected for networks; $\hat R$ of the predictions near 1 is
# the meaningful check.

# %%
torch.set_default_dtype(torch.float64)
print("SGLD ensemble, 1-D regression:", {k: round(v, 2) for k, v in chain_diagnostics(sgld, grid[::10]).items()})
