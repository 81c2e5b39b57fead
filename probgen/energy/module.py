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
from probgen.energy.noise import NoiseEnergy, build_noise
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
from probgen.energy.partition import log_partition_grid, log_partition_importance
from probgen.samplers import langevin

OBJECTIVES = ("compositional", "storm", "minibatch", "nce", "cd", "pcd", "dsm")

__all__ = ["OBJECTIVES", "EnergyBasedModel"]


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
        gamma: moving-average weight $\\gamma$ of the compositional objectives.
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
        log_z_samples: importance samples for $\\log Z$ when d > 2.
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
        gamma: float = 0.1,
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
    ) -> None:
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if not isinstance(noise_batch_size, int) or noise_batch_size < 2:
            raise ValueError(f"noise_batch_size must be an int >= 2, got {noise_batch_size!r}")
        if langevin_method not in ("ula", "mala") or sample_method not in ("ula", "mala"):
            raise ValueError(f"langevin_method and sample_method must be 'ula' or 'mala', got {langevin_method!r}, {sample_method!r}")
        if not sample_init_temperature >= 1:
            raise ValueError(f"sample_init_temperature must be >= 1, got {sample_init_temperature}")
        self.save_hyperparameters()
        spec = energy if energy is not None else {"kind": "mlp", "dim": dim, "hidden": 128, "depth": 3, "envelope": 0.01}
        net = build_energy(spec)
        self.noise = build_noise(noise, net.event_shape, **(noise_kwargs or {}))
        self.energy: Energy = SumEnergy([net, NoiseEnergy(self.noise)]) if base_on_noise else net
        self.log_normalizer = nn.Parameter(torch.zeros(()), requires_grad=objective == "nce" and learn_log_normalizer)
        self.register_buffer("noise_fitted", torch.tensor(False))
        self.estimator = MovingAverageLogZ(gamma=gamma, storm=objective == "storm")
        self.replay = ReplayBuffer(buffer_size, reinit_prob)
        self._eval_log_z: tuple[Tensor, Tensor] | None = None

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
        """Fit $q$ to training data ``x: (n, *event_shape)``."""
        self.noise.fit(x.to(self.noise_fitted.device))
        self.noise_fitted.fill_(True)

    def forward(self, x: Tensor) -> Tensor:
        """Energies ``(batch,)``."""
        return self.energy(x)

    # -- training ---------------------------------------------------------------------------
    def _noise_batch(self) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            xn = self.noise.sample(self.hparams.noise_batch_size)
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
            return compositional_loss(self.energy, x, *self._noise_batch(), self.estimator)
        if h.objective == "minibatch":
            return minibatch_loss(self.energy, x, *self._noise_batch())
        if h.objective == "nce":
            xn, lq = self._noise_batch()
            return nce_loss(self.energy, x, self.noise.log_prob(x).detach(), xn, lq, self.log_normalizer)
        if h.objective in ("cd", "pcd"):
            return contrastive_divergence_loss(self.energy, x, self._negatives(), alpha=h.cd_alpha)
        return denoising_score_matching_loss(self.energy, x, h.dsm_sigma)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        out = self.objective_step(x)
        self.log("train/loss", out.loss.detach(), prog_bar=True)
        self.log("train/objective", out.value)
        if out.log_z is not None:
            self.log("train/log_z", out.log_z)
        return out.loss

    # -- evaluation -------------------------------------------------------------------------
    @torch.no_grad()
    def log_partition(self, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``(log Z, ess)``: grid (ess = nan) for d <= 2, else importance sampling from $q$."""
        h = self.hparams
        if len(self.energy.event_shape) == 1 and self.energy.dim <= 2:
            log_z = log_partition_grid(self.energy, -h.grid_bound, h.grid_bound, h.grid_points)
            return log_z, torch.full_like(log_z, float("nan"))
        est = log_partition_importance(self.energy, self.noise, h.log_z_samples, generator=generator)
        return est.log_z, est.ess

    def _eval_step(self, batch, stage: str) -> None:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if self._eval_log_z is None:
            self._eval_log_z = self.log_partition()
        log_z, ess = self._eval_log_z
        e = self.energy(x)
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

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Restore $u_t$ and the replay buffer; the base class restores the RNG at train start."""
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("energy_state")
        if state is not None:
            self.estimator.load_state_dict(state["estimator"])
            self.replay.load_state_dict(state["replay"])
