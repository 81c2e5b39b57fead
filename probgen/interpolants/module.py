"""``StochasticInterpolant``: the LightningModule of the interpolants family."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
from torch import Tensor

from probgen.base import ProbgenModule
from probgen.interpolants.couplings import IndependentCoupling, make_coupling
from probgen.interpolants.generate import EPS_FORMS, ODE_SOLVERS, diffusion_schedule, generate
from probgen.interpolants.likelihood import LIKELIHOOD_SOLVERS, bits_per_dim, log_likelihood
from probgen.interpolants.guidance import guided_fields
from probgen.interpolants.networks import ACTIVATIONS, TimeMLP, UNet
from probgen.interpolants.objectives import VelocityObjective, make_objective, valid_time_interval
from probgen.interpolants.paths import Interpolant

__all__ = ["StochasticInterpolant", "GaussianBase"]


def _positive_int(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _number(name: str, value, lo: float, hi: float = math.inf, *, lo_open: bool = False, hi_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        left, right = "(" if lo_open else "[", ")" if hi_open or hi == math.inf else "]"
        raise ValueError(f"{name} must be a number in {left}{lo}, {hi}{right}, got {value!r}")


class GaussianBase:
    """$N(0, \\sigma^2 I_d)$ with ``sample`` and ``log_prob``."""

    def __init__(self, dim: int, scale: float = 1.0) -> None:
        if scale <= 0:
            raise ValueError(f"base scale must be > 0, got {scale}")
        self.dim, self.scale = dim, float(scale)

    def sample(self, n: int, generator=None, dtype=torch.float32, device="cpu") -> Tensor:
        return self.scale * torch.randn(n, self.dim, generator=generator, dtype=dtype, device=device)

    def log_prob(self, x: Tensor) -> Tensor:
        x = x.reshape(x.shape[0], -1)
        return -0.5 * (x / self.scale).pow(2).sum(-1) - self.dim * (math.log(self.scale) + 0.5 * math.log(2 * math.pi))


class _DensityBase:
    """A :mod:`probgen.data.toy2d` density as the base $\\rho_0$ (sampled on the CPU)."""

    def __init__(self, density) -> None:
        self.density, self.dim = density, density.dim

    def sample(self, n: int, generator=None, dtype=torch.float32, device="cpu") -> Tensor:
        if generator is not None and generator.device.type != "cpu":
            generator = None
        return self.density.sample(n, generator=generator).to(device=device, dtype=dtype)

    def log_prob(self, x: Tensor) -> Tensor:
        return self.density.log_prob(x.reshape(x.shape[0], -1))


class StochasticInterpolant(ProbgenModule):
    """A generative model from a stochastic interpolant between a base $\\rho_0$ and the data.

    Every choice is a plain value so that YAML configs and checkpoints carry it.

    Args:
        dim: data dimension (images are flattened).
        hidden_dims: hidden widths of the :class:`~probgen.interpolants.networks.TimeMLP`
            (default ``[256, 256, 256]``).
        activation: its activation.
        time_frequencies: its Fourier time features.
        space_frequencies, space_scale: its Fourier features of $x$ (0: off; see
            :class:`~probgen.interpolants.networks.TimeMLP`).
        network: ``"mlp"`` (:class:`~probgen.interpolants.networks.TimeMLP`) or ``"unet"``
            (:class:`~probgen.interpolants.networks.UNet`, needs ``image_shape``).
        image_shape: ``[C, H, W]`` of the (flattened) data, for the U-Net and the sample plots.
        unet_channels, unet_channel_mults, unet_num_res_blocks, unet_attention_resolutions:
            the U-Net's width, per-level multipliers, residual blocks per level and the
            feature-map sides with self-attention.
        num_classes: $K > 0$: class-conditional fields, labels from the second tensor of each
            batch (e.g. ``DigitsDataModule(task="conditional_generation")``).
        cond_dim: $> 0$: fields conditioned on any tensor of ``cond_dim`` features per sample
            (the batch's second tensor, flattened). At most one of the two.
        cond_drop_prob: fraction of training samples whose condition is replaced by the null
            one, so that the network also learns the unconditional fields (classifier-free
            guidance; see :mod:`probgen.interpolants.guidance`).
        guidance: the default guidance weight $w$ of :meth:`sample` (0: unconditional, 1:
            conditional, > 1: guided). Likelihoods always use $w = 1$.
        path, gamma, gamma_scale: the :class:`~probgen.interpolants.Interpolant`.
        objective: ``"velocity"``, ``"score"``, ``"denoiser"``, ``"velocity_score"``,
            ``"velocity_denoiser"`` (see :mod:`probgen.interpolants.objectives`).
        antithetic: antithetic noise in the loss.
        base: ``"gaussian"`` ($N(0, \\sigma^2 I)$, $\\sigma$ = ``base_scale``) or a toy density name
            from :mod:`probgen.data.toy2d` (a non-Gaussian base, two-sided paths only).
        base_kwargs: passed to the toy density.
        base_scale: $\\sigma$ of the Gaussian base.
        coupling: ``"independent"``, ``"ot"`` (minibatch optimal transport) or ``"sinkhorn"``
            (entropic minibatch OT, :class:`~probgen.interpolants.couplings.SinkhornCoupling`).
        t_min, t_max: training times are uniform on ``[t_min, t_max]``; None takes the valid
            interval that :func:`~probgen.interpolants.objectives.valid_time_interval` derives from
            the path and the objective (and the score, when ``sample_method="sde"``): e.g. the
            one-sided linear path with the denoiser objective starts at $t = 10^{-3}$ because
            $b$ divides by $\\beta(0) = 0$. Values outside that interval are refused.
            Sampling and likelihood use the same interval.
        lr, weight_decay: AdamW.
        lr_schedule: ``"cosine"`` (to ``lr_min_ratio * lr`` at the last step, after
            ``warmup_steps`` linear warm-up) or ``"constant"``.
        warmup_steps, lr_min_ratio: see ``lr_schedule``.
        grad_clip: clip the gradient norm to this value (0: off).
        ema_decay: decay of the exponential moving average of the weights (0: off); the EMA
            weights are saved in the checkpoint and used by :meth:`sample`, validation and test.
        sample_method, sample_solver, sample_steps, sample_eps: how :meth:`sample` generates
            (see :func:`~probgen.interpolants.generate`).
        sample_eps_schedule: ``"constant"`` ($\\epsilon(t) = \\epsilon_0$) or ``"vanishing"``
            ($\\epsilon(t) = \\epsilon_0 (1 - t)$, which tames $\\epsilon s$ where the score is
            singular at the data end, e.g. a score from the velocity of a one-sided path), or
            any SiT-style form of :func:`~probgen.interpolants.generate.diffusion_schedule`
            (``sample_eps`` is its ``norm``).
        nll_solver, nll_steps, nll_divergence, nll_num_probes: how validation/test compute
            $-\\log\\rho_1$ (see :func:`~probgen.interpolants.log_likelihood`).
        val_nll_samples: validation NLL on the first this many points of the first val batch
            (0: off). Test NLL uses the whole test split.
        bpd_scale: if set, also log bits/dim for data $y = a u + c$ with $a$ = ``bpd_scale``
            ($u$ the dequantised integer data; digits centred on [-1, 1]: $a = 2/17$).
        plot_every_n_val: write a sample PNG under the logger's folder every this many
            validation runs (0: never).
        num_plot_samples: samples per PNG.
    """

    def __init__(
        self,
        dim: int = 2,
        network: str = "mlp",
        image_shape: list[int] | None = None,
        unet_channels: int = 32,
        unet_channel_mults: list[int] | None = None,
        unet_num_res_blocks: int = 1,
        unet_attention_resolutions: list[int] | None = None,
        num_classes: int = 0,
        cond_dim: int = 0,
        cond_drop_prob: float = 0.1,
        guidance: float = 1.0,
        hidden_dims: list[int] | None = None,
        activation: str = "silu",
        time_frequencies: int = 8,
        space_frequencies: int = 0,
        space_scale: float = 8.0,
        path: str = "linear",
        gamma: str = "zero",
        gamma_scale: float = 1.0,
        objective: str = "velocity",
        antithetic: bool = False,
        base: str = "gaussian",
        base_kwargs: dict | None = None,
        base_scale: float = 1.0,
        coupling: str = "independent",
        t_min: float | None = None,
        t_max: float | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        lr_schedule: str = "cosine",
        warmup_steps: int = 0,
        lr_min_ratio: float = 0.01,
        grad_clip: float = 0.0,
        ema_decay: float = 0.999,
        sample_method: str = "ode",
        sample_solver: str = "rk4",
        sample_steps: int = 100,
        sample_eps: float = 0.0,
        sample_eps_schedule: str = "constant",
        nll_solver: str = "rk4",
        nll_steps: int = 50,
        nll_divergence: str = "exact",
        nll_num_probes: int = 1,
        val_nll_samples: int = 2000,
        bpd_scale: float | None = None,
        plot_every_n_val: int = 1,
        num_plot_samples: int = 4000,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        _positive_int("dim", dim)
        if hidden_dims is not None and (
            not isinstance(hidden_dims, (list, tuple)) or not hidden_dims or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden_dims)
        ):
            raise ValueError(f"hidden_dims must be a non-empty list of positive integers, got {hidden_dims!r}")
        hidden_dims = [256, 256, 256] if hidden_dims is None else list(hidden_dims)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if network not in ("mlp", "unet"):
            raise ValueError(f"network must be 'mlp' or 'unet', got {network!r}")
        if image_shape is not None:
            if not isinstance(image_shape, (list, tuple)) or len(image_shape) != 3 or any(
                isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in image_shape
            ):
                raise ValueError(f"image_shape must be [C, H, W] of positive integers, got {image_shape!r}")
            if math.prod(image_shape) != dim:
                raise ValueError(f"image_shape {list(image_shape)} has {math.prod(image_shape)} values, but dim={dim}")
        if network == "unet" and image_shape is None:
            raise ValueError("network='unet' needs image_shape=[C, H, W]")
        _positive_int("num_classes", num_classes, 0)
        _positive_int("cond_dim", cond_dim, 0)
        if num_classes and cond_dim:
            raise ValueError(f"give num_classes or cond_dim, not both; got num_classes={num_classes}, cond_dim={cond_dim}")
        _number("cond_drop_prob", cond_drop_prob, 0.0, 1.0, hi_open=True)
        _number("guidance", guidance, 0.0)
        _positive_int("time_frequencies", time_frequencies, 0)
        _positive_int("space_frequencies", space_frequencies, 0)
        _number("space_scale", space_scale, 0.0, lo_open=True)
        _number("gamma_scale", gamma_scale, 0.0)
        _number("base_scale", base_scale, 0.0, lo_open=True)
        if base_kwargs is not None and not isinstance(base_kwargs, dict):
            raise TypeError(f"base_kwargs must be a dict or None, got {type(base_kwargs).__name__}")
        _number("lr", lr, 0.0, lo_open=True)
        _number("weight_decay", weight_decay, 0.0)
        _positive_int("warmup_steps", warmup_steps, 0)
        _number("lr_min_ratio", lr_min_ratio, 0.0, 1.0)
        _number("grad_clip", grad_clip, 0.0)
        _positive_int("sample_steps", sample_steps)
        _number("sample_eps", sample_eps, 0.0)
        _positive_int("nll_steps", nll_steps)
        _positive_int("nll_num_probes", nll_num_probes)
        _positive_int("val_nll_samples", val_nll_samples, 0)
        if bpd_scale is not None:
            _number("bpd_scale", bpd_scale, 0.0, lo_open=True)
        _positive_int("plot_every_n_val", plot_every_n_val, 0)
        _positive_int("num_plot_samples", num_plot_samples)
        if nll_solver not in LIKELIHOOD_SOLVERS:
            raise ValueError(f"nll_solver must be one of {LIKELIHOOD_SOLVERS}, got {nll_solver!r}")
        if sample_solver not in ODE_SOLVERS:  # the SDE sampler is Euler-Maruyama
            raise ValueError(f"sample_solver must be one of {ODE_SOLVERS} (the ODE solver of sample_method='ode'), got {sample_solver!r}")
        self.interpolant = Interpolant(path=path, gamma=gamma, gamma_scale=gamma_scale)
        self.objective = make_objective(objective, antithetic=antithetic)
        self.coupling = make_coupling(coupling)
        if base == "gaussian":
            self.base = GaussianBase(dim, base_scale)
        else:
            from probgen.data.toy2d import make_density

            self.base = _DensityBase(make_density(base, **(base_kwargs or {})))
            if self.base.dim != dim:
                raise ValueError(f"base {base!r} has dimension {self.base.dim}, but dim={dim}")
            if self.interpolant.kind == "one_sided":
                raise ValueError(f"a one-sided path ({path!r}) needs base='gaussian', got base={base!r}")
        if self.interpolant.kind == "one_sided" and (base_scale != 1.0):
            raise ValueError(f"a one-sided path treats x0 as N(0, I) noise: base_scale must be 1, got {base_scale}")
        if coupling != "independent" and self.interpolant.kind == "one_sided" and self.objective.needs_independent_noise:
            raise ValueError(
                f"coupling={coupling!r} makes x0 depend on x1, but objective {objective!r} on a one-sided path "
                "treats x0 as independent noise: use objective='velocity' or coupling='independent'"
            )
        needs_score = sample_method == "sde" and sample_eps > 0
        if needs_score and self._score_refusal() is not None:
            raise ValueError(f"sample_method='sde' with sample_eps={sample_eps}: {self._score_refusal()}")
        lo, hi = valid_time_interval(self.interpolant, self.objective, score=needs_score)
        self.t_min = lo if t_min is None else float(t_min)
        self.t_max = hi if t_max is None else float(t_max)
        if not lo <= self.t_min < self.t_max <= hi:
            raise ValueError(
                f"t_min, t_max must satisfy {lo} <= t_min < t_max <= {hi} for path {path!r} with objective {objective!r}"
                f"{' and SDE sampling' if needs_score else ''} (outside it a field divides by zero), "
                f"got t_min={self.t_min}, t_max={self.t_max}"
            )
        if self.interpolant.kind == "mirror" and val_nll_samples > 0:
            raise ValueError(
                f"a mirror interpolant has no base density, so it has no likelihood: set val_nll_samples=0, got {val_nll_samples}"
            )
        for name, value, allowed in (
            ("lr_schedule", lr_schedule, ("cosine", "constant")),
            ("sample_method", sample_method, ("ode", "sde")),
            ("sample_eps_schedule", sample_eps_schedule, EPS_FORMS),
            ("nll_divergence", nll_divergence, ("exact", "hutchinson")),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        self.dim = dim
        self.outputs = self.objective.outputs
        self.conditional = bool(num_classes or cond_dim)
        if network == "unet":
            C = image_shape[0]
            self.net = UNet(
                image_shape,
                C * len(self.outputs),
                channels=unet_channels,
                channel_mults=tuple(unet_channel_mults or (1, 2)),
                num_res_blocks=unet_num_res_blocks,
                attention_resolutions=tuple(unet_attention_resolutions if unet_attention_resolutions is not None else (4,)),
                num_classes=num_classes,
                cond_dim=cond_dim,
            )
        else:
            self.net = TimeMLP(
                dim, dim * len(self.outputs), hidden_dims, activation, time_frequencies, space_frequencies, space_scale,
                num_classes=num_classes, cond_dim=cond_dim,
            )
        self.ema_net = copy.deepcopy(self.net).requires_grad_(False) if ema_decay > 0 else None
        self._val_runs = 0

    # ------------------------------------------------------------------------------ fields
    def fields(self, net: torch.nn.Module, cond: Tensor | None = None, guidance: float = 1.0, drop: Tensor | None = None):
        """``fields(t, x) -> {name: (batch, *event)}`` from a network's stacked outputs.

        Args:
            net: the network (``self.net`` or the EMA copy).
            cond: the condition of each sample (conditional models; None: unconditional).
            guidance: the guidance weight $w$ (see :func:`~probgen.interpolants.guidance.guided_fields`).
            drop: a training mask of dropped conditions; overrides ``guidance``.
        """
        names = self.outputs

        def raw(t: Tensor, x: Tensor, c: Tensor | None = None, d: Tensor | None = None) -> dict[str, Tensor]:
            out = net(t, x, c, d) if self.conditional else net(t, x)
            return {n: o.reshape(x.shape) for n, o in zip(names, out.split(self.dim, dim=-1))}

        if not self.conditional:
            return raw
        if drop is not None:
            return lambda t, x: raw(t, x, cond, drop)
        return guided_fields(raw, cond, guidance)

    def _score_refusal(self) -> str | None:
        """Why this model has no (correct) score, or None."""
        I, hp = self.interpolant, self.hparams
        if isinstance(self.objective, VelocityObjective) and I.kind == "one_sided" and not isinstance(self.coupling, IndependentCoupling):
            return (
                f"the score of objective 'velocity' on a one-sided path comes from score_from_velocity, which assumes x0 is "
                f"independent N(0, I) noise; coupling={hp.coupling!r} makes x0 depend on x1, so that score is wrong: use "
                "coupling='independent', or an objective that learns the score ('velocity_denoiser') on a two-sided path"
            )
        if self.objective.score(lambda t, x: {}, I) is None:  # a field-free probe: is s identified?
            return f"objective {hp.objective!r} on path {hp.path!r} does not identify the score"
        return None

    def _eval_net(self) -> torch.nn.Module:
        return self.ema_net if self.ema_net is not None else self.net

    def velocity_field(self, ema: bool = True, cond: Tensor | None = None, guidance: float = 1.0):
        """The drift $b(t, x)$ of the trained model (EMA weights by default; ``cond`` and
        ``guidance`` for conditional models)."""
        net = self._eval_net() if ema else self.net
        return self.objective.velocity(self.fields(net, cond, guidance), self.interpolant)

    def score_field(self, ema: bool = True, cond: Tensor | None = None, guidance: float = 1.0):
        """The score $s(t, x)$ of the trained model (``cond`` and ``guidance`` as for :meth:`velocity_field`).

        Raises:
            ValueError: the objective does not identify the score, or the coupling breaks the
                derivation (OT coupling with the velocity objective on a one-sided path).
        """
        reason = self._score_refusal()
        if reason is not None:
            raise ValueError(reason)
        net = self._eval_net() if ema else self.net
        return self.objective.score(self.fields(net, cond, guidance), self.interpolant)

    # --------------------------------------------------------------------------- training
    def _batch_cond(self, batch) -> Tensor | None:
        if not self.conditional:
            return None
        if len(batch) < 2:
            raise ValueError(
                "a conditional model (num_classes or cond_dim > 0) needs batches (x, condition); this data module gives only x "
                "(for digits use DigitsDataModule(task='conditional_generation'))"
            )
        return batch[1]

    def _loss(self, x1: Tensor, net: torch.nn.Module, generator=None, cond: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        x1 = x1.reshape(x1.shape[0], -1)
        n = x1.shape[0]
        drop = None
        if self.conditional:
            u = torch.rand(n, generator=generator, device=x1.device)
            drop = u < self.hparams.cond_drop_prob if cond is not None else torch.ones(n, dtype=torch.bool, device=x1.device)
        x0 = None  # a mirror path has no base
        if self.interpolant.kind != "mirror":
            x0 = self.base.sample(n, generator, x1.dtype, x1.device)
            x0, x1 = self.coupling(x0, x1)
        t = self.t_min + (self.t_max - self.t_min) * torch.rand(n, generator=generator, dtype=x1.dtype, device=x1.device)
        return self.objective.loss(self.fields(net, cond, drop=drop), self.interpolant, x0, x1, t, generator=generator)

    def training_step(self, batch, batch_idx):
        loss, parts = self._loss(batch[0], self.net, cond=self._batch_cond(batch))
        self.log("train/loss", loss, prog_bar=True)
        for k, v in parts.items():
            self.log(f"train/loss_{k}", v)
        return loss

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.AdamW(self.net.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.lr_schedule == "constant" and hp.warmup_steps == 0:
            return opt
        total = max(int(self.trainer.estimated_stepping_batches), 1) if self.trainer is not None else 1
        warm, floor = hp.warmup_steps, hp.lr_min_ratio

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            if hp.lr_schedule == "constant":
                return 1.0
            progress = min((step - warm) / max(total - warm, 1), 1.0)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        clip = self.hparams.grad_clip or gradient_clip_val
        if clip:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")

    def optimizer_step(self, *args, **kwargs) -> None:
        """The optimiser step, then the EMA update of that step.

        The EMA is updated here rather than in ``on_train_batch_end`` because Lightning runs
        the callbacks' ``on_train_batch_end`` (``ModelCheckpoint`` saves there) before the
        module's: a step-N checkpoint would hold the EMA of step N - 1 and a resumed run's
        EMA would differ from an uninterrupted run's.
        """
        super().optimizer_step(*args, **kwargs)
        self._update_ema()

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.ema_net is None:
            return
        step = self.global_step  # already counts the step just taken
        decay = min(self.hparams.ema_decay, (1 + step) / (10 + step))  # warm-up of the average
        ema = list(self.ema_net.parameters())
        torch._foreach_lerp_(ema, [p.detach() for p in self.net.parameters()], 1.0 - decay)

    # ------------------------------------------------------------------------- evaluation
    def nll(self, x1: Tensor, generator: torch.Generator | None = None, cond: Tensor | None = None) -> Tensor:
        """$-\\log\\rho_1(x_1)$ in nats per sample under the EMA model, ``(batch,)``.

        For a conditional model, $-\\log\\rho_1(x_1 \\mid c)$ with ``cond`` (guidance $w = 1$), or
        the unconditional model's NLL with ``cond=None``.

        Raises:
            ValueError: for a mirror interpolant (no base density, hence no likelihood).
        """
        if self.interpolant.kind == "mirror":
            raise ValueError("a mirror interpolant maps the data to itself through noise: it has no base density and no likelihood")
        hp = self.hparams
        x1 = x1.reshape(x1.shape[0], -1)
        divergence = hp.nll_divergence
        if self.conditional and divergence == "exact":
            divergence = "exact_batch"  # the condition is matched by batch position: no vmap
        lp = log_likelihood(
            self.velocity_field(cond=cond),
            x1,
            self.base.log_prob,
            steps=hp.nll_steps,
            divergence=divergence,
            solver=hp.nll_solver,
            num_probes=hp.nll_num_probes,
            t_span=(self.t_min, self.t_max),
            generator=generator,
        )
        return -lp

    def _log_nll(self, prefix: str, x: Tensor, cond: Tensor | None = None) -> None:
        nll = self.nll(x, cond=cond)
        self.log(f"{prefix}/nll", nll.mean(), prog_bar=prefix == "val", batch_size=len(x))
        if self.hparams.bpd_scale:
            self.log(f"{prefix}/bpd", bits_per_dim(-nll, self.dim, self.hparams.bpd_scale).mean(), batch_size=len(x))

    def validation_step(self, batch, batch_idx):
        x1, cond = batch[0], self._batch_cond(batch)
        g = torch.Generator(device=x1.device).manual_seed(batch_idx)
        loss, _ = self._loss(x1, self._eval_net(), generator=g, cond=cond)
        self.log("val/loss", loss, prog_bar=True, batch_size=len(x1))
        if batch_idx == 0 and self.hparams.val_nll_samples > 0:
            n = self.hparams.val_nll_samples
            self._log_nll("val", x1[:n], None if cond is None else cond[:n])

    def test_step(self, batch, batch_idx):
        x1, cond = batch[0], self._batch_cond(batch)
        g = torch.Generator(device=x1.device).manual_seed(batch_idx)
        loss, _ = self._loss(x1, self._eval_net(), generator=g, cond=cond)
        self.log("test/loss", loss, batch_size=len(x1))
        if self.interpolant.kind != "mirror":
            self._log_nll("test", x1, cond)

    def on_validation_epoch_end(self):
        self._val_runs += 1
        every = self.hparams.plot_every_n_val
        if not every or self._val_runs % every or self.trainer is None or self.trainer.sanity_checking:
            return
        log_dir = getattr(self.logger, "log_dir", None) if self.logger is not None else None
        if log_dir is None:
            return
        dm = getattr(self.trainer, "datamodule", None)
        g = torch.Generator(device=self.device).manual_seed(0)
        samples = self.sample(self.hparams.num_plot_samples, generator=g)
        self.plot_samples(samples, Path(log_dir) / "samples" / f"step_{self.global_step:07d}.png", datamodule=dm)

    # ---------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(
        self, num_samples: int, generator: torch.Generator | None = None, cond: Tensor | None = None, **overrides
    ) -> Tensor:
        """Draw samples with the EMA weights.

        Args:
            num_samples: number of samples (> 0).
            generator: for the base draws and the SDE noise.
            cond: the condition of each sample for a conditional model: labels ``(num_samples,)``
                or a tensor ``(num_samples, *cond_shape)``. None: class-conditional models cycle
                through the classes ``0, 1, ..., K-1, 0, ...``; tensor-conditional models need
                ``cond`` unless ``guidance=0``.
            **overrides: ``method``, ``solver``, ``steps``, ``eps``, ``eps_schedule``,
                ``guidance`` to override the ``sample_*`` settings and the guidance weight;
                ``grid``, ``rho``, ``denoise_last`` are passed to :func:`~probgen.interpolants.generate`.

        Returns:
            ``(num_samples, dim)``.
        """
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples <= 0:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        allowed = {"method", "solver", "steps", "eps", "eps_schedule", "guidance", "grid", "rho", "denoise_last"}
        unknown = set(overrides) - allowed
        if unknown:
            raise ValueError(f"unknown sample overrides {sorted(unknown)}; allowed: {sorted(allowed)}")
        hp = self.hparams
        method = overrides.get("method", hp.sample_method)
        eps = float(overrides.get("eps", hp.sample_eps))
        schedule = overrides.get("eps_schedule", hp.sample_eps_schedule)
        guidance = overrides.get("guidance", hp.guidance)
        if schedule not in EPS_FORMS:
            raise ValueError(f"eps_schedule must be one of {EPS_FORMS}, got {schedule!r}")
        if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not 0 <= guidance < math.inf:
            raise ValueError(f"guidance must be a finite number >= 0, got {guidance!r}")
        dtype = next(self.net.parameters()).dtype
        if self.interpolant.kind == "mirror":
            raise ValueError("a mirror interpolant maps the data to itself: sample from the data, not from the model")
        cond = self._sample_cond(num_samples, cond, guidance)
        x0 = self.base.sample(num_samples, generator, dtype, self.device)
        score = self.score_field(cond=cond, guidance=guidance) if method == "sde" and eps else None  # raises if none
        t_span = (self.t_min, self.t_max)
        if score is not None:  # the score may be singular where b is not
            lo, hi = valid_time_interval(self.interpolant, self.objective, score=True)
            t_span = (max(lo, self.t_min), min(hi, self.t_max))
        return generate(
            self.velocity_field(cond=cond, guidance=guidance),
            x0,
            steps=overrides.get("steps", hp.sample_steps),
            method=method,
            score=score,
            eps=diffusion_schedule(schedule, eps, self.interpolant) if schedule != "constant" and eps else eps,
            solver=overrides.get("solver", hp.sample_solver if method == "ode" else "euler"),
            t_span=t_span,
            generator=generator,
            **{k: overrides[k] for k in ("grid", "rho", "denoise_last") if k in overrides},
        )

    def _sample_cond(self, n: int, cond: Tensor | None, guidance: float) -> Tensor | None:
        hp = self.hparams
        if not self.conditional:
            if cond is not None:
                raise ValueError("cond was given, but this model is unconditional (num_classes = cond_dim = 0)")
            return None
        if cond is None:
            if hp.num_classes:
                return torch.arange(n, device=self.device) % hp.num_classes
            if guidance != 0:
                raise ValueError(f"a tensor-conditional model (cond_dim={hp.cond_dim}) needs cond to sample with guidance {guidance}")
            return None
        if not isinstance(cond, Tensor) or cond.shape[0] != n:
            raise ValueError(f"cond must be a tensor with num_samples = {n} rows, got {getattr(cond, 'shape', type(cond))}")
        if hp.num_classes and (cond.dim() != 1 or bool(((cond < 0) | (cond >= hp.num_classes)).any())):
            raise ValueError(f"class labels must be a (num_samples,) tensor of integers in [0, {hp.num_classes}), got {cond}")
        return cond.to(self.device)
