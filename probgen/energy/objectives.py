"""Training objectives for energy-based models, all on the same ``(energy, data, q)``.

Notation: data $x_{1:n}$, noise $x'_{1:m} \\sim q$, log importance weights
$\\ell_j = -E_\\theta(x'_j) - \\log q(x'_j)$, so $Z_\\theta = \\mathbb E_q[e^{\\ell}]$ and
$\\hat g_t = \\frac1m \\sum_j e^{\\ell_j}$ is the noise-batch estimate of $g(\\theta) = Z_\\theta$.

- :func:`compositional_loss`: maximum likelihood as the compositional problem
  $\\min_\\theta \\frac1n\\sum_i E_\\theta(x_i) + f(g(\\theta))$, $f = \\log$ (Jiang et al. 2023,
  Eq. 3-4), with the inner value tracked by the moving average
  $u_t = (1-\\gamma) u_{t-1} + \\gamma \\hat g_t$ (Eq. 6) and the gradient
  $\\frac1n\\sum_i \\nabla E(x_i) + \\nabla \\hat g_t / u_t$ (Eq. 7), or by the STORM/MSVR
  correction $u_t = \\hat g_t(\\theta_t) + (1-\\gamma)(u_{t-1} - \\hat g_t(\\theta_{t-1}))$ (both on
  the same noise batch). Everything is carried in log space.
- :func:`minibatch_loss`: the biased plug-in $\\frac1n\\sum_i E(x_i) + \\log \\hat g_t$.
- :func:`nce_loss`: noise-contrastive estimation (Gutmann & Hyvarinen 2010) with the same $q$.
- :func:`contrastive_divergence_loss` with :class:`ReplayBuffer`: Langevin CD, short-run or
  persistent (Du & Mordatch 2019; Grathwohl et al. 2020, JEM).
- :func:`denoising_score_matching_loss` (Vincent 2011).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from probgen.energy.energies import Energy
from probgen.exceptions import ProbgenNumericalError
from probgen.samplers.schedules import polynomial_schedule

__all__ = [
    "MovingAverageLogZ",
    "ObjectiveOutput",
    "ReplayBuffer",
    "compositional_loss",
    "contrastive_divergence_loss",
    "denoising_score_matching_loss",
    "log_mean_exp",
    "minibatch_loss",
    "moving_average_update",
    "nce_loss",
    "storm_update",
]


@dataclass
class ObjectiveOutput:
    """What every objective returns.

    Attributes:
        loss: scalar to differentiate.
        value: detached scalar for logging (for compositional/minibatch: the NLL estimate
            $\\frac1n\\sum E + \\log \\hat Z$).
        log_z: the objective's current $\\log Z$ estimate (``None`` where it has none).
    """

    loss: Tensor
    value: Tensor
    log_z: Tensor | None = None


def log_mean_exp(v: Tensor, dim: int = -1) -> Tensor:
    """$\\log \\frac1m \\sum_j e^{v_j}$ along ``dim``."""
    return torch.logsumexp(v, dim) - math.log(v.shape[dim])


def _check_gamma(gamma: float) -> float:
    if not 0 < gamma <= 1:
        raise ValueError(f"gamma must be in (0, 1], got {gamma}")
    return float(gamma)


def moving_average_update(log_u_prev: Tensor, log_g: Tensor, gamma: float) -> Tensor:
    """$\\log u_t$ with $u_t = (1-\\gamma) u_{t-1} + \\gamma \\hat g_t$ (Jiang et al. 2023, Eq. 6).

    Elementwise, so it runs many independent estimators at once.
    """
    gamma = _check_gamma(gamma)
    if gamma == 1.0:
        return log_g
    return torch.logaddexp(log_u_prev + math.log1p(-gamma), log_g + math.log(gamma))


def storm_update(log_u_prev: Tensor, log_g: Tensor, log_g_prev: Tensor, gamma: float) -> Tensor:
    """$\\log u_t$ with the STORM/MSVR correction $u_t = \\hat g_t(\\theta_t) + (1-\\gamma)(u_{t-1} - \\hat g_t(\\theta_{t-1}))$.

    Both $\\hat g$ use the same noise batch. Where the corrected value is not positive (possible
    after a large step) the plain moving average is used instead.
    """
    gamma = _check_gamma(gamma)
    ref = torch.maximum(torch.maximum(log_u_prev, log_g), log_g_prev)
    val = (log_g - ref).exp() + (1 - gamma) * ((log_u_prev - ref).exp() - (log_g_prev - ref).exp())
    plain = moving_average_update(log_u_prev, log_g, gamma)
    ok = val > 1e-12
    return torch.where(ok, ref + val.clamp_min(1e-300).log(), plain)


class MovingAverageLogZ:
    """The state of the moving-average estimator $u_t$ of $Z_\\theta$, kept as $\\log u_t$.

    The weight of step $t$ (counting from 0) is $\\gamma_t = \\gamma\\,(1 + t / t_0)^{-a}$
    (``gamma_decay`` $= a$, ``gamma_offset`` $= t_0$; :func:`probgen.samplers.polynomial_schedule`).
    $a = 0$ is the paper's constant $\\gamma$, whose $u_t$ keeps an $O(\\gamma)$ variance and so
    a stationary bias in $\\nabla \\hat g_t / u_t$; the convergence theory of compositional
    SGD needs $\\gamma_t \\to 0$ with $\\sum_t \\gamma_t = \\infty$ ($0 < a \\le 1$).

    Args:
        gamma: averaging weight $\\gamma \\in (0, 1]$ (at $t = 0$); ``1`` with ``gamma_decay=0``
            recovers the minibatch estimate.
        storm: use the STORM-corrected update (needs $\\hat g$ at the previous parameters,
            which :func:`compositional_loss` computes with the stored ``prev_params``).
        gamma_decay: exponent $a \\in [0, 1]$ of the decay.
        gamma_offset: $t_0 > 0$, the step count over which $\\gamma_t$ halves (for $a = 1$).

    Raises:
        ValueError: ``gamma`` outside (0, 1], ``gamma_decay`` outside [0, 1] or ``gamma_offset <= 0``.
    """

    def __init__(self, gamma: float = 0.1, storm: bool = False, gamma_decay: float = 0.0, gamma_offset: float = 100.0) -> None:
        self.gamma = _check_gamma(gamma)
        if isinstance(gamma_decay, bool) or not isinstance(gamma_decay, (int, float)) or not 0 <= gamma_decay <= 1:
            raise ValueError(f"gamma_decay must be a float in [0, 1], got {gamma_decay!r}")
        if isinstance(gamma_offset, bool) or not isinstance(gamma_offset, (int, float)) or not gamma_offset > 0:
            raise ValueError(f"gamma_offset must be a float > 0, got {gamma_offset!r}")
        self.gamma_decay, self.gamma_offset = float(gamma_decay), float(gamma_offset)
        self.storm = bool(storm)
        self.log_u: Tensor | None = None
        self.prev_params: dict[str, Tensor] | None = None
        self.steps = 0

    @property
    def gamma_t(self) -> float:
        """$\\gamma_t$ of the next update."""
        if self.gamma_decay == 0:
            return self.gamma
        b = self.gamma_offset
        return polynomial_schedule(self.steps, self.gamma * b**self.gamma_decay, b, self.gamma_decay)

    def update(self, log_g: Tensor, log_g_prev: Tensor | None = None) -> Tensor:
        """Advance one step with the batch estimate ``log_g`` (detached scalar); returns $\\log u_t$."""
        log_g = log_g.detach()
        if not torch.isfinite(log_g).all():
            raise ProbgenNumericalError(
                f"compositional objective: log of the noise-batch estimate of Z is {log_g.tolist()}; "
                "the energy is too low somewhere q puts mass: widen q (scale), add an envelope to the energy or lower the learning rate"
            )
        if self.log_u is None:
            new = log_g.clone()
        elif self.storm and log_g_prev is not None:
            new = storm_update(self.log_u.to(log_g), log_g, log_g_prev.detach(), self.gamma_t)
        else:
            new = moving_average_update(self.log_u.to(log_g), log_g, self.gamma_t)
        self.log_u = new
        self.steps += 1
        return new

    def remember(self, energy: Energy) -> None:
        """Store the current parameters as $\\theta_{t-1}$ of the next STORM step."""
        self.prev_params = {k: v.detach().clone() for k, v in _state(energy).items()}

    def state_dict(self) -> dict:
        """Tensors and plain types only (``torch.load(weights_only=True)`` safe)."""
        return {
            "gamma": self.gamma,
            "gamma_decay": self.gamma_decay,
            "gamma_offset": self.gamma_offset,
            "storm": self.storm,
            "steps": self.steps,
            "log_u": None if self.log_u is None else self.log_u.detach().clone(),
            "prev_params": self.prev_params,
        }

    def load_state_dict(self, state: dict) -> None:
        self.gamma = _check_gamma(state["gamma"])
        self.gamma_decay = float(state.get("gamma_decay", 0.0))
        self.gamma_offset = float(state.get("gamma_offset", 100.0))
        self.storm = bool(state["storm"])
        self.steps = int(state["steps"])
        self.log_u = state["log_u"]
        self.prev_params = state["prev_params"]


def _state(energy: Energy) -> dict[str, Tensor]:
    return {**dict(energy.named_parameters()), **dict(energy.named_buffers())}


def _noise_log_weights(energy: Energy, noise_x: Tensor, noise_log_q: Tensor) -> Tensor:
    if noise_log_q.shape != (noise_x.shape[0],):
        raise ValueError(f"noise_log_q must have shape ({noise_x.shape[0]},), got {tuple(noise_log_q.shape)}")
    return -energy(noise_x) - noise_log_q


def compositional_loss(
    energy: Energy,
    x: Tensor,
    noise_x: Tensor,
    noise_log_q: Tensor,
    estimator: MovingAverageLogZ,
    u_noise_x: Tensor | None = None,
    u_noise_log_q: Tensor | None = None,
) -> ObjectiveOutput:
    """Compositional MLE step (Jiang et al. 2023, Algorithm 1 with Eq. 6-7; STORM variant if ``estimator.storm``).

    The returned ``loss`` has value $\\frac1n\\sum_i E(x_i) + \\log u_t$ and gradient
    $\\frac1n\\sum_i \\nabla E(x_i) + \\nabla \\hat g_t / u_t$, written as
    $\\log u_t + e^{\\log \\hat g_t - \\log u_t} - \\mathrm{sg}(\\cdot)$ so nothing leaves log space.
    The estimator is advanced in place.

    Args:
        energy: the model.
        x: data ``(n, *event_shape)``.
        noise_x: noise samples ``(m, *event_shape)`` from $q$.
        noise_log_q: $\\log q$ of them, ``(m,)``.
        estimator: the moving-average state.
        u_noise_x, u_noise_log_q: an optional second, independent noise batch ``(m', ...)``,
            ``(m',)`` that alone updates $u_t$ (the gradient still uses ``noise_x``). Then
            $u_t$ is independent of $\\hat g_t$ given the past, which removes the
            $\\mathrm{Cov}(\\nabla \\hat g_t, 1/u_t)$ part of the bias of $\\nabla \\hat g_t / u_t$.
    """
    if (u_noise_x is None) != (u_noise_log_q is None):
        raise ValueError("u_noise_x and u_noise_log_q must be given together")
    e_data = energy(x).mean()
    log_w = _noise_log_weights(energy, noise_x, noise_log_q)
    log_g = log_mean_exp(log_w, 0)
    if u_noise_x is None:
        u_x, u_lq, log_g_u = noise_x, noise_log_q, log_g
    else:
        u_x, u_lq = u_noise_x, u_noise_log_q
        with torch.no_grad():
            log_g_u = log_mean_exp(_noise_log_weights(energy, u_x, u_lq), 0)
    log_g_prev = None
    if estimator.storm and estimator.prev_params is not None:
        with torch.no_grad():
            prev = {k: v.to(u_x.device) for k, v in estimator.prev_params.items()}
            e_prev = torch.func.functional_call(energy, prev, (u_x,))
            log_g_prev = log_mean_exp(-e_prev - u_lq, 0)
    log_u = estimator.update(log_g_u, log_g_prev)
    if estimator.storm:
        estimator.remember(energy)
    ratio = (log_g - log_u).exp()
    loss = e_data + log_u + (ratio - ratio.detach())
    return ObjectiveOutput(loss=loss, value=(e_data + log_u).detach(), log_z=log_u.detach())


def minibatch_loss(energy: Energy, x: Tensor, noise_x: Tensor, noise_log_q: Tensor) -> ObjectiveOutput:
    """Biased plug-in estimate $\\frac1n\\sum_i E(x_i) + \\log \\hat g_t$ (Jiang et al. 2023, Eq. 5).

    $\\mathbb E[\\nabla \\log \\hat g_t] \\neq \\nabla \\log g$: the bias is $O(1/m)$ and does not vanish
    with more iterations.
    """
    e_data = energy(x).mean()
    log_g = log_mean_exp(_noise_log_weights(energy, noise_x, noise_log_q), 0)
    loss = e_data + log_g
    return ObjectiveOutput(loss=loss, value=loss.detach(), log_z=log_g.detach())


def nce_loss(energy: Energy, x: Tensor, data_log_q: Tensor, noise_x: Tensor, noise_log_q: Tensor, log_normalizer: Tensor | float = 0.0) -> ObjectiveOutput:
    """Noise-contrastive estimation with model $\\log p = -E - c$ and noise ratio $\\nu = m / n$.

    $G(x) = -E(x) - c - \\log q(x) - \\log \\nu$;
    loss $= \\frac1n\\sum_i \\mathrm{softplus}(-G(x_i)) + \\frac{\\nu}{m}\\sum_j \\mathrm{softplus}(G(x'_j))$
    (Gutmann & Hyvarinen 2010, Eq. 8, divided by $n$). Its population minimiser is the true
    $(\\theta, c = \\log Z_\\theta)$.

    Args:
        energy: the model.
        x: data ``(n, ...)``; data_log_q: $\\log q(x)$ ``(n,)``.
        noise_x: ``(m, ...)`` from $q$; noise_log_q: ``(m,)``.
        log_normalizer: $c$, a learnable scalar (or a fixed known $\\log Z$).
    """
    n, m = x.shape[0], noise_x.shape[0]
    if data_log_q.shape != (n,):
        raise ValueError(f"data_log_q must have shape ({n},), got {tuple(data_log_q.shape)}")
    log_nu = math.log(m / n)
    c = torch.as_tensor(log_normalizer, dtype=x.dtype, device=x.device)
    g_data = -energy(x) - c - data_log_q - log_nu
    g_noise = _noise_log_weights(energy, noise_x, noise_log_q) - c - log_nu
    loss = F.softplus(-g_data).mean() + (m / n) * F.softplus(g_noise).mean()
    return ObjectiveOutput(loss=loss, value=loss.detach(), log_z=c.detach())


def contrastive_divergence_loss(energy: Energy, x: Tensor, x_neg: Tensor, alpha: float = 0.0) -> ObjectiveOutput:
    """Contrastive divergence $\\frac1n\\sum E(x_i) - \\frac1k\\sum E(\\tilde x_j) + \\alpha(\\overline{E(x)^2} + \\overline{E(\\tilde x)^2})$.

    ``x_neg`` are (detached) approximate model samples, e.g. from Langevin; the $\\alpha$ term is
    the energy-magnitude regulariser of Du & Mordatch (2019).
    """
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    e_pos, e_neg = energy(x), energy(x_neg.detach())
    gap = e_pos.mean() - e_neg.mean()
    loss = gap + alpha * (e_pos.pow(2).mean() + e_neg.pow(2).mean())
    return ObjectiveOutput(loss=loss, value=gap.detach())


def denoising_score_matching_loss(energy: Energy, x: Tensor, sigma: float, generator: torch.Generator | None = None) -> ObjectiveOutput:
    """Denoising score matching $\\tfrac12\\,\\mathbb E\\lVert \\sigma \\nabla_x E(x + \\sigma\\epsilon) - \\epsilon \\rVert^2$.

    $\\sigma^2$ times Vincent (2011), Eq. 4 with target score $-\\epsilon/\\sigma$; its minimiser
    is the energy of the data convolved with $\\mathcal N(0, \\sigma^2 I)$.
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    x_tilde = (x + sigma * eps).requires_grad_(True)
    (grad,) = torch.autograd.grad(energy(x_tilde).sum(), x_tilde, create_graph=True)
    loss = 0.5 * (sigma * grad - eps).flatten(1).pow(2).sum(-1).mean()
    return ObjectiveOutput(loss=loss, value=loss.detach())


class ReplayBuffer:
    """Replay buffer of persistent Langevin chains (Du & Mordatch 2019; JEM).

    Each draw takes ``n`` stored states, replacing each by a fresh start with probability
    ``reinit_prob``; after sampling, :meth:`update` writes the chains' end states back.

    Args:
        capacity: number of stored states.
        reinit_prob: probability of restarting a chain from the fresh-start distribution.
    """

    def __init__(self, capacity: int = 10000, reinit_prob: float = 0.05) -> None:
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be a positive int, got {capacity!r}")
        if not 0 <= reinit_prob <= 1:
            raise ValueError(f"reinit_prob must be in [0, 1], got {reinit_prob}")
        self.capacity, self.reinit_prob = capacity, float(reinit_prob)
        self.buffer: Tensor | None = None

    def sample(self, n: int, fresh: Callable[[int], Tensor], generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``(x0, index)``: ``n`` chain starts and the buffer slots they came from.

        Args:
            n: number of chains.
            fresh: ``fresh(k) -> (k, *event_shape)`` new starts (the buffer is filled from it once).
        """
        if self.buffer is None:
            self.buffer = fresh(self.capacity).detach().clone()
        device = self.buffer.device
        index = torch.randint(self.capacity, (n,), generator=generator, device=device)
        x0 = self.buffer[index].clone()
        restart = torch.rand(n, generator=generator, device=device) < self.reinit_prob
        k = int(restart.sum())
        if k:
            x0[restart] = fresh(k).to(x0)
        return x0, index

    def update(self, index: Tensor, x: Tensor) -> None:
        """Write the end states ``x`` back into slots ``index``."""
        if self.buffer is None:
            raise RuntimeError("ReplayBuffer.update called before sample")
        self.buffer[index] = x.detach().to(self.buffer)

    def state_dict(self) -> dict:
        return {"capacity": self.capacity, "reinit_prob": self.reinit_prob, "buffer": self.buffer}

    def load_state_dict(self, state: dict) -> None:
        self.capacity, self.reinit_prob, self.buffer = int(state["capacity"]), float(state["reinit_prob"]), state["buffer"]
