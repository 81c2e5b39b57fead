"""Softmax classification with a scale mixture of GPs, by the Laplace approximation.

Model (Lee, Yun, Yang, Lee 2022, sec. 3, with a softmax likelihood in place of their Gaussian
likelihood on one-hot labels): $\\sigma^2 \\sim H$; given $\\sigma^2$ the $C$ latent functions are
independent, $f_c \\sim \\mathcal{GP}(0, \\sigma^2 K)$; $y_i \\sim \\mathrm{Cat}(\\mathrm{softmax}(f(x_i)))$.

**Given $\\sigma^2$** the posterior over $f$ is approximated by a Gaussian at its mode
(Rasmussen & Williams 2006, sec. 3.5, Algorithms 3.3-3.4). With $K_\\sigma = \\sigma^2 K$ per class,
$\\pi = \\mathrm{softmax}(f)$, $W = \\mathrm{diag}(\\pi) - \\Pi\\Pi^\\top$, Newton's iteration is
$f \\leftarrow (K_\\sigma^{-1} + W)^{-1}(Wf + y - \\pi)$, computed through
$E_c = D_c^{1/2}(I + D_c^{1/2}K_\\sigma D_c^{1/2})^{-1}D_c^{1/2}$ ($D_c = \\mathrm{diag}(\\pi_c)$) and
$M M^\\top = \\sum_c E_c$, with a step-halving line search. The approximate evidence is

$$\\log q(y \\mid \\sigma^2) = -\\tfrac12 \\hat f^\\top K_\\sigma^{-1}\\hat f + \\log p(y \\mid \\hat f)
- \\tfrac12 \\log|I + K_\\sigma W|,$$

$$\\tfrac12\\log|I + K_\\sigma W| = \\sum_c \\log|L_c| + \\log|M|, \\qquad
L_c L_c^\\top = I + D_c^{1/2}K_\\sigma D_c^{1/2}$$

(the $\\log|M|$ term follows from $\\sum_c D_c = I$; Algorithm 3.3 as printed omits it). The
latent predictive at $x_*$ is Gaussian with mean $\\mu_c = \\sigma^2 k_*^\\top(y_c - \\hat\\pi_c)$ and
covariance $\\Sigma_{cc'} = \\delta_{cc'}(\\sigma^2 k_{**} - \\sigma^4 k_*^\\top E_c k_*)
+ \\sigma^4 (E_c k_*)^\\top (MM^\\top)^{-1} (E_{c'} k_*)$; class probabilities are
$\\mathbb E[\\mathrm{softmax}(f_*)]$ by Monte Carlo.

**The scale** $t = \\log\\sigma^2$ is integrated numerically, as INLA does for its hyperparameters
(Rue, Martino, Chopin 2009): $g(t) = \\log q(y \\mid e^t) + \\log p_H(e^t) + t$ is maximised
(Brent), and a regular grid of step $h$ (0.75 of the curvature standard deviation) is walked out
from the mode until $g$ falls ``drop`` below its maximum. The trapezoid rule gives the
evidence $\\log \\int e^{g}dt$, with the difference to the rule of step $2h$ as its error, and
weights $w_k \\propto e^{g(t_k)}$ for the predictive mixture $\\sum_k w_k\\, p(y_* \\mid y, e^{t_k})$.
An inverse-gamma prior gives the Student-t process classifier; ``prior=None`` the plain NNGP
classifier with a fixed scale.

The evidence is differentiable in the kernel's hyperparameters: one Newton step from the
(detached) mode has the mode's implicit derivative (Newton's map has zero Jacobian at its fixed
point), so autograd through that step and the log-determinant at its output gives the total
derivative that R&W (sec. 5.5.1) write out by hand.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from scipy.optimize import minimize_scalar
from torch import Tensor
from torch.distributions import Distribution

from probgen.exceptions import ProbgenNumericalError
from probgen.nngp.processes import ScalePosterior, cholesky_with_jitter

__all__ = ["LaplaceGPClassifier", "LaplaceMode"]


@dataclass
class LaplaceMode:
    """The Laplace approximation at one scale $\\sigma^2 = e^t$.

    Attributes:
        log_scale: $t$.
        f: ``(n, C)`` posterior mode $\\hat f$; a: ``(n, C)`` with $\\hat f = K_\\sigma a$.
        log_evidence: $\\log q(y \\mid \\sigma^2)$.
        iterations: Newton iterations used.
    """

    log_scale: float
    f: Tensor
    a: Tensor
    log_evidence: float
    iterations: int


@dataclass
class _Factors:
    """Per-mode quantities of R&W Algorithm 3.3."""

    pi: Tensor  # (n, C)
    E: Tensor  # (C, n, n)
    M: Tensor  # (n, n) lower Cholesky factor of sum_c E_c
    half_logdet: Tensor  # 1/2 log|I + K W|


class LaplaceGPClassifier(torch.nn.Module):
    """Multi-class softmax GP classifier with a prior on the kernel scale, by Laplace (module docstring).

    Args:
        kernel: a gpytorch kernel $K$ (e.g. :class:`~probgen.nngp.NNGPKernel` with readout
            variance 1), shared by the $C$ latent functions.
        prior: a distribution over $\\sigma^2 > 0$ (``InverseGamma(alpha, beta)`` for the Student-t
            process, :class:`~probgen.nngp.BurrXII`, ``LogNormal``, ...), or ``None`` for a fixed
            $\\sigma^2$ = ``scale``.
        scale: $\\sigma^2$ when ``prior`` is ``None``; ``None`` chooses it by maximising
            $\\log q(y \\mid \\sigma^2)$ (type-II maximum likelihood).
        num_classes: $C$ (default: ``max(label) + 1`` at :meth:`fit`).
        drop: the scale grid extends until $g$ is this far below its maximum (mass beyond it is
            below about $e^{-\\mathrm{drop}}$ of the total).
        max_nodes: most grid nodes on each side of the mode (if the walk stops there, a
            ``RuntimeWarning`` is raised and the edge weight is added to ``quadrature_error``).
        min_weight: mixture components with smaller weight are dropped from predictions (and
            the rest renormalised).
        max_iter, tol: Newton iterations and tolerance on the change of the objective.
        jitter: relative jitter for the Cholesky escalation of $\\sum_c E_c$.
    """

    def __init__(self, kernel, prior: Distribution | None = None, scale: float | None = 1.0,
                 num_classes: int | None = None, drop: float = 9.0, max_nodes: int = 40,
                 min_weight: float = 1e-6, max_iter: int = 100, tol: float = 1e-9,
                 jitter: float = 1e-10) -> None:
        super().__init__()
        if not callable(kernel):
            raise TypeError(f"kernel must be a gpytorch Kernel (callable), got {type(kernel).__name__}")
        if prior is not None:
            if not isinstance(prior, Distribution):
                raise TypeError(f"prior must be a torch.distributions.Distribution or None, got {type(prior).__name__}")
            if prior.batch_shape != torch.Size() or prior.event_shape != torch.Size():
                raise ValueError(f"prior must be scalar (batch and event shape ()), got "
                                 f"{tuple(prior.batch_shape)}, {tuple(prior.event_shape)}")
        if scale is not None and not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a finite positive number or None, got {scale!r}")
        if num_classes is not None and num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if drop <= 0 or max_nodes < 1 or not 0 <= min_weight < 1:
            raise ValueError(f"need drop > 0, max_nodes >= 1 and 0 <= min_weight < 1, got {drop}, {max_nodes}, "
                             f"{min_weight}")
        if max_iter < 1 or tol <= 0 or jitter <= 0:
            raise ValueError(f"need max_iter >= 1, tol > 0 and jitter > 0, got {max_iter}, {tol}, {jitter}")
        self.kernel = kernel
        self.prior = prior
        self.scale = None if scale is None else float(scale)
        self.num_classes = num_classes
        self.drop, self.max_nodes, self.min_weight = drop, max_nodes, min_weight
        self.max_iter, self.tol, self.jitter = max_iter, tol, jitter
        self.x_train: Tensor | None = None
        self.y_onehot: Tensor | None = None
        self.modes: list[LaplaceMode] = []
        self.posterior: ScalePosterior | None = None

    # -- Laplace at one scale ----------------------------------------------------------------
    def _factors(self, K: Tensor, f: Tensor) -> _Factors:
        """$\\pi$, $E_c$, $M$ and $\\frac12\\log|I + KW|$ at latent values ``f`` (``K`` includes $\\sigma^2$)."""
        pi = torch.softmax(f, -1)
        sd = pi.sqrt().transpose(0, 1)  # (C, n)
        eye = torch.eye(K.shape[0], dtype=K.dtype, device=K.device)
        B = eye + sd[:, :, None] * K * sd[:, None, :]
        L = torch.linalg.cholesky(B)  # B >= I: always PD
        E = sd[:, :, None] * torch.cholesky_inverse(L) * sd[:, None, :]
        M, _ = cholesky_with_jitter(E.sum(0), self.jitter, where="LaplaceGPClassifier: sum_c E_c")
        half_logdet = L.diagonal(dim1=-2, dim2=-1).log().sum() + M.diagonal().log().sum()
        return _Factors(pi, E, M, half_logdet)

    def _newton(self, K: Tensor, f: Tensor, fac: _Factors) -> tuple[Tensor, Tensor]:
        """One Newton step (R&W Algorithm 3.3): returns the target ``(f_new, a)``, ``f_new = K a``."""
        y, pi = self.y_onehot, fac.pi
        b = pi * f - pi * (pi * f).sum(-1, keepdim=True) + y - pi  # (W f + y - pi), (n, C)
        c = torch.einsum("cij,jc->ic", fac.E, K @ b)  # E_c K b_c
        v = torch.cholesky_solve(c.sum(-1, keepdim=True), fac.M)  # (M M^T)^-1 R^T c
        a = b - c + torch.einsum("cij,jk->ic", fac.E, v)
        return K @ a, a

    def _psi(self, f: Tensor, a: Tensor) -> Tensor:
        """$\\Psi(f) = -\\frac12 a^\\top f + y^\\top f - \\sum_i \\log\\sum_c e^{f_{ic}}$ with $f = K a$."""
        return -0.5 * (a * f).sum() + (self.y_onehot * f).sum() - torch.logsumexp(f, -1).sum()

    def _find_mode(self, K: Tensor, a0: Tensor) -> tuple[Tensor, Tensor, _Factors, int]:
        """Newton with step halving from ``f = K a0``; returns ``(f, a, factors at f, iterations)``."""
        eps = torch.finfo(K.dtype).eps
        tol = max(self.tol, 16.0 * eps)  # a tol below the dtype's resolution could never be met
        a = a0
        f = K @ a
        psi = self._psi(f, a)
        for it in range(1, self.max_iter + 1):
            fac = self._factors(K, f)
            f_full, a_full = self._newton(K, f, fac)
            slack = 8.0 * eps * max(1.0, abs(psi.item()))  # rounding in the sums of Psi
            step, f_new, a_new = 1.0, f_full, a_full
            psi_new = self._psi(f_new, a_new)
            while not psi_new >= psi - slack and step > 1e-4:  # step halving (also on NaN)
                step *= 0.5
                f_new, a_new = f + step * (f_full - f), a + step * (a_full - a)
                psi_new = self._psi(f_new, a_new)
            if not psi_new >= psi - slack:
                # no ascent along the Newton direction: at the mode up to rounding, or stuck.
                # At the mode a = y - pi (the gradient -a + y - pi of Psi vanishes).
                grad = (self.y_onehot - fac.pi - a).abs().max().item()
                if grad <= 1e3 * tol:
                    return f, a, fac, it
                raise ProbgenNumericalError(
                    f"LaplaceGPClassifier: the Newton line search found no ascent at iteration {it} "
                    f"(gradient {grad:.2e}); use float64 inputs or a smaller kernel scale")
            converged = abs(psi_new.item() - psi.item()) <= tol * max(1.0, abs(psi.item()))
            f, a, psi = f_new, a_new, psi_new
            if converged:
                return f, a, self._factors(K, f), it
        raise ProbgenNumericalError(
            f"LaplaceGPClassifier: Newton did not converge in {self.max_iter} iterations "
            f"(last change of the objective above tol={tol:.1e}); raise max_iter or use float64")

    def _laplace(self, K: Tensor, t: float, a0: Tensor) -> LaplaceMode:
        Ks = math.exp(t) * K
        f, a, fac, it = self._find_mode(Ks, a0)
        log_q = self._psi(f, a) - fac.half_logdet
        return LaplaceMode(t, f, a, float(log_q), it)

    def _log_evidence_grad(self, K: Tensor, mode: LaplaceMode) -> Tensor:
        """$\\log q(y \\mid e^t)$ with the total derivative in the kernel (module docstring)."""
        Ks = math.exp(mode.log_scale) * K
        f_hat = mode.f.detach()
        f1, a1 = self._newton(Ks, f_hat, self._factors(Ks, f_hat))
        return self._psi(f1, a1) - self._factors(Ks, f1).half_logdet

    # -- the scale ---------------------------------------------------------------------------
    def _log_prior_t(self, t: float) -> float:
        tt = torch.tensor(t, dtype=torch.float64)
        return float(self.prior.log_prob(torch.exp(tt).to(self._prior_dtype())).double() + tt)

    def _prior_dtype(self) -> torch.dtype:
        for v in vars(self.prior).values():
            if isinstance(v, Tensor) and v.is_floating_point():
                return v.dtype
        return torch.float64

    def _scale_search(self, K: Tensor, use_prior: bool):
        """``g(t)`` with a cache of Laplace modes (warm-started from the nearest), and its maximiser."""
        n, C = self.y_onehot.shape
        cache: dict[float, LaplaceMode] = {}

        def mode_at(t: float) -> LaplaceMode:
            if t not in cache:
                near = min(cache.values(), key=lambda m: abs(m.log_scale - t), default=None)
                # warm start: the neighbour's mode, rescaled by sigma (f = e^t K a)
                a0 = torch.zeros(n, C, dtype=K.dtype, device=K.device) if near is None \
                    else near.a * math.exp(-0.5 * (t - near.log_scale))
                cache[t] = self._laplace(K, t, a0)
            return cache[t]

        def g(t: float) -> float:
            lp = self._log_prior_t(t) if use_prior else 0.0
            return mode_at(t).log_evidence + lp if math.isfinite(lp) else -math.inf

        t0 = -math.log(K.diagonal().mean().item())  # sigma^2 K of unit mean diagonal
        res = minimize_scalar(lambda t: -g(t) if math.isfinite(g(t)) else 1e300, bounds=(t0 - 12.0, t0 + 12.0),
                              method="bounded", options={"xatol": 0.02})
        t_hat = float(res.x)
        if not math.isfinite(g(t_hat)):
            raise ProbgenNumericalError("LaplaceGPClassifier: the posterior over log sigma^2 is zero at its "
                                        "search optimum; check that the prior has positive density near "
                                        f"sigma^2 = {math.exp(t_hat):.3g}")
        if abs(t_hat - t0) > 11.9:
            raise ProbgenNumericalError(
                f"LaplaceGPClassifier: the best sigma^2 = {math.exp(t_hat):.3g} lies at the edge of the "
                f"search interval (e^+-12 / mean diag K); rescale the kernel or use a proper prior")
        return g, mode_at, t_hat

    def _integrate_scale(self, K: Tensor) -> None:
        """The trapezoid grid in $t = \\log\\sigma^2$ around the posterior mode (module docstring)."""
        g, mode_at, t_hat = self._scale_search(K, use_prior=True)
        g_hat, delta, sd = g(t_hat), 0.05, 1.0
        for _ in range(4):  # central differences on a scale matched to the posterior's width
            curv = (g(t_hat + delta) - 2.0 * g_hat + g(t_hat - delta)) / delta**2
            sd = 1.0 / math.sqrt(-curv) if curv < 0 else 1.0
            if 0.5 * sd >= 0.9 * delta:
                break
            delta = 0.5 * sd
        # step 0.75 sd: the trapezoid error for a Gaussian-shaped integrand is ~2 exp(-2 pi^2 / 0.75^2)
        h = min(0.75 * sd, 1.0)
        nodes = {0: g_hat}
        truncated = False
        for direction in (1, -1):
            k = direction
            while True:
                nodes[k] = g(t_hat + k * h)
                if nodes[k] < g_hat - self.drop:
                    break
                if abs(k) == self.max_nodes:
                    truncated = True
                    break
                k += direction
        ks = sorted(nodes)
        t = torch.tensor([t_hat + k * h for k in ks], dtype=torch.float64)
        gs = torch.tensor([nodes[k] for k in ks], dtype=torch.float64)
        log_z = torch.logsumexp(gs, 0) + math.log(h)
        even = torch.tensor([k % 2 == 0 for k in ks])
        log_z_coarse = torch.logsumexp(gs[even], 0) + math.log(2 * h)
        log_w = gs - torch.logsumexp(gs, 0)
        ess = 1.0 / torch.exp(torch.logsumexp(2.0 * log_w, 0)).item()
        error = abs(log_z - log_z_coarse).item()
        if truncated:  # the mass beyond the last node is at least about that node's weight
            edge = max(log_w[0].exp().item(), log_w[-1].exp().item())
            error += edge
            warnings.warn(f"LaplaceGPClassifier: the grid over log sigma^2 stopped at max_nodes={self.max_nodes} "
                          f"with {edge:.1e} of the weight on its edge node; raise max_nodes or use a prior with "
                          "lighter tails", RuntimeWarning, stacklevel=3)
        self.posterior = ScalePosterior(t, log_w, log_z, "laplace-grid", error, ess)
        self.modes = [mode_at(t_hat + k * h) for k in ks]
        self._grid = (t_hat, h, ks)

    # -- public API ----------------------------------------------------------------------------
    def fit(self, x: Tensor, labels: Tensor) -> LaplaceGPClassifier:
        """Find the Laplace modes (and, with a prior, the posterior over the scale) for ``labels``.

        Args:
            x: ``(n, d)`` inputs.
            labels: ``(n,)`` integer class labels in ``[0, num_classes)``.

        Returns:
            ``self``.

        Raises:
            ProbgenNumericalError: Newton did not converge, or the scale posterior is degenerate.
        """
        if not isinstance(x, Tensor) or not isinstance(labels, Tensor):
            raise TypeError(f"x and labels must be tensors, got {type(x).__name__} and {type(labels).__name__}")
        if x.dim() != 2 or not x.is_floating_point() or len(x) == 0:
            raise ValueError(f"x must be a non-empty floating (n, d) tensor, got {x.dtype} of shape {tuple(x.shape)}")
        if labels.dim() != 1 or len(labels) != len(x):
            raise ValueError(f"labels must have shape ({len(x)},), got {tuple(labels.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError("x must not contain NaN or inf")
        if labels.is_floating_point() and not torch.equal(labels, labels.round()):
            raise ValueError("labels must be integer class indices")
        num_classes = self.num_classes or int(labels.max()) + 1
        if labels.min() < 0 or labels.max() >= num_classes or num_classes < 2:
            raise ValueError(f"labels must lie in [0, {num_classes}) with num_classes >= 2, got range "
                             f"[{int(labels.min())}, {int(labels.max())}]")
        self.x_train = x
        self.y_onehot = torch.nn.functional.one_hot(labels.long(), num_classes).to(x)
        with torch.no_grad():
            K = self.kernel(x).to_dense()
            if self.prior is None:
                if self.scale is None:  # type-II maximum likelihood of sigma^2
                    _, mode_at, t_hat = self._scale_search(K, use_prior=False)
                    mode = mode_at(t_hat)
                else:
                    mode = self._laplace(K, math.log(self.scale), torch.zeros_like(self.y_onehot))
                self.modes = [mode]
                zero = torch.zeros(1, dtype=torch.float64)
                self.posterior = ScalePosterior(zero + mode.log_scale, zero,
                                                torch.tensor(mode.log_evidence, dtype=torch.float64), "fixed", 0.0, 1.0)
            else:
                self._integrate_scale(K)
        return self

    def _check_fitted(self) -> None:
        if self.posterior is None:
            raise RuntimeError("LaplaceGPClassifier is not fitted: call .fit(x, labels) first")

    def log_marginal_likelihood(self) -> Tensor:
        """Approximate $\\log p(y)$: $\\log q(y \\mid \\sigma^2)$, or its integral against the prior.

        With grad enabled it is differentiable in the kernel's hyperparameters (at the fitted
        modes and scale grid; refit after changing them).
        """
        self._check_fitted()
        if not torch.is_grad_enabled():
            return self.posterior.log_evidence.to(self.x_train)
        K = self.kernel(self.x_train).to_dense()
        log_q = torch.stack([self._log_evidence_grad(K, m) for m in self.modes])
        if self.prior is None:
            return log_q[0]
        t_hat, h, ks = self._grid
        log_prior = torch.tensor([self._log_prior_t(t_hat + k * h) for k in ks], dtype=log_q.dtype)
        return torch.logsumexp(log_q + log_prior.to(log_q), 0) + math.log(h)

    def _kept_nodes(self) -> tuple[list[int], Tensor]:
        keep = [i for i, w in enumerate(self.posterior.log_weights.exp().tolist()) if w >= self.min_weight]
        log_w = self.posterior.log_weights[keep]
        return keep, log_w - torch.logsumexp(log_w, 0)

    def _check_x(self, x: Tensor) -> None:
        self._check_fitted()
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a tensor, got {type(x).__name__}")
        if x.dim() != 2 or x.shape[-1] != self.x_train.shape[-1]:
            raise ValueError(f"x must have shape (m, {self.x_train.shape[-1]}), got {tuple(x.shape)}")

    def _latent_chunks(self, x: Tensor, chunk: int):
        """Yield ``(node, rows, mean (r, C), cov (r, C, C))``: the factors are built once per node."""
        self._check_x(x)
        x = x.to(self.x_train)
        keep, _ = self._kept_nodes()
        with torch.no_grad():
            K = self.kernel(self.x_train).to_dense()
            for node, i in enumerate(keep):
                mode = self.modes[i]
                s = math.exp(mode.log_scale)
                fac = self._factors(s * K, mode.f)
                for start in range(0, len(x), chunk):
                    rows = slice(start, start + chunk)
                    k_cross = self.kernel(self.x_train, x[rows]).to_dense()  # (n, r)
                    k_diag = self.kernel(x[rows], diag=True)  # (r,)
                    mean = s * k_cross.transpose(0, 1) @ (self.y_onehot - fac.pi)
                    u = s * torch.einsum("cij,jm->cim", fac.E, k_cross)  # sigma^2 E_c k_*, (C, n, r)
                    C, n, r = u.shape
                    g = torch.linalg.solve_triangular(fac.M, u.permute(1, 0, 2).reshape(n, C * r), upper=False)
                    g = g.reshape(n, C, r)
                    cov = torch.einsum("icm,idm->mcd", g, g)  # sigma^4 (E_c k)^T (M M^T)^-1 (E_d k)
                    own = s * k_diag - s * (k_cross[None] * u).sum(1)  # sigma^2 k** - sigma^4 k^T E_c k, (C, r)
                    cov = cov + torch.diag_embed(own.transpose(0, 1))
                    yield node, rows, mean, 0.5 * (cov + cov.transpose(-1, -2))

    def predict_latent(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Gaussian latent predictive per mixture component.

        Args:
            x: ``(m, d)`` test inputs.

        Returns:
            ``(log_weights (K,), mean (K, m, C), cov (K, m, C, C))`` over the ``K`` scale nodes
            kept (weight at least ``min_weight``).
        """
        _, log_w = self._kept_nodes()
        means, covs = [[] for _ in log_w], [[] for _ in log_w]
        for node, _, mean, cov in self._latent_chunks(x, chunk=max(len(x), 1)):
            means[node].append(mean)
            covs[node].append(cov)
        if len(x) == 0:
            C = self.y_onehot.shape[1]
            return log_w.to(self.x_train), self.x_train.new_zeros(len(log_w), 0, C), \
                self.x_train.new_zeros(len(log_w), 0, C, C)
        return (log_w.to(self.x_train), torch.stack([torch.cat(m) for m in means]),
                torch.stack([torch.cat(c) for c in covs]))

    def predict_proba(self, x: Tensor, num_samples: int = 256, generator: torch.Generator | None = None,
                      chunk: int = 512) -> Tensor:
        """$p(y_* = c \\mid x_*, y) = \\sum_k w_k\\, \\mathbb E_{q_k}[\\mathrm{softmax}(f_*)]_c$ by Monte Carlo.

        Args:
            x: ``(m, d)`` test inputs.
            num_samples: draws per test point and scale node (the same normal draws are reused
                across nodes).
            generator: seeds the draws (a CPU generator; one seed per block is drawn from it); the
                global RNG is untouched.
            chunk: test points per block (bounds the memory at ``num_samples * chunk * C``).

        Returns:
            ``(m, C)`` class probabilities.
        """
        if num_samples < 1 or chunk < 1:
            raise ValueError(f"num_samples and chunk must be >= 1, got {num_samples}, {chunk}")
        self._check_x(x)
        _, log_w = self._kept_nodes()
        C = self.y_onehot.shape[1]
        x = x.to(self.x_train)
        # one seed per block: the same normal draws for every node, drawn block by block
        seeds = torch.randint(2**62, ((len(x) + chunk - 1) // chunk,), generator=generator).tolist()
        probs = torch.zeros(len(x), C, dtype=x.dtype, device=x.device)
        for node, rows, mean, cov in self._latent_chunks(x, chunk):
            block = torch.Generator(device=x.device).manual_seed(seeds[rows.start // chunk])
            eps = torch.randn(num_samples, len(mean), C, generator=block, dtype=x.dtype, device=x.device)
            chol, _ = cholesky_with_jitter(cov, 1e-10, where="LaplaceGPClassifier predictive covariance")
            f = mean + torch.einsum("mcd,smd->smc", chol, eps)  # (S, r, C)
            probs[rows] += log_w[node].exp().to(x) * torch.softmax(f, -1).mean(0)
        return probs
