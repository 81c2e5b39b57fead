# %% [markdown]
# # Neural SDEs driven by fractional noise
#
# This tutorial follows Daems et al., "Variational Inference for SDEs Driven by Fractional
# Noise" (ICLR 2024) with `probgen`:
#
# 1. exact fractional Brownian motion (fBM) for several Hurst indices $H$;
# 2. its Markov approximation by $K$ Ornstein-Uhlenbeck processes and the closed-form error;
# 3. learning $H$ from fractional OU paths by variational inference;
# 4. the fBM bridge: the learnt posterior's spread against the analytic bridge;
# 5. Brownian vs fractional noise on the same data.
#
# Set `PROBGEN_SMOKE=1` to run everything in a few seconds (the plots are then meaningless).

# %%
import os

import matplotlib.pyplot as plt
import torch

from probgen.data.fou import simulate_fou
from probgen.fractional import FractionalSDE, fbm_bridge_std
from probgen.sde import MarkovFBM, fbm_covariance, sample_fbm

SMOKE = os.environ.get("PROBGEN_SMOKE") == "1"
torch.manual_seed(0)
torch.set_num_threads(1)

# %% [markdown]
# ## 1. Exact fBM
#
# Type I fBM has covariance $\frac12(t^{2H} + s^{2H} - |t-s|^{2H})$; its increments are
# negatively correlated for $H < 1/2$ (rough paths) and positively for $H > 1/2$ (smooth,
# trending paths). `sample_fbm` draws exact paths by Cholesky or Davies-Harte.

# %%
ts = torch.linspace(0, 1, 257 if not SMOKE else 33, dtype=torch.float64)
fig, axes = plt.subplots(1, 3, figsize=(12, 3), sharey=True)
for ax, h in zip(axes, (0.2, 0.5, 0.8)):
    paths = sample_fbm(ts, h, 5, method="davies-harte", generator=torch.Generator().manual_seed(1))
    ax.plot(ts, paths.T, lw=0.8)
    ax.set_title(f"H = {h}")
fig.tight_layout()

# %% [markdown]
# ## 2. The Markov approximation
#
# $\hat B_H(t) = \sum_k \omega_k (Y_k(t) - Y_k(0))$ with $dY_k = -\gamma_k Y_k dt + dW_t$: the
# weights solve a $K \times K$ linear system $A\omega = b$ whose right-hand side involves
# incomplete gamma functions. `MarkovFBM.relative_error` is the closed-form time-averaged
# squared error $\int_0^T E[(B_H - \hat B_H)^2] dt / \int_0^T E[B_H^2] dt$.

# %%
ks = list(range(1, 21 if not SMOKE else 4))
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
for h in (0.2, 0.3, 0.5, 0.7, 0.8):
    errs = [float(MarkovFBM(h, k, gamma_max=20.0, horizon=2.0).relative_error) for k in ks]
    axes[0].semilogy(ks, errs, "o-", ms=3, label=f"H = {h}")
axes[0].set_xlabel("K (OU processes)")
axes[0].set_ylabel("relative L2 error on [0, 2]")
axes[0].legend()
grid = torch.linspace(0, 2, 101, dtype=torch.float64)
m = MarkovFBM(0.3, n_ou=5, gamma_max=20.0, horizon=2.0, dtype=torch.float64)
axes[1].plot(grid, fbm_covariance(grid, 0.3).diagonal(), label="fBM variance $t^{2H}$")
axes[1].plot(grid, m.covariance(grid).diagonal(), "--", label="Markov approximation, K = 5")
axes[1].set_xlabel("t")
axes[1].legend()
fig.tight_layout()
print("omegas at H = 0.3:", m.omegas.numpy().round(3))

# %% [markdown]
# The weights are differentiable in $H$ (our incomplete gamma functions have a gradient in
# their first argument), which is what lets the model learn $H$:

# %%
h = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
(grad,) = torch.autograd.grad(MarkovFBM(h, 5, 20.0, 2.0).omegas.sum(), h)
print("d sum(omega) / dH =", float(grad))

# %% [markdown]
# ## 3. Learning the Hurst index from fOU paths
#
# Paths of $dX = -\theta X dt + dB_H$ with $H = 0.7$, $\theta = 1$ are simulated exactly (exact
# fBM, pathwise solution). The model's prior is $dX = -\theta X dt + d\hat B_H$ with $H$
# learnt ($\theta$ at the truth: two time units hardly identify it); the control sees the next
# observation. `transition="guided"` draws each step from the guided proposal of a backward
# filter on the prior's linear part (`probgen.sde.guided`), plus a learnt residual that starts at
# zero. For this linear-Gaussian model the guided ELBO *is* the exact log-likelihood of the K-term
# Euler chain for every path, so gradient ascent in $H$ finds the maximum-likelihood H. K = 10
# OU processes keep the Markov approximation's own bias small at large H. (`transition="gaussian"`
# learns each step's mean and variance and reaches the same optimum only after training, which at
# large H it did not get to in our runs. The paper's Girsanov control, `transition="girsanov"`,
# cannot narrow a step into an observation, loses far more at small H, and biases H upwards.)

# %%
iters = 100 if not SMOKE else 3
times, paths = simulate_fou(128, 0.7, theta=1.0, horizon=2.0, n_obs=20, generator=torch.Generator().manual_seed(0))
values = paths.unsqueeze(-1)


def fit(model, iters, batch=32):
    opt = model.configure_optimizers()
    trace = []
    for _ in range(iters):
        idx = torch.randint(0, len(values), (batch,))
        loss = -model.elbo(values[idx], times)["elbo"].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        trace.append((float(model.sde.hurst.detach()), -loss.item()))
    return trace


frac = FractionalSDE(n_ou=10, gamma_max=20.0, horizon=2.0, hurst=0.5, theta=1.0, context="next_obs",
                     transition="guided", control="affine", control_hidden=16, control_depth=1, obs_std=0.05,
                     dt=0.02, lr=1e-2, hurst_lr=5e-2)
trace = fit(frac, iters)
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot([t[0] for t in trace])
ax.axhline(0.7, color="k", ls="--", label="true H")
ax.set_xlabel("iteration")
ax.set_ylabel("learnt H")
ax.legend()
print(f"learnt H = {trace[-1][0]:.3f}, theta = {float(frac.sde.theta.detach()):.3f}")

# %% [markdown]
# ## 4. The fBM bridge
#
# Condition fBM ($H = 0.3$) on $X(0) = 0$ and a noisy observation $X(2) = 0$ (std 0.1). The
# posterior of a Gaussian process is Gaussian with a closed-form variance; the variational
# posterior, a controlled Markov-approximate fBM, should reproduce its spread.

# %%
bridge = FractionalSDE(n_ou=12, gamma_max=40.0, horizon=2.0, hurst=0.3, learn_hurst=False, theta=0.0,
                       obs_std=0.1, dt=0.01, lr=1e-2, sample_points=201)
obs, obs_t = torch.zeros(32, 1, 1), torch.full((32, 1), 2.0)
opt = bridge.configure_optimizers()
for _ in range(400 if not SMOKE else 2):
    loss = -bridge.elbo(obs, obs_t)["elbo"].mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
xs = bridge.sample(256 if not SMOKE else 16)[..., 0]
grid = torch.linspace(0, 2, 201)
exact = fbm_bridge_std(grid, 0.3, 2.0, 0.1)
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(grid, xs[:40].T, color="k", alpha=0.1, lw=0.7)
ax.plot(grid, exact, "b", label="analytic bridge std")
ax.plot(grid, -exact, "b")
ax.plot(grid, xs.std(0), "--", color="orange", label="learnt posterior std")
ax.plot(grid, -xs.std(0), "--", color="orange")
ax.legend()
print("mean abs error of the std:", float((xs.std(0) - exact).abs().mean()))

# %% [markdown]
# ## 5. Brownian vs fractional noise
#
# On the $H = 0.7$ fOU data, the Brownian baseline (`white=True`) cannot represent the
# correlated increments: its ELBO stays below the fractional model's.

# %%
white = FractionalSDE(white=True, horizon=2.0, theta=1.0, context="next_obs", transition="gaussian",
                      control="affine", obs_std=0.05, dt=0.02, lr=1e-2)
trace_white = fit(white, iters)
k = max(1, iters // 5)
elbo_frac = sum(t[1] for t in trace[-k:]) / k
elbo_white = sum(t[1] for t in trace_white[-k:]) / k
print(f"ELBO (mean of the last {k} iterations): fractional {elbo_frac:.2f}, Brownian {elbo_white:.2f}")
