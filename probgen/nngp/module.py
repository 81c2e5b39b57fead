"""``ScaleMixtureNNGP``: the scale-mixture NNGP as a Lightning module.

Training maximises the exact marginal likelihood $\\log p(y)$ of the whole training set over the
kernel's variances, the noise and (optionally) the prior's parameters; each training step is one
optimiser step on $-\\log p(y)/N$ (the batch only drives the loop, as in GP hyperparameter
fitting). Validation and test condition on the training set and log NLL, RMSE and calibration
(regression) or accuracy, NLL, ECE and Brier score (classification). Classification uses either the
paper's Gaussian likelihood on one-hot targets (closed form) or a softmax likelihood by the Laplace
approximation (:class:`~probgen.nngp.LaplaceGPClassifier`; training then maximises the Laplace
evidence integrated over the scale prior).
"""

from __future__ import annotations

import math

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.distributions import (
    Distribution,
    Gamma,
    HalfCauchy,
    InverseGamma,
    LogNormal,
    Normal,
    StudentT,
)

from probgen.base import ProbgenModule
from probgen.nngp.classification import class_probabilities
from probgen.nngp.kernels import NNGPKernel
from probgen.nngp.laplace import LaplaceGPClassifier
from probgen.nngp.priors import BurrXII
from probgen.nngp.processes import GaussianProcess, ScaleMixtureGP, StudentTProcess
from probgen.validation import check_bool, check_choice, check_int, check_real, check_reals

__all__ = ["PRIORS", "ScaleMixtureNNGP", "make_prior"]

PRIORS = ("gaussian", "invgamma", "burr12", "lognormal", "halfcauchy", "gamma")
LIKELIHOODS = ("gaussian", "softmax")


def make_prior(name: str, params: dict | None = None, dtype: torch.dtype = torch.float64) -> Distribution:
    """A scale prior by name: ``burr12(c, d, scale)``, ``lognormal(loc, scale)``, ``halfcauchy(scale)``,
    ``gamma(concentration, rate)``, ``invgamma(concentration, rate)``.
    """
    params = dict(params or {})
    t = {k: torch.tensor(float(v), dtype=dtype) for k, v in params.items()}
    try:
        if name == "burr12":
            return BurrXII(t.get("c", torch.tensor(2.0, dtype=dtype)), t.get("d", torch.tensor(2.0, dtype=dtype)),
                           t.get("scale", torch.tensor(1.0, dtype=dtype)))
        if name == "lognormal":
            return LogNormal(t.get("loc", torch.tensor(0.0, dtype=dtype)), t.get("scale", torch.tensor(1.0, dtype=dtype)))
        if name == "halfcauchy":
            return HalfCauchy(t.get("scale", torch.tensor(1.0, dtype=dtype)))
        if name == "gamma":
            return Gamma(t.get("concentration", torch.tensor(2.0, dtype=dtype)), t.get("rate", torch.tensor(2.0, dtype=dtype)))
        if name == "invgamma":
            return InverseGamma(t.get("concentration", torch.tensor(2.0, dtype=dtype)),
                                t.get("rate", torch.tensor(2.0, dtype=dtype)))
    except TypeError as err:
        raise ValueError(f"prior_params {params} do not fit prior {name!r}: {err}") from err
    raise ValueError(f"prior must be one of {PRIORS[2:]} for ScaleMixtureGP, got {name!r}")


class ScaleMixtureNNGP(ProbgenModule):
    """NNGP regression/classification with a prior on the readout variance (Lee et al. 2022).

    Args:
        depth: hidden layers of the infinitely wide network.
        activation: ``"relu"``, ``"erf"`` or another name in :data:`probgen.nngp.ACTIVATIONS`.
        weight_var: $\\sigma_w^2$ (shared by all layers, or a list of ``depth + 1``).
        bias_var: $\\sigma_b^2$, same layout.
        prior: ``"gaussian"`` (the plain NNGP, readout scale ``scale``), ``"invgamma"`` (Student-t
            process with ``alpha``, ``beta``), or a general prior for :class:`ScaleMixtureGP`:
            ``"burr12"``, ``"lognormal"``, ``"halfcauchy"``, ``"gamma"`` with ``prior_params``.
        prior_params: parameters of a general prior (see :func:`make_prior`).
        alpha, beta: inverse-gamma parameters (``prior="invgamma"``).
        scale: readout variance of the plain NNGP (``prior="gaussian"``); with the softmax
            likelihood ``None`` chooses it by type-II maximum likelihood at every fit.
        noise: $\\epsilon$, noise variance per unit $\\sigma^2$ (Gaussian likelihood only).
        method: ``"quadrature"`` or ``"importance"`` for general priors.
        learn_kernel: learn $\\sigma_w^2, \\sigma_b^2$ (per layer if ``per_layer``).
        learn_noise: learn $\\epsilon$.
        learn_prior: learn ``alpha``/``beta`` or ``scale`` (default: yes for the Gaussian likelihood;
            the softmax likelihood keeps the prior fixed).
        per_layer: one variance per layer.
        lr: Adam learning rate.
        task: ``"regression"`` or ``"classification"`` (integer labels).
        likelihood: for classification, ``"gaussian"`` (the paper's regression on one-hot targets)
            or ``"softmax"`` (Laplace approximation; ``prior="gaussian"`` is then the NNGP
            classifier with readout scale ``scale``, the other priors are integrated over).
        num_classes: number of classes for classification.
        max_train_points: ``None`` (default): condition on every training point (above
            ``solver_options["threshold"]`` points the iterative solver takes over). An integer:
            condition on a seeded random subset of this many points when the training set is
            larger, with a warning that says so.
        solver: ``"auto"``, ``"cholesky"`` or ``"iterative"`` for the Gaussian-likelihood
            processes (:class:`~probgen.nngp.GaussianProcess` and the scale mixtures).
        solver_options: overrides of :data:`probgen.nngp.processes.ITERATIVE_DEFAULTS`.
        num_prob_samples: Monte Carlo draws for class probabilities.
    """

    def __init__(
        self,
        depth: int = 1,
        activation: str = "relu",
        weight_var: float | list[float] = 2.0,
        bias_var: float | list[float] = 0.1,
        prior: str = "invgamma",
        prior_params: dict | None = None,
        alpha: float = 2.0,
        beta: float = 2.0,
        scale: float | None = 1.0,
        noise: float = 0.1,
        method: str = "quadrature",
        learn_kernel: bool = True,
        learn_noise: bool = True,
        learn_prior: bool | None = None,
        per_layer: bool = False,
        lr: float = 0.05,
        task: str = "regression",
        num_classes: int = 10,
        max_train_points: int | None = None,
        num_prob_samples: int = 512,
        likelihood: str = "gaussian",
        solver: str = "auto",
        solver_options: dict | None = None,
    ) -> None:
        super().__init__()
        check_int("depth", depth, ge=0)
        check_reals("weight_var", weight_var, gt=0, length=(1, depth + 1))
        check_reals("bias_var", bias_var, ge=0, length=(1, depth + 1))
        check_choice("prior", prior, PRIORS)
        check_real("alpha", alpha, gt=0)
        check_real("beta", beta, gt=0)
        check_real("scale", scale, gt=0, allow_none=True)
        check_real("noise", noise, ge=0)
        check_choice("method", method, ("quadrature", "importance"))
        for name, value in (("learn_kernel", learn_kernel), ("learn_noise", learn_noise), ("per_layer", per_layer)):
            check_bool(name, value)
        check_bool("learn_prior", learn_prior, allow_none=True)
        check_real("lr", lr, gt=0)
        check_choice("task", task, ("regression", "classification"))
        check_int("num_classes", num_classes, ge=2)
        check_int("max_train_points", max_train_points, ge=2, allow_none=True)
        check_int("num_prob_samples", num_prob_samples, ge=1)
        check_choice("likelihood", likelihood, LIKELIHOODS)
        if likelihood == "softmax" and task != "classification":
            raise ValueError("likelihood='softmax' needs task='classification'")
        if likelihood == "softmax" and learn_prior:
            raise ValueError("learn_prior must be false with likelihood='softmax': the Laplace evidence is "
                             "integrated over a fixed prior (choose its parameters by validation NLL)")
        if scale is None and likelihood != "softmax":
            raise ValueError("scale=None (type-II maximum likelihood) needs likelihood='softmax'; the Gaussian "
                             "likelihood learns the scale with learn_prior")
        if learn_prior is None:
            learn_prior = likelihood == "gaussian"
        self.save_hyperparameters()
        self.hparams.learn_prior = learn_prior
        kernel = NNGPKernel(depth, activation, weight_var=weight_var, bias_var=bias_var, per_layer=per_layer)
        if likelihood == "softmax":
            if prior == "gaussian":
                scale_prior = None
            elif prior == "invgamma":
                scale_prior = make_prior("invgamma", {"concentration": alpha, "rate": beta})
            else:
                scale_prior = make_prior(prior, prior_params)
            process = LaplaceGPClassifier(kernel, prior=scale_prior, scale=scale, num_classes=num_classes)
        elif prior == "gaussian":
            process = GaussianProcess(kernel, scale=scale, noise=noise, solver=solver, solver_options=solver_options)
        elif prior == "invgamma":
            process = StudentTProcess(kernel, alpha=alpha, beta=beta, noise=noise, solver=solver,
                                      solver_options=solver_options)
        else:
            process = ScaleMixtureGP(kernel, make_prior(prior, prior_params), noise=noise, method=method,
                                     generator=torch.Generator().manual_seed(0), solver=solver,
                                     solver_options=solver_options)
        self.process = process.double()
        self.register_buffer("x_train", torch.zeros(0, 0, dtype=torch.float64))
        self.register_buffer("y_train", torch.zeros(0, 0, dtype=torch.float64))
        self._fitted_for_eval = False

    # -- data ---------------------------------------------------------------------------------
    def _targets(self, y: Tensor) -> Tensor:
        if self.hparams.task == "classification":
            return torch.nn.functional.one_hot(y.long().flatten(), self.hparams.num_classes).to(torch.float64)
        return y.to(torch.float64).reshape(len(y), -1)

    def _collect_training_set(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and getattr(dm, "splits", None) is None and hasattr(dm, "setup"):
            dm.setup("fit")
        if dm is not None and getattr(dm, "splits", None) is not None:
            x, y = dm.splits["train"][:2]
        else:
            xs, ys = zip(*[(b[0], b[1]) for b in self.trainer.fit_loop._data_source.dataloader()])
            x, y = torch.cat(xs), torch.cat(ys)
        cap = self.hparams.max_train_points
        if cap is not None and len(x) > cap:
            rank_zero_warn(f"ScaleMixtureNNGP conditions on a seeded random subset of {cap} of the {len(x)} "
                           f"training points (max_train_points={cap}); set max_train_points=null to use all "
                           "of them (the iterative solver takes over above solver_options.threshold points)")
            idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:cap]
            x, y = x[idx], y[idx]
        self.x_train = x.reshape(len(x), -1).to(self.device, torch.float64)
        self.y_train = self._targets(y).to(self.device)

    def on_fit_start(self) -> None:
        self._collect_training_set()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("x_train", "y_train"):
            key = prefix + name
            if key in state_dict:
                setattr(self, name, torch.empty_like(state_dict[key], device=self.device))
        self._fitted_for_eval = False
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _condition(self) -> None:
        if self.x_train.numel() == 0:
            raise RuntimeError("ScaleMixtureNNGP has no training set: run `fit` (or load a checkpoint) first")
        with torch.no_grad():
            self.process.fit(self.x_train, self._fit_targets())
        self._fitted_for_eval = True

    def _fit_targets(self) -> Tensor:
        """What the process is fitted to: labels (softmax), one-hot columns or the 1-D target."""
        if self.hparams.likelihood == "softmax":
            return self.y_train.argmax(-1)
        return self.y_train[:, 0] if self.y_train.shape[1] == 1 else self.y_train

    # -- training -----------------------------------------------------------------------------
    def configure_optimizers(self):
        groups = []
        p = self.process
        if self.hparams.learn_kernel:
            groups += [p.kernel.raw_weight_var, p.kernel.raw_bias_var]
        if self.hparams.learn_noise and hasattr(p, "raw_noise"):
            groups.append(p.raw_noise)
        if self.hparams.learn_prior:
            groups += [getattr(p, n) for n in ("raw_alpha", "raw_beta", "raw_scale") if hasattr(p, n)]
        if not groups:
            groups = [p.kernel.raw_weight_var]  # an optimiser needs a parameter; lr 0 keeps it fixed
            return torch.optim.Adam(groups, lr=0.0)
        return torch.optim.Adam(groups, lr=self.hparams.lr)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        if self.x_train.numel() == 0:
            self._collect_training_set()
        y = self._fit_targets()
        self._fitted_for_eval = False
        # per observation: n C one-hot values (Gaussian) or n labels (softmax)
        loss = -self.process.fit(self.x_train, y).log_marginal_likelihood() / y.numel()
        self.log("train/neg_log_marginal_likelihood", loss, prog_bar=True, batch_size=len(self.x_train))
        return loss

    def on_train_epoch_end(self) -> None:
        self._fitted_for_eval = False

    # -- evaluation ---------------------------------------------------------------------------
    def predictive(self, x: Tensor, observed: bool = True) -> Distribution:
        """Posterior predictive at ``x`` (``(m, d)``), conditioned on the stored training set.

        With the softmax likelihood: the ``Categorical`` of the class probabilities.
        """
        if self.hparams.likelihood == "softmax":
            return torch.distributions.Categorical(probs=self.class_probabilities(x))
        if not self._fitted_for_eval:
            self._condition()
        with torch.no_grad():
            return self.process.predict(x.reshape(len(x), -1).to(torch.float64), observed=observed)

    def class_probabilities(self, x: Tensor, predictive: Distribution | None = None) -> Tensor:
        """``(m, C)`` predictive class probabilities at ``x`` (Monte Carlo, seeded by the batch).

        ``predictive``: the Gaussian likelihood's :meth:`predictive` at ``x``, if already computed.
        """
        if self.hparams.task != "classification":
            raise RuntimeError("class_probabilities needs task='classification'")
        if not self._fitted_for_eval:
            self._condition()
        x = x.reshape(len(x), -1).to(torch.float64)
        generator = torch.Generator(device=x.device).manual_seed(batch_idx_seed(x))
        with torch.no_grad():
            if self.hparams.likelihood == "softmax":
                return self.process.predict_proba(x, self.hparams.num_prob_samples, generator=generator)
            if predictive is None:
                predictive = self.process.predict(x, observed=True)
            return class_probabilities(predictive, self.hparams.num_prob_samples, generator=generator)

    def _evaluate(self, batch, stage: str) -> dict[str, Tensor]:
        x, y = batch[0], batch[1]
        n = len(x)
        if self.hparams.task == "classification":
            dist = self.predictive(x) if self.hparams.likelihood == "gaussian" else None
            probs = self.class_probabilities(x, predictive=dist)
            labels = y.long().flatten()
            from probgen.metrics import brier, ece

            metrics = {
                "accuracy": (probs.argmax(-1) == labels).double().mean(),
                "nll": -torch.log(probs[torch.arange(n), labels]).mean(),
                "ece": ece(probs.float(), labels),
                "brier": brier(probs.float(), labels),
            }
            if dist is not None:
                metrics["gaussian_nll"] = -dist.log_prob(self._targets(y)).sum(-1).mean()
        else:
            dist = self.predictive(x)
            target = self._targets(y)
            target = target[:, 0] if target.shape[1] == 1 else target
            pit = predictive_cdf(dist, target)
            levels = torch.linspace(0.05, 0.95, 19, dtype=pit.dtype)
            coverage = (pit.reshape(-1, 1) <= levels).double().mean(0)
            metrics = {
                "nll": -dist.log_prob(target).mean(),
                "rmse": torch.sqrt(((dist.mean - target) ** 2).mean()),
                "calibration_error": (coverage - levels).abs().mean(),
                "coverage95": ((pit - 0.5).abs() <= 0.475).double().mean(),
            }
        for name, value in metrics.items():
            self.log(f"{stage}/{name}", value.float(), batch_size=n, prog_bar=name in ("nll", "accuracy"))
        return metrics

    def validation_step(self, batch, batch_idx: int):
        return self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int):
        return self._evaluate(batch, "test")

    def predict_step(self, batch, batch_idx: int) -> dict[str, Tensor]:
        if self.hparams.likelihood == "softmax":
            return {"probs": self.class_probabilities(batch[0])}
        dist = self.predictive(batch[0])
        return {"mean": dist.mean, "variance": dist.variance}

    def on_validation_epoch_start(self) -> None:
        self._fitted_for_eval = False

    def on_test_epoch_start(self) -> None:
        self._fitted_for_eval = False

    # -- sampling -----------------------------------------------------------------------------
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """Posterior predictive draws of $y$ at the training inputs, ``(num_samples, n_train[, C])``."""
        if num_samples <= 0:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        dist = self.predictive(self.x_train)
        with torch.random.fork_rng(devices=[]):
            if generator is not None:
                torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
            return dist.sample((num_samples,)).float()


    def plot_samples(self, samples: Tensor, path, datamodule=None):
        """A PNG of the predictive on the datamodule's test split (``samples`` are not needed).

        Classification: test inputs with their predicted classes, and a reliability diagram.
        Regression: predictive bands over a 1-D input, else test predictions with 95% intervals
        and the PIT histogram. Without a datamodule: the default plot of ``samples``.
        """
        if datamodule is None:
            return super().plot_samples(samples, path, datamodule)
        import matplotlib

        matplotlib.use("Agg")
        from pathlib import Path

        import matplotlib.pyplot as plt

        if getattr(datamodule, "splits", None) is None:
            datamodule.setup("test")
        plot = self._plot_regression if self.hparams.task == "regression" else self._plot_classification
        fig = plot(datamodule, plt)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path

    def _plot_classification(self, datamodule, plt):
        x, y = datamodule.splits["test"][0], datamodule.splits["test"][1].long().flatten()
        probs = self.class_probabilities(x).cpu()
        conf, pred = probs.max(-1)
        correct = (pred == y.cpu()).double()
        fig = plt.figure(figsize=(12, 5))
        grid = fig.add_gridspec(4, 13)
        side = math.isqrt(x[0].numel())
        if side * side == x[0].numel():  # square images: show 32 test inputs with their predictions
            unit = getattr(datamodule, "to_unit", lambda t: t)(x[:32]).reshape(-1, side, side).cpu()
            for i in range(min(32, len(x))):
                ax = fig.add_subplot(grid[i // 8, i % 8])
                ax.imshow(unit[i], cmap="gray_r")
                ax.set_title(f"{int(pred[i])} ({conf[i]:.2f})", fontsize=8,
                             color="black" if correct[i] else "red")
                ax.axis("off")
        ax = fig.add_subplot(grid[:, 9:])
        edges = torch.linspace(0, 1, 11)
        bins = torch.bucketize(conf, edges[1:-1])
        centres, accs, counts = [], [], []
        for b in range(10):
            sel = bins == b
            if sel.any():
                centres.append(conf[sel].mean().item())
                accs.append(correct[sel].mean().item())
                counts.append(int(sel.sum()))
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="calibrated")
        ax.plot(centres, accs, "o-", label="model")
        for c, a, n in zip(centres, accs, counts):
            ax.annotate(str(n), (c, a), textcoords="offset points", xytext=(0, 5), fontsize=7, ha="center")
        ax.set_xlabel("confidence (top-class probability)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"reliability on the test split (counts per bin)\naccuracy {correct.mean():.3f}, "
                     f"{self.hparams.likelihood} likelihood, prior {self.hparams.prior}", fontsize=9)
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.08)
        ax.legend(loc="upper left")
        fig.suptitle("test digits: predicted class (probability), red if wrong", x=0.35, fontsize=10)
        return fig

    def _predictive_bands(self, x: Tensor, levels=(0.025, 0.25, 0.5, 0.75, 0.975)) -> Tensor:
        """``(len(levels), m)`` predictive quantiles of $y$ at ``x`` (from 4,000 draws, seeded)."""
        dist = self.predictive(x)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            draws = dist.sample((4000,))
        draws = draws[..., 0] if draws.dim() == 3 else draws
        return torch.quantile(draws, torch.tensor(levels, dtype=draws.dtype), dim=0).cpu()

    def _plot_regression(self, datamodule, plt):
        x_tr = self.x_train.cpu()
        y_tr = self.y_train[:, 0].cpu()
        x_te, y_te = datamodule.splits["test"][0], datamodule.splits["test"][1].reshape(-1).double()
        title = f"{self.hparams.prior} prior, {self.hparams.activation} NNGP of depth {self.hparams.depth}"
        if x_tr.shape[1] == 1:  # 1-D input: predictive bands over a grid
            lo, hi = min(x_tr.min(), x_te.min()).item(), max(x_tr.max(), x_te.max()).item()
            grid = torch.linspace(lo, hi, 300, dtype=torch.float64)[:, None]
            q = self._predictive_bands(grid)
            fig, ax = plt.subplots(figsize=(9, 4.5))
            ax.fill_between(grid[:, 0], q[0], q[4], alpha=0.2, color="C0", label="95% predictive")
            ax.fill_between(grid[:, 0], q[1], q[3], alpha=0.35, color="C0", label="50% predictive")
            ax.plot(grid[:, 0], q[2], color="C0", label="median")
            ax.scatter(x_te[:, 0], y_te, s=6, color="0.5", label="test")
            ax.scatter(x_tr[:, 0], y_tr, s=10, color="C3", label="train")
            ax.set_xlabel("x")
            ax.set_ylabel("y")
            ax.set_title(title)
            ax.legend(fontsize=8)
            fig.tight_layout()
            return fig
        # several inputs: predictions against observations on the test split, and the PIT histogram
        q = self._predictive_bands(x_te.to(torch.float64))
        pit = predictive_cdf(self.predictive(x_te), y_te.to(self.y_train)).cpu()
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
        inside = ((y_te >= q[0]) & (y_te <= q[4])).double().mean().item()
        axes[0].errorbar(y_te, q[2], yerr=torch.stack([q[2] - q[0], q[4] - q[2]]), fmt="o", ms=3, alpha=0.6,
                         elinewidth=0.8)
        span = [min(y_te.min(), q[0].min()).item(), max(y_te.max(), q[4].max()).item()]
        axes[0].plot(span, span, "k--", lw=1)
        axes[0].set_xlabel("observed y (test)")
        axes[0].set_ylabel("predictive median and 95% interval")
        axes[0].set_title(f"{title}\n{inside:.0%} of test points inside their 95% interval", fontsize=9)
        axes[1].hist(pit, bins=10, range=(0, 1), density=True)
        axes[1].axhline(1.0, color="k", ls="--", lw=1)
        axes[1].set_xlabel("PIT = predictive CDF at the observed y")
        axes[1].set_title("calibration: flat if calibrated", fontsize=9)
        fig.tight_layout()
        return fig


def batch_idx_seed(x: Tensor) -> int:
    """A deterministic seed from a batch (so class probabilities do not depend on global RNG)."""
    return int(x.numel()) + 7919


def predictive_cdf(dist: Distribution, value: Tensor) -> Tensor:
    """$P(Y \\le y)$ for Normal, mixture-of-Normal and Student-t predictives (for PIT/calibration)."""
    if isinstance(dist, StudentT):
        from scipy import stats

        out = stats.t.cdf(value.detach().cpu().numpy(), dist.df.detach().cpu().numpy(),
                          dist.loc.detach().cpu().numpy(), dist.scale.detach().cpu().numpy())
        return torch.as_tensor(out, dtype=value.dtype, device=value.device)
    if isinstance(dist, Normal) or hasattr(dist, "component_distribution"):
        return dist.cdf(value)
    raise TypeError(f"no CDF for {type(dist).__name__}")

