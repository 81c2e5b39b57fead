# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Stochastic interpolants: flows and diffusions in one model
#
# A stochastic interpolant (Albergo, Boffi & Vanden-Eijnden, 2023) joins a base density
# $\rho_0$ to the data density $\rho_1$ by
#
# $$x_t = \alpha(t) x_0 + \beta(t) x_1 + \gamma(t) z, \qquad z \sim N(0, I).$$
#
# Its density $\rho_t$ is transported by the velocity $b(t, x) = E[\partial_t x_t \mid x_t = x]$,
# which a network learns by plain regression. With the score $s = \nabla \log \rho_t$ the same
# $\rho_t$ is also the law of the SDE $dX = [b + \epsilon s]\,dt + \sqrt{2\epsilon}\,dW$ for every
# $\epsilon \ge 0$: one model, a whole family of samplers.
#
# This tutorial
#
# 1. looks at paths and latent noise,
# 2. uses exact fields between Gaussian mixtures (a non-Gaussian base),
# 3. trains a model on the checkerboard and compares ODE and SDE samplers at several budgets,
# 4. computes the held-out log likelihood,
# 5. shows what minibatch optimal-transport coupling changes.

# %%
import math
import os

import lightning as L
import matplotlib.pyplot as plt
import torch

from probgen.data.toy2d import Toy2D, make_density
from probgen.interpolants import (
    GaussianMixtureFields,
    Interpolant,
    StochasticInterpolant,
    generate,
    log_likelihood,
)
from probgen.metrics import mmd2

SMOKE = os.environ.get("PROBGEN_SMOKE") == "1"
torch.manual_seed(0)
torch.set_num_threads(1)


def hist(ax, x, title, lim=4.5):
    x = x.detach().float()
    ax.hist2d(x[:, 0].numpy(), x[:, 1].numpy(), bins=100, range=[[-lim, lim], [-lim, lim]], cmap="viridis")
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)


# %% [markdown]
# ## 1. Paths and latent noise
#
# `Interpolant(path, gamma)` resolves names to objects with closed-form derivatives.
# $\gamma\dot\gamma$, which enters $b = v - \gamma\dot\gamma s$, is computed in a form that
# stays finite at $t = 0, 1$ even where $\dot\gamma$ does not (Brownian $\gamma$).

# %%
t = torch.linspace(0, 1, 201, dtype=torch.float64)
fig, axes = plt.subplots(1, 3, figsize=(12, 3))
for path in ("linear", "trig", "encoder_decoder"):
    I = Interpolant(path, "sin2" if path == "encoder_decoder" else "brownian")
    axes[0].plot(t, I.alpha(t), label=f"{path}")
    axes[1].plot(t, I.beta(t), label=f"{path}")
for gamma in ("brownian", "sin2", "sigmoid"):
    I = Interpolant("linear", gamma)
    axes[2].plot(t, I.gamma(t), label=gamma)
for ax, name in zip(axes, ("alpha(t)", "beta(t)", "gamma(t)")):
    ax.set_title(name)
    ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 2. Exact fields between two Gaussian mixtures
#
# When $\rho_0$ and $\rho_1$ are Gaussian mixtures, $b$ and $s$ are known in closed form
# (`GaussianMixtureFields`). Here the base is *eight Gaussians*, not a standard normal:
# the ODE and the SDE both carry it to the three-component target.

# %%
base, target = make_density("eight_gaussians"), make_density("gmm")
I = Interpolant("linear", "brownian")
F = GaussianMixtureFields(I, base, target)
n = 500 if SMOKE else 4000
x0 = base.sample(n, torch.Generator().manual_seed(0)).double()
ode = generate(F.velocity, x0, steps=20, t_span=I.t_bounds)
sde = generate(F.velocity, x0, steps=50 if SMOKE else 200, method="sde", score=F.score, eps=1.0, t_span=I.t_bounds,
               generator=torch.Generator().manual_seed(1))
fig, axes = plt.subplots(1, 4, figsize=(14, 3.5))
hist(axes[0], x0, "base: eight Gaussians")
hist(axes[1], ode, "exact b, RK4 ODE (80 NFE)")
hist(axes[2], sde, "exact b, s, SDE eps=1")
hist(axes[3], target.sample(n).double(), "target mixture")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Training on the checkerboard
#
# The default model (`models/interpolants/checkerboard.yaml`): a one-sided linear path
# $x_t = (1 - t) z + t x_1$ with the velocity objective. Because the path is one-sided, the
# score follows from $b$ (`score_from_velocity`), so the trained model also samples by SDE.

# %%
steps = 30 if SMOKE else 4000
model = StochasticInterpolant(
    dim=2,
    hidden_dims=[64, 64] if SMOKE else [256, 256, 256],
    path="one_sided_linear",
    gamma="zero",
    objective="velocity",
    lr=2e-3,
    warmup_steps=0 if SMOKE else 200,
    plot_every_n_val=0,
    val_nll_samples=0,
)
data = Toy2D(name="checkerboard", n_train=20_000 if SMOKE else 500_000, n_val=500, n_test=2_000 if SMOKE else 10_000,
             batch_size=256 if SMOKE else 1024)
trainer = L.Trainer(max_steps=steps, enable_progress_bar=False, logger=False, enable_checkpointing=False,
                    limit_val_batches=0, enable_model_summary=False)
trainer.fit(model, datamodule=data)

# %% [markdown]
# ## ODE against SDE at several budgets
#
# Fixed-step ODE solvers trade function evaluations (NFE) for accuracy; the SDE adds noise
# that corrects errors made earlier in the trajectory. $\epsilon(t) = \epsilon_0(1 - t)$
# vanishes at the data end, where the score obtained from $b$ is singular.

# %%
model.eval()
n = 500 if SMOKE else 5000
truth = data.density.sample(n, torch.Generator().manual_seed(9)).double()
settings = [
    ("ODE Euler, 8 steps", dict(method="ode", solver="euler", steps=8)),
    ("ODE Heun, 8 steps", dict(method="ode", solver="heun", steps=8)),
    ("ODE RK4, 25 steps", dict(method="ode", solver="rk4", steps=25)),
    ("SDE eps=0.2, 100 steps", dict(method="sde", steps=100, eps=0.2, eps_schedule="vanishing")),
    ("SDE eps=1, 100 steps", dict(method="sde", steps=100, eps=1.0, eps_schedule="vanishing")),
    ("SDE eps=1, 400 steps", dict(method="sde", steps=20 if SMOKE else 400, eps=1.0, eps_schedule="vanishing")),
]
fig, axes = plt.subplots(1, len(settings) + 1, figsize=(3 * (len(settings) + 1), 3.2))
for ax, (name, kw) in zip(axes, settings):
    x = model.sample(n, generator=torch.Generator().manual_seed(0), **kw).double()
    hist(ax, x, f"{name}\nMMD²={float(mmd2(x, truth, bandwidth=0.2)):.1e}")
hist(axes[-1], truth, "data")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 4. Held-out log likelihood
#
# `log_likelihood` integrates the probability-flow ODE backwards from the data, adding the
# divergence of $b$ (exact, by a `torch.func` Jacobian, in 2-D). The checkerboard's entropy,
# $\ln 32 = 3.466$ nats, is the lowest NLL any model can reach.

# %%
test = data.splits["test"][0][: 200 if SMOKE else 5000].double()
model.double()
with torch.no_grad():
    nll = -log_likelihood(model.velocity_field(), test, model.base.log_prob, steps=10 if SMOKE else 50,
                          divergence="exact", t_span=(model.t_min, model.t_max))
model.float()
print(f"held-out NLL {nll.mean():.3f} ± {nll.std() / math.sqrt(len(nll)):.3f} nats (floor ln 32 = {math.log(32):.3f})")

# %% [markdown]
# ## 5. Minibatch optimal-transport coupling
#
# Pairing $x_0$ and $x_1$ within each batch by the exact OT assignment (`coupling="ot"`)
# keeps both marginals but makes the paths straighter, so a learnt velocity needs fewer
# solver steps. We train the same small model on eight Gaussians -> mixture twice and sample
# each with a 4-step Euler solver.

# %%
results = {}
for coupling in ("independent", "ot"):
    torch.manual_seed(0)
    m = StochasticInterpolant(dim=2, hidden_dims=[64, 64] if SMOKE else [128, 128, 128], path="linear", gamma="zero",
                              base="eight_gaussians", coupling=coupling, lr=2e-3, plot_every_n_val=0, val_nll_samples=0)
    d = Toy2D(name="gmm", n_train=10_000 if SMOKE else 200_000, n_val=256, n_test=2000, batch_size=256)
    L.Trainer(max_steps=20 if SMOKE else 2000, enable_progress_bar=False, logger=False, enable_checkpointing=False,
              limit_val_batches=0, enable_model_summary=False).fit(m, datamodule=d)
    m.eval()
    results[coupling] = m.sample(n, generator=torch.Generator().manual_seed(0), method="ode", solver="euler", steps=4)
ref = make_density("gmm").sample(n, torch.Generator().manual_seed(5)).double()
fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
for ax, (name, x) in zip(axes, results.items()):
    hist(ax, x, f"{name} coupling, Euler 4 steps\nMMD²={float(mmd2(x.double(), ref, bandwidth=0.3)):.1e}")
hist(axes[2], ref, "target")
plt.tight_layout()
plt.show()
