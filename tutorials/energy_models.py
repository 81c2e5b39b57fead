# %% [markdown]
# # Energy-based models by compositional optimisation
#
# An energy-based model (EBM) is a density known up to its normaliser,
# $p_\theta(x) = e^{-E_\theta(x)} / Z_\theta$. Maximum likelihood needs $\nabla \log Z_\theta$.
# Jiang et al. (ICML 2023) write $Z_\theta = \mathbb E_{x' \sim q}[e^{-E_\theta(x')} / q(x')]$ for a
# noise distribution $q$, which makes the negative log-likelihood a *compositional* objective
# $\frac1n \sum_i E_\theta(x_i) + \log \mathbb E_q[\cdot]$, and track the inner expectation with a
# moving average $u_t = (1-\gamma) u_{t-1} + \gamma \hat g_t$. The gradient
# $\frac1n\sum_i\nabla E(x_i) + \nabla \hat g_t / u_t$ has a bias that vanishes as training goes on,
# unlike the plug-in $\log \hat g_t$.
#
# This tutorial
# 1. looks at the paper's 1-D Gaussian mean study: why NCE stalls when $q$ is far from the data and
#    maximum likelihood does not;
# 2. learns 2-D densities with every objective in `probgen.energy` and plots them;
# 3. composes trained energies (product, mixture, negation) and samples the composite with Langevin;
# 4. detects out-of-distribution digits with the energy score.

# %%
import math
import os

import matplotlib.pyplot as plt
import torch

from probgen.data.digits import DigitsDataModule, corrupt_digits
from probgen.data.toy2d import make_density
from probgen.energy import (
    EnergyBasedModel,
    GaussianNoise,
    MovingAverageLogZ,
    QuadraticEnergy,
    SoftMinEnergy,
    compositional_loss,
    log_partition_grid,
    minibatch_loss,
    nce_loss,
)
from probgen.metrics import auroc
from probgen.samplers import langevin

SMOKE = os.environ.get("PROBGEN_SMOKE") == "1"
torch.manual_seed(0)
torch.set_num_threads(min(4, torch.get_num_threads()))

# %% [markdown]
# ## 1. The Gaussian mean study
#
# Data $\mathcal N(\mu^*, 1)$, model $E_\mu(x) = (x-\mu)^2/2$ (so $Z$ does not depend on $\mu$ and
# the exact NLL is $(\mu - \mu^*)^2/2 + \mathrm{const}$), noise $q = \mathcal N(0, 1)$. We evaluate
# the objectives on one large fixed sample over a range of $\mu$: the compositional objective with
# a large noise batch is the exact NLL; NCE's loss (given the true $\log Z$, its best case)
# flattens as $\mu^*$ moves away from $q$, so its gradient vanishes.

# %%
n_eval = 2_000 if SMOKE else 200_000
gen = torch.Generator().manual_seed(0)
q = GaussianNoise(1).double()
mus = torch.linspace(-1, 5, 31 if SMOKE else 121, dtype=torch.float64)
log_z_true = torch.tensor(0.5 * math.log(2 * math.pi), dtype=torch.float64)
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for mu_star in (1.0, 3.0):
    x = mu_star + torch.randn(n_eval, 1, generator=gen, dtype=torch.float64)
    xn = q.sample(n_eval, gen)
    comp, nce = [], []
    for mu in mus:
        e = QuadraticEnergy(1, mean=[float(mu)], precision=1.0).double()
        with torch.no_grad():
            comp.append(float(compositional_loss(e, x, xn, q.log_prob(xn), MovingAverageLogZ(gamma=1.0)).value))
            nce.append(float(nce_loss(e, x, q.log_prob(x), xn, q.log_prob(xn), log_z_true).value))
    comp, nce = torch.tensor(comp), torch.tensor(nce)
    axes[0].plot(mus, comp - comp.min(), label=f"compositional (NLL), mu*={mu_star}")
    axes[1].plot(mus, nce - nce.min(), label=f"NCE, mu*={mu_star}")
for ax, title in zip(axes, ("compositional objective (= NLL)", "NCE loss (true log Z given)")):
    ax.set_xlabel("mu")
    ax.set_title(title)
    ax.legend()
axes[1].set_yscale("log")
fig.tight_layout()
plt.show()

# %% [markdown]
# Now the training dynamics with stochastic batches ($n = m = 128$, SGD step 0.1) for
# $\mu^* = 2$: compositional ($\gamma = 0.1$), the biased minibatch estimate and NCE.
# `benchmarks/energy_gaussian_mean.py` turns this into the iteration counts of
# `docs/benchmarks.md`.

# %%
iters = 40 if SMOKE else 1500
mu_star = 2.0
traces = {}
for name in ("compositional", "minibatch", "nce"):
    g = torch.Generator().manual_seed(1)
    e = QuadraticEnergy(1, mean=[0.0], precision=1.0, learn_precision=False).double()
    opt = torch.optim.SGD([e.mean], lr=0.1)
    est = MovingAverageLogZ(gamma=0.1)
    trace = []
    for _ in range(iters):
        x = mu_star + torch.randn(128, 1, generator=g, dtype=torch.float64)
        xn = q.sample(128, g)
        if name == "compositional":
            out = compositional_loss(e, x, xn, q.log_prob(xn), est)
        elif name == "minibatch":
            out = minibatch_loss(e, x, xn, q.log_prob(xn))
        else:
            out = nce_loss(e, x, q.log_prob(x), xn, q.log_prob(xn), log_z_true)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        trace.append(abs(float(e.mean.detach()) - mu_star))
    traces[name] = trace
plt.figure(figsize=(6, 4))
for name, trace in traces.items():
    plt.semilogy(trace, label=name)
plt.axhline(1e-2, color="k", ls=":", lw=1)
plt.xlabel("iteration")
plt.ylabel("|mu_t - mu*|")
plt.legend()
plt.show()

# %% [markdown]
# ## 2. Learning 2-D densities with every objective
#
# One `EnergyBasedModel` class, objectives switched by a string. The same MLP energy and the same
# Gaussian-mixture $q$ (fitted to the data) are used throughout; the heatmaps show
# $e^{-E_\theta}/Z_\theta$ with $Z_\theta$ from a grid.

# %%
density = make_density("eight_gaussians")
x_train = density.sample(4_000 if SMOKE else 20_000, generator=torch.Generator().manual_seed(0)).float()
x_test = density.sample(2_000, generator=torch.Generator().manual_seed(1)).float()
objectives = ("compositional", "minibatch", "nce", "pcd", "dsm")
iters_2d = 15 if SMOKE else 1500
bound, points = 5.0, (60 if SMOKE else 200)


def train(objective, x_data, steps, **kwargs):
    torch.manual_seed(0)
    model = EnergyBasedModel(dim=2, objective=objective, noise="mixture", noise_kwargs={"num_components": 8, "scale": 1.2},
                             noise_batch_size=512, langevin_steps=5 if SMOKE else 20, langevin_step_size=0.005,
                             grid_bound=bound, grid_points=points, **kwargs)
    model.fit_noise(x_data)
    opt = model.configure_optimizers()
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        out = model.objective_step(x_data[torch.randint(len(x_data), (256,), generator=g)])
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    return model


def density_image(energy):
    axis = torch.linspace(-bound, bound, points)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1).reshape(-1, 2)
    with torch.no_grad():
        log_z = log_partition_grid(energy, -bound, bound, points)
        return (-energy(grid) - log_z).exp().reshape(points, points)


models = {}
fig, axes = plt.subplots(1, len(objectives) + 1, figsize=(3.2 * (len(objectives) + 1), 3.4))
axes[0].hist2d(x_train[:, 0].numpy(), x_train[:, 1].numpy(), bins=100, range=[[-bound, bound]] * 2)
axes[0].set_title(f"data, H = {density.entropy():.2f}")
for ax, objective in zip(axes[1:], objectives):
    models[objective] = model = train(objective, x_train, iters_2d)
    with torch.no_grad():
        nll = float(model.energy(x_test).mean() + model.log_partition()[0])
    ax.imshow(density_image(model.energy), origin="lower", extent=[-bound, bound, -bound, bound])
    ax.set_title(f"{objective}: NLL {nll:.2f}")
for ax in axes:
    ax.set_xticks([]), ax.set_yticks([])
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Composing trained energies
#
# Energies add: $E_a + E_b$ is the product of experts $p_a p_b$ (both must agree), the soft-min
# at temperature 1 is the mixture $p_a + p_b$ (either may hold), and $E_a - \tfrac12 E_b$ removes
# $p_b$'s mass from $p_a$ (negation). We train a second energy on rings and compose it with the
# eight-Gaussians energy; every composite is again an `Energy`, so the grid normaliser and
# Langevin apply unchanged.

# %%
rings = make_density("rings")
x_rings = rings.sample(4_000 if SMOKE else 20_000, generator=torch.Generator().manual_seed(2)).float()
e_a = models["compositional"].energy
e_b = train("compositional", x_rings, iters_2d).energy
composites = {"E_a (8 Gaussians)": e_a, "E_b (rings)": e_b, "E_a + E_b (product)": e_a + e_b,
              "softmin (mixture)": SoftMinEnergy([e_a, e_b]), "E_a - 0.5 E_b (negation)": e_a - 0.5 * e_b}
fig, axes = plt.subplots(1, len(composites), figsize=(3.2 * len(composites), 3.4))
for ax, (name, energy) in zip(axes, composites.items()):
    ax.imshow(density_image(energy), origin="lower", extent=[-bound, bound, -bound, bound])
    ax.set_title(name, fontsize=9)
    ax.set_xticks([]), ax.set_yticks([])
fig.tight_layout()
plt.show()

# %% [markdown]
# Langevin (MALA, annealed from temperature 4) on the product samples where both experts agree.

# %%
product = e_a + e_b
x0 = models["compositional"].noise.sample(500 if SMOKE else 4_000)
steps = 30 if SMOKE else 1000
anneal = {"temperature": [max(4.0 ** (1 - k / (steps / 2)), 1.0) for k in range(steps)]}
samples = langevin(product, x0, steps=steps, step_size=0.005, method="mala", anneal=anneal).x
plt.figure(figsize=(4, 4))
plt.scatter(samples[:, 0], samples[:, 1], s=2, alpha=0.5)
plt.xlim(-bound, bound), plt.ylim(-bound, bound)
plt.title("MALA samples of E_a + E_b")
plt.show()

# %% [markdown]
# ## 4. Out-of-distribution digits
#
# An energy on 8x8 digits of classes 0-7 scores held-out classes and corrupted digits: a higher
# energy means less likely. AUROC 0.5 is chance. In 64 dimensions a Gaussian $q$ and an
# untilted energy give importance weights with an effective sample size of a few samples, and
# training goes astray; `base_on_noise=True` models $p \propto q\,e^{-E_\theta}$ (the fitted $q$
# as a fixed expert), so the weights start at one. `benchmarks/energy_digits_ood.py` compares
# all objectives both ways.

# %%
dm = DigitsDataModule(task="generation", held_out_classes=(8, 9))
dm.setup()
xd_train, xd_test, xd_ood = dm.splits["train"][0], dm.splits["test"][0], dm.splits["ood"][0]
torch.manual_seed(0)
digits_model = EnergyBasedModel(dim=64, energy={"kind": "conv", "side": 8, "channels": 16 if SMOKE else 32, "envelope": 0.1},
                                objective="compositional", noise_kwargs={"scale": 1.2}, base_on_noise=True,
                                noise_batch_size=256, lr=5e-4)
digits_model.fit_noise(xd_train)
opt = digits_model.configure_optimizers()
g = torch.Generator().manual_seed(1)
for _ in range(10 if SMOKE else 1000):
    out = digits_model.objective_step(xd_train[torch.randint(len(xd_train), (128,), generator=g)])
    opt.zero_grad()
    out.loss.backward()
    opt.step()
sets = {"test (in)": xd_test, "classes 8, 9": xd_ood,
        "noise": corrupt_digits(xd_test, "noise", generator=g), "blur": corrupt_digits(xd_test, "blur")}
with torch.no_grad():
    scores = {name: digits_model.energy(x) for name, x in sets.items()}
plt.figure(figsize=(6, 4))
for name, s in scores.items():
    label = name if name == "test (in)" else f"{name}: AUROC {float(auroc(scores['test (in)'], s)):.2f}"
    plt.hist(s.numpy(), bins=40, alpha=0.5, density=True, label=label)
plt.xlabel("energy")
plt.legend()
plt.show()
