"""``EnergyBasedModel``: the Lightning wrapper around :mod:`probgen.energy`.

One module, every objective: the energy, the noise distribution $q$, the objective and the
sampler are configured by plain arguments (YAML-friendly). The moving-average state $u_t$ (and
STORM's previous parameters) and the persistent-CD replay buffer go into the checkpoint as
tensors and plain types, so it loads with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from probgen.base import ProbgenModule
from probgen.energy.energies import Energy, SumEnergy, build_energy
from probgen.energy.noise import NoiseEnergy, _check_finite, build_noise
from probgen.energy.objectives import (
    MovingAverageLogZ,
    ObjectiveOutput,
    ReplayBuffer,
    compositional_loss,
    contrastive_divergence_loss,
    denoising_score_matching_loss,
    minibatch_loss,
    nce_loss,
)
from probgen.energy.partition import log_partition_ais, log_partition_grid, log_partition_importance
from probgen.samplers import langevin

OBJECTIVES = ("compositional", "storm", "minibatch", "nce", "cd", "pcd", "dsm")

__all__ = ["OBJECTIVES", "EnergyBasedModel"]


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _check_float(name: str, value, low: float | None = None, high: float | None = None, low_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    bad_low = low is not None and (value <= low if low_open else value < low)
    bad_high = high is not None and value > high
    if bad_low or bad_high:
        lo = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
        hi = "inf)" if high is None else f"{high:g}]"
        raise ValueError(f"{name} must be in {lo}, {hi}, got {value!r}")


class EnergyBasedModel(ProbgenModule):
    """An energy-based model $p_\\theta(x) = e^{-E_\\theta(x)} / Z_\\theta$ trained by one of :data:`OBJECTIVES`.

    Objectives: ``"compositional"`` (moving average $u_t$, Jiang et al. 2023), ``"storm"``
    (its STORM-corrected variant), ``"minibatch"`` (biased plug-in $\\log \\hat Z$), ``"nce"``
    (same $q$, learnt $c = \\log Z$), ``"cd"`` (short-run Langevin from $q$), ``"pcd"``
    (persistent Langevin with a replay buffer), ``"dsm"`` (denoising score matching).

    Validation/test log ``nll`` (per sample, nats) with $\\log Z$ from a midpoint grid for 1-D/2-D
    energies, else importance sampling from $q$ (``log_z_ess`` is logged beside it).

    Args:
        dim: event dimension, used by the default energy and the noise.
        energy: energy spec for :func:`probgen.energy.build_energy` (default: a 3x128 SiLU
            MLP with envelope 0.01).
        objective: one of :data:`OBJECTIVES`.
        noise: ``"gaussian"`` or ``"mixture"``: $q$, fitted to the training split at setup.
        noise_kwargs: passed to the noise class (e.g. ``scale``, ``num_components``, ``diagonal``;
            for ``"gaussian"`` also fixed ``mean``/``cov``).
        fit_noise_to_data: fit $q$ to the training split at setup (else keep ``noise_kwargs``'
            parameters, e.g. a deliberately mismatched $q$).
        base_on_noise: model $p \\propto q\\,e^{-E}$, i.e. the energy is ``E + NoiseEnergy(q)``
            (a product of experts with the fitted $q$); recommended in high dimensions.
        noise_batch_size: $m$, noise samples per step (also the number of CD chains).
        noise_pool: 0 (default): fresh noise batches from $q$ at every step. $N > 0$: the
            importance-sampling objectives (compositional, STORM, minibatch, NCE) draw their noise
            batches with replacement from a pool of $N$ samples of $q$ drawn once, at the first
            step (with their $\log q$ if the model is not tilted); the pool goes into the
            checkpoint. For a costly $q$ (a U-Net flow: ~40 network evaluations per sample) this
            makes a step cost the energy's evaluations only; the objective then uses the pool's
            empirical $q$, so keep $N \gg m$ and judge overfitting to the pool on validation
            (whose $\log Z$ uses fresh samples).
        gamma: moving-average weight $\\gamma$ of the compositional objectives (at step 0).
        gamma_decay, gamma_offset: the decay $\\gamma_t = \\gamma (1 + t / t_0)^{-a}$ of
            :class:`~probgen.energy.MovingAverageLogZ` ($a$ = ``gamma_decay``, 0: constant).
        independent_u: update $u_t$ from a second, independent noise batch (removes the
            correlation part of the stationary bias; one more noise batch per step). It also
            removes the shared batch's bound $\\nabla\\hat g_t / u_t \\le \\nabla\\hat g_t / (\\gamma \\hat g_t)$:
            with heavy-tailed weights (an untilted, mismatched $q$) prefer Adam or ``gamma_decay``.
        learn_log_normalizer: NCE learns $c$ (else $c = 0$: the energy must be normalised).
        langevin_steps, langevin_step_size, langevin_method, langevin_clip_grad: CD sampler.
        cd_alpha: energy-magnitude regulariser of CD.
        buffer_size, reinit_prob: replay buffer of ``"pcd"``.
        dsm_sigma: noise level of DSM.
        lr, weight_decay: Adam.
        sample_steps, sample_step_size, sample_method: :meth:`sample` (Langevin from $q$).
        sample_init_temperature: initial temperature of the annealed sampler (1: no annealing);
            the temperature falls geometrically to 1 over the first half of the steps.
        grid_bound, grid_points: box $[-b, b]^d$ and resolution of the grid $\\log Z$ (d <= 2).
        log_z_samples: importance samples (or AIS chains) for $\\log Z$ when d > 2.
        log_z_method: ``"importance"`` (from $q$) or ``"ais"`` (AIS from $q$ with MALA,
            :func:`~probgen.energy.log_partition_ais`, and reverse AIS from the first evaluation
            batch: ``{stage}/log_z_upper`` and ``{stage}/nll_upper`` are logged beside).
        ais_levels, ais_step_size: AIS schedule length and initial MALA step.
        ais_transition, ais_num_leapfrog: ``"mala"`` or ``"hmc"`` AIS transitions
            (:func:`probgen.samplers.ais`), leapfrog steps per HMC transition.
    """

    def __init__(
        self,
        dim: int = 2,
        energy: dict | None = None,
        objective: str = "compositional",
        noise: str = "gaussian",
        noise_kwargs: dict | None = None,
        fit_noise_to_data: bool = True,
        base_on_noise: bool = False,
        noise_batch_size: int = 1024,
        noise_pool: int = 0,
        gamma: float = 0.1,
        gamma_decay: float = 0.0,
        gamma_offset: float = 100.0,
        independent_u: bool = False,
        learn_log_normalizer: bool = True,
        langevin_steps: int = 20,
        langevin_step_size: float = 0.01,
        langevin_method: str = "ula",
        langevin_clip_grad: float | None = None,
        cd_alpha: float = 0.1,
        buffer_size: int = 10_000,
        reinit_prob: float = 0.05,
        dsm_sigma: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        sample_steps: int = 500,
        sample_step_size: float = 0.01,
        sample_method: str = "mala",
        sample_init_temperature: float = 1.0,
        grid_bound: float = 5.0,
        grid_points: int = 400,
        log_z_samples: int = 50_000,
        log_z_method: str = "importance",
        ais_levels: int = 100,
        ais_step_size: float = 0.05,
        ais_transition: str = "mala",
        ais_num_leapfrog: int = 5,
    ) -> None:
        super().__init__()
        _check_int("dim", dim, 1)
        if energy is not None and not isinstance(energy, dict):
            raise TypeError(f"energy must be a dict spec (see build_energy) or None, got {type(energy).__name__}")
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if not isinstance(noise, str):
            raise TypeError(f"noise must be a string ('gaussian', 'mixture' or 'flow'), got {type(noise).__name__}")
        if noise_kwargs is not None and not isinstance(noise_kwargs, dict):
            raise TypeError(f"noise_kwargs must be a dict or None, got {type(noise_kwargs).__name__}")
        for name, value in (("fit_noise_to_data", fit_noise_to_data), ("base_on_noise", base_on_noise),
                            ("independent_u", independent_u), ("learn_log_normalizer", learn_log_normalizer)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, got {value!r}")
        _check_int("noise_batch_size", noise_batch_size, 2)
        _check_int("langevin_steps", langevin_steps, 1)
        _check_int("buffer_size", buffer_size, 1)
        _check_int("noise_pool", noise_pool, 0)
        _check_int("sample_steps", sample_steps, 1)
        _check_int("grid_points", grid_points, 2)
        _check_int("log_z_samples", log_z_samples, 2)
        for name, value in (("langevin_method", langevin_method), ("sample_method", sample_method)):
            if value not in ("ula", "mala"):
                raise ValueError(f"{name} must be 'ula' or 'mala', got {value!r}")
        _check_float("gamma", gamma, low=0.0, high=1.0, low_open=True)
        _check_float("gamma_decay", gamma_decay, low=0.0, high=1.0)
        _check_float("gamma_offset", gamma_offset, low=0.0, low_open=True)
        _check_float("langevin_step_size", langevin_step_size, low=0.0, low_open=True)
        if langevin_clip_grad is not None:
            _check_float("langevin_clip_grad", langevin_clip_grad, low=0.0, low_open=True)
        _check_float("cd_alpha", cd_alpha, low=0.0)
        _check_float("reinit_prob", reinit_prob, low=0.0, high=1.0)
        _check_float("dsm_sigma", dsm_sigma, low=0.0, low_open=True)
        _check_float("lr", lr, low=0.0, low_open=True)
        _check_float("weight_decay", weight_decay, low=0.0)
        _check_float("sample_step_size", sample_step_size, low=0.0, low_open=True)
        _check_float("sample_init_temperature", sample_init_temperature, low=1.0)
        _check_float("grid_bound", grid_bound, low=0.0, low_open=True)
        if log_z_method not in ("importance", "ais"):
            raise ValueError(f"log_z_method must be 'importance' or 'ais', got {log_z_method!r}")
        _check_int("ais_levels", ais_levels, 1)
        _check_float("ais_step_size", ais_step_size, low=0.0, low_open=True)
        if ais_transition not in ("mala", "hmc"):
            raise ValueError(f"ais_transition must be 'mala' or 'hmc', got {ais_transition!r}")
        _check_int("ais_num_leapfrog", ais_num_leapfrog, 1)
        self.save_hyperparameters()
        spec = energy if energy is not None else {"kind": "mlp", "dim": dim, "hidden": 128, "depth": 3, "envelope": 0.01}
        net = build_energy(spec)
        if net.dim != dim:
            raise ValueError(f"dim={dim} does not match the energy's event shape {net.event_shape} ({net.dim} entries): set dim={net.dim}")
        self.noise = build_noise(noise, net.event_shape, **(noise_kwargs or {}))
        self.energy: Energy = SumEnergy([net, NoiseEnergy(self.noise)]) if base_on_noise else net
        self.log_normalizer = nn.Parameter(torch.zeros(()), requires_grad=objective == "nce" and learn_log_normalizer)
        self.register_buffer("noise_fitted", torch.tensor(False))
        self.estimator = MovingAverageLogZ(gamma=gamma, storm=objective == "storm", gamma_decay=gamma_decay, gamma_offset=gamma_offset)
        self.replay = ReplayBuffer(buffer_size, reinit_prob)
        self._pool: tuple[Tensor, Tensor] | None = None
        self._eval_log_z: tuple[Tensor, Tensor] | None = None
        self._eval_log_z_upper: Tensor | None = None

    # -- setup ------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if bool(self.noise_fitted) or not self.hparams.fit_noise_to_data:
            return
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None:
            return
        dm.setup(stage)
        x = dm.splits["train"][0]
        self.fit_noise(x)

    @torch.no_grad()
    def fit_noise(self, x: Tensor) -> None:
        """Fit $q$ to training data ``x: (n, *event_shape)``.

        A :class:`~probgen.energy.GaussianMixtureNoise` runs EM on a seeded random subsample
        of at most its ``max_fit_points`` rows (default 20,000; set it through
        ``noise_kwargs``, ``None`` for every row).

        Raises:
            ValueError: ``x`` has NaN/inf rows (their indices are named) or the wrong shape.
        """
        _check_finite("fit_noise: x", x)
        self.noise.fit(x.to(self.noise_fitted.device))
        self.noise_fitted.fill_(True)

    def forward(self, x: Tensor) -> Tensor:
        """Energies ``(batch,)``."""
        return self.energy(x)

    # -- training ---------------------------------------------------------------------------
    @property
    def tilt(self) -> Energy:
        """The trained energy: $E_{net}$ of $p \\propto q\\,e^{-E_{net}}$ if ``base_on_noise``, else the model's."""
        return self.energy.terms[0] if self.hparams.base_on_noise else self.energy

    def _noise_batch(self) -> tuple[Tensor, Tensor]:
        """``(x', log q(x'))`` of a fresh noise batch, $\\log q$ computed once.

        For the tilted model the importance weight of $x' \\sim q$ is $e^{-E_{net}(x')}$: the
        $\\log q$ of the model and of the proposal cancel, so none is computed and the
        objectives are called with (:attr:`tilt`, zeros).
        """
        h = self.hparams
        with torch.no_grad():
            if h.noise_pool:
                if self._pool is None:
                    xp = torch.cat([self.noise.sample(min(1024, h.noise_pool - i)) for i in range(0, h.noise_pool, 1024)])
                    lp = torch.zeros(len(xp), dtype=xp.dtype, device=xp.device) if h.base_on_noise else self.noise.log_prob(xp)
                    self._pool = (xp, lp)
                idx = torch.randint(h.noise_pool, (h.noise_batch_size,), device=self._pool[0].device)
                return self._pool[0][idx], self._pool[1][idx]
            xn = self.noise.sample(h.noise_batch_size)
            if self.hparams.base_on_noise:
                return xn, torch.zeros(xn.shape[0], dtype=xn.dtype, device=xn.device)
            return xn, self.noise.log_prob(xn)

    def _negatives(self) -> Tensor:
        h = self.hparams
        def fresh(k: int) -> Tensor:
            return self.noise.sample(k).detach()

        if h.objective == "pcd":
            x0, index = self.replay.sample(h.noise_batch_size, fresh)
        else:
            x0, index = fresh(h.noise_batch_size), None
        res = langevin(self.energy, x0, h.langevin_steps, h.langevin_step_size, method=h.langevin_method, clip_grad=h.langevin_clip_grad)
        if index is not None:
            self.replay.update(index, res.x)
        return res.x

    def objective_step(self, x: Tensor) -> ObjectiveOutput:
        """The configured objective on data ``x: (n, *event_shape)`` (advances $u_t$ / the buffer)."""
        h = self.hparams
        if h.objective in ("compositional", "storm"):
            extra = self._noise_batch() if h.independent_u else (None, None)
            return compositional_loss(self.tilt, x, *self._noise_batch(), self.estimator, *extra)
        if h.objective == "minibatch":
            return minibatch_loss(self.tilt, x, *self._noise_batch())
        if h.objective == "nce":
            xn, lq = self._noise_batch()
            with torch.no_grad():
                lq_data = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device) if h.base_on_noise else self.noise.log_prob(x)
            return nce_loss(self.tilt, x, lq_data, xn, lq, self.log_normalizer)
        if h.objective in ("cd", "pcd"):
            return contrastive_divergence_loss(self.energy, x, self._negatives(), alpha=h.cd_alpha)
        return denoising_score_matching_loss(self.energy, x, h.dsm_sigma)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        _check_finite("training batch", x)
        out = self.objective_step(x)
        self.log("train/loss", out.loss.detach(), prog_bar=True)
        self.log("train/objective", out.value)
        if out.log_z is not None:
            self.log("train/log_z", out.log_z)
        return out.loss

    # -- evaluation -------------------------------------------------------------------------
    @torch.no_grad()
    def log_partition(self, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``(log Z, ess)``: grid (ess = nan) for d <= 2, else importance sampling or AIS from $q$."""
        h = self.hparams
        if len(self.energy.event_shape) == 1 and self.energy.dim <= 2:
            log_z = log_partition_grid(self.energy, -h.grid_bound, h.grid_bound, h.grid_points)
            return log_z, torch.full_like(log_z, float("nan"))
        if h.log_z_method == "ais":
            with torch.inference_mode(False), torch.enable_grad():  # MALA needs gradients, also in Lightning's eval loop
                est = log_partition_ais(self.energy, self.noise, h.log_z_samples, h.ais_levels, step_size=h.ais_step_size, generator=generator,
                                         transition=h.get("ais_transition", "mala"), num_leapfrog=h.get("ais_num_leapfrog", 5))
            return est.lower, est.ess
        est = log_partition_importance(self.energy, self.noise, h.log_z_samples, generator=generator)
        return est.log_z, est.ess

    def log_partition_upper(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Reverse-AIS estimate of $\\log Z$ started from ``x`` (data: the BDMC-on-data upper estimate)."""
        from probgen.samplers import reverse_ais, sigmoid_betas

        h = self.hparams
        res = reverse_ais(self.energy, self.noise, x, sigmoid_betas(h.ais_levels), step_size=h.ais_step_size, generator=generator,
                          transition=h.get("ais_transition", "mala"), num_leapfrog=h.get("ais_num_leapfrog", 5))
        return res.log_z

    def _eval_step(self, batch, stage: str) -> None:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if self._eval_log_z is None:
            self._eval_log_z = self.log_partition()
            self._eval_log_z_upper = None
            if self.hparams.log_z_method == "ais" and not (len(self.energy.event_shape) == 1 and self.energy.dim <= 2):
                with torch.inference_mode(False), torch.enable_grad():
                    self._eval_log_z_upper = self.log_partition_upper(x.clone())
        log_z, ess = self._eval_log_z
        e = self.energy(x)
        if self._eval_log_z_upper is not None:
            self.log(f"{stage}/log_z_upper", self._eval_log_z_upper, batch_size=len(x))
            self.log(f"{stage}/nll_upper", e.mean() + self._eval_log_z_upper, batch_size=len(x))
        self.log(f"{stage}/nll", e.mean() + log_z, prog_bar=stage == "val", batch_size=len(x))
        self.log(f"{stage}/energy", e.mean(), batch_size=len(x))
        self.log(f"{stage}/log_z", log_z, batch_size=len(x))
        if torch.isfinite(ess):
            self.log(f"{stage}/log_z_ess", ess, batch_size=len(x))

    def on_validation_epoch_start(self) -> None:
        self._eval_log_z = None

    on_test_epoch_start = on_validation_epoch_start

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """Energies of the batch: the OOD score (higher = less likely)."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.energy(x)

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    # -- sampling ---------------------------------------------------------------------------
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """Langevin (``sample_method``) from $q$, annealed from ``sample_init_temperature`` to 1.

        Returns:
            ``(num_samples, *event_shape)``.
        """
        if not isinstance(num_samples, int) or num_samples <= 0:
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
        h = self.hparams
        x0 = self.noise.sample(num_samples, generator)
        anneal = None
        if h.sample_init_temperature > 1 and h.sample_steps > 1:
            half = max(h.sample_steps // 2, 1)
            t0 = math.log(h.sample_init_temperature)
            anneal = {"temperature": [math.exp(t0 * max(1 - k / half, 0.0)) for k in range(h.sample_steps)]}
        res = langevin(self.energy, x0, h.sample_steps, h.sample_step_size, method=h.sample_method, anneal=anneal, generator=generator)
        return res.x

    # -- checkpoints ------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Save $u_t$ (and STORM's state) and the replay buffer beside the base class's RNG state."""
        super().on_save_checkpoint(checkpoint)
        checkpoint["energy_state"] = {"estimator": self.estimator.state_dict(), "replay": self.replay.state_dict()}
        if self._pool is not None:
            checkpoint["energy_state"]["noise_pool"] = [self._pool[0], self._pool[1]]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Restore $u_t$ and the replay buffer; the base class restores the RNG at train start."""
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("energy_state")
        if state is not None:
            self.estimator.load_state_dict(state["estimator"])
            self.replay.load_state_dict(state["replay"])
            pool = state.get("noise_pool")
            self._pool = None if pool is None else (pool[0], pool[1])
