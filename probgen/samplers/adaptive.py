r"""Scale-adapted SGHMC (Springenberg, Klein, Falkner & Hutter, NeurIPS 2016, Sec. 4.1).

SGHMC preconditioned by the running root mean square of the gradient, whose step size and
friction are set from running gradient moments during burn-in: the sampler is invariant to
the scale of $U$ (a network on raw or standardised targets, 100 or 100,000 data points,
needs the same ``lr``). With the preconditioner $\hat M^{-1} = \mathrm{diag}(\hat V^{-1/2})$
and the friction chosen so that $\epsilon \hat M^{-1} C = \alpha$ (the paper's eq. 10):

$$\Delta\theta = v, \qquad
\Delta v = -\epsilon^2 \hat V^{-1/2} \nabla U(\theta) - \alpha v
+ \mathcal N\big(0,\; 2\epsilon^2 \alpha \hat V^{-1/2} - \epsilon^4 I\big).$$

During burn-in (``adapt=True``) the per-parameter moments are updated first (eqs. 8-9):

$$\tau \leftarrow \tau\,(1 - \bar g^2/\hat V) + 1, \quad
\bar g \leftarrow \bar g + (\nabla U - \bar g)/\tau, \quad
\hat V \leftarrow \hat V + ((\nabla U)^2 - \hat V)/\tau,$$

so $\tau$ is an adaptive averaging window, long where the gradient is noisy and short where
its mean dominates. After burn-in they are frozen (``adapt=False``) and the chain is a
time-homogeneous SGHMC whose stationary law tends to $\propto\exp(-U/T)$ as
$\epsilon \to 0$.

Conventions are those of :mod:`probgen.samplers.sgmcmc`: ``grads`` are gradients of the
minibatch mean negative log joint per data point, $\nabla U = N\,$``grads``, and
``lr`` $= \epsilon^2$ (the squared time step, as for :func:`~probgen.samplers.sghmc_step`).
The state starts at $\tau = 1$, $\bar g = 0$, $\hat V = 0$ (``window`` holds $\tau - 1$,
so that all of the state starts at zero), and the first adapting step sets $\tau = 2$,
$\bar g = \nabla U/2$, $\hat V = (\nabla U)^2/2$. (Starting at $\tau = 0$ instead would
give $\bar g^2 = \hat V$ exactly after the first step and pin the window at 1 for ever:
$\hat V$ would be the last squared gradient, tiny near a mode, and the step would blow up.) The noise variance is scaled by the temperature $T$ and clipped at
zero (where $\epsilon^2 > 2\alpha\hat V^{-1/2}$ the gradient noise alone exceeds the
injected noise: lower ``lr``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

from probgen.samplers.sgmcmc import (
    Scalar,
    _check_friction,
    _check_keys,
    _check_positive,
    _is_zero,
    _noise_like,
    _SGMCMCOptimizer,
)
from probgen.validation import check_int

__all__ = ["AdaptiveSGHMC", "adaptive_sghmc_init", "adaptive_sghmc_step"]

ADAPTIVE_SGHMC_KEYS = ("momentum", "grad_avg", "square_avg", "window")


def adaptive_sghmc_init(params: Mapping[str, Tensor]) -> dict[str, dict[str, Tensor]]:
    """Initial scale-adapted SGHMC state: momentum, gradient mean, squared-gradient mean and
    averaging window minus one, all zero.

    Args:
        params: parameters, ``dict[str, Tensor]``.

    Returns:
        ``{"momentum", "grad_avg", "square_avg", "window"}``, each ``{name: zeros_like(param)}``.
    """
    return {key: {k: torch.zeros_like(p) for k, p in params.items()} for key in ADAPTIVE_SGHMC_KEYS}


def adaptive_sghmc_step(
    params: Mapping[str, Tensor],
    grads: Mapping[str, Tensor],
    state: Mapping[str, Mapping[str, Tensor]],
    lr: Scalar,
    num_data: Scalar,
    temperature: Scalar = 1.0,
    friction: Scalar = 0.05,
    adapt: bool = False,
    eps: float = 1e-8,
    *,
    noise: Mapping[str, Tensor] | None = None,
) -> tuple[dict[str, Tensor], dict[str, dict[str, Tensor]]]:
    r"""One step of scale-adapted SGHMC (module docstring; Springenberg et al. 2016, eq. 10).

    Args:
        params: parameters, ``dict[str, Tensor]``.
        grads: gradients of the minibatch mean loss, same keys and shapes.
        state: from :func:`adaptive_sghmc_init` or the previous step.
        lr: $\epsilon^2 > 0$, the squared time step.
        num_data: $N$, the number of training points.
        temperature: $T \ge 0$; 0 turns the noise off.
        friction: $\alpha \in (0, 1]$, the momentum decay per step.
        adapt: update the gradient moments before the step (burn-in). The first step of a
            chain must adapt (the moments start at zero).
        eps: added to $\sqrt{\hat V}$ so that a zero gradient does not divide by zero.
        noise: optional standard normal draws, same keys/shapes as ``params``.

    Returns:
        ``(new_params, new_state)``.
    """
    _check_positive("lr", lr)
    _check_positive("num_data", num_data)
    _check_positive("temperature", temperature, allow_zero=True)
    _check_friction(friction)
    _check_keys("grads", grads, params)
    if set(state) != set(ADAPTIVE_SGHMC_KEYS):
        raise ValueError(f"state must have the keys {ADAPTIVE_SGHMC_KEYS}, got {sorted(state)}")
    for key in ADAPTIVE_SGHMC_KEYS:
        _check_keys(f"state[{key!r}]", state[key], params)
    v, g_avg, v_hat, window = (dict(state[key]) for key in ADAPTIVE_SGHMC_KEYS)
    grad_u = {k: num_data * grads[k] for k in params}
    if adapt:
        for k in params:
            tau = (window[k] + 1) * (1 - g_avg[k].square() / (v_hat[k] + eps)).clamp_min(0) + 1
            g_avg[k] = g_avg[k] + (grad_u[k] - g_avg[k]) / tau
            v_hat[k] = v_hat[k] + (grad_u[k].square() - v_hat[k]) / tau
            window[k] = tau - 1
    xi = None if _is_zero(temperature) else _noise_like(params, noise)
    new_params, new_v = {}, {}
    for k, p in params.items():
        minv = 1.0 / (v_hat[k].sqrt() + eps)
        vk = (1 - friction) * v[k] - lr * minv * grad_u[k]
        if xi is not None:
            var = (temperature * (2 * lr * friction * minv - lr * lr)).clamp_min(0)
            vk = vk + var.sqrt() * xi[k]
        new_v[k] = vk
        new_params[k] = p + vk
    return new_params, {"momentum": new_v, "grad_avg": g_avg, "square_avg": v_hat, "window": window}


class AdaptiveSGHMC(_SGMCMCOptimizer):
    """Scale-adapted SGHMC (Springenberg et al. 2016) as a torch optimizer.

    One step is :func:`adaptive_sghmc_step`, adapting the gradient moments during the first
    ``num_burn_in_steps`` steps and frozen afterwards. Every piece of state (momentum, moments,
    window) is in ``optimizer.state[p]`` and the step counter in the parameter group, so
    ``state_dict()`` resumes exactly.

    Args:
        params: iterable of parameters or parameter-group dicts.
        lr: $\\epsilon^2 > 0$ (scale-free: the step is preconditioned by $\\hat V^{-1/2}$).
        num_data: $N$, the number of training points.
        temperature: $T \\ge 0$.
        friction: $\\alpha \\in (0, 1]$ (the paper's ``mdecay``; 0.05 there).
        num_burn_in_steps: steps that adapt the moments, >= 1.
        generator: optional ``torch.Generator`` for the noise.
    """

    _state_keys = ADAPTIVE_SGHMC_KEYS

    def __init__(
        self,
        params: Iterable,
        lr: float,
        num_data: int,
        temperature: float = 1.0,
        friction: float = 0.05,
        num_burn_in_steps: int = 1000,
        generator: torch.Generator | None = None,
    ) -> None:
        _check_positive("lr", lr)
        _check_positive("num_data", num_data)
        _check_positive("temperature", temperature, allow_zero=True)
        _check_friction(friction)
        check_int("num_burn_in_steps", num_burn_in_steps, ge=1)  # the moments start at zero
        defaults = {
            "lr": lr,
            "num_data": num_data,
            "temperature": temperature,
            "friction": friction,
            "num_burn_in_steps": num_burn_in_steps,
            "num_steps": 0,
        }
        super().__init__(params, defaults, generator)

    def _update(self, group, params, grads, state, noise):
        adapt = group["num_steps"] < group["num_burn_in_steps"]
        new, new_state = adaptive_sghmc_step(
            params, grads, state, group["lr"], group["num_data"], group["temperature"],
            group["friction"], adapt=adapt, noise=noise,
        )
        group["num_steps"] += 1
        return new, new_state
