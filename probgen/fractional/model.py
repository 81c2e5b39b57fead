r"""Neural SDEs driven by Markov-approximate fBM, with a learnt Hurst index (plain torch).

Daems et al., "Variational Inference for SDEs Driven by Fractional Noise", ICLR 2024.
:class:`NeuralFractionalSDE` holds the prior (drift $b$, diffusion $\sigma$, Hurst index
$H = \mathrm{sigmoid}(h)$) and the variational control $u$; :meth:`NeuralFractionalSDE.simulate`
integrates the augmented SDE (:class:`~probgen.fractional.augmented.AugmentedFractionalSDE`)
with the shared :func:`probgen.sde.sdeint` and returns the paths with the path KL
$\tfrac12\int_0^T |u|^2 dt$ (Eq. 15). :func:`gaussian_log_likelihood` and
:func:`next_observation_context` are the pieces the ELBO (Eq. 16)
$\mathbb{E}_q[\log p(\text{obs} \mid X)] - \mathrm{KL}(q(x_0)\|p(x_0)) - \tfrac12 \mathbb{E}_q\int |u|^2 dt$
is built from.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from probgen.fractional.augmented import AugmentedFractionalSDE, split_state
from probgen.sde import sdeint
from probgen.sde.fbm import KINDS, MarkovFBM
from probgen.sde.guided import GuidedEuler, LinearGaussianChain, Messages
from probgen.sde.solvers import step_grid
from probgen.sde.variational import LinearGaussianObservations, VariationalEuler

__all__ = [
    "MLP",
    "ControlNet",
    "InitialOUPosterior",
    "ObservationAttention",
    "NeuralFractionalSDE",
    "gaussian_log_likelihood",
    "inverse_sigmoid",
    "inverse_softplus",
    "next_observation_context",
    "DEFAULT_N_OU",
    "default_gamma_max",
]

DEFAULT_N_OU = 10
"""Default number K of OU processes. The relative L2 error of the Markov approximation
(``MarkovFBM.relative_error``, T = 1, gamma_max = 20) is 0.069 / 0.072 / 0.190 at H = 0.2 / 0.7 / 0.8
with K = 10, against 0.080 / 0.098 / 0.234 with the paper's K = 5 (``benchmarks/fractional_defaults.py``)."""


def default_gamma_max(horizon: float) -> float:
    r"""The default fastest OU speed for the horizon $T$: $\max(20, 10 T)$.

    The speeds span $[1/\gamma_{max}, \gamma_{max}]$, so this keeps the slowest speed
    $\gamma_{min} \le 1/(10 T)$ (the slowest mode is then nearly a Brownian motion over the
    whole interval, which the long-range part of fBM needs), and never goes below the paper's 20.

    Args:
        horizon: $T > 0$.

    Returns:
        $\gamma_{max}$ as a float.
    """
    return max(20.0, 10.0 * float(horizon))


def inverse_sigmoid(p: float) -> float:
    """logit(p) for p in (0, 1)."""
    return math.log(p) - math.log1p(-p)


def inverse_softplus(y: float) -> float:
    """x with softplus(x) = y > 0."""
    return y + math.log(-math.expm1(-y))


_PHASE = (0.0, math.pi / 2)


def time_features(t: Tensor, batch: int, like: Tensor) -> Tensor:
    """``(batch, 2)`` features ``[sin t, cos t]`` (as in the paper's bridge control)."""
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device).reshape(1)
    return torch.sin(t + like.new_tensor(_PHASE)).expand(batch, 2)


class MLP(nn.Sequential):
    """``depth`` hidden layers of ``hidden`` units with ``activation``; optional zero-initialised output."""

    def __init__(self, d_in: int, d_out: int, hidden: int = 64, depth: int = 2, activation: str = "tanh",
                 zero_last: bool = False) -> None:
        acts = {"tanh": nn.Tanh, "silu": nn.SiLU, "relu": nn.ReLU, "softplus": nn.Softplus}
        if activation not in acts:
            raise ValueError(f"activation must be one of {sorted(acts)}, got {activation!r}")
        if depth < 0 or hidden <= 0:
            raise ValueError(f"need depth >= 0 and hidden > 0, got depth={depth}, hidden={hidden}")
        layers: list[nn.Module] = []
        d = d_in
        for _ in range(depth):
            layers += [nn.Linear(d, hidden), acts[activation]()]
            d = hidden
        last = nn.Linear(d, d_out)
        if zero_last:  # the prior at initialisation (the official code's "Glow trick")
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        layers.append(last)
        super().__init__(*layers)


class ControlNet(nn.Module):
    r"""Variational control $u(t, x, y, c)$ on $[\sin t, \cos t, x, \sqrt{2\gamma} y, c]$, zero at init.

    ``kind="mlp"``: an MLP of all inputs (the paper's control). ``kind="affine"``:
    $u = a(\tau) + W(\tau) s$ with $s = [x, \sqrt{2\gamma} y, c]$ and the coefficients an MLP
    of $\tau = [\sin t, \cos t, c]$: affine in the state, which is the form of the optimal
    control of a linear-Gaussian prior (fBM/fOU bridges and paths), so it trains in far fewer
    steps there. Each $Y_k$ enters scaled by $\sqrt{2\gamma_k}$, the inverse of its
    stationary std, so that slow OU processes (std up to $\sqrt{\gamma_{max}/2}$) do not
    saturate the network.

    Args:
        dim: ``d``; n_ou: ``K``; context_dim: size of ``c`` (0 for none).
        hidden, depth, activation: of the MLP.
        gammas: ``(K,)`` OU speeds for the input scaling (default: no scaling).
        kind: ``"mlp"`` or ``"affine"``.
        learn_variance: also output $\log\kappa^2 = -\mathrm{softplus}(r) \in (-\infty, 0)$ per
            dimension (:meth:`transition`), a function of $(t, c)$ only (for ``"affine"``) or of all
            inputs (``"mlp"``); initialised at $r = -2$ ($\kappa^2 = 0.88$).
        free_variance: with ``learn_variance``, output $\log\kappa^2 = r$ unconstrained and zero at
            initialisation (the residual of a guided step, :class:`probgen.sde.guided.GuidedEuler`).
    """

    def __init__(self, dim: int, n_ou: int, context_dim: int = 0, hidden: int = 64, depth: int = 2,
                 activation: str = "tanh", gammas: Tensor | None = None, kind: str = "mlp",
                 learn_variance: bool = False, free_variance: bool = False) -> None:
        super().__init__()
        if kind not in ("mlp", "affine"):
            raise ValueError(f"control kind must be 'mlp' or 'affine', got {kind!r}")
        self.kind, self.dim = kind, dim
        self.learn_variance = bool(learn_variance)
        self.free_variance = bool(free_variance) and self.learn_variance
        n_var = dim if self.learn_variance else 0
        self.state_dim = dim * (n_ou + 1) + context_dim
        if kind == "mlp":
            self.net = MLP(2 + self.state_dim, dim + n_var, hidden, depth, activation, zero_last=True)
        else:
            self.net = MLP(2 + context_dim, dim * (1 + self.state_dim) + n_var, hidden, depth, activation,
                           zero_last=True)
        if n_var and not self.free_variance:
            with torch.no_grad():
                self.net[-1].bias[-n_var:] = -2.0  # kappa^2 = exp(-softplus(-2)) = 0.88 at initialisation
        scale = torch.ones(n_ou) if gammas is None else torch.sqrt(2 * gammas.detach().float())
        self.register_buffer("y_scale", scale, persistent=False)

    def transition(self, t: Tensor, x: Tensor, y: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """The control ``u (batch, d)`` and ``log_var`` $= \log\kappa^2$ ``(batch, d)`` (``None``
        without ``learn_variance``): the step law of :class:`probgen.sde.variational.VariationalEuler`."""
        tf = time_features(t, x.shape[0], x)
        state = [x, (y * self.y_scale.to(y)).flatten(1)] + ([c] if c is not None else [])
        n_var = self.dim if self.learn_variance else 0
        if self.kind == "mlp":
            out = self.net(torch.cat([tf] + state, dim=-1))
            u = out[:, : self.dim]
        else:
            coef = self.net(torch.cat([tf, c], dim=-1) if c is not None else tf)
            out = coef
            n_aff = self.dim * (1 + self.state_dim)
            bias = coef[:, : self.dim]
            weight = coef[:, self.dim : n_aff].unflatten(-1, (self.dim, self.state_dim))
            u = bias + (weight @ torch.cat(state, dim=-1).unsqueeze(-1)).squeeze(-1)
        if not n_var:
            return u, None
        raw = out[:, out.shape[1] - n_var :]
        return u, (raw if self.free_variance else -F.softplus(raw))

    def forward(self, t: Tensor, x: Tensor, y: Tensor, c: Tensor | None = None) -> Tensor:
        return self.transition(t, x, y, c)[0]


class NeuralFractionalSDE(nn.Module):
    r"""Prior $dX = b\,dt + \sigma\,d\hat B_H$ and posterior control $u$ (Daems et al. 2024, Sec. 4).

    Args:
        dim: latent/observed dimension ``d``.
        n_ou: number of OU processes K of the Markov approximation (0 means ``white``).
        gamma_max: the fastest OU speed (speeds span [1/gamma_max, gamma_max]); ``None`` is
            :func:`default_gamma_max` ``(horizon)`` $= \max(20, 10 T)$, so that $\gamma_{min} \le 1/(10 T)$.
        horizon: T of the weights' L2 criterion; the length of the simulated interval.
        kind: ``"type1"`` (stationary Y(0), standard fBM) or ``"type2"`` (Riemann-Liouville).
        white: Brownian baseline (no OU processes, H = 1/2).
        hurst: initial Hurst index in (0, 1).
        learn_hurst: learn $H = \mathrm{sigmoid}(h)$.
        drift: ``"ou"`` ($-\theta x$), ``"mlp"`` (MLP of $[x, \sin t, \cos t]$), ``"ou+mlp"`` or ``"zero"``.
        theta, learn_theta: initial/fixed $\theta$ of the OU drift (one per dimension).
        diffusion: ``"constant"`` (positive per-dimension $\sigma$) or ``"mlp"`` (softplus MLP of x).
        sigma, learn_sigma: initial/fixed constant $\sigma$.
        context_dim: size of the control's context input.
        control: ``"mlp"`` or ``"affine"`` (see :class:`ControlNet`).
        control_hidden, control_depth, drift_hidden: network sizes.
        learn_variance: the posterior step also learns its variance $\kappa^2 h$ (see
            :mod:`probgen.sde.variational`); ``False`` is the Girsanov control ($\kappa = 1$).
        encoder_hidden: size of an :class:`ObservationEncoder` over the observations still
            ahead (0: none); its summary is part of the control's context.
        guided: the control is the residual of a guided step (:class:`probgen.sde.guided.GuidedEuler`):
            mean shift and an unconstrained $\log\kappa^2$, both zero at initialisation.

    Raises:
        ValueError: bad sizes, an unknown drift/diffusion/kind, or a Hurst index outside (0, 1).
    """

    def __init__(
        self,
        dim: int = 1,
        n_ou: int = DEFAULT_N_OU,
        gamma_max: float | None = None,
        horizon: float = 1.0,
        kind: str = "type1",
        white: bool = False,
        hurst: float = 0.5,
        learn_hurst: bool = True,
        drift: str = "ou",
        theta: float = 0.0,
        learn_theta: bool = False,
        diffusion: str = "constant",
        sigma: float = 1.0,
        learn_sigma: bool = False,
        context_dim: int = 0,
        control: str = "mlp",
        control_hidden: int = 64,
        control_depth: int = 2,
        drift_hidden: int = 64,
        learn_variance: bool = False,
        encoder_hidden: int = 0,
        guided: bool = False,
    ) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if n_ou < 0:
            raise ValueError(f"n_ou must be >= 0, got {n_ou}")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if not 0.0 < hurst < 1.0:
            raise ValueError(f"hurst must lie in (0, 1), got {hurst}")
        if drift not in ("ou", "mlp", "ou+mlp", "zero"):
            raise ValueError(f"drift must be 'ou', 'mlp', 'ou+mlp' or 'zero', got {drift!r}")
        if diffusion not in ("constant", "mlp"):
            raise ValueError(f"diffusion must be 'constant' or 'mlp', got {diffusion!r}")
        if sigma <= 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        if horizon <= 0:
            raise ValueError(f"horizon must be positive, got {horizon}")
        self.white = bool(white) or n_ou == 0
        self.dim, self.kind = dim, kind
        self.n_ou = 0 if self.white else n_ou
        self.gamma_max = default_gamma_max(horizon) if gamma_max is None else float(gamma_max)
        self.horizon = float(horizon)
        raw_h = torch.tensor(inverse_sigmoid(0.5 if self.white else hurst))
        if learn_hurst and not self.white:
            self.hurst_raw = nn.Parameter(raw_h)
        else:
            self.register_buffer("hurst_raw", raw_h)
        self.drift_kind, self.diffusion_kind = drift, diffusion
        theta_t = torch.full((dim,), float(theta))
        if learn_theta:
            self.theta = nn.Parameter(theta_t)
        else:
            self.register_buffer("theta", theta_t)
        self.drift_net = MLP(dim + 2, dim, drift_hidden, 2, "tanh", zero_last=True) if "mlp" in drift else None
        sig = torch.full((dim,), inverse_softplus(float(sigma)))
        if diffusion == "mlp":
            self.sigma_net = MLP(dim, dim, drift_hidden, 1, "tanh")
            nn.init.zeros_(self.sigma_net[-1].weight)
            with torch.no_grad():
                self.sigma_net[-1].bias.copy_(sig)
        elif learn_sigma:
            self.sigma_raw = nn.Parameter(sig)
        else:
            self.register_buffer("sigma_raw", sig)
        gammas = None if self.white else MarkovFBM(0.5, self.n_ou, self.gamma_max, self.horizon, kind).gammas
        self.control = ControlNet(dim, self.n_ou, context_dim, control_hidden, control_depth, gammas=gammas,
                                  kind=control, learn_variance=learn_variance or guided, free_variance=guided)
        self.obs_encoder = ObservationEncoder(dim, encoder_hidden) if encoder_hidden > 0 else None

    # -- prior ------------------------------------------------------------------------------
    @property
    def hurst(self) -> Tensor:
        """$H = \\mathrm{sigmoid}(h)$ (0.5 for the Brownian baseline)."""
        return torch.sigmoid(self.hurst_raw)

    def markov(self) -> MarkovFBM | None:
        """The :class:`MarkovFBM` at the current Hurst index (None when white)."""
        if self.white:
            return None
        return MarkovFBM(self.hurst, self.n_ou, self.gamma_max, self.horizon, self.kind)

    def drift(self, t: Tensor, x: Tensor) -> Tensor:
        """Prior drift $b(t, x)$: ``(batch, d)``."""
        out = torch.zeros_like(x)
        if "ou" in self.drift_kind:
            out = out - self.theta.to(x) * x
        if self.drift_net is not None:
            out = out + self.drift_net(torch.cat([x, time_features(t, x.shape[0], x)], dim=-1))
        return out

    def diffusion(self, t: Tensor, x: Tensor) -> Tensor:
        """Diagonal diffusion $\\sigma(t, x) > 0$: ``(batch, d)``."""
        if self.diffusion_kind == "mlp":
            return F.softplus(self.sigma_net(x)) + 1e-4
        return F.softplus(self.sigma_raw.to(x)).expand_as(x)

    def build_sde(self, posterior: bool = True, context: Callable | None = None,
                  control_until: float | None = None) -> AugmentedFractionalSDE:
        """The augmented SDE with the current $H$ (weights recomputed, differentiable in $H$).

        ``control_until``: switch the control off (prior dynamics) for ``t > control_until``,
        e.g. to predict beyond the conditioning frames.
        """
        m = self.markov()
        if m is None:
            gammas = omegas = self.hurst_raw.new_zeros(0)
        else:
            gammas, omegas = m.gammas, m.omegas
        control = self.control if posterior else None
        if posterior and control_until is not None:
            net = self.control

            def control(t, x, y, c):
                return net(t, x, y, c) * (torch.as_tensor(t) <= control_until).to(x)

        return AugmentedFractionalSDE(
            self.drift, self.diffusion, gammas, omegas, self.dim, control=control, context=context,
            constant_diffusion=self.diffusion_kind == "constant",
        )

    def initial_ou_state(self, batch: int, like: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """$Y(0)$: ``(batch, d, K)``, stationary (type I) or zero (type II)."""
        m = self.markov()
        if m is None:
            return like.new_zeros(batch, self.dim, 0)
        return m.initial_state((batch, self.dim), generator=generator, dtype=like.dtype, device=like.device)

    def simulate(
        self,
        x0: Tensor,
        ts: Tensor,
        dt: float,
        posterior: bool = True,
        context: Callable | None = None,
        generator: torch.Generator | None = None,
        method: str = "euler",
        control_until: float | None = None,
        observations: LinearGaussianObservations | None = None,
        y0: Tensor | None = None,
        guide: Messages | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Integrate the augmented SDE from ``x0`` over ``ts`` with the shared solver.

        The posterior runs on :class:`probgen.sde.variational.VariationalEuler` when the control
        learns its variance or ``observations`` are given (their steps are then conditioned on
        exactly, and the returned KL is the negative ELBO of transitions and those observations);
        otherwise the Girsanov-controlled SDE runs on ``method``.

        Args:
            x0: ``(batch, d)`` initial values.
            ts: ``(T,)`` output times, ``ts[0]`` the start.
            dt: Euler step (``gamma_max * dt <= 0.5`` is enforced).
            posterior: use the control (else the prior, u = 0).
            context: ``context(t, x) -> (batch, c)`` for the control.
            generator: random generator for Y(0) and the Brownian increments.
            method: solver method of :func:`probgen.sde.sdeint` ("euler").
            control_until: prior dynamics after this time (see :meth:`build_sde`).
            observations: optional linear-Gaussian observations of ``X`` (index ``0..d-1``); their
                times must be in ``ts``.
            y0: optional ``(batch, d, K)`` initial OU states (e.g. a draw of
                :class:`InitialOUPosterior`); default a draw from their prior.
            guide: backward messages of :meth:`linear_auxiliary` on the grid of ``ts`` and ``dt``:
                the posterior then runs on :class:`probgen.sde.guided.GuidedEuler` with the control as
                its residual, and the returned KL is $\sum_k \log q(w_k \mid z_k) - \log p(w_k)$ at the
                drawn steps (the observations' log-likelihood is the caller's).

        Returns:
            ``xs: (T, batch, d)``, ``ys: (T, batch, d, K)``, path KL ``(batch,)`` $= \\tfrac12\\int |u|^2 dt$
            (Girsanov) or the negative ELBO of the transitions (and of ``observations``).
        """
        m = self.markov()
        if m is not None:
            m.check_dt(dt)
        if guide is not None:
            if not posterior or observations is not None or control_until is not None:
                raise ValueError("guide needs posterior=True, observations=None and control_until=None")
            sde = self.build_sde(False)
            z0 = sde.initial_state(x0, self.initial_ou_state(x0.shape[0], x0, generator) if y0 is None else y0)
            zs = sdeint(sde, z0, ts, method=GuidedEuler, dt=dt, generator=generator,
                        options={"guide": guide, "transition": self._transition(context)})
            xs, ys, kl = split_state(zs, self.dim, self.n_ou)
            return xs, ys, kl[-1]
        variational = posterior and (self.control.learn_variance or observations is not None)
        sde = self.build_sde(posterior and not variational, context, control_until)
        if y0 is None:
            y0 = self.initial_ou_state(x0.shape[0], x0, generator)
        z0 = sde.initial_state(x0, y0)
        if variational:
            transition = self._transition(context)
            if control_until is not None:
                if observations is not None:
                    raise ValueError("control_until is not supported with observations")
                transition = _switched_off_after(transition, control_until)
            zs = sdeint(sde, z0, ts, method=VariationalEuler, dt=dt, generator=generator,
                        options={"transition": transition, "observations": observations})
        else:
            zs = sdeint(sde, z0, ts, method=method, dt=dt, generator=generator)
        xs, ys, kl = split_state(zs, self.dim, self.n_ou)
        return xs, ys, kl[-1]

    def _transition(self, context: Callable | None) -> Callable[[Tensor, Tensor], tuple[Tensor, Tensor | None]]:
        def transition(t: Tensor, z: Tensor) -> tuple[Tensor, Tensor | None]:
            x, y, _ = split_state(z, self.dim, self.n_ou)
            return self.control.transition(t, x, y, context(t, x) if context is not None else None)

        return transition

    def linear_auxiliary(self, ts: Tensor, obs_times: Tensor, dt: float, obs_std: float,
                         x0: float = 0.0) -> LinearGaussianChain:
        r"""The linear-Gaussian auxiliary of the prior on the solver's grid, in float64 (differentiable).

        The Euler chain of $z = [X, Y]$ with drift $-\theta X - \sigma\sum_k \gamma_k\omega_k Y_k$ (the OU
        part of the drift; $\theta = 0$ for ``drift="mlp"``/``"zero"``) and noise
        $v = [\sigma\sum_k\omega_k, 1, \dots, 1]$ per dimension, $\sigma$ the diffusion at $x_0$;
        observations $y = X + \mathcal N(0, s^2)$; $z_0 = [x_0, Y(0)]$ with $Y(0)$ stationary (type I)
        or zero (type II). For ``drift="ou"`` and constant diffusion it *is* the model's Euler chain.

        Args:
            ts: ``(T,)`` output times from the start; obs_times: ``(n,)`` observation times, each one of ``ts``;
            dt: the solver step; obs_std: $s$; x0: the known $X(0)$.

        Returns:
            :class:`probgen.sde.guided.LinearGaussianChain` over ``D = d (K + 1)`` coordinates.

        Raises:
            ValueError: an observation time that is not in ``ts``.
        """
        d, K = self.dim, self.n_ou
        ts_list = [float(t) for t in ts]
        grid, counts = step_grid(ts_list, dt)
        ends = [0]
        for c in counts:
            ends.append(ends[-1] + c)
        obs_steps = []
        for t in obs_times.tolist():
            j = min(range(len(ts_list)), key=lambda i: abs(ts_list[i] - t))
            if abs(ts_list[j] - t) > 1e-6 * max(1.0, abs(t)) or j == 0:
                raise ValueError(f"observation time {t} is not one of ts after the start {ts_list[0]}")
            obs_steps.append(ends[j])
        f64 = torch.float64
        dev = self.hurst_raw.device
        theta = self.theta.to(f64) if "ou" in self.drift_kind else torch.zeros(d, dtype=f64, device=dev)
        x0_t = torch.full((1, d), float(x0), dtype=f64, device=dev)
        sigma = self.diffusion(ts[0], x0_t.to(self.hurst_raw.dtype))[0].to(f64)
        m = self.markov()
        eye = torch.eye(d, dtype=f64, device=dev)
        mean = torch.cat([x0_t[0], torch.zeros(d * K, dtype=f64, device=dev)])
        if m is None:
            F = torch.diag(-theta)
            v = torch.diag(sigma)
            factor = torch.zeros(d, 0, dtype=f64, device=dev)
        else:
            mk = MarkovFBM(self.hurst.to(f64), K, self.gamma_max, self.horizon, self.kind)
            g, w = mk.gammas, mk.omegas
            f_xy = torch.block_diag(*[(-sigma[i] * g * w).unsqueeze(0) for i in range(d)])  # (d, d K)
            F = torch.cat([torch.cat([torch.diag(-theta), f_xy], 1),
                           torch.cat([torch.zeros(d * K, d, dtype=f64, device=dev), torch.diag(-g.repeat(d))], 1)], 0)
            v = torch.cat([torch.diag(sigma * w.sum()), eye.repeat_interleave(K, dim=0)], 0)
            if self.kind == "type1":
                chol = torch.linalg.cholesky(1.0 / (g[:, None] + g[None, :]))
                factor = torch.cat([torch.zeros(d, d * K, dtype=f64, device=dev), torch.block_diag(*[chol] * d)], 0)
            else:
                factor = torch.zeros(d * (K + 1), 0, dtype=f64, device=dev)
        obs_var = torch.full((d,), float(obs_std) ** 2, dtype=f64, device=dev)
        return LinearGaussianChain(F, v, grid, obs_steps, list(range(d)), obs_var, mean, factor)

    def observation_step_rho(self, ts: Tensor, dt: float, obs_std: float) -> float:
        r"""$\rho = \max_i v_0^2 h_i / s^2$ over the steps into the observation times ``ts[1:]``.

        $v_0 = \sigma \sum_k \omega_k$ is the noise std of X per unit step. With the Girsanov
        family each observation step loses at least $\tfrac12(\rho - \log(1 + \rho))$ nats of
        ELBO, a loss that depends on H through $\sum_k \omega_k$ (constant diffusion only).
        """
        grid, counts = step_grid([float(t) for t in ts], dt)
        ends = [int(sum(counts[: i + 1])) for i in range(len(counts))]
        h = max(grid[j] - grid[j - 1] for j in ends)
        with torch.no_grad():
            sigma = float(self.diffusion(ts[0], ts.new_zeros(1, self.dim)).max())
            m = self.markov()
            v0 = sigma * (float(m.omegas.sum()) if m is not None else 1.0)
        return v0 * v0 * h / obs_std**2


def _switched_off_after(transition: Callable, until: float) -> Callable:
    """The transition ``(u, log_var)``, and the prior's ``(0, 0)`` for ``t > until``."""

    def switched(t: Tensor, z: Tensor) -> tuple[Tensor, Tensor | None]:
        u, log_var = transition(t, z)
        on = (torch.as_tensor(t) <= until).to(u)
        return u * on, None if log_var is None else log_var * on

    return switched


def gaussian_log_likelihood(obs: Tensor, pred: Tensor, std: Tensor | float) -> Tensor:
    """$\\sum \\log \\mathcal N(\\text{obs}; \\text{pred}, \\text{std}^2)$ over all but the batch dimension.

    Args:
        obs, pred: ``(batch, ...)``.
        std: scalar or broadcastable positive std.

    Returns:
        ``(batch,)``.
    """
    std = torch.as_tensor(std, dtype=pred.dtype, device=pred.device)
    ll = -0.5 * ((obs - pred) / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi)
    return ll.flatten(1).sum(-1)


def next_observation_context(times: Tensor, values: Tensor, dt: float) -> Callable[[Tensor, Tensor], Tensor]:
    r"""Context for a control that steers toward observed values.

    At time ``t`` the next observation is $(t_{next}, v_{next})$; the context is
    $[v_{next} - x,\ t_{next} - t,\ (v_{next} - x) / (t_{next} - t + dt)]$. The last entry is
    the Brownian-bridge drift, around which the optimal control's large gain just before an
    observation is easy to express.

    Args:
        times: ``(n,)`` observation times.
        values: ``(batch, n, d)`` observed values.
        dt: the solver step (times within ``dt / 2`` of an observation count as past it).

    Returns:
        ``context(t, x) -> (batch, 2 d + 1)``.
    """

    def context(t: Tensor, x: Tensor) -> Tensor:
        return _next_observation(times, values, dt, t, x)[0]

    return context


def _next_observation(times: Tensor, values: Tensor, dt: float, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """The next-observation features ``(batch, 2 d + 1)`` and the next observation's index ``(1,)``."""
    t = torch.as_tensor(t, dtype=times.dtype, device=times.device).reshape(1)
    idx = torch.searchsorted(times, t + 0.5 * dt).clamp_max(times.numel() - 1)
    diff = values[:, idx[0]] - x
    gap = (times[idx] - t).to(x).expand(x.shape[0], 1)
    return torch.cat([diff, gap, diff / (gap + dt)], dim=-1), idx


class InitialOUPosterior(nn.Module):
    r"""Amortised Gaussian $q(Y(0) \mid y)$ over the initial OU states of a type I prior.

    $q = \mathcal N(\mu, L L^\top)$ per dimension $i$ with
    $\mu_i = b + \sum_j a(t_j)\,(y_{j,i} - x_0)$, $a(t) \in \mathbb R^K$ an MLP of
    $[t / T, \sin t, \cos t]$ and $L$ a learnt lower-triangular $K \times K$ factor shared by
    all paths. For a linear-Gaussian model (fOU with Gaussian observations at fixed times) the
    exact $p(Y(0) \mid y)$ has exactly this form (mean linear in $y$, covariance independent of
    $y$), so with it the ELBO's optimum is the exact log-likelihood, not
    $\mathbb E_{p(Y(0))}[\log p(y \mid Y(0))]$ (0.2-2.6 nats per path lower for the fOU benchmark,
    most at large H). Initialised at the prior $\mathcal N(0, [1/(\gamma_k + \gamma_l)])$, so
    the KL starts at 0.

    Args:
        gammas: ``(K,)`` OU speeds (the stationary prior covariance is $1/(\gamma_k+\gamma_l)$).
        horizon: $T$, the time scale of the weight network's input.
        hidden: width of the weight network $a(t)$.
    """

    def __init__(self, gammas: Tensor, horizon: float, hidden: int = 32) -> None:
        super().__init__()
        g = gammas.detach().to(torch.float64)
        cov = 1.0 / (g[:, None] + g[None, :])
        chol = torch.linalg.cholesky(cov + 1e-12 * torch.eye(g.numel(), dtype=g.dtype))
        self.register_buffer("prior_chol", chol, persistent=False)
        raw = chol.clone()
        raw.diagonal().copy_(torch.log(torch.expm1(chol.diagonal())))  # inverse softplus of the diagonal
        self.chol_raw = nn.Parameter(raw.to(torch.get_default_dtype()))
        self.bias = nn.Parameter(torch.zeros(g.numel()))
        self.weight_net = MLP(3, g.numel(), hidden, 1, "tanh", zero_last=True)
        self.horizon = float(horizon)

    def factor(self) -> Tensor:
        """``(K, K)`` lower-triangular $L$ with a positive diagonal."""
        raw = self.chol_raw
        return torch.tril(raw, -1) + torch.diag_embed(F.softplus(raw.diagonal()))

    def forward(self, times: Tensor, values: Tensor, x0: float = 0.0,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """A reparameterised draw of $Y(0)$ and $\mathrm{KL}(q \| p)$.

        Args:
            times: ``(n,)`` observation times; values: ``(B, n, d)``; x0: the known $X(0)$.
            generator: optional generator for the draw.

        Returns:
            ``y0: (B, d, K)`` and ``kl: (B,)`` (summed over the ``d`` dimensions), in closed form
            $\tfrac12[\mathrm{tr}(C^{-1} L L^\top) + \mu^\top C^{-1} \mu - K + \log\det C - \log\det L L^\top]$.
        """
        t = times.to(values).unsqueeze(-1)
        feats = torch.cat([t / self.horizon, torch.sin(t), torch.cos(t)], dim=-1)
        a = self.weight_net(feats)  # (n, K)
        mu = self.bias.to(values) + torch.einsum("bnd,nk->bdk", values - x0, a)  # (B, d, K)
        L = self.factor().to(values)
        eps = torch.randn(mu.shape, dtype=mu.dtype, device=mu.device, generator=generator)
        y0 = mu + eps @ L.T
        C_chol = self.prior_chol.to(values)
        k = mu.shape[-1]
        A = torch.linalg.solve_triangular(C_chol, L, upper=False)  # C^{-1/2} L
        m = torch.linalg.solve_triangular(C_chol, mu.reshape(-1, k).T, upper=False).T.reshape(mu.shape)
        logdet = 2 * (torch.log(C_chol.diagonal()).sum() - torch.log(L.diagonal()).sum())
        kl_dim = 0.5 * ((A * A).sum() - k + logdet)
        kl = kl_dim * mu.shape[1] + 0.5 * (m * m).sum((-1, -2))
        return y0, kl


class ObservationAttention(nn.Module):
    r"""Linear summary of the observations still ahead: $c_r(t, x) = \sum_{j:\, t_j > t} A_r(t, t_j)\,(y_j - x)$.

    $A(t, t_j) \in \mathbb R^{r}$ is an MLP of $[(t_j - t)/T, \sin t, \cos t]$. For a
    linear-Gaussian model the optimal control's offset is $v^\top q_{k+1}$, with $q_{k+1}$ of the
    backward message linear in all future observations with weights that depend only on
    $(t, t_j)$ (:mod:`probgen.fractional.oracle`), so an affine control of $[x, y, c]$ with this
    summary contains the exact posterior; the next-observation context does not, and loses the
    most at large H, where later observations say most about the slow OU states.

    Args:
        dim: ``d`` of the observations; features: $r$ summaries per dimension; horizon: $T$;
        hidden: width of the weight MLP.
    """

    def __init__(self, dim: int, features: int = 4, horizon: float = 1.0, hidden: int = 32) -> None:
        super().__init__()
        if features < 1:
            raise ValueError(f"features must be >= 1, got {features}")
        self.weight_net = MLP(3, features, hidden, 1, "tanh")  # not zero: the control's zero init needs c != 0
        self.dim, self.features, self.horizon = dim, features, float(horizon)

    def forward(self, times: Tensor, values: Tensor, dt: float, t: Tensor, x: Tensor) -> Tensor:
        """``times: (n,)``, ``values: (B, n, d)``, ``x: (B, d)`` at time ``t`` -> ``(B, d r)``."""
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(1)
        tt = times.to(x)
        ahead = (tt > t + 0.5 * dt).to(x)  # observations not yet reached
        feats = torch.stack([(tt - t) / self.horizon, torch.sin(t).expand_as(tt), torch.cos(t).expand_as(tt)], -1)
        a = self.weight_net(feats) * ahead.unsqueeze(-1)  # (n, r)
        return torch.einsum("bnd,nr->bdr", values.to(x) - x.unsqueeze(1), a).flatten(1)


def attention_context(times: Tensor, values: Tensor, attention: ObservationAttention,
                      dt: float) -> Callable[[Tensor, Tensor], Tensor]:
    """:func:`next_observation_context`'s features and :class:`ObservationAttention`'s summary.

    Returns:
        ``context(t, x) -> (batch, 2 d + 1 + d r)``.
    """

    def context(t: Tensor, x: Tensor) -> Tensor:
        feats, _ = _next_observation(times, values, dt, t, x)
        return torch.cat([feats, attention(times, values, dt, t, x)], dim=-1)

    return context


class ObservationEncoder(nn.Module):
    """Backward GRU over the observations: ``summary[:, j]`` encodes observations ``j..n-1``.

    Args:
        dim: ``d`` of the observations.
        hidden: size of the summary.
    """

    def __init__(self, dim: int, hidden: int = 16) -> None:
        super().__init__()
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        self.gru = nn.GRU(dim + 1, hidden, batch_first=True)
        self.hidden = hidden

    def forward(self, times: Tensor, values: Tensor) -> Tensor:
        """``times: (n,)``, ``values: (batch, n, d)`` -> ``(batch, n, hidden)``."""
        feats = torch.cat([values, times.to(values).expand(values.shape[0], -1).unsqueeze(-1)], dim=-1)
        out, _ = self.gru(feats.flip(1))
        return out.flip(1)


def remaining_observations_context(times: Tensor, values: Tensor, summary: Tensor,
                                   dt: float) -> Callable[[Tensor, Tensor], Tensor]:
    r"""Context over all observations still ahead: :func:`next_observation_context`'s features and
    the backward summary of the observations from the next one on.

    Args:
        times: ``(n,)``; values: ``(batch, n, d)``; summary: ``(batch, n, c)`` from
            :class:`ObservationEncoder`; dt: the solver step.

    Returns:
        ``context(t, x) -> (batch, 2 d + 1 + c)``.
    """

    def context(t: Tensor, x: Tensor) -> Tensor:
        feats, idx = _next_observation(times, values, dt, t, x)
        return torch.cat([feats, summary[:, idx[0]].to(x)], dim=-1)

    return context
