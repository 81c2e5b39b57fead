"""``SGLDEnsemble``: the Lightning face of :class:`~probgen.ensembles.ensemble.BayesianEnsemble`.

Manual optimisation: every ``training_step`` evaluates all chains with one vmapped forward,
backpropagates the sum of the chains' losses, and takes one
:class:`~probgen.ensembles.sampler.EnsembleSampler` step (the shared functional SGLD /
pSGLD / SGHMC step of every chain). Chains, the sample store and the sampler state (and its
step counter, which seeds the noise) are in the checkpoint; resuming continues exactly.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import Tensor, nn

from probgen.base import ProbgenModule
from probgen.ensembles.chains import mlp
from probgen.ensembles.diagnostics import chain_diagnostics
from probgen.ensembles.ensemble import SCHEDULES, BayesianEnsemble, SamplingSchedule, run_length, steps_of
from probgen.ensembles.hyperpriors import gibbs_hyperpriors
from probgen.ensembles.likelihoods import CategoricalLikelihood, GaussianLikelihood, StudentTLikelihood
from probgen.ensembles.predictive import (
    mixture_moments,
    mutual_information,
    predictive_entropy,
)
from probgen.ensembles.priors import PRECISION_GROUPS, HierarchicalGaussianPrior, make_prior
from probgen.ensembles.sampler import SAMPLERS
from probgen.ensembles.store import STORE_POLICIES
from probgen.validation import check_choice, check_int, check_real

LIKELIHOODS = ("gaussian", "student_t", "categorical")
HYPERPRIORS = ("gamma",)
log = logging.getLogger(__name__)


class SGLDEnsemble(ProbgenModule):
    """K SG-MCMC chains of one network; predicts with the Bayesian mixture of all kept samples.

    Deep ensembles (``temperature=0``, ``store_size=1``, ``store_policy="last"``), a single
    SGLD chain (``num_chains=1``) and cyclical SG-MCMC (``schedule="cyclical"``) are
    configurations of this one module.

    Args:
        network: any ``nn.Module`` mapping ``(batch, ...)`` inputs to ``(batch, out)``; if None,
            an MLP ``input_dim -> hidden_dims -> output_dim`` with ``activation``. (When given
            as an instance outside the CLI, pass it again to ``load_from_checkpoint``.)
        input_dim, output_dim, hidden_dims, activation: the default MLP. ``input_dim=None``
            reads it from the datamodule's training inputs ``(n, input_dim)`` at setup (and
            from the checkpoint's hyperparameters when loading). ``output_dim`` is the
            target dimension (regression) or the number of classes; heteroscedastic noise
            doubles the network's outputs.
        likelihood: ``"gaussian"``, ``"student_t"`` (degrees of freedom ``noise_df``; its scale
            follows ``noise``) or ``"categorical"``.
        noise: Gaussian noise model: ``"fixed"``, ``"learnt"`` (sampled with the weights, Gamma
            prior on the precision), ``"gibbs"`` (the same prior; the precision is drawn from its
            Gamma conditional given the residuals on the full training split every
            ``gibbs_every`` steps, see :mod:`probgen.ensembles.hyperpriors`) or ``"heteroscedastic"``.
        noise_scale: the fixed (or initial learnt) noise std, in target units; for
            heteroscedastic noise, the std the mean is fitted under during ``warm_start``.
        noise_df: degrees of freedom of the Student-t likelihood, > 0.
        precision_concentration, precision_rate: Gamma prior on the noise precision.
        prior: ``"gaussian"``, ``"laplace"`` or ``"student_t"`` i.i.d. on every weight.
        prior_scale: its scale; ``prior_df``: the Student-t degrees of freedom.
        prior_fan_in: divide the Gaussian prior variance of weight matrices by their fan-in.
        hyperprior: None, or ``"gamma"``: a Gamma$(a_w, b_w)$ hyperprior on the Gaussian prior's
            precision, one precision per chain and group, drawn by Gibbs every ``gibbs_every``
            steps (:class:`~probgen.ensembles.priors.HierarchicalGaussianPrior`; ``prior_scale``
            is the initial prior std). Needs ``prior="gaussian"``.
        hyperprior_groups: ``"tensor"`` (a precision per parameter tensor: each layer's weights
            and biases) or ``"global"`` (one per chain).
        hyperprior_concentration, hyperprior_rate: $a_w, b_w > 0$.
        gibbs_every: steps between Gibbs draws of the precisions (``hyperprior`` and/or
            ``noise="gibbs"``), >= 1.
        gibbs_start: the first step with Gibbs draws (an int, or a float fraction of the run), at
            most ``burn_in``; before it the precisions keep their initial values
            (``1 / prior_scale**2``, ``1 / noise_scale**2``). Drawn from the residuals of an
            unfitted network the noise precision is small, which weakens the likelihood and
            slows the fit that would raise it: on the 1-D gap benchmark chains drawing from
            step 0 still had a noise precision ~6x too small after 6,000 steps.
        num_chains: K.
        sampler: ``"sgld"``, ``"psgld"``, ``"sghmc"`` or ``"adaptive_sghmc"`` (scale-adapted
            SGHMC, Springenberg et al. 2016: its preconditioner adapts during ``burn_in``).
        lr: step size h at step 0 (on $U = N\\ell$, see :mod:`probgen.samplers`).
        step_scale: if set, ``lr = step_scale / N`` (the rule in $hN$: under pSGLD's RMSprop
            preconditioner each weight moves by about $hN$ per step, whatever $N$ is); it
            replaces ``lr``.
        schedule: ``"constant"``, ``"polynomial"`` or ``"cyclical"``.
        temperature: T (1: the posterior; 0: no noise, the deep-ensemble limit).
        burn_in: steps before the first kept sample (an int), or a fraction of the run in
            ``[0, 1)`` (a float).
        warm_start: heteroscedastic noise only: the first steps (an int, or a float fraction
            of the run), at most ``burn_in``, fit the mean under the fixed std ``noise_scale``
            and the variance head on the mean's residuals
            (:meth:`~probgen.ensembles.likelihoods.GaussianLikelihood.log_prob`), so the
            variance cannot grow to excuse an unfitted mean.
        warm_start_objective: the warm start's objective: ``"mean_first"`` (above) or
            ``"beta_nll"`` (Seitzer et al. 2022: each point's NLL weighted by the stop-gradient
            $\sigma^{2\beta}$; a training loss, not a log density, so it too is confined to
            ``warm_start`` <= ``burn_in``).
        beta: $\beta \in [0, 1]$ of ``"beta_nll"``.
        num_epochs, min_steps: if ``num_epochs`` is set, the run is
            :func:`~probgen.ensembles.run_length` ``(N, batch_size, num_epochs, min_steps)``
            updates: the module sets the trainer's ``max_steps`` to it when the trainer has none
            (``max_steps: -1``, with ``max_epochs: -1``); a trainer ``max_steps`` wins.
        thin: keep every ``thin``-th step after burn-in.
        total_steps: length of the cyclical schedule (default: the run's length, see
            ``num_epochs``, else ``trainer.max_steps``).
        num_cycles, exploration_fraction: cyclical schedule (cSG-MCMC, Zhang et al. 2020).
        poly_b, poly_gamma: polynomial schedule ``lr * (b / (b + t))**gamma``.
        alpha, eps: pSGLD; ``friction``: SGHMC.
        store_size: samples kept per chain; ``store_policy``: ``"reservoir"`` or ``"last"``.
        vectorize: ``"vmap"``, ``"sequential"`` or ``"auto"``.
        num_data: N (default: the datamodule's number of training points).
        init: ``"network"`` or ``"prior"`` initialisation of the chains.
        seed: seed of the initialisation, the sampler noise and the store.
        predict_chunk: parameter sets evaluated at once when predicting.
        stop_rhat, stop_ess: run control: if either is set, every ``check_every`` steps after
            ``burn_in`` the predictive diagnostics of the last ``diag_draws`` collected draws
            (:func:`~probgen.ensembles.chain_diagnostics` with ``source="recent"``: evenly
            spaced draws, at the first 64 training inputs) are logged as ``train/rhat_pred_max``
            and ``train/ess_pred_min``, and training stops once ``rhat_pred_max <= stop_rhat``
            and ``ess_pred_min >= stop_ess`` (each only if set). Needs at least 4 draws held.
        check_every: steps between run-control checks, >= 1.
        diag_draws: draws per chain of the last-M diagnostics store, >= 4.
    """

    def __init__(
        self,
        network: nn.Module | None = None,
        input_dim: int | None = 1,
        output_dim: int = 1,
        hidden_dims: list[int] | None = None,
        activation: str = "relu",
        likelihood: str = "gaussian",
        noise: str = "learnt",
        noise_scale: float = 1.0,
        noise_df: float = 4.0,
        precision_concentration: float = 1.0,
        precision_rate: float = 0.1,
        prior: str = "gaussian",
        prior_scale: float = 1.0,
        prior_df: float = 3.0,
        prior_fan_in: bool = False,
        hyperprior: str | None = None,
        hyperprior_groups: str = "tensor",
        hyperprior_concentration: float = 1.0,
        hyperprior_rate: float = 1.0,
        gibbs_every: int = 1,
        gibbs_start: int | float = 0,
        num_chains: int = 8,
        sampler: str = "sgld",
        lr: float = 1e-4,
        step_scale: float | None = None,
        schedule: str = "constant",
        temperature: float = 1.0,
        burn_in: int | float = 1000,
        warm_start: int | float = 0,
        warm_start_objective: str = "mean_first",
        beta: float = 0.5,
        num_epochs: float | None = None,
        min_steps: int = 0,
        thin: int = 10,
        total_steps: int | None = None,
        num_cycles: int = 4,
        exploration_fraction: float = 0.5,
        poly_b: float = 100.0,
        poly_gamma: float = 0.55,
        alpha: float = 0.99,
        eps: float = 1e-5,
        friction: float = 0.1,
        store_size: int = 50,
        store_policy: str = "reservoir",
        vectorize: str = "vmap",
        num_data: int | None = None,
        init: str = "network",
        seed: int = 0,
        predict_chunk: int = 512,
        stop_rhat: float | None = None,
        stop_ess: float | None = None,
        check_every: int = 1000,
        diag_draws: int = 50,
    ) -> None:
        super().__init__()
        check_choice("likelihood", likelihood, LIKELIHOODS)
        check_real("noise_scale", noise_scale, gt=0)
        check_real("noise_df", noise_df, gt=0)
        check_real("prior_scale", prior_scale, gt=0)
        check_real("prior_df", prior_df, gt=0)
        check_choice("hyperprior", hyperprior, HYPERPRIORS, allow_none=True)
        check_choice("hyperprior_groups", hyperprior_groups, PRECISION_GROUPS)
        check_real("hyperprior_concentration", hyperprior_concentration, gt=0)
        check_real("hyperprior_rate", hyperprior_rate, gt=0)
        check_int("gibbs_every", gibbs_every, ge=1)
        steps_of("gibbs_start", gibbs_start, 1)  # type and range
        if hyperprior is not None and prior != "gaussian":
            raise ValueError(f"hyperprior={hyperprior!r} needs prior='gaussian' (a Gamma hyperprior on its "
                             f"precision), got prior={prior!r}")
        if noise == "gibbs" and likelihood != "gaussian":
            raise ValueError(f"noise='gibbs' needs likelihood='gaussian' (a conjugate Gamma conditional), "
                             f"got likelihood={likelihood!r}")
        check_int("num_chains", num_chains, ge=1)
        check_choice("sampler", sampler, SAMPLERS)
        check_real("lr", lr, gt=0)
        check_real("step_scale", step_scale, gt=0, allow_none=True)
        check_int("input_dim", input_dim, ge=1, allow_none=True)
        check_real("num_epochs", num_epochs, ge=0, allow_none=True)
        check_int("min_steps", min_steps, ge=0)
        check_choice("schedule", schedule, SCHEDULES)
        check_real("temperature", temperature, ge=0)
        steps_of("burn_in", burn_in, 1)  # type and range
        steps_of("warm_start", warm_start, 1)
        if warm_start and noise != "heteroscedastic":
            raise ValueError(f"warm_start={warm_start!r} needs noise='heteroscedastic' (it fits the mean before "
                             f"the variance head), got noise={noise!r}")
        check_choice("warm_start_objective", warm_start_objective, ("mean_first", "beta_nll"))
        check_real("beta", beta, ge=0, le=1)
        if warm_start_objective == "beta_nll" and not warm_start:
            raise ValueError("warm_start_objective='beta_nll' is the warm start's objective: set warm_start > 0 "
                             "(at most burn_in; beta-NLL is not a log density, so kept samples never see it)")
        check_int("thin", thin, ge=1)
        check_int("total_steps", total_steps, ge=1, allow_none=True)
        check_int("num_cycles", num_cycles, ge=1, le=total_steps)
        check_real("exploration_fraction", exploration_fraction, ge=0, le=1)
        check_real("poly_b", poly_b, gt=0)
        check_real("poly_gamma", poly_gamma, ge=0)
        check_real("alpha", alpha, ge=0, lt=1)
        check_real("eps", eps, gt=0)
        check_real("friction", friction, gt=0, le=1)
        check_int("store_size", store_size, ge=1)
        check_choice("store_policy", store_policy, STORE_POLICIES)
        check_int("num_data", num_data, ge=1, allow_none=True)
        check_int("seed", seed)
        check_int("predict_chunk", predict_chunk, ge=1)
        check_real("stop_rhat", stop_rhat, ge=1, allow_none=True)
        check_real("stop_ess", stop_ess, gt=0, allow_none=True)
        check_int("check_every", check_every, ge=1)
        check_int("diag_draws", diag_draws, ge=4)
        self.save_hyperparameters()
        if isinstance(self.hparams.get("network"), nn.Module):  # an instance is not weights_only-loadable
            del self.hparams["network"]
            self._hparams_initial.pop("network", None)
        self.automatic_optimization = False
        self.ensemble: BayesianEnsemble | None = None
        if network is not None or input_dim is not None:
            self._build(input_dim, network)
        self.schedule: SamplingSchedule | None = None
        self._lr = lr
        self._eval: dict[str, list] = {}
        self._run_x: Tensor | None = None  # inputs of the run-control diagnostics
        self._gibbs_xy: tuple[Tensor, Tensor] | None = None  # the full training split (Gibbs noise)
        self._gibbs_start = 0  # first step with Gibbs draws (set at setup)
        self.stopped_at: int | None = None  # the step run control stopped after

    def _build(self, input_dim: int | None, network: nn.Module | None = None) -> None:
        hp = self.hparams
        if hp.likelihood == "gaussian":
            lik = GaussianLikelihood(hp.noise, hp.noise_scale, hp.precision_concentration, hp.precision_rate,
                                     warm_start_objective=hp.get("warm_start_objective", "mean_first"),
                                     beta=hp.get("beta", 0.5))
        elif hp.likelihood == "student_t":
            lik = StudentTLikelihood(hp.noise_df, hp.noise, hp.noise_scale, hp.precision_concentration, hp.precision_rate)
        else:
            lik = CategoricalLikelihood()
        if hp.get("hyperprior") is not None:
            prior = HierarchicalGaussianPrior(hp.hyperprior_concentration, hp.hyperprior_rate, hp.hyperprior_groups,
                                              hp.prior_fan_in, hp.prior_scale)
        else:
            prior = make_prior(hp.prior, hp.prior_scale, hp.prior_df, hp.prior_fan_in)
        if network is None:
            hidden = hp.hidden_dims if hp.hidden_dims is not None else [50]
            network = mlp(input_dim, lik.output_dim(hp.output_dim), hidden, hp.activation)
        self.ensemble = BayesianEnsemble(
            network, lik, prior, hp.num_chains,
            hp.num_data or 1, hp.store_size, hp.store_policy, hp.vectorize, hp.seed, hp.init,
            recent_size=hp.diag_draws if self.run_control else 0,
        )

    @property
    def gibbs(self) -> bool:
        """Whether precisions are drawn by Gibbs (``hyperprior`` set or ``noise="gibbs"``)."""
        return self.hparams.get("hyperprior") is not None or self.hparams.get("noise") == "gibbs"

    @property
    def run_control(self) -> bool:
        """Whether the R-hat / ESS stop is on (``stop_rhat`` or ``stop_ess`` set)."""
        return self.hparams.get("stop_rhat") is not None or self.hparams.get("stop_ess") is not None

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # a model configured with input_dim=None is built from the checkpoint's resolved value
        if self.ensemble is None:
            dim = checkpoint.get("hyper_parameters", {}).get("input_dim")
            if dim is None:
                raise ValueError("input_dim=None and the checkpoint has no input_dim hyperparameter; pass input_dim")
            self.hparams.input_dim = int(dim)
            self._build(int(dim))
        super().on_load_checkpoint(checkpoint)

    # -- setup -----------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        hp = self.hparams
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        train = None
        if dm is not None:
            dm.setup(stage)
            train = (getattr(dm, "splits", None) or {}).get("train")
        if self.ensemble is None:
            if train is None:
                raise ValueError("input_dim=None needs a datamodule with a 'train' split to read it from; pass input_dim")
            x = train[0]
            if x.dim() != 2:
                raise ValueError(f"input_dim=None reads (n, input_dim) training inputs, got shape {tuple(x.shape)}; "
                                 f"pass input_dim or a network")
            hp.input_dim = int(x.shape[1])
            self._build(hp.input_dim)
            self.ensemble.to(self.device)
        if train is not None and self.run_control:
            self._run_x = train[0][:64]
        if hp.noise == "gibbs" and hp.likelihood == "gaussian" and stage == "fit":
            if train is None:
                raise ValueError("noise='gibbs' draws the noise precision from the residuals on the full training "
                                 "set: it needs a datamodule with a 'train' split (splits['train'] = (x, y))")
            self._gibbs_xy = (train[0], train[1])
        if hp.num_data is None and train is not None:
            self.ensemble.num_data = len(train[0])
        n = self.ensemble.num_data
        self._lr = hp.step_scale / n if hp.step_scale is not None else hp.lr
        trainer = self.trainer if self._trainer is not None else None
        max_steps = trainer.max_steps if trainer is not None and trainer.max_steps and trainer.max_steps > 0 else None
        run = None
        if hp.num_epochs is not None:
            batch = getattr(dm, "batch_size", None) if dm is not None else None
            if batch is None:
                raise ValueError("num_epochs needs a datamodule with a batch_size to count updates per epoch")
            run = run_length(n, int(batch), hp.num_epochs, hp.min_steps)
            if trainer is not None and max_steps is None:
                trainer.fit_loop.epoch_loop.max_steps = run  # what trainer.max_steps reads
        total = hp.total_steps or run or max_steps
        self._gibbs_start = steps_of("gibbs_start", hp.get("gibbs_start", 0), total or 1)
        if self.gibbs and isinstance(hp.get("gibbs_start", 0), float) and total is None:
            raise ValueError("gibbs_start as a fraction of the run needs total_steps, num_epochs or trainer.max_steps")
        if hp.schedule == "cyclical" and total is None:
            raise ValueError("schedule='cyclical' needs total_steps, num_epochs or trainer.max_steps")
        if total is None and (isinstance(hp.burn_in, float) or isinstance(hp.warm_start, float)):
            raise ValueError("burn_in / warm_start as fractions of the run need total_steps, num_epochs or trainer.max_steps")
        self.schedule = SamplingSchedule(
            lr=self._lr, schedule=hp.schedule, burn_in=steps_of("burn_in", hp.burn_in, total or 1),
            thin=hp.thin, total_steps=total or 1,
            num_cycles=hp.num_cycles, exploration_fraction=hp.exploration_fraction,
            poly_b=hp.poly_b, poly_gamma=hp.poly_gamma, warm_start=steps_of("warm_start", hp.warm_start, total or 1),
        )
        if self.gibbs and self._gibbs_start > self.schedule.burn_in:
            raise ValueError(f"gibbs_start ({self._gibbs_start} steps) must be at most burn_in "
                             f"({self.schedule.burn_in} steps): every kept sample must come from the Gibbs chain")

    def configure_optimizers(self):
        hp = self.hparams
        return self.ensemble.make_sampler(
            hp.sampler, lr=self._lr, temperature=hp.temperature, seed=hp.seed,
            alpha=hp.alpha, eps=hp.eps, friction=hp.friction, adapt_steps=max(1, self.schedule.burn_in),
        )

    # -- training --------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> Tensor:
        x, y = batch[0], batch[1]
        opt = self.optimizers()
        step = opt.param_groups[0]["num_steps"]
        losses = self.ensemble.train_step(x, y, opt, self.schedule, backward=self.manual_backward)
        if self.gibbs and step >= self._gibbs_start and (step + 1) % self.hparams.gibbs_every == 0:
            xy = self._gibbs_xy or (None, None)
            if xy[0] is not None and xy[0].device != x.device:
                xy = self._gibbs_xy = (xy[0].to(x.device), xy[1].to(x.device))
            gibbs_hyperpriors(self.ensemble, *xy, step=step, seed=self.hparams.seed)
        self.log("train/loss", losses.mean(), prog_bar=True)
        self.log("train/lr", self.schedule.at(step)[0])
        self.log("train/kept", float(len(self.ensemble.store)))
        if self.run_control:
            self._check_run(x, step)
        return losses.mean()

    def _check_run(self, x: Tensor, step: int) -> None:
        """Run control after 0-based ``step``: log the predictive R-hat / ESS of the last-M
        store every ``check_every`` steps after burn-in; stop the trainer when they pass."""
        hp = self.hparams
        if self._run_x is None:
            self._run_x = x[:64].detach()
        done = step + 1 - self.schedule.burn_in
        if done <= 0 or done % hp.check_every or len(self.ensemble.recent) < 4:
            return
        diag = chain_diagnostics(self.ensemble, self._run_x.to(self.device), source="recent")
        r, e = diag["rhat_pred_max"], diag["ess_pred_min"]
        self.log("train/rhat_pred_max", r)
        self.log("train/ess_pred_min", e)
        passed = (hp.stop_rhat is None or r <= hp.stop_rhat) and (hp.stop_ess is None or e >= hp.stop_ess)
        if passed and self._trainer is not None:
            log.info("run control: stopping after step %d (rhat_pred_max %.4f, ess_pred_min %.1f)", step + 1, r, e)
            self.stopped_at = step + 1
            self.trainer.should_stop = True

    # -- evaluation ------------------------------------------------------------------------
    @property
    def is_regression(self) -> bool:
        return isinstance(self.ensemble.likelihood, GaussianLikelihood)

    def _target_scale(self) -> float:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        return float(getattr(dm, "y_std", 1.0)) if dm is not None else 1.0

    def _eval_step(self, batch) -> None:
        x, y = batch[0], batch[1]
        buf = self._eval
        if self.is_regression:
            # the mixture of the likelihood's own per-sample densities (Gaussian or Student-t)
            out, lik = self.ensemble.predict_outputs(x, "store", self.hparams.predict_chunk)
            y = y.reshape(len(y), -1)
            mean = self.ensemble.likelihood.moments(out, lik)[0].mean(0)
            log_p = self.ensemble.likelihood.log_prob(out, y, lik)
            buf.setdefault("nll", []).append(-(torch.logsumexp(log_p, 0) - math.log(log_p.shape[0])))
            buf.setdefault("se", []).append((mean - y).square().sum(-1))
        else:
            pred = self.ensemble.per_sample_predictions(x, "store", self.hparams.predict_chunk)
            probs = pred.mean(0)
            buf.setdefault("probs", []).append(probs)
            buf.setdefault("labels", []).append(y)
            buf.setdefault("entropy", []).append(predictive_entropy(pred))
            buf.setdefault("mi", []).append(mutual_information(pred))

    def _eval_end(self, prefix: str) -> dict[str, float]:
        from probgen.metrics import auroc, brier, ece

        buf, self._eval = self._eval, {}
        out: dict[str, float] = {}
        if not buf:
            return out
        if self.is_regression:
            s = self._target_scale()
            d = self.hparams.output_dim
            out["nll"] = float(torch.cat(buf["nll"]).mean()) + d * math.log(s)
            out["rmse"] = float(torch.cat(buf["se"]).mean().sqrt()) * s
        else:
            probs, labels = torch.cat(buf["probs"]), torch.cat(buf["labels"])
            out["nll"] = float(-probs.gather(1, labels[:, None]).clamp_min(1e-12).log().mean())
            out["accuracy"] = float((probs.argmax(1) == labels).float().mean())
            out["ece"] = float(ece(probs, labels))
            out["brier"] = float(brier(probs, labels))
            ood = self._ood_inputs() if prefix == "test" else None
            if ood is not None:
                pred = torch.cat([
                    self.ensemble.per_sample_predictions(ood[i : i + 512].to(self.device), "store", self.hparams.predict_chunk)
                    for i in range(0, len(ood), 512)
                ], dim=1)
                out["ood_auroc_entropy"] = float(auroc(torch.cat(buf["entropy"]), predictive_entropy(pred)))
                out["ood_auroc_mi"] = float(auroc(torch.cat(buf["mi"]), mutual_information(pred)))
        for k, v in out.items():
            self.log(f"{prefix}/{k}", v)
        return out

    def _ood_inputs(self) -> Tensor | None:
        dm = getattr(self.trainer, "datamodule", None)
        splits = getattr(dm, "splits", None) or {}
        return splits["ood"][0] if "ood" in splits else None

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch)
        if batch_idx == 0:
            self._diag_x = batch[0][:64]

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")
        if getattr(self, "_diag_x", None) is not None:
            for k, v in chain_diagnostics(self.ensemble, self._diag_x).items():
                if math.isfinite(v):
                    self.log(f"test/{k}", v)
            self._diag_x = None

    def predict_step(self, batch, batch_idx: int):
        """Regression: ``(mean, var)`` of the mixture, each ``(batch, D)``; classification: ``probs``."""
        pred = self.ensemble.per_sample_predictions(batch[0], "store", self.hparams.predict_chunk)
        return mixture_moments(*pred) if self.is_regression else pred.mean(0)

    def predictive(self, x: Tensor):
        """The Bayesian mixture predictive at ``x`` (see :meth:`BayesianEnsemble.predictive`)."""
        return self.ensemble.predictive(x, "store", self.hparams.predict_chunk)

    # -- sampling --------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """Posterior draws of the flattened parameter vector, uniformly from all kept samples.

        Returns:
            ``(num_samples, num_parameters)``.
        """
        if not isinstance(num_samples, int) or num_samples <= 0:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        flat = self.ensemble.sample_set("store")
        stack = torch.cat([v.reshape(v.shape[0], -1) for v in flat.values()], 1)
        idx = torch.randint(0, len(stack), (num_samples,), generator=generator)
        return stack[idx.to(stack.device)]
