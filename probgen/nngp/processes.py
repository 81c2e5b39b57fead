"""Gaussian, Student-t and general scale-mixture processes on a (NNGP) kernel.

The scale mixture of Lee, Yun, Yang, Lee (2022, sec. 3) puts a prior on the variance $\\sigma^2$
of the readout layer, so that given $\\sigma^2$ the network is a GP with kernel $\\sigma^2 K$:

$$\\sigma^2 \\sim H, \\qquad f \\mid \\sigma^2 \\sim \\mathcal{GP}(0, \\sigma^2 K), \\qquad
y_i \\mid f, \\sigma^2 \\sim \\mathcal N(f(x_i), \\sigma^2 \\epsilon).$$

Noise proportional to $\\sigma^2$ keeps the model conjugate: with $K_y = K(X, X) + \\epsilon I$,
everything $\\sigma^2$ sees of the data is two scalars, $q = \\sum_c y_c^\\top K_y^{-1} y_c$ and
$\\log|K_y|$, so one Cholesky factor of $K_y$ serves every prior, every $(\\alpha, \\beta)$ and every
quadrature node. With $C$ outputs sharing $\\sigma^2$ and $N = nC$:

$$\\log p(y \\mid \\sigma^2) = -\\tfrac N2 \\log(2\\pi\\sigma^2) - \\tfrac C2 \\log|K_y| - \\tfrac{q}{2\\sigma^2},$$

and given $\\sigma^2$ the predictive at $x_*$ is Gaussian with mean $k_*^\\top K_y^{-1} y$ (free of
$\\sigma^2$) and variance $\\sigma^2 v_*$, $v_* = k_{**} - k_*^\\top K_y^{-1} k_*$ (plus $\\sigma^2\\epsilon$
for $y_*$). An inverse-gamma$(\\alpha, \\beta)$ prior gives the Student-t process (paper, eq. 7-9):
$\\sigma^2 \\mid y \\sim \\mathrm{IG}(\\alpha + N/2, \\beta + q/2)$ and a t predictive with
$2\\alpha + N$ degrees of freedom. Any other prior is integrated numerically in $\\log \\sigma^2$
(Gauss-Legendre) or by self-normalised importance sampling (paper, sec. 3.4).
"""

from __future__ import annotations

import functools
import numbers
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from gpytorch.constraints import Positive
from torch import Tensor
from torch.distributions import (
    Categorical,
    Distribution,
    InverseGamma,
    MixtureSameFamily,
    Normal,
    StudentT,
)

from probgen.exceptions import NotPositiveDefiniteError, ProbgenNumericalError
from probgen.validation import check_finite

__all__ = [
    "ITERATIVE_DEFAULTS",
    "BasePrediction",
    "ConjugateStats",
    "GaussianProcess",
    "ScaleMixtureGP",
    "ScalePosterior",
    "StudentTProcess",
    "cholesky_with_jitter",
]

_LOG_2PI = math.log(2.0 * math.pi)


@functools.lru_cache(maxsize=16)
def _leggauss(num: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(num)


def cholesky_with_jitter(
    matrix: Tensor, jitter: float = 1e-10, max_tries: int = 8, where: str = "kernel matrix"
) -> tuple[Tensor, float]:
    """Lower Cholesky factor, adding ``jitter * mean(diag)`` (x10 per try) until it succeeds.

    Args:
        matrix: ``(..., n, n)`` symmetric.
        jitter: first relative jitter tried after the plain factorisation fails.
        max_tries: jitter escalations before giving up.
        where: what the matrix is, for the error message.

    Returns:
        ``(L, absolute_jitter_added)``.

    Raises:
        NotPositiveDefiniteError: still not PD after ``max_tries`` escalations.
    """
    if not torch.isfinite(matrix).all():
        raise ProbgenNumericalError(f"{where} contains NaN or inf; check the inputs and kernel hyperparameters")
    factor, info = torch.linalg.cholesky_ex(matrix)
    if not info.any():
        return factor, 0.0
    scale = matrix.diagonal(dim1=-2, dim2=-1).mean().abs().item() or 1.0
    eye = torch.eye(matrix.shape[-1], dtype=matrix.dtype, device=matrix.device)
    for i in range(max_tries):
        added = jitter * scale * 10.0**i
        factor, info = torch.linalg.cholesky_ex(matrix + added * eye)
        if not info.any():
            return factor, added
    raise NotPositiveDefiniteError(
        f"{where} is not positive definite even with jitter {added:.3g} "
        f"({jitter:g} x 10^{max_tries - 1} x mean diagonal); use float64 inputs, add observation "
        "noise, or remove duplicate inputs"
    )


@dataclass
class ConjugateStats:
    """What the scale sees of the training data (module docstring).

    Attributes:
        n: number of training inputs; num_outputs: $C$; quad: $q$; logdet: $\\log|K_y|$;
        chol: lower Cholesky factor of $K_y$ ``(n, n)``, or ``None`` on the iterative path;
        weights: $K_y^{-1} y$ ``(n, C)``; jitter: absolute jitter added to $K_y$;
        solve: on the iterative path, $b \\mapsto K_y^{-1} b$ by preconditioned CG.
    """

    n: int
    num_outputs: int
    quad: Tensor
    logdet: Tensor
    chol: Tensor | None
    weights: Tensor
    jitter: float
    solve: Callable[[Tensor], Tensor] | None = None

    @property
    def num_obs(self) -> int:
        """$N = nC$."""
        return self.n * self.num_outputs

    def log_likelihood(self, log_scale: Tensor) -> Tensor:
        """$\\log p(y \\mid \\sigma^2)$ at $\\log\\sigma^2$ = ``log_scale`` (any shape)."""
        N = self.num_obs
        return (-0.5 * N * (_LOG_2PI + log_scale) - 0.5 * self.num_outputs * self.logdet
                - 0.5 * self.quad * torch.exp(-log_scale))


@dataclass
class BasePrediction:
    """Predictive of the base GP ($\\sigma^2 = 1$) at test inputs.

    Attributes:
        mean: ``(m, C)``, the posterior mean (the same for every $\\sigma^2$).
        var: ``(m,)`` latent variance $v_*$, or ``None`` if only ``cov`` was computed.
        cov: ``(m, m)`` latent covariance, or ``None``.
        noise: $\\epsilon$ (the noise variance per unit $\\sigma^2$).
        squeeze: the training targets were 1-D, so predictions drop the output dimension.
    """

    mean: Tensor
    var: Tensor | None
    cov: Tensor | None
    noise: Tensor
    squeeze: bool

    def variance(self, observed: bool) -> Tensor:
        """``(m, 1)`` per-unit-scale variance of $f_*$ (or $y_*$ if ``observed``)."""
        var = self.var if self.var is not None else self.cov.diagonal()
        return (var + self.noise if observed else var).unsqueeze(-1)

    def shape_out(self, t: Tensor) -> Tensor:
        return t.squeeze(-1) if self.squeeze else t


@dataclass
class ScalePosterior:
    """Posterior over $\\log\\sigma^2$ as weighted atoms.

    Attributes:
        log_scale: ``(K,)`` atoms $t_k = \\log\\sigma^2_k$.
        log_weights: ``(K,)`` normalised log weights.
        log_evidence: $\\log p(y)$ (quadrature, or the importance-sampling estimate).
        method: ``"quadrature"`` or ``"importance"``.
        quadrature_error: ``|log Z_K - log Z_{K/2}|`` (Gauss-Legendre with half the nodes on the
            same interval), an estimate of the error in ``log_evidence``; ``nan`` for sampling.
        ess: effective sample size $1/\\sum_k \\bar w_k^2$ (for quadrature: of the node weights).
    """

    log_scale: Tensor
    log_weights: Tensor
    log_evidence: Tensor
    method: str
    quadrature_error: float
    ess: float

    def mean(self) -> Tensor:
        """$\\mathbb E[\\sigma^2 \\mid y]$."""
        return torch.exp(torch.logsumexp(self.log_weights + self.log_scale, 0))


def _check_scalar(name: str, value, *, strict: bool, dtype=torch.float64, device=None) -> Tensor:
    """``value`` as a 0-dim tensor, checked finite and > 0 (``strict``) or >= 0: one message
    for every positive hyperparameter, whether set at construction or later."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, Tensor)):
        raise TypeError(f"{name} must be a real scalar, got {value!r} of type {type(value).__name__}")
    t = torch.as_tensor(value, dtype=dtype, device=device)
    shown = f"{t.item():g}" if t.dim() == 0 else f"a tensor of shape {tuple(t.shape)}"
    allowed = "> 0" if strict else ">= 0"
    if t.dim() != 0 or not bool(torch.isfinite(t)) or not bool(t > 0 if strict else t >= 0):
        err = ValueError(f"{name} must be a finite scalar {allowed}, got {shown}")
        err.argument = name
        raise err
    return t


def _positive_param(module: torch.nn.Module, name: str, value, floor_raw: float = -50.0,
                    strict: bool = False) -> None:
    constraint = Positive()
    # scalars of the GP algebra are kept in float64 (cast to the data's dtype where used)
    t = _check_scalar(name, value, strict=strict)
    raw = constraint.inverse_transform(t).clamp_min(floor_raw)
    module.register_parameter(f"raw_{name}", torch.nn.Parameter(raw))
    setattr(module, f"_{name}_constraint", constraint)


#: Defaults of the iterative path (``solver_options``): above ``threshold`` training points
#: ``solver="auto"`` uses CG and stochastic Lanczos quadrature (gpytorch / linear_operator's
#: ``inv_quad_logdet``) instead of a Cholesky factor.
ITERATIVE_DEFAULTS = {
    "threshold": 10_000,
    "cg_tolerance": 1e-4,
    "max_cg_iterations": 2000,
    "num_probes": 16,
    "preconditioner_size": 100,
    "lanczos_iterations": 100,
}


class _ConjugateProcess(torch.nn.Module):
    """Shared fit / base prediction of the processes (module docstring).

    ``solver``: ``"cholesky"`` (exact), ``"iterative"`` (CG for $K_y^{-1}y$ and predictions,
    stochastic Lanczos quadrature for $\\log|K_y|$, both with a pivoted-Cholesky preconditioner;
    the log det and its gradient are then unbiased estimates with probes from a fixed seed), or
    ``"auto"``: iterative above ``solver_options["threshold"]`` points (:data:`ITERATIVE_DEFAULTS`).
    """

    def __init__(self, kernel: torch.nn.Module, noise: float = 0.0, jitter: float = 1e-10,
                 solver: str = "auto", solver_options: dict | None = None) -> None:
        super().__init__()
        if not callable(kernel):
            raise TypeError(f"kernel must be a gpytorch Kernel (callable), got {type(kernel).__name__}")
        if jitter <= 0:
            raise ValueError(f"jitter must be positive, got {jitter}")
        if solver not in ("auto", "cholesky", "iterative"):
            raise ValueError(f"solver must be 'auto', 'cholesky' or 'iterative', got {solver!r}")
        unknown = set(solver_options or {}) - set(ITERATIVE_DEFAULTS)
        if unknown:
            raise ValueError(f"solver_options has unknown keys {sorted(unknown)}; allowed: {sorted(ITERATIVE_DEFAULTS)}")
        self.kernel = kernel
        self.jitter = jitter
        self.solver = solver
        self.solver_options = {**ITERATIVE_DEFAULTS, **(solver_options or {})}
        _positive_param(self, "noise", noise)
        self.stats: ConjugateStats | None = None
        self.x_train: Tensor | None = None
        self.y_train: Tensor | None = None
        self._squeeze = True

    @property
    def noise(self) -> Tensor:
        """$\\epsilon \\ge 0$: observation-noise variance per unit $\\sigma^2$."""
        return self._noise_constraint.transform(self.raw_noise)

    @noise.setter
    def noise(self, value) -> None:
        value = _check_scalar("noise", value, strict=False, dtype=self.raw_noise.dtype, device=self.raw_noise.device)
        self.raw_noise.data = self._noise_constraint.inverse_transform(value).clamp_min(-50.0)

    def _set_positive(self, name: str, value) -> None:
        raw = getattr(self, f"raw_{name}")
        value = _check_scalar(name, value, strict=True, dtype=raw.dtype, device=raw.device)
        raw.data = getattr(self, f"_{name}_constraint").inverse_transform(value)

    # -- fit ------------------------------------------------------------------------------
    def fit(self, x: Tensor, y: Tensor) -> _ConjugateProcess:
        """Condition on training data: one Cholesky factor of $K_y = K(X, X) + \\epsilon I$.

        Gradients flow from later calls (predictions, :meth:`log_marginal_likelihood`) to the
        kernel hyperparameters if this is called with grad enabled.

        Args:
            x: ``(n, d)`` inputs.
            y: ``(n,)`` targets, or ``(n, C)`` for ``C`` outputs sharing one $\\sigma^2$.

        Returns:
            ``self``.

        Raises:
            NotPositiveDefiniteError: $K_y$ stays non-PD after jitter escalation.
        """
        if not isinstance(x, Tensor) or not isinstance(y, Tensor):
            raise TypeError(f"x and y must be tensors, got {type(x).__name__} and {type(y).__name__}")
        if x.dim() != 2:
            raise ValueError(f"x must have shape (n, d), got {tuple(x.shape)}")
        if y.dim() not in (1, 2) or y.shape[0] != x.shape[0]:
            raise ValueError(f"y must have shape (n,) or (n, C) with n = {x.shape[0]}, got {tuple(y.shape)}")
        check_finite("x", x)
        check_finite("y", y)
        self._squeeze = y.dim() == 1
        y2 = y.unsqueeze(-1) if self._squeeze else y
        y2 = y2.to(x.dtype)
        n = x.shape[0]
        self.stats = None  # drop the previous fit's n x n buffers before making new ones
        self.x_train, self.y_train = x, y2
        if self.solver == "iterative" or (self.solver == "auto" and n > self.solver_options["threshold"]):
            self.stats = self._iterative_stats(self._kernel_operator(x), y2)
            return self
        K = self.kernel(x).to_dense()
        Ky = K + self.noise.to(K) * torch.eye(n, dtype=K.dtype, device=K.device)
        del K
        chol, added = cholesky_with_jitter(Ky, self.jitter, where=f"{type(self).__name__}.fit: K(X, X) + noise I")
        del Ky
        weights = torch.cholesky_solve(y2, chol)
        self.stats = ConjugateStats(
            n=n,
            num_outputs=y2.shape[-1],
            quad=(y2 * weights).sum(),
            logdet=2.0 * chol.diagonal().log().sum(),
            chol=chol,
            weights=weights,
            jitter=added,
        )
        return self

    def _iterative_settings(self):
        from contextlib import ExitStack

        import linear_operator.settings as lo

        o = self.solver_options
        stack = ExitStack()
        for ctx in (lo.max_cholesky_size(0), lo.cg_tolerance(o["cg_tolerance"]),
                    lo.max_cg_iterations(o["max_cg_iterations"]), lo.num_trace_samples(o["num_probes"]),
                    lo.max_preconditioner_size(o["preconditioner_size"]),
                    lo.max_lanczos_quadrature_iterations(o["lanczos_iterations"]), lo.min_preconditioning_size(0)):
            stack.enter_context(ctx)
        return stack

    def _kernel_operator(self, x: Tensor):
        """$K(X, X)$ as a linear operator: the kernel's own ``matrix_operator`` where it has one
        (:meth:`~probgen.nngp.NNGPKernel.matrix_operator`: one ``n x n`` buffer, gradients by
        recomputed row blocks), else the dense matrix."""
        from linear_operator.operators import DenseLinearOperator

        make = getattr(self.kernel, "matrix_operator", None)
        if make is not None and not x.requires_grad:
            try:
                return make(x)
            except ValueError:  # batched kernels, active_dims: the dense path below
                pass
        return DenseLinearOperator(self.kernel(x).to_dense())

    def _iterative_stats(self, K, y2: Tensor) -> ConjugateStats:
        """$q$ and $\\log|K_y|$ by linear_operator's ``inv_quad_logdet`` (CG + stochastic Lanczos).

        Args:
            K: ``(n, n)`` linear operator of the kernel matrix (:meth:`_kernel_operator`).
            y2: ``(n, C)`` targets.

        Memory: $K$ (one ``n x n`` buffer for an :class:`~probgen.nngp.NNGPKernel`, whose
        gradient recomputes row blocks; two for other kernels, the matrix and its gradient), no
        factor; cost per evaluation about (CG iterations) x (probes + C) matrix-vector products.
        """
        n = K.shape[-1]
        op = K.add_diagonal(self.noise.to(dtype=K.dtype, device=K.device).expand(n))
        # the same probes at every call (a deterministic objective for the optimiser), drawn from a
        # fixed seed: linear_operator's own deterministic_probes skips the preconditioner's
        # covariance and biases the preconditioned log det (by -1,000 nats at n = 1,500 here)
        devices = [K.device] if K.device.type == "cuda" else []
        with self._iterative_settings(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(0)
            quad, logdet = op.inv_quad_logdet(inv_quad_rhs=y2, logdet=True)
            weights = op.solve(y2)

        def solve(rhs: Tensor) -> Tensor:
            with self._iterative_settings():
                return op.solve(rhs)

        return ConjugateStats(n=n, num_outputs=y2.shape[-1], quad=quad, logdet=logdet, chol=None,
                              weights=weights, jitter=0.0, solve=solve)

    def share_fit(self, other: _ConjugateProcess) -> _ConjugateProcess:
        """Reuse ``other``'s Cholesky factor, training data and noise (same kernel object), no refactorisation.

        This is how one factorisation serves a Gaussian NNGP, a Student-t process and any number
        of scale priors at once.

        Returns:
            ``self``.
        """
        stats = other._check_fitted()
        if self.kernel is not other.kernel:
            raise ValueError("share_fit needs the same kernel object as the fitted process "
                             "(the Cholesky factor belongs to that kernel)")
        self.noise = other.noise.detach()
        self.x_train, self.y_train, self.stats, self._squeeze = other.x_train, other.y_train, stats, other._squeeze
        if isinstance(self, ScaleMixtureGP):
            self._posterior = None
        return self

    def _check_fitted(self) -> ConjugateStats:
        if self.stats is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call .fit(x, y) first")
        return self.stats

    def base_predict(self, x: Tensor, full_cov: bool = False) -> BasePrediction:
        """Predictive of the base GP ($\\sigma^2 = 1$) at ``x``: computed once, shared by all priors.

        Args:
            x: ``(m, d)`` test inputs.
            full_cov: also compute the ``(m, m)`` latent covariance (for joint predictives).

        Returns:
            :class:`BasePrediction`.
        """
        stats = self._check_fitted()
        if x.dim() != 2 or x.shape[-1] != self.x_train.shape[-1]:
            raise ValueError(f"x must have shape (m, {self.x_train.shape[-1]}), got {tuple(x.shape)}")
        check_finite("x", x)
        x = x.to(self.x_train.dtype)
        k_cross = self.kernel(self.x_train, x).to_dense()  # (n, m)
        mean = k_cross.transpose(-1, -2) @ stats.weights
        noise = self.noise.to(mean)
        if stats.chol is None:  # iterative path: K_y^-1 k_cross by CG
            solved = stats.solve(k_cross)
            if full_cov:
                cov = self.kernel(x).to_dense() - k_cross.transpose(-1, -2) @ solved
                return BasePrediction(mean, cov.diagonal().clamp_min(0.0), cov, noise, self._squeeze)
            var = self.kernel(x, diag=True) - (k_cross * solved).sum(-2)
            return BasePrediction(mean, var.clamp_min(0.0), None, noise, self._squeeze)
        v = torch.linalg.solve_triangular(stats.chol, k_cross, upper=False)
        if full_cov:
            cov = self.kernel(x).to_dense() - v.transpose(-1, -2) @ v
            return BasePrediction(mean, cov.diagonal().clamp_min(0.0), cov, noise, self._squeeze)
        var = self.kernel(x, diag=True) - (v * v).sum(-2)
        return BasePrediction(mean, var.clamp_min(0.0), None, noise, self._squeeze)

    def predict(self, x: Tensor, observed: bool = False) -> Distribution:
        """Marginal predictive at ``x`` of $f_*$, or of $y_*$ if ``observed``.

        Args:
            x: ``(m, d)``.
            observed: include the observation noise $\\sigma^2\\epsilon$.

        Returns:
            A distribution with batch shape ``(m,)`` (or ``(m, C)``).
        """
        return self.predict_from_base(self.base_predict(x), observed=observed)

    def predict_from_base(self, base: BasePrediction, observed: bool = False) -> Distribution:
        raise NotImplementedError

    def _joint_cov(self, base: BasePrediction, observed: bool) -> Tensor:
        cov = base.cov
        if observed:
            cov = cov + base.noise * torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
        return cov


class GaussianProcess(_ConjugateProcess):
    """The plain NNGP: a GP with kernel $\\sigma^2 K$ for a fixed readout scale $\\sigma^2$.

    Args:
        kernel: a gpytorch kernel, e.g. :class:`~probgen.nngp.NNGPKernel`.
        scale: $\\sigma^2 > 0$ (the readout's last-layer variance multiplier).
        noise: $\\epsilon \\ge 0$; the noise variance is $\\sigma^2\\epsilon$.
        jitter: relative jitter for the Cholesky escalation.
        solver: ``"auto"``, ``"cholesky"`` or ``"iterative"`` (see ``_ConjugateProcess``).
        solver_options: overrides of :data:`ITERATIVE_DEFAULTS`.
    """

    def __init__(self, kernel, scale: float = 1.0, noise: float = 0.0, jitter: float = 1e-10,
                 solver: str = "auto", solver_options: dict | None = None) -> None:
        super().__init__(kernel, noise, jitter, solver, solver_options)
        _positive_param(self, "scale", scale, strict=True)
        self._set_positive("scale", scale)

    @property
    def scale(self) -> Tensor:
        return self._scale_constraint.transform(self.raw_scale)

    def log_marginal_likelihood(self) -> Tensor:
        """$\\log \\mathcal N(y; 0, \\sigma^2 K_y)$ summed over outputs."""
        stats = self._check_fitted()
        return stats.log_likelihood(torch.log(self.scale.to(stats.quad)))

    def predict_from_base(self, base: BasePrediction, observed: bool = False) -> Normal:
        var = self.scale.to(base.mean) * base.variance(observed)
        return Normal(base.shape_out(base.mean), base.shape_out(var.sqrt().expand_as(base.mean)))

    def predict_joint(self, x: Tensor, observed: bool = False) -> torch.distributions.MultivariateNormal:
        """Joint Gaussian predictive over ``x`` (batch ``(C,)`` for several outputs)."""
        base = self.base_predict(x, full_cov=True)
        cov = self.scale.to(base.mean) * self._joint_cov(base, observed)
        chol, _ = cholesky_with_jitter(cov, self.jitter, where="GaussianProcess.predict_joint covariance")
        loc = base.mean.transpose(-1, -2)
        return torch.distributions.MultivariateNormal(loc[0] if base.squeeze else loc, scale_tril=chol)


class StudentTProcess(_ConjugateProcess):
    """Student-t process: the scale mixture with an inverse-gamma$(\\alpha, \\beta)$ prior on $\\sigma^2$.

    Prior: $f \\sim \\mathcal T_{2\\alpha}(0, (\\beta/\\alpha) K)$ (paper, eq. 7). Posterior
    (eq. 8-9): $\\sigma^2 \\mid y \\sim \\mathrm{IG}(\\alpha + N/2, \\beta + q/2)$, and $f_*$ is Student t
    with $2\\alpha + N$ degrees of freedom, location $k_*^\\top K_y^{-1}y$ and squared scale
    $\\frac{\\beta + q/2}{\\alpha + N/2} v_*$, $N = nC$.

    Args:
        kernel: a gpytorch kernel (the readout scale is *not* part of it: use readout
            ``weight_var`` 1 as the paper does, or let $\\beta/\\alpha$ absorb it).
        alpha: shape $\\alpha > 0$.
        beta: scale $\\beta > 0$.
        noise: $\\epsilon \\ge 0$; the noise variance is $\\sigma^2\\epsilon$ (keeps conjugacy).
        jitter: relative jitter for the Cholesky escalation.
        solver: ``"auto"``, ``"cholesky"`` or ``"iterative"`` (see ``_ConjugateProcess``).
        solver_options: overrides of :data:`ITERATIVE_DEFAULTS`.
    """

    def __init__(self, kernel, alpha: float = 2.0, beta: float = 2.0, noise: float = 0.0,
                 jitter: float = 1e-10, solver: str = "auto", solver_options: dict | None = None) -> None:
        super().__init__(kernel, noise, jitter, solver, solver_options)
        for name, value in (("alpha", alpha), ("beta", beta)):
            _positive_param(self, name, value, strict=True)
            self._set_positive(name, value)

    @property
    def alpha(self) -> Tensor:
        return self._alpha_constraint.transform(self.raw_alpha)

    @alpha.setter
    def alpha(self, value) -> None:
        self._set_positive("alpha", value)

    @property
    def beta(self) -> Tensor:
        return self._beta_constraint.transform(self.raw_beta)

    @beta.setter
    def beta(self, value) -> None:
        self._set_positive("beta", value)

    def _posterior_params(self, alpha=None, beta=None) -> tuple[Tensor, Tensor]:
        stats = self._check_fitted()
        alpha = self.alpha.to(stats.quad) if alpha is None else torch.as_tensor(alpha).to(stats.quad)
        beta = self.beta.to(stats.quad) if beta is None else torch.as_tensor(beta).to(stats.quad)
        return alpha + 0.5 * stats.num_obs, beta + 0.5 * stats.quad

    def posterior_scale(self) -> InverseGamma:
        """$p(\\sigma^2 \\mid y) = \\mathrm{IG}(\\alpha + N/2, \\beta + q/2)$."""
        return InverseGamma(*self._posterior_params())

    def log_marginal_likelihood(self, alpha=None, beta=None) -> Tensor:
        """$\\log p(y)$: the multivariate-t density of $y$ (paper, eq. 7), differentiable.

        ``alpha``/``beta`` override the module's values (tensors of any broadcastable shape, for
        a grid) without refactorising $K_y$.
        """
        stats = self._check_fitted()
        a = self.alpha.to(stats.quad) if alpha is None else torch.as_tensor(alpha).to(stats.quad)
        b = self.beta.to(stats.quad) if beta is None else torch.as_tensor(beta).to(stats.quad)
        a_n, b_n = a + 0.5 * stats.num_obs, b + 0.5 * stats.quad
        return (torch.lgamma(a_n) - torch.lgamma(a) + a * torch.log(b) - a_n * torch.log(b_n)
                - 0.5 * stats.num_obs * _LOG_2PI - 0.5 * stats.num_outputs * stats.logdet)

    def predict_from_base(self, base: BasePrediction, observed: bool = False, alpha=None, beta=None) -> StudentT:
        """Student-t marginals from a shared :class:`BasePrediction`.

        ``alpha``/``beta`` override the module's values; tensors of a common shape ``G`` give a
        grid at once, with batch shape ``(*G, m[, C])``.
        """
        a_n, b_n = self._posterior_params(alpha, beta)
        ratio = b_n / a_n
        if ratio.dim() == 0:
            scale = torch.sqrt(ratio * base.variance(observed)).expand_as(base.mean)
            return StudentT(2.0 * a_n, base.shape_out(base.mean), base.shape_out(scale))
        # a grid of (alpha, beta) of shape G: the result has batch shape (*G, m[, C])
        extra = (1,) * (1 if base.squeeze else 2)
        ratio, a_n = ratio.reshape(*ratio.shape, *extra), a_n.reshape(*a_n.shape, *extra)
        var = base.variance(observed)
        var = var.squeeze(-1) if base.squeeze else var
        return StudentT(2.0 * a_n, base.shape_out(base.mean), torch.sqrt(ratio * var))

    def predict_joint(self, x: Tensor, observed: bool = False):
        """Multivariate-t predictive over the ``m`` points of ``x`` (pyro ``MultivariateStudentT``).

        For ``C > 1`` outputs the result has batch shape ``(C,)``: each output's joint is exact,
        but the dependence between outputs through the shared $\\sigma^2$ is not represented.
        """
        from pyro.distributions import MultivariateStudentT

        base = self.base_predict(x, full_cov=True)
        a_n, b_n = self._posterior_params()
        cov = (b_n / a_n) * self._joint_cov(base, observed)
        chol, _ = cholesky_with_jitter(cov, self.jitter, where="StudentTProcess.predict_joint covariance")
        loc = base.mean.transpose(-1, -2)
        return MultivariateStudentT(2.0 * a_n, loc[0] if base.squeeze else loc, chol)


class ScaleMixtureGP(_ConjugateProcess):
    """Scale mixture of GPs with any prior on the readout variance $\\sigma^2$ (paper, sec. 3.3-3.4).

    The posterior over $t = \\log\\sigma^2$, $p(t \\mid y) \\propto p(y \\mid e^t)\\, p_H(e^t)\\, e^t$, is
    represented by weighted atoms, either Gauss-Legendre nodes on the interval where it has mass
    (``method="quadrature"``; exact up to a reported quadrature error), or samples of the prior
    (or ``proposal``) with self-normalised importance weights (``method="importance"``, the paper's
    algorithm; the effective sample size is reported). The predictive is the mixture
    $\\sum_k \\bar w_k\\, \\mathcal N(\\mu_*, e^{t_k} v_*)$ (torch ``MixtureSameFamily``).

    Args:
        kernel: a gpytorch kernel.
        prior: a torch/pyro distribution over $\\sigma^2 > 0$ (e.g. :class:`~probgen.nngp.BurrXII`,
            ``InverseGamma``, ``LogNormal``, ``HalfCauchy``, ``Gamma``).
        noise: $\\epsilon \\ge 0$; the noise variance is $\\sigma^2\\epsilon$.
        method: ``"quadrature"`` or ``"importance"``.
        num_nodes: Gauss-Legendre nodes (quadrature).
        num_samples: importance samples.
        proposal: importance proposal over $\\sigma^2$ (default: the prior).
        generator: torch generator for the importance samples.
        jitter: relative jitter for the Cholesky escalation.
        solver: ``"auto"``, ``"cholesky"`` or ``"iterative"`` (see ``_ConjugateProcess``).
        solver_options: overrides of :data:`ITERATIVE_DEFAULTS`.
    """

    def __init__(self, kernel, prior: Distribution, noise: float = 0.0, method: str = "quadrature",
                 num_nodes: int = 128, num_samples: int = 1000, proposal: Distribution | None = None,
                 generator: torch.Generator | None = None, jitter: float = 1e-10, solver: str = "auto",
                 solver_options: dict | None = None) -> None:
        super().__init__(kernel, noise, jitter, solver, solver_options)
        if not isinstance(prior, Distribution):
            raise TypeError(f"prior must be a torch.distributions.Distribution, got {type(prior).__name__}")
        if prior.batch_shape != torch.Size() or prior.event_shape != torch.Size():
            raise ValueError(f"prior must be scalar (batch and event shape ()), got {prior.batch_shape}, "
                             f"{prior.event_shape}")
        if method not in ("quadrature", "importance"):
            raise ValueError(f"method must be 'quadrature' or 'importance', got {method!r}")
        if num_nodes < 4 or num_samples < 1:
            raise ValueError(f"num_nodes must be >= 4 and num_samples >= 1, got {num_nodes}, {num_samples}")
        self.prior = prior
        self.method = method
        self.num_nodes = num_nodes
        self.num_samples = num_samples
        self.proposal = proposal
        self.generator = generator
        self._posterior: ScalePosterior | None = None

    def fit(self, x: Tensor, y: Tensor) -> ScaleMixtureGP:
        super().fit(x, y)
        self._posterior = None
        return self

    # -- posterior over the scale ----------------------------------------------------------
    def _log_prior_t(self, t: Tensor, prior: Distribution) -> Tensor:
        """$\\log p_H(e^t) + t$: the prior density of $t = \\log\\sigma^2$."""
        return prior.log_prob(torch.exp(t)).to(t) + t

    def scale_posterior(self, prior: Distribution | None = None, method: str | None = None) -> ScalePosterior:
        """Posterior over $\\log\\sigma^2$ for ``prior`` (default: the module's), reusing the factor.

        Returns:
            :class:`ScalePosterior` with the quadrature error or the ESS.
        """
        stats = self._check_fitted()
        prior = self.prior if prior is None else prior
        method = self.method if method is None else method
        if method == "quadrature":
            return self._quadrature_posterior(stats, prior)
        if method == "importance":
            return self._importance_posterior(stats, prior)
        raise ValueError(f"method must be 'quadrature' or 'importance', got {method!r}")

    def _log_joint(self, stats: ConjugateStats, prior: Distribution, t: Tensor) -> Tensor:
        out = stats.log_likelihood(t) + self._log_prior_t(t, prior)
        return torch.where(torch.isnan(out), torch.full_like(out, -math.inf), out)

    def _mass_interval(self, stats: ConjugateStats, prior: Distribution) -> tuple[float, float]:
        """An interval of $t$ outside which $p(t \\mid y)$ is below $e^{-60}$ of its maximum."""
        with torch.no_grad():
            N = stats.num_obs
            t_hat = math.log(max(stats.quad.item(), 1e-300) / N)
            lo, hi = t_hat - 60.0, t_hat + 60.0
            for num in (6001, 4001):
                t = torch.linspace(lo, hi, num, dtype=torch.float64, device=stats.quad.device)
                lp = self._log_joint(_detached(stats), prior, t)
                if not torch.isfinite(lp).any():
                    raise ProbgenNumericalError(
                        "ScaleMixtureGP: the posterior over log sigma^2 is zero on the whole search "
                        f"interval [{lo:.1f}, {hi:.1f}]; check that the prior has positive density there")
                keep = torch.nonzero(lp > lp.max() - 60.0).flatten()
                step = (hi - lo) / (num - 1)
                lo, hi = t[keep[0]].item() - 2 * step, t[keep[-1]].item() + 2 * step
            return lo, hi

    def _quadrature_posterior(self, stats: ConjugateStats, prior: Distribution) -> ScalePosterior:
        lo, hi = self._mass_interval(stats, prior)
        dtype, device = stats.quad.dtype, stats.quad.device

        def rule(num):
            x, w = _leggauss(num)
            t = torch.as_tensor(0.5 * (hi - lo) * x + 0.5 * (hi + lo), dtype=dtype, device=device)
            log_w = torch.as_tensor(np.log(0.5 * (hi - lo) * w), dtype=dtype, device=device)
            log_mass = log_w + self._log_joint(stats, prior, t)
            return t, log_mass, torch.logsumexp(log_mass, 0)

        t, log_mass, log_z = rule(self.num_nodes)
        _, _, log_z_half = rule(self.num_nodes // 2)
        log_weights = log_mass - log_z
        ess = 1.0 / torch.exp(torch.logsumexp(2.0 * log_weights, 0)).item()
        return ScalePosterior(t, log_weights, log_z, "quadrature", abs(log_z - log_z_half).item(), ess)

    def _importance_posterior(self, stats: ConjugateStats, prior: Distribution) -> ScalePosterior:
        proposal = self.proposal if self.proposal is not None else prior
        with torch.random.fork_rng(devices=[]):
            if self.generator is not None:
                torch.manual_seed(int(torch.randint(2**62, (1,), generator=self.generator)))
            s2 = proposal.sample((self.num_samples,)).to(stats.quad)
        t = torch.log(s2)
        log_w = stats.log_likelihood(t)
        if self.proposal is not None:
            log_w = log_w + prior.log_prob(s2).to(t) - proposal.log_prob(s2).to(t)
        log_w = torch.where(torch.isnan(log_w), torch.full_like(log_w, -math.inf), log_w)
        log_sum = torch.logsumexp(log_w, 0)
        if not torch.isfinite(log_sum):
            raise ProbgenNumericalError("ScaleMixtureGP importance sampling: all weights are zero; "
                                        "use method='quadrature' or a proposal closer to the posterior")
        log_weights = log_w - log_sum
        ess = 1.0 / torch.exp(torch.logsumexp(2.0 * log_weights, 0)).item()
        return ScalePosterior(t, log_weights, log_sum - math.log(self.num_samples), "importance", math.nan, ess)

    @property
    def posterior(self) -> ScalePosterior:
        """The cached :meth:`scale_posterior` for the module's prior and method."""
        if self._posterior is None:
            self._posterior = self.scale_posterior()
        return self._posterior

    def log_marginal_likelihood(self, prior: Distribution | None = None) -> Tensor:
        """$\\log p(y) = \\log \\int p(y \\mid \\sigma^2) p_H(\\sigma^2) d\\sigma^2$ (differentiable in the kernel)."""
        if prior is None:
            self._posterior = None
        return self.scale_posterior(prior).log_evidence

    def predict_from_base(self, base: BasePrediction, observed: bool = False,
                          prior: Distribution | None = None,
                          posterior: ScalePosterior | None = None) -> MixtureSameFamily:
        """Mixture predictive from a shared :class:`BasePrediction`.

        ``prior`` overrides the module's prior; ``posterior`` (from :meth:`scale_posterior`)
        skips recomputing the posterior over the scale.
        """
        if posterior is not None:
            post = posterior
        else:
            post = self.posterior if prior is None else self.scale_posterior(prior)
        mean = base.shape_out(base.mean).unsqueeze(-1)  # (m, [C,] 1)
        var = base.shape_out(base.variance(observed).expand_as(base.mean)).unsqueeze(-1)
        scale = torch.sqrt(var * torch.exp(post.log_scale))  # (m, [C,] K)
        logits = post.log_weights.expand(scale.shape)
        return MixtureSameFamily(Categorical(logits=logits), Normal(mean.expand_as(scale), scale))


def _detached(stats: ConjugateStats) -> ConjugateStats:
    return ConjugateStats(stats.n, stats.num_outputs, stats.quad.detach().double(), stats.logdet.detach().double(),
                          stats.chol, stats.weights, stats.jitter, stats.solve)
