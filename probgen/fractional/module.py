"""LightningModules of the fractional family: ``FractionalSDE`` and ``LatentFractionalSDE``."""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from probgen.base import ProbgenModule
from probgen.fractional.latent import VideoDecoder, VideoEncoder, frame_context
from probgen.fractional.model import (
    DEFAULT_N_OU,
    InitialOUPosterior,
    NeuralFractionalSDE,
    ObservationAttention,
    attention_context,
    gaussian_log_likelihood,
    default_gamma_max,
    next_observation_context,
    remaining_observations_context,
)
from probgen.sde.fbm import KINDS, MarkovFBM
from probgen.sde.guided import backward_filter, guided_initial_state
from probgen.validation import check_bool, check_choice, check_int, check_real, check_reals
from probgen.sde.variational import LinearGaussianObservations

__all__ = ["FractionalSDE", "LatentFractionalSDE"]


def _check_common(n_ou, gamma_max, horizon, kind, white, hurst, learn_hurst, obs_std, dt, lr, hurst_lr) -> None:
    """The arguments both modules share: the fractional noise and the optimisation."""
    check_int("n_ou", n_ou, ge=0)
    check_real("gamma_max", gamma_max, gt=0, allow_none=True)
    check_real("horizon", horizon, gt=0)
    check_choice("kind", kind, KINDS)
    check_bool("white", white)
    check_real("hurst", hurst, gt=0, lt=1)
    check_bool("learn_hurst", learn_hurst)
    check_real("obs_std", obs_std, gt=0)
    check_real("dt", dt, gt=0)
    check_real("lr", lr, gt=0)
    check_real("hurst_lr", hurst_lr, gt=0, allow_none=True)
    if n_ou > 0 and not white:  # the Euler step against the fastest OU speed, at construction
        resolved = default_gamma_max(horizon) if gamma_max is None else gamma_max
        try:
            MarkovFBM(0.5, n_ou, resolved, horizon, kind).check_dt(dt)
        except ValueError as err:
            if gamma_max is not None:
                raise
            raise ValueError(f"{err} (gamma_max=None means max(20, 10 * horizon) = {resolved:g} for "
                             f"horizon={horizon}, which keeps gamma_min = 1/gamma_max <= 1/(10 T); set "
                             f"gamma_max explicitly to trade that for a coarser dt)") from None


def _hurst_param_groups(model: NeuralFractionalSDE, lr: float, hurst_lr: float | None) -> list[dict]:
    hurst = [p for n, p in model.named_parameters() if n == "hurst_raw"]
    rest = [p for n, p in model.named_parameters() if n != "hurst_raw"]
    groups = [{"params": rest, "lr": lr}]
    if hurst:
        groups.append({"params": hurst, "lr": hurst_lr if hurst_lr is not None else lr})
    return groups


def _constant_one(step: int) -> float:
    return 1.0


class _Warmup:
    """Learning-rate factor 0 for the first ``steps`` optimizer steps, then 1."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def __call__(self, step: int) -> float:
        return 0.0 if step < self.steps else 1.0


class FractionalSDE(ProbgenModule):
    r"""A fractional-noise SDE fitted to observed paths or bridges by variational inference.

    Prior $dX = b\,dt + \sigma\,d\hat B_H$ with $\hat B_H$ the Markov approximation
    (:class:`probgen.sde.MarkovFBM`), posterior control $u$; maximises the ELBO (Daems et al.
    2024, Eq. 16) $\sum_i \log \mathcal N(y_i; X(t_i), s^2) - \tfrac12\int |u|^2 dt$.
    Batches are ``(values (B, n, d), times (B, n))`` with ``times > 0``; $X(0) = x_0$.

    Args:
        dim: dimension d of X.
        n_ou, gamma_max, horizon, kind, white: the Markov approximation (see ``MarkovFBM``);
            ``white=True`` or ``n_ou=0`` is the Brownian baseline. Defaults: K = 10 and
            ``gamma_max=None``, i.e. $\max(20, 10 T)$ (:func:`~probgen.fractional.model.default_gamma_max`),
            so that $\gamma_{min} = 1/\gamma_{max} \le 1/(10 T)$; ``gamma_max * dt <= 0.5`` is
            checked here. The paper used K = 5 (``fou_bridge.yaml`` keeps it).
        hurst, learn_hurst: initial Hurst index and whether to learn it (via a sigmoid).
        drift, theta, learn_theta, diffusion, sigma, learn_sigma: the prior
            (see :class:`~probgen.fractional.model.NeuralFractionalSDE`).
        control: ``"mlp"`` (an MLP of $[\sin t, \cos t, x, y, c]$, the paper's) or ``"affine"``
            (affine in $[x, y, c]$ with MLP coefficients of $[\sin t, \cos t, c]$: the optimal
            control's form for linear-Gaussian priors; see ``ControlNet``).
        control_hidden, control_depth: control network sizes.
        context: ``"none"`` (one fixed conditioning, e.g. a bridge: ``sample`` then draws
            posterior paths), ``"next_obs"`` (the control sees the next observation;
            ``sample`` draws from the learnt prior), ``"all_obs"`` (also a backward-GRU summary
            of all observations still ahead, size ``encoder_hidden``) or ``"attention"`` (also
            ``encoder_hidden`` learnt linear summaries of all observations ahead,
            :class:`~probgen.fractional.model.ObservationAttention`: with ``control="affine"`` the
            form of the exact posterior's control in the linear-Gaussian case).
        transition: ``"girsanov"`` (the paper's control, $\kappa = 1$; warns once when
            $\rho = v_0^2 h / s^2 > 0.1$ on observation steps, where its gap grows with
            $\sum_k\omega_k$ and biases H) or ``"gaussian"`` (learnt mean and variance per step and
            the exact Gaussian update on observation steps, :mod:`probgen.sde.variational`;
            its optimum is the exact likelihood of the Euler chain) or ``"guided"`` (the guided
            proposal of a backward filter on the prior's linear auxiliary,
            :mod:`probgen.sde.guided`, plus the control as a learnt residual, zero at initialisation;
            $Y(0)$ from the auxiliary's exact posterior. For ``drift="ou"`` with a constant
            diffusion its ELBO at zero residual *is* the exact log-likelihood of the Euler chain, for
            every H, so a learnt H is the maximum-likelihood H of the K-term model).
        encoder_hidden: summary size for ``context="all_obs"``.
        hurst_warmup_steps: optimizer steps with the Hurst learning rate at 0, so that the
            control fits the observations before H moves.
        posterior_y0: learn an amortised Gaussian $q(Y(0) \mid y)$ over the initial OU states
            (:class:`~probgen.fractional.model.InitialOUPosterior`, type I only) instead of drawing
            them from their stationary prior; its KL enters the ELBO. With
            ``transition="gaussian"`` the family then contains the exact posterior of the fOU model.
        x0: the known initial value.
        obs_std: observation noise std $s$.
        dt: Euler step of the shared solver.
        lr, hurst_lr: Adam learning rates (``hurst_lr`` for the Hurst logit; default ``lr``).
        sample_points: grid points of ``sample``'s paths over ``[0, horizon]``.
        sample_condition: optional ``[time, value]`` of one observation (d = 1): ``sample`` then
            draws posterior paths given it (a bridge) even with ``context="next_obs"``.
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
        control: str = "mlp",
        control_hidden: int = 64,
        control_depth: int = 2,
        context: str = "none",
        x0: float = 0.0,
        obs_std: float = 0.1,
        dt: float = 0.01,
        lr: float = 1e-3,
        hurst_lr: float | None = None,
        sample_points: int = 101,
        sample_condition: list[float] | None = None,
        transition: str = "girsanov",
        encoder_hidden: int = 16,
        hurst_warmup_steps: int = 0,
        posterior_y0: bool = False,
    ) -> None:
        super().__init__()
        check_int("dim", dim, ge=1)
        _check_common(n_ou, gamma_max, horizon, kind, white, hurst, learn_hurst, obs_std, dt, lr, hurst_lr)
        check_choice("drift", drift, ("ou", "mlp", "ou+mlp", "zero"))
        check_real("theta", theta)
        check_choice("diffusion", diffusion, ("constant", "mlp"))
        check_real("sigma", sigma, gt=0)
        check_choice("control", control, ("mlp", "affine"))
        check_int("control_hidden", control_hidden, ge=1)
        check_int("control_depth", control_depth, ge=0)
        check_choice("context", context, ("none", "next_obs", "all_obs", "attention"))
        check_real("x0", x0)
        check_int("sample_points", sample_points, ge=2)
        if sample_condition is not None:
            check_reals("sample_condition", sample_condition, length=2)
            if dim != 1:
                raise ValueError(f"sample_condition needs dim = 1, got dim={dim}")
            check_real("sample_condition[0]", sample_condition[0], gt=0)
        self.save_hyperparameters()
        check_choice("transition", transition, ("girsanov", "gaussian", "guided"))
        if transition == "guided" and posterior_y0:
            raise ValueError("posterior_y0=True is for transition='gaussian': transition='guided' already draws "
                             "Y(0) from the linear auxiliary's exact posterior")
        if context in ("all_obs", "attention"):
            check_int("encoder_hidden", encoder_hidden, ge=1)
        check_int("hurst_warmup_steps", hurst_warmup_steps, ge=0)
        check_bool("posterior_y0", posterior_y0)
        if posterior_y0 and (kind != "type1" or white or n_ou == 0):
            raise ValueError(f"posterior_y0=True needs a type I prior with OU processes (kind='type1', n_ou >= 1, "
                             f"white=False), got kind={kind!r}, n_ou={n_ou}, white={white}")
        self.sde = NeuralFractionalSDE(
            dim=dim, n_ou=n_ou, gamma_max=gamma_max, horizon=horizon, kind=kind, white=white, hurst=hurst,
            learn_hurst=learn_hurst, drift=drift, theta=theta, learn_theta=learn_theta, diffusion=diffusion,
            sigma=sigma, learn_sigma=learn_sigma, context_dim=self._context_dim(),
            control=control, control_hidden=control_hidden, control_depth=control_depth,
            learn_variance=transition == "gaussian", guided=transition == "guided", encoder_hidden=encoder_hidden if context == "all_obs" else 0,
        )
        self.obs_attention = (ObservationAttention(dim, encoder_hidden, horizon) if context == "attention"
                              else None)
        self.y0_posterior = (InitialOUPosterior(self.sde.markov().gammas.detach(), horizon)
                             if posterior_y0 else None)
        self._rho_warned = False

    def _initial_ou(self, times: Tensor, values: Tensor, generator: torch.Generator | None):
        """``(y0, kl)`` from :class:`InitialOUPosterior`, or ``(None, 0)`` (Y(0) from its prior)."""
        if self.y0_posterior is None:
            return None, 0.0
        return self.y0_posterior(times, values, float(self.hparams.x0), generator=generator)

    def _context_dim(self) -> int:
        hp = self.hparams
        return {"none": 0, "next_obs": 2 * hp.dim + 1, "all_obs": 2 * hp.dim + 1 + hp.encoder_hidden,
                "attention": (2 + hp.encoder_hidden) * hp.dim + 1}[hp.context]

    def _context(self, times: Tensor, values: Tensor):
        hp = self.hparams
        if hp.context == "next_obs":
            return next_observation_context(times, values, hp.dt)
        if hp.context == "all_obs":
            return remaining_observations_context(times, values, self.sde.obs_encoder(times, values), hp.dt)
        if hp.context == "attention":
            return attention_context(times, values, self.obs_attention, hp.dt)
        return None

    def _observations(self, times: Tensor, values: Tensor) -> LinearGaussianObservations | None:
        if self.hparams.transition != "gaussian":
            return None
        return LinearGaussianObservations(times, values, self.hparams.obs_std)

    def _check_rho(self, ts: Tensor) -> None:
        if self._rho_warned or self.hparams.transition != "girsanov":
            return
        hp = self.hparams
        rho = self.sde.observation_step_rho(ts, hp.dt, hp.obs_std)
        if rho > 0.1:
            self._rho_warned = True
            warnings.warn(
                f"rho = v0^2 h / obs_std^2 = {rho:.3g} > 0.1 on observation steps: the Girsanov family loses "
                f">= {0.5 * (rho - math.log1p(rho)):.3g} nats of ELBO per observation, and the loss grows as H "
                "falls, so a learnt H is biased upwards; use transition='guided' (exact for linear-Gaussian "
                "priors) or 'gaussian' (exact update on observation steps), or a smaller dt",
                stacklevel=3,
            )

    def _guide(self, ts: Tensor, times: Tensor, values: Tensor, generator: torch.Generator | None):
        """Backward messages of the linear auxiliary (cast to ``values``' dtype), ``Y(0)`` from its exact
        posterior and $\log p(Y(0)) - \log q(Y(0))$ (``(B,)``)."""
        hp = self.hparams
        chain = self.sde.linear_auxiliary(ts, times, hp.dt, hp.obs_std, float(hp.x0))
        msg = backward_filter(chain, values.to(torch.float64))
        z0, log_ratio = guided_initial_state(chain, msg, generator)
        y0 = z0[:, hp.dim:].unflatten(-1, (hp.dim, self.sde.n_ou)).to(values)
        return msg.to(values.dtype), y0, log_ratio.to(values)

    def elbo(self, values: Tensor, times: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Per-path ELBO terms.

        Args:
            values: ``(B, n, d)`` observations; times: ``(n,)`` or ``(B, n)`` (shared) times > 0.
            generator: optional generator.

        Returns:
            dict with ``elbo``, ``log_lik``, ``kl`` (each ``(B,)``) and ``xs (n + 1, B, d)``.
        """
        if times.dim() == 2:
            times = times[0]
        hp = self.hparams
        ts = torch.cat([times.new_zeros(1), times]).to(values)
        x0 = torch.full((values.shape[0], hp.dim), float(hp.x0), dtype=values.dtype, device=values.device)
        times = times.to(values)
        context = self._context(times, values)
        obs = self._observations(times, values)
        self._check_rho(ts)
        if hp.transition == "guided":
            guide, y0, log_ratio = self._guide(ts, times, values, generator)
            xs, _, kl = self.sde.simulate(x0, ts, hp.dt, posterior=True, context=context, generator=generator,
                                          y0=y0, guide=guide)
            kl = kl - log_ratio
            log_lik = gaussian_log_likelihood(values, xs[1:].transpose(0, 1), hp.obs_std)
            return {"elbo": log_lik - kl, "log_lik": log_lik, "kl": kl, "xs": xs}
        y0, kl_y0 = self._initial_ou(times, values, generator)
        xs, _, kl = self.sde.simulate(x0, ts, hp.dt, posterior=True, context=context, generator=generator,
                                      observations=obs, y0=y0)
        kl = kl + kl_y0
        log_lik = gaussian_log_likelihood(values, xs[1:].transpose(0, 1), hp.obs_std)
        if obs is not None:  # the solver returned the negative ELBO; report kl so that elbo = log_lik - kl
            return {"elbo": -kl, "log_lik": log_lik, "kl": kl + log_lik, "xs": xs}
        return {"elbo": log_lik - kl, "log_lik": log_lik, "kl": kl, "xs": xs}

    def posterior_paths(self, values: Tensor, times: Tensor, ts: Tensor,
                        generator: torch.Generator | None = None) -> Tensor:
        """Posterior paths given observations, on the output grid ``ts``.

        Args:
            values: ``(B, n, d)``; times: ``(n,)`` observation times; ts: ``(m,)`` output times from 0.

        Returns:
            ``(B, m, d)``.
        """
        hp = self.hparams
        x0 = torch.full((values.shape[0], hp.dim), float(hp.x0), dtype=values.dtype, device=values.device)
        times, ts = times.to(values), ts.to(values)
        obs = self._observations(times, values)
        guided = hp.transition == "guided"
        grid = torch.unique(torch.cat([ts, times])) if obs is not None or guided else ts  # observations on the grid
        if guided:
            guide, y0, _ = self._guide(grid, times, values, generator)
            xs, _, _ = self.sde.simulate(x0, grid, hp.dt, posterior=True, context=self._context(times, values),
                                         generator=generator, y0=y0, guide=guide)
            return xs[torch.searchsorted(grid, ts)].transpose(0, 1)
        y0, _ = self._initial_ou(times, values, generator)
        xs, _, _ = self.sde.simulate(x0, grid, hp.dt, posterior=True, context=self._context(times, values),
                                     generator=generator, observations=obs, y0=y0)
        return xs[torch.searchsorted(grid, ts)].transpose(0, 1)

    def _log_params(self, prefix: str) -> None:
        self.log(f"{prefix}/hurst", self.sde.hurst.detach())
        if self.hparams.drift in ("ou", "ou+mlp"):
            self.log(f"{prefix}/theta", self.sde.theta.detach().mean())
        if self.hparams.diffusion == "constant":
            self.log(f"{prefix}/sigma", torch.nn.functional.softplus(self.sde.sigma_raw.detach()).mean())

    def training_step(self, batch, batch_idx):
        values, times = batch
        out = self.elbo(values, times)
        loss = -out["elbo"].mean()
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/kl", out["kl"].mean())
        self._log_params("train")
        return loss

    def validation_step(self, batch, batch_idx):
        values, times = batch
        out = self.elbo(values, times)
        self.log("val/elbo", out["elbo"].mean(), prog_bar=True)
        self._log_params("val")

    def test_step(self, batch, batch_idx):
        values, times = batch
        self.log("test/elbo", self.elbo(values, times)["elbo"].mean())

    def configure_optimizers(self):
        groups = _hurst_param_groups(self.sde, self.hparams.lr, self.hparams.hurst_lr)
        for extra in (self.y0_posterior, self.obs_attention):
            if extra is not None:
                groups[0]["params"] = groups[0]["params"] + list(extra.parameters())
        opt = torch.optim.Adam(groups)
        warm = int(self.hparams.hurst_warmup_steps)
        if warm <= 0 or len(groups) < 2:
            return opt
        sched = torch.optim.lr_scheduler.LambdaLR(opt, [_constant_one, _Warmup(warm)])
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """Paths ``(num_samples, sample_points, d)`` on ``[0, horizon]``.

        Posterior paths for ``context="none"`` or when ``sample_condition`` is set (bridges);
        otherwise paths of the learnt prior. ``transition="guided"`` needs ``sample_condition`` for
        posterior paths (the guide is built from the observation), else it draws prior paths.
        """
        if num_samples <= 0:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        hp = self.hparams
        dtype = self.sde.hurst_raw.dtype
        ts = torch.linspace(0.0, hp.horizon, hp.sample_points, dtype=dtype, device=self.device)
        guided = hp.transition == "guided"
        if hp.sample_condition is not None and (hp.context != "none" or guided):
            t_obs, v_obs = (float(v) for v in hp.sample_condition)
            values = torch.full((num_samples, 1, 1), v_obs, dtype=dtype, device=self.device)
            return self.posterior_paths(values, ts.new_tensor([t_obs]), ts, generator=generator)
        x0 = torch.full((num_samples, hp.dim), float(hp.x0), dtype=dtype, device=self.device)
        xs, _, _ = self.sde.simulate(x0, ts, hp.dt, posterior=hp.context == "none" and not guided, generator=generator)
        return xs.transpose(0, 1)


class LatentFractionalSDE(ProbgenModule):
    r"""Latent video model: encoder -> latent fractional SDE -> decoder (Daems et al. 2024, Sec. 5.3).

    ELBO per video: $\sum_i \log \mathcal N(\text{frame}_i; \text{dec}(X_{t_i}, w), s^2)
    - \mathrm{KL}(q(x_0) \| \mathcal N(0, I)) - \tfrac12 \int |u|^2 dt$.
    Batches are ``(videos (B, T, C, C), times (B, T))`` with ``times[:, 0] = 0``.

    Args:
        latent_dim: d of the latent SDE.
        n_ou, gamma_max, kind, white, hurst, learn_hurst: the fractional noise (defaults as in
            :class:`FractionalSDE`: K = 10, $\gamma_{max} = \max(20, 10 T)$; the paper's K = 5,
            $\gamma_{max} = 10$ are in ``moving_digits.yaml``).
        horizon: time of the last frame (the weights' L2 horizon).
        hidden, context_dim, content_dim: encoder/decoder sizes.
        control_hidden: width of the control MLP.
        obs_std: pixel noise std $s$.
        dt: Euler step.
        num_cond_frames: frames seen by the control when predicting (``predict``/test MSE).
        lr, hurst_lr: Adam learning rates.
        frame_size: canvas side (for ``sample``).
        transition: ``"girsanov"`` (the paper's control, $\kappa = 1$) or ``"gaussian"`` (each step also
            learns its variance $\kappa^2 h$, KL $\tfrac12(u^2 h + \kappa^2 - 1 - \log\kappa^2)$ per step,
            :mod:`probgen.sde.variational`). The decoder is nonlinear, so neither the exact observation
            update nor a guide applies here.
    """

    def __init__(
        self,
        latent_dim: int = 4,
        n_ou: int = DEFAULT_N_OU,
        gamma_max: float | None = None,
        horizon: float = 1.1,
        kind: str = "type1",
        white: bool = False,
        hurst: float = 0.5,
        learn_hurst: bool = True,
        hidden: int = 128,
        context_dim: int = 16,
        content_dim: int = 16,
        control_hidden: int = 64,
        obs_std: float = 0.1,
        dt: float = 0.02,
        num_cond_frames: int = 6,
        lr: float = 1e-3,
        hurst_lr: float | None = None,
        frame_size: int = 16,
        transition: str = "girsanov",
    ) -> None:
        super().__init__()
        check_int("latent_dim", latent_dim, ge=1)
        _check_common(n_ou, gamma_max, horizon, kind, white, hurst, learn_hurst, obs_std, dt, lr, hurst_lr)
        for name, value in (("hidden", hidden), ("context_dim", context_dim), ("content_dim", content_dim),
                            ("control_hidden", control_hidden), ("num_cond_frames", num_cond_frames),
                            ("frame_size", frame_size)):
            check_int(name, value, ge=1)
        check_choice("transition", transition, ("girsanov", "gaussian"))
        self.save_hyperparameters()
        pixels = frame_size * frame_size
        self.encoder = VideoEncoder(pixels, latent_dim, hidden, context_dim, content_dim)
        self.decoder = VideoDecoder(latent_dim, content_dim, pixels, hidden)
        self.sde = NeuralFractionalSDE(
            dim=latent_dim, n_ou=n_ou, gamma_max=gamma_max, horizon=horizon, kind=kind, white=white,
            hurst=hurst, learn_hurst=learn_hurst, drift="mlp", diffusion="constant", sigma=1.0,
            learn_sigma=True, context_dim=context_dim, control_hidden=control_hidden,
            learn_variance=transition == "gaussian",
        )

    def forward_video(self, videos: Tensor, times: Tensor, num_cond: int | None = None,
                      generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Encode, simulate the latent SDE and decode.

        Args:
            videos: ``(B, T, C, C)``; times: ``(T,)`` or ``(B, T)`` frame times from 0.
            num_cond: if given, only the first ``num_cond`` frames are encoded and the control
                is switched off after the last of them (prediction).

        Returns:
            dict with ``recon (B, T, C, C)``, ``elbo``, ``log_lik``, ``kl_x0``, ``kl_path`` (``(B,)``).
        """
        if times.dim() == 2:
            times = times[0]
        hp = self.hparams
        b, t = videos.shape[:2]
        frames = videos.reshape(b, t, -1)
        seen = frames if num_cond is None else frames[:, :num_cond]
        context, content, mean, logvar = self.encoder(seen)
        std = torch.exp(0.5 * logvar)
        eps = torch.randn(mean.shape, dtype=mean.dtype, device=mean.device, generator=generator)
        x0 = mean + std * eps
        kl_x0 = 0.5 * (mean**2 + std**2 - 1 - logvar).sum(-1)
        ctimes = times[: seen.shape[1]].to(frames)
        until = None if num_cond is None else float(times[num_cond - 1])
        xs, _, kl_path = self.sde.simulate(
            x0, times.to(frames), hp.dt, posterior=True, context=frame_context(ctimes, context, hp.dt),
            generator=generator, control_until=until,
        )
        recon = self.decoder(xs.transpose(0, 1), content.unsqueeze(1))  # (B, T, P)
        log_lik = gaussian_log_likelihood(frames, recon, hp.obs_std)
        return {
            "recon": recon.reshape(videos.shape),
            "elbo": log_lik - kl_x0 - kl_path,
            "log_lik": log_lik,
            "kl_x0": kl_x0,
            "kl_path": kl_path,
        }

    def training_step(self, batch, batch_idx):
        videos, times = batch
        out = self.forward_video(videos, times)
        loss = -out["elbo"].mean() / videos.shape[1]
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/hurst", self.sde.hurst.detach())
        return loss

    def _eval(self, batch, prefix: str) -> None:
        videos, times = batch
        out = self.forward_video(videos, times)
        k = self.hparams.num_cond_frames
        pred = self.forward_video(videos, times, num_cond=k)["recon"]
        self.log(f"{prefix}/elbo", out["elbo"].mean(), prog_bar=True)
        self.log(f"{prefix}/recon_mse", ((out["recon"] - videos) ** 2).mean())
        self.log(f"{prefix}/pred_mse", ((pred[:, k:] - videos[:, k:]) ** 2).mean())
        self.log(f"{prefix}/hurst", self.sde.hurst.detach())

    def validation_step(self, batch, batch_idx):
        self._eval(batch, "val")

    def test_step(self, batch, batch_idx):
        self._eval(batch, "test")

    def configure_optimizers(self):
        groups = _hurst_param_groups(self.sde, self.hparams.lr, self.hparams.hurst_lr)
        groups[0]["params"] = groups[0]["params"] + list(self.encoder.parameters()) + list(self.decoder.parameters())
        return torch.optim.Adam(groups)

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None, num_frames: int = 12) -> Tensor:
        """Unconditional videos ``(num_samples, num_frames, C, C)``: $x_0 \\sim N(0, I)$ and prior latent paths.

        The content code, which the model infers from frames but does not model, is drawn from
        $N(0, I)$, so the samples' appearance is rough; for conditional prediction use
        ``forward_video(videos, times, num_cond=k)``.
        """
        if num_samples <= 0:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        hp = self.hparams
        dtype = self.sde.hurst_raw.dtype
        frame_dt = hp.horizon / (num_frames - 1)
        ts = torch.arange(num_frames, dtype=dtype, device=self.device) * frame_dt
        x0 = torch.randn(num_samples, hp.latent_dim, dtype=dtype, device=self.device, generator=generator)
        content = torch.randn(num_samples, 1, hp.content_dim, dtype=dtype, device=self.device, generator=generator)
        xs, _, _ = self.sde.simulate(x0, ts, hp.dt, posterior=False, generator=generator)
        frames = self.decoder(xs.transpose(0, 1), content)
        return frames.reshape(num_samples, num_frames, hp.frame_size, hp.frame_size)
