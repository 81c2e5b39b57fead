"""Stochastic-gradient MCMC over network weights: SGLD, pSGLD and SGHMC.

Every sampler comes in two forms that share one implementation of the update:

* a pure functional step on ``dict[str, Tensor]`` (``sgld_step``, ``psgld_step``,
  ``sghmc_step`` with ``psgld_init`` / ``sghmc_init``) that runs many chains at once under
  ``torch.func.vmap(..., randomness="different")``;
* a :class:`torch.optim.Optimizer` (:class:`SGLD`, :class:`PSGLD`, :class:`SGHMC`), a
  drop-in replacement for SGD, whose ``step`` calls the functional step.

Loss convention (binding for all three, see ``DESIGN.md``): ``grads`` are gradients of the
minibatch mean of the negative log joint *per data point*,

$$\\ell(\\theta) = -\\frac{1}{B}\\sum_{i \\in \\mathcal{B}} \\log p(y_i \\mid \\theta)
- \\frac{1}{N}\\log p(\\theta),$$

so that $U(\\theta) = N \\ell(\\theta)$ is an unbiased estimate of the negative log posterior
over all $N$ = ``num_data`` points, and $\\nabla U = N\\,$``grads``. The samplers target the
tempered posterior $\\pi_T(\\theta) \\propto \\exp(-U(\\theta)/T)$; ``temperature=1`` is the
Bayesian posterior, ``temperature=0`` turns the noise off (plain SGD / RMSprop / momentum SGD).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import Tensor
from torch.optim import Optimizer

from probgen.exceptions import SamplerDivergedError

__all__ = [
    "PSGLD",
    "SGHMC",
    "SGLD",
    "psgld_init",
    "psgld_step",
    "sghmc_init",
    "sghmc_step",
    "sgld_step",
]

Number = float | int
Scalar = float | int | Tensor


# --------------------------------------------------------------------------------------
# argument checks (Python-level only: no tensor comparisons, so no host syncs, vmap-safe)
# --------------------------------------------------------------------------------------


def _check_positive(name: str, value: Scalar, allow_zero: bool = False) -> None:
    if isinstance(value, Tensor):
        return  # a tensor value (per-chain under vmap, or traced) is not inspected
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number or a tensor, got {type(value).__name__}")
    ok = value >= 0 if allow_zero else value > 0
    if not ok or not math.isfinite(value):
        allowed = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {allowed}, got {value}")


def _check_real_type(name: str, value: Scalar) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number or a tensor, got {type(value).__name__}")


def _check_open_unit(name: str, value: Scalar, closed_left: bool = False) -> None:
    if isinstance(value, Tensor):
        return
    _check_real_type(name, value)
    lo_ok = value >= 0 if closed_left else value > 0
    if not (lo_ok and value < 1):
        interval = "[0, 1)" if closed_left else "(0, 1)"
        raise ValueError(f"{name} must lie in {interval}, got {value}")


def _check_friction(friction: Scalar) -> None:
    if isinstance(friction, Tensor):
        return
    _check_real_type("friction", friction)
    if not (0 < friction <= 1):
        raise ValueError(f"friction must lie in (0, 1], got {friction}")


def _check_keys(what: str, d: Mapping[str, Tensor], params: Mapping[str, Tensor]) -> None:
    if d.keys() != params.keys():
        missing = sorted(set(params) - set(d))
        extra = sorted(set(d) - set(params))
        raise ValueError(
            f"{what} must have the same keys as params; missing {missing}, unexpected {extra}"
        )


def _sqrt(x: Scalar) -> Scalar:
    return x.sqrt() if isinstance(x, Tensor) else math.sqrt(x)


def _is_zero(x: Scalar) -> bool:
    return not isinstance(x, Tensor) and x == 0


def _numbers(*xs: Scalar) -> bool:
    """All Python numbers: the update can use fused ops (``alpha=`` / ``value=``), which
    allocate one tensor per parameter instead of one per arithmetic op."""
    return not any(isinstance(x, Tensor) for x in xs)


def _noise_like(
    params: Mapping[str, Tensor], noise: Mapping[str, Tensor] | None
) -> Mapping[str, Tensor]:
    """The given standard normal noise, or fresh draws (``randn_like`` is vmap-safe)."""
    if noise is None:
        return {k: torch.randn_like(p) for k, p in params.items()}
    _check_keys("noise", noise, params)
    return noise


# --------------------------------------------------------------------------------------
# functional steps
# --------------------------------------------------------------------------------------


def sgld_step(
    params: Mapping[str, Tensor],
    grads: Mapping[str, Tensor],
    lr: Scalar,
    num_data: Scalar,
    temperature: Scalar = 1.0,
    *,
    noise: Mapping[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """One step of stochastic gradient Langevin dynamics (Welling & Teh, 2011, eq. 4).

    $$\\theta \\leftarrow \\theta - h\\, N \\nabla\\ell(\\theta) + \\sqrt{2 h T}\\, \\xi,
    \\qquad \\xi \\sim \\mathcal{N}(0, I),$$

    i.e. Euler-Maruyama with step $h$ = ``lr`` for $d\\theta = -\\nabla U dt + \\sqrt{2T} dW$
    (Welling & Teh write $\\epsilon/2 = h$).

    Args:
        params: parameters, each ``(*shape)``; under vmap ``(*shape)`` per chain.
        grads: gradients of the minibatch mean loss (see module docstring), same keys/shapes.
        lr: step size $h > 0$ (float, or a tensor, e.g. per chain under vmap).
        num_data: $N$, the number of training points the loss is a per-point mean over.
        temperature: $T \\ge 0$; 0 gives plain SGD on $U$.
        noise: optional standard normal draws with the same keys/shapes as ``params``; by
            default drawn with ``torch.randn_like`` (use ``vmap(..., randomness="different")``).

    Returns:
        The new parameters (new tensors; the inputs are not modified).
    """
    _check_positive("lr", lr)
    _check_positive("num_data", num_data)
    _check_positive("temperature", temperature, allow_zero=True)
    _check_keys("grads", grads, params)
    drift = lr * num_data
    fused = _numbers(lr, num_data, temperature)
    if _is_zero(temperature):
        if fused:
            return {k: torch.add(p, grads[k], alpha=-drift) for k, p in params.items()}
        return {k: p - drift * grads[k] for k, p in params.items()}
    xi = _noise_like(params, noise)
    scale = _sqrt(2.0 * lr * temperature)
    if fused:
        return {
            k: torch.add(p, grads[k], alpha=-drift).add_(xi[k], alpha=scale)
            for k, p in params.items()
        }
    return {k: p - drift * grads[k] + scale * xi[k] for k, p in params.items()}


def psgld_init(params: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Initial pSGLD state: the running average $V$ of squared gradients, zero.

    Args:
        params: parameters, ``dict[str, Tensor]``.

    Returns:
        ``{name: zeros_like(param)}``.
    """
    return {k: torch.zeros_like(p) for k, p in params.items()}


def psgld_step(
    params: Mapping[str, Tensor],
    grads: Mapping[str, Tensor],
    state: Mapping[str, Tensor],
    lr: Scalar,
    num_data: Scalar,
    temperature: Scalar = 1.0,
    alpha: Scalar = 0.99,
    eps: Scalar = 1e-5,
    *,
    noise: Mapping[str, Tensor] | None = None,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """One step of RMSprop-preconditioned SGLD (Li et al., 2016, Algorithm 1).

    $$V \\leftarrow \\alpha V + (1-\\alpha)\\, \\bar g \\odot \\bar g,\\quad
    G = \\mathrm{diag}\\big(1 / (\\lambda + \\sqrt{V})\\big),\\quad
    \\theta \\leftarrow \\theta - h\\, G\\, N \\bar g + \\sqrt{2 h T G}\\, \\xi,$$

    with $\\bar g$ = ``grads`` (the per-data-point mean gradient, as in the paper), $h$ =
    ``lr`` ($\\epsilon/2$ in the paper) and $\\lambda$ = ``eps``. The correction term
    $\\Gamma(\\theta) = \\sum_j \\partial G_{ij} / \\partial \\theta_j$ is omitted, as Li et al.
    recommend and as standard implementations do: $G$ changes slowly ($\\alpha$ close to 1),
    so $\\Gamma$ is small, but the chain is then only asymptotically exact as $h \\to 0$.

    With $V$ initialised to zero the first step is large ($G \\approx 10/|\\bar g|$ for
    $\\alpha = 0.99$), as in RMSprop; treat the first steps as burn-in.

    Args:
        params: parameters, ``dict[str, Tensor]``.
        grads: gradients of the minibatch mean loss, same keys and shapes.
        state: the running averages $V$ from :func:`psgld_init` or the previous step.
        lr: step size $h > 0$.
        num_data: $N$, the number of training points.
        temperature: $T \\ge 0$; 0 gives RMSprop-style descent on $U$.
        alpha: decay $\\alpha \\in [0, 1)$ of the squared-gradient average.
        eps: $\\lambda > 0$, added to $\\sqrt{V}$.
        noise: optional standard normal draws, same keys/shapes as ``params``.

    Returns:
        ``(new_params, new_state)``.
    """
    _check_positive("lr", lr)
    _check_positive("num_data", num_data)
    _check_positive("temperature", temperature, allow_zero=True)
    _check_open_unit("alpha", alpha, closed_left=True)
    _check_positive("eps", eps)
    _check_keys("grads", grads, params)
    _check_keys("state", state, params)
    drift = lr * num_data
    if _numbers(lr, num_data, temperature, alpha, eps):
        new_state = {
            k: torch.mul(grads[k], grads[k]).mul_(1.0 - alpha).add_(state[k], alpha=alpha)
            for k in params
        }
        # (in-place ops only where autograd does not need the overwritten values)
        precond = {k: (v.sqrt() + eps).reciprocal_() for k, v in new_state.items()}
        new = {k: torch.addcmul(p, precond[k], grads[k], value=-drift) for k, p in params.items()}
        if not _is_zero(temperature):
            xi = _noise_like(params, noise)
            scale = math.sqrt(2.0 * lr * temperature)
            for k, p in new.items():
                p.add_(precond[k].sqrt() * xi[k], alpha=scale)  # (no addcmul_ under vmap)
        return new, new_state
    new_state = {k: alpha * state[k] + (1.0 - alpha) * grads[k] * grads[k] for k in params}
    precond = {k: 1.0 / (eps + v.sqrt()) for k, v in new_state.items()}
    if _is_zero(temperature):
        new = {k: p - drift * precond[k] * grads[k] for k, p in params.items()}
        return new, new_state
    xi = _noise_like(params, noise)
    new = {
        k: p - drift * precond[k] * grads[k] + (2.0 * lr * temperature * precond[k]).sqrt() * xi[k]
        for k, p in params.items()
    }
    return new, new_state


def sghmc_init(params: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Initial SGHMC state: the momentum (velocity) $v$, zero.

    Args:
        params: parameters, ``dict[str, Tensor]``.

    Returns:
        ``{name: zeros_like(param)}``.
    """
    return {k: torch.zeros_like(p) for k, p in params.items()}


def sghmc_step(
    params: Mapping[str, Tensor],
    grads: Mapping[str, Tensor],
    state: Mapping[str, Tensor],
    lr: Scalar,
    num_data: Scalar,
    temperature: Scalar = 1.0,
    friction: Scalar = 0.1,
    *,
    noise: Mapping[str, Tensor] | None = None,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """One step of stochastic gradient Hamiltonian Monte Carlo (Chen et al., 2014, eq. 15).

    In the paper's SGD-with-momentum parametrisation (learning rate $\\eta$ = ``lr``,
    friction $\\alpha$ = ``friction``, gradient-noise estimate $\\hat\\beta = 0$):

    $$v \\leftarrow (1-\\alpha)\\, v - \\eta N \\nabla\\ell(\\theta)
    + \\sqrt{2 \\alpha \\eta T}\\, \\xi, \\qquad \\theta \\leftarrow \\theta + v.$$

    This is the discretised second-order Langevin dynamics with unit mass, time step
    $\\epsilon = \\sqrt{\\eta}$ and friction $C = \\alpha/\\sqrt{\\eta}$; its stationary law
    in $\\theta$ is $\\propto \\exp(-U/T)$ as $\\eta \\to 0$. ``friction = 1`` is SGLD with
    step $\\eta$ exactly; ``1 - friction`` plays the role of SGD's momentum.

    Args:
        params: parameters, ``dict[str, Tensor]``.
        grads: gradients of the minibatch mean loss, same keys and shapes.
        state: momenta $v$ from :func:`sghmc_init` or the previous step.
        lr: learning rate $\\eta > 0$.
        num_data: $N$, the number of training points.
        temperature: $T \\ge 0$; 0 gives SGD with momentum $1-\\alpha$.
        friction: $\\alpha \\in (0, 1]$.
        noise: optional standard normal draws, same keys/shapes as ``params``.

    Returns:
        ``(new_params, new_state)``.
    """
    _check_positive("lr", lr)
    _check_positive("num_data", num_data)
    _check_positive("temperature", temperature, allow_zero=True)
    _check_friction(friction)
    _check_keys("grads", grads, params)
    _check_keys("state", state, params)
    drift = lr * num_data
    if _numbers(lr, num_data, temperature, friction):
        v_new = {
            k: torch.mul(state[k], 1.0 - friction).add_(grads[k], alpha=-drift) for k in params
        }
        if not _is_zero(temperature):
            xi = _noise_like(params, noise)
            scale = math.sqrt(2.0 * friction * lr * temperature)
            for k, v in v_new.items():
                v.add_(xi[k], alpha=scale)
    elif _is_zero(temperature):
        v_new = {k: (1.0 - friction) * state[k] - drift * grads[k] for k in params}
    else:
        xi = _noise_like(params, noise)
        scale = _sqrt(2.0 * friction * lr * temperature)
        v_new = {k: (1.0 - friction) * state[k] - drift * grads[k] + scale * xi[k] for k in params}
    return {k: p + v_new[k] for k, p in params.items()}, v_new


# --------------------------------------------------------------------------------------
# torch.optim.Optimizer faces
# --------------------------------------------------------------------------------------


class _SGMCMCOptimizer(Optimizer):
    """Shared machinery: gathers a group's parameters into a dict, draws the noise with the
    optimizer's generator, calls the functional step, and writes the result back in place.

    Noise is drawn group by group, parameter by parameter in the group's order, one
    ``torch.randn(p.shape, generator=...)`` per parameter with a gradient (none when the
    group's temperature is 0), so that the functional step fed the same draws gives the same
    chain.
    """

    _state_keys: tuple[str, ...] = ()

    def __init__(self, params, defaults: dict, generator: torch.Generator | None) -> None:
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                f"generator must be a torch.Generator or None, got {type(generator).__name__}"
            )
        super().__init__(params, defaults)
        self.generator = generator

    def _validate_group(self, group: dict) -> None:
        _check_positive("lr", group["lr"])
        _check_positive("num_data", group["num_data"])
        _check_positive("temperature", group["temperature"], allow_zero=True)

    def _check_finite_grads(self, group: dict, live: list[Tensor]) -> None:
        """Raise before the update if any gradient holds NaN/inf (one host sync per group),
        so that a diverged loss stops the chain with its parameters intact."""
        if not live:
            return
        for p in live:
            if p.grad.is_sparse:
                raise TypeError(f"{type(self).__name__} does not support sparse gradients")
        finite = torch.stack([torch.isfinite(p.grad).all() for p in live])
        if bool(finite.all()):
            return
        g = next(i for i, gr in enumerate(self.param_groups) if gr is group)
        bad = int((~finite).nonzero()[0])
        index = next(i for i, p in enumerate(group["params"]) if p is live[bad])
        raise SamplerDivergedError(
            f"{type(self).__name__}.step: the gradient of parameter {index} of param group {g} "
            f"(shape {tuple(live[bad].shape)}) contains NaN or inf; the parameters were left "
            f"unchanged. Check the loss for NaN/inf (e.g. log of 0), or try a smaller lr "
            f"(now {group['lr']:g}) or gradient clipping."
        )

    def _draw_noise(self, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {
            k: torch.randn(p.shape, generator=self.generator, dtype=p.dtype, device=p.device)
            for k, p in params.items()
        }

    def _update(self, group: dict, params, grads, state, noise):  # pragma: no cover
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Take one sampler step.

        Args:
            closure: optional callable that re-evaluates the minibatch mean loss and calls
                ``backward``, as for any torch optimizer.

        Returns:
            The closure's loss, or None.

        Raises:
            SamplerDivergedError: a gradient holds NaN or inf (the parameters are unchanged).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:  # all checks before any update
            self._validate_group(group)
            self._check_finite_grads(group, [p for p in group["params"] if p.grad is not None])
        for group in self.param_groups:
            live = [p for p in group["params"] if p.grad is not None]
            if not live:
                continue
            params = {str(i): p for i, p in enumerate(live)}
            grads = {str(i): p.grad for i, p in enumerate(live)}
            state = {}
            for key in self._state_keys:
                for i, p in enumerate(live):
                    st = self.state[p]
                    if key not in st:
                        st[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state[key] = {str(i): self.state[p][key] for i, p in enumerate(live)}
            noise = None if _is_zero(group["temperature"]) else self._draw_noise(params)
            new_params, new_state = self._update(group, params, grads, state, noise)
            for k, p in params.items():
                p.copy_(new_params[k])
            for key, values in new_state.items():
                for i, p in enumerate(live):
                    self.state[p][key] = values[str(i)]
        return loss

    def state_dict(self) -> dict:
        """The optimizer state plus, if a generator was given, its RNG state (a uint8 tensor),
        so that a resumed run draws the same noise. Loads with ``weights_only=True``."""
        sd = super().state_dict()
        if self.generator is not None:
            sd["generator_state"] = self.generator.get_state()
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        """Load :meth:`state_dict`'s output, restoring the generator state if both the saved
        optimizer and this one have a generator."""
        state_dict = dict(state_dict)
        gen_state = state_dict.pop("generator_state", None)
        super().load_state_dict(state_dict)
        if gen_state is not None and self.generator is not None:
            self.generator.set_state(
                gen_state.cpu() if gen_state.device.type != "cpu" else gen_state
            )


class SGLD(_SGMCMCOptimizer):
    """Stochastic gradient Langevin dynamics (Welling & Teh, 2011) as a torch optimizer.

    A drop-in replacement for ``torch.optim.SGD``: the loss that ``backward`` is called on is
    the minibatch mean negative log joint per data point (module docstring), and one step is
    $\\theta \\leftarrow \\theta - h N \\nabla\\ell + \\sqrt{2hT}\\,\\xi$ (:func:`sgld_step`).

    Args:
        params: iterable of parameters or parameter-group dicts.
        lr: step size $h > 0$ (per group; LR schedulers may change it).
        num_data: $N$, the number of training points.
        temperature: $T \\ge 0$ (1: the posterior; 0: SGD on $U$).
        generator: optional ``torch.Generator`` on the parameters' device for the noise;
            by default the global RNG (honours ``torch.manual_seed``). Under DDP seed it
            identically on every rank so that the replicas draw the same noise.

    Example:
        >>> opt = SGLD(model.parameters(), lr=1e-5, num_data=len(train_set))
        >>> loss = nll(model(x), y).mean() + neg_log_prior(model) / len(train_set)
        >>> opt.zero_grad(); loss.backward(); opt.step()
    """

    def __init__(
        self,
        params: Iterable,
        lr: float,
        num_data: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        _check_positive("lr", lr)
        _check_positive("num_data", num_data)
        _check_positive("temperature", temperature, allow_zero=True)
        defaults = {"lr": lr, "num_data": num_data, "temperature": temperature}
        super().__init__(params, defaults, generator)

    def _update(self, group, params, grads, state, noise):
        new = sgld_step(
            params, grads, group["lr"], group["num_data"], group["temperature"], noise=noise
        )
        return new, {}


class PSGLD(_SGMCMCOptimizer):
    """RMSprop-preconditioned SGLD (Li et al., 2016) as a torch optimizer.

    One step is :func:`psgld_step` (the $\\Gamma$ correction term omitted, as is standard).
    The running average $V$ is kept in ``optimizer.state[p]["square_avg"]`` and saved in
    ``state_dict()``.

    Args:
        params: iterable of parameters or parameter-group dicts.
        lr: step size $h > 0$.
        num_data: $N$, the number of training points.
        temperature: $T \\ge 0$.
        alpha: decay of the squared-gradient average, in [0, 1).
        eps: $\\lambda > 0$ added to $\\sqrt{V}$.
        generator: optional ``torch.Generator`` for the noise.
    """

    _state_keys = ("square_avg",)

    def __init__(
        self,
        params: Iterable,
        lr: float,
        num_data: int,
        temperature: float = 1.0,
        alpha: float = 0.99,
        eps: float = 1e-5,
        generator: torch.Generator | None = None,
    ) -> None:
        _check_positive("lr", lr)
        _check_positive("num_data", num_data)
        _check_positive("temperature", temperature, allow_zero=True)
        _check_open_unit("alpha", alpha, closed_left=True)
        _check_positive("eps", eps)
        defaults = {
            "lr": lr,
            "num_data": num_data,
            "temperature": temperature,
            "alpha": alpha,
            "eps": eps,
        }
        super().__init__(params, defaults, generator)

    def _update(self, group, params, grads, state, noise):
        new, sq = psgld_step(
            params,
            grads,
            state["square_avg"],
            group["lr"],
            group["num_data"],
            group["temperature"],
            group["alpha"],
            group["eps"],
            noise=noise,
        )
        return new, {"square_avg": sq}


class SGHMC(_SGMCMCOptimizer):
    """Stochastic gradient Hamiltonian Monte Carlo (Chen et al., 2014) as a torch optimizer.

    One step is :func:`sghmc_step`: momentum SGD with momentum $1-\\alpha$ plus injected noise
    $\\sqrt{2\\alpha\\eta T}\\,\\xi$. Momenta live in
    ``optimizer.state[p]["momentum_buffer"]`` and are saved in ``state_dict()``.

    Args:
        params: iterable of parameters or parameter-group dicts.
        lr: learning rate $\\eta > 0$ (the squared time step for unit mass).
        num_data: $N$, the number of training points.
        temperature: $T \\ge 0$.
        friction: $\\alpha \\in (0, 1]$.
        generator: optional ``torch.Generator`` for the noise.
    """

    _state_keys = ("momentum_buffer",)

    def __init__(
        self,
        params: Iterable,
        lr: float,
        num_data: int,
        temperature: float = 1.0,
        friction: float = 0.1,
        generator: torch.Generator | None = None,
    ) -> None:
        _check_positive("lr", lr)
        _check_positive("num_data", num_data)
        _check_positive("temperature", temperature, allow_zero=True)
        _check_friction(friction)
        defaults = {
            "lr": lr,
            "num_data": num_data,
            "temperature": temperature,
            "friction": friction,
        }
        super().__init__(params, defaults, generator)

    def _update(self, group, params, grads, state, noise):
        new, v = sghmc_step(
            params,
            grads,
            state["momentum_buffer"],
            group["lr"],
            group["num_data"],
            group["temperature"],
            group["friction"],
            noise=noise,
        )
        return new, {"momentum_buffer": v}
