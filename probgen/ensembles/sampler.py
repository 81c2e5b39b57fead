r"""One sampler step for all chains at once: the functional steps of :mod:`probgen.samplers`
vmapped over the chain axis of stacked parameters.

:class:`EnsembleSampler` is a ``torch.optim.Optimizer`` whose parameters are stacked chain
tensors ``(K, *shape)`` and whose gradients are the per-chain gradients of the minibatch mean
loss (the chains' losses are independent, so the gradient of their sum is the stack of their
gradients). Its ``step`` calls :func:`~probgen.samplers.sgld_step`,
:func:`~probgen.samplers.psgld_step`, :func:`~probgen.samplers.sghmc_step` or
:func:`~probgen.samplers.adaptive_sghmc_step` on each chain,
either through ``torch.func.vmap`` or with a loop over chains.

The Gaussian noise of step ``t`` is drawn for all chains from a generator seeded with
``(seed, t)`` (counter-based): the noise does not depend on how the chains are executed
(vmap or loop give the same chains), and a run resumed from a checkpoint continues exactly
as long as the step counter (``param_groups[0]["num_steps"]``, in the optimizer state) and
the sampler state are restored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor
from torch.func import vmap
from torch.utils._pytree import tree_map
from torch.optim import Optimizer

from probgen.exceptions import SamplerDivergedError
from probgen.samplers.adaptive import ADAPTIVE_SGHMC_KEYS, adaptive_sghmc_step
from probgen.samplers.sgmcmc import psgld_step, sghmc_step, sgld_step

SAMPLERS = ("sgld", "psgld", "sghmc", "adaptive_sghmc")
# per-parameter state of each method (all of it starts at zero); a method with one key passes
# {name: tensor} to its functional step, one with several {key: {name: tensor}}
_STATE_KEYS = {"sgld": (), "psgld": ("square_avg",), "sghmc": ("momentum_buffer",),
               "adaptive_sghmc": ADAPTIVE_SGHMC_KEYS}
_SEED_STRIDE = 1_000_003


def step_noise(params: list[Tensor], seed: int, step: int) -> list[Tensor]:
    """Standard normal draws shaped like ``params`` for step ``step`` (counter-based seeding)."""
    device = params[0].device
    g = torch.Generator(device=device).manual_seed(seed * _SEED_STRIDE + step)
    return [torch.randn(p.shape, generator=g, dtype=p.dtype, device=device) for p in params]


# updates whose every op is elementwise (no reduction over a parameter): applied to the stacked
# chains directly. Scale-adapted SGHMC is left to vmap.
_ELEMENTWISE = frozenset({"sgld", "psgld", "sghmc"})


class EnsembleSampler(Optimizer):
    """SGLD / pSGLD / SGHMC / scale-adapted SGHMC over ``K`` stacked chains.

    Args:
        params: stacked chain tensors, each ``(K, *shape)`` with ``.grad`` set by backward
            on the sum over chains of the minibatch mean loss.
        method: ``"sgld"``, ``"psgld"``, ``"sghmc"`` or ``"adaptive_sghmc"``.
        lr: default step size (``step(lr=...)`` overrides it, e.g. from a schedule).
        num_data: $N$, training points the loss is a per-point mean over.
        temperature: default $T \\ge 0$ (0: no noise, the deep-ensemble limit).
        alpha, eps: pSGLD's squared-gradient decay and damping.
        friction: SGHMC's $\\alpha \\in (0, 1]$ (also scale-adapted SGHMC's).
        adapt_steps: scale-adapted SGHMC adapts its gradient moments during the first
            ``adapt_steps`` steps (the burn-in), >= 1.
        vectorize: ``"vmap"`` or ``"sequential"`` (loop over chains).
        seed: seed of the counter-based noise.
        check_finite: raise :class:`~probgen.exceptions.SamplerDivergedError` if a chain
            leaves the finite numbers.
    """

    def __init__(
        self,
        params: Iterable[Tensor],
        method: str = "sgld",
        lr: float = 1e-4,
        num_data: int = 1,
        temperature: float = 1.0,
        alpha: float = 0.99,
        eps: float = 1e-5,
        friction: float = 0.1,
        adapt_steps: int = 1000,
        vectorize: str = "vmap",
        seed: int = 0,
        check_finite: bool = True,
    ) -> None:
        if method not in SAMPLERS:
            raise ValueError(f"method must be one of {SAMPLERS}, got {method!r}")
        if vectorize not in ("vmap", "sequential"):
            raise ValueError(f"vectorize must be 'vmap' or 'sequential', got {vectorize!r}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not num_data > 0:
            raise ValueError(f"num_data must be > 0, got {num_data}")
        if not temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if method == "adaptive_sghmc" and not adapt_steps >= 1:
            raise ValueError(f"adapt_steps must be >= 1 for adaptive_sghmc (its moments start at zero), got {adapt_steps}")
        defaults = {"lr": lr, "num_data": num_data, "temperature": temperature, "alpha": alpha, "eps": eps,
                        "friction": friction, "adapt_steps": adapt_steps, "num_steps": 0}
        super().__init__(params, defaults)
        self.method, self.vectorize, self.seed, self.check_finite = method, vectorize, seed, check_finite

    def _functional(self, lr: float, temperature: float, group: dict) -> Callable:
        n = group["num_data"]
        if self.method == "sgld":
            return lambda p, g, s, xi: (sgld_step(p, g, lr, n, temperature, noise=xi), s)
        if self.method == "psgld":
            a, e = group["alpha"], group["eps"]
            return lambda p, g, s, xi: psgld_step(p, g, s, lr, n, temperature, a, e, noise=xi)
        f = group["friction"]
        if self.method == "sghmc":
            return lambda p, g, s, xi: sghmc_step(p, g, s, lr, n, temperature, f, noise=xi)
        adapt = group["num_steps"] < group["adapt_steps"]
        return lambda p, g, s, xi: adaptive_sghmc_step(p, g, s, lr, n, temperature, f, adapt, noise=xi)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None, *, lr: float | None = None,
             temperature: float | None = None) -> Tensor | None:
        """One sampler step of every chain.

        Args:
            closure: optional closure re-evaluating the loss (calls backward).
            lr: step size of this step (default: the group's ``lr``).
            temperature: temperature of this step (default: the group's; 0 turns the noise
                off, e.g. in the exploration phase of cyclical SG-MCMC).

        Returns:
            The closure's loss, or None.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            live = [p for p in group["params"] if p.grad is not None]
            if not live:
                continue
            h = float(group["lr"] if lr is None else lr)
            temp = float(group["temperature"] if temperature is None else temperature)
            t = group["num_steps"]
            keys = [str(i) for i in range(len(live))]
            params = dict(zip(keys, live))
            grads = {k: p.grad for k, p in params.items()}
            state_keys = _STATE_KEYS[self.method]
            for p in live:
                for sk in state_keys:
                    if sk not in self.state[p]:
                        self.state[p][sk] = torch.zeros_like(p)
            state = {sk: {k: self.state[p][sk] for k, p in params.items()} for sk in state_keys}
            if len(state_keys) == 1:
                state = state[state_keys[0]]
            noise = dict(zip(keys, step_noise(live, self.seed, t))) if temp > 0 else None
            fn = self._functional(h, temp, group)
            if self.vectorize == "vmap" and self.method in _ELEMENTWISE:
                # every op of these updates is elementwise: on the stacked (K, ...) tensors they
                # are each chain's update exactly, without vmap's per-step bookkeeping (~5x)
                new_p, new_s = fn(params, grads, state, noise)
            elif self.vectorize == "vmap":
                new_p, new_s = vmap(fn, in_dims=(0, 0, 0, None if noise is None else 0),
                                    randomness="error")(params, grads, state, noise)
            else:
                outs = [
                    fn(*(tree_map(lambda v: v[i], d) if d is not None else None  # noqa: B023
                         for d in (params, grads, state, noise)))
                    for i in range(live[0].shape[0])
                ]
                new_p = {k: torch.stack([o[0][k] for o in outs]) for k in keys}
                new_s = tree_map(lambda *xs: torch.stack(xs), *[o[1] for o in outs])
            if len(state_keys) == 1:
                new_s = {state_keys[0]: new_s}
            for k, p in params.items():
                if self.check_finite and not torch.isfinite(new_p[k]).all():
                    bad = (~torch.isfinite(new_p[k])).reshape(len(new_p[k]), -1).any(1).nonzero().flatten().tolist()
                    raise SamplerDivergedError(
                        f"{self.method} step {t}: chains {bad} became non-finite (parameter #{k}, "
                        f"lr={h:g}, temperature={temp:g}); lower lr, use pSGLD, or check the data"
                    )
                p.copy_(new_p[k])
                for sk in state_keys:
                    self.state[p][sk] = new_s[sk][k]
            group["num_steps"] = t + 1
        return loss
