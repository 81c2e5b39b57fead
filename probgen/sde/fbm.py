r"""Fractional Brownian motion: exact covariance and sampling, and its Markov approximation.

Two kinds of fBM with Hurst index $H \in (0, 1)$ are supported:

* **type I** (Mandelbrot-van Ness), the standard fBM with covariance
  $\mathbb{E}[B_H(t) B_H(s)] = \tfrac12 (t^{2H} + s^{2H} - |t - s|^{2H})$, written as
  $B_H(t) = c_H \int_{-\infty}^t [(t-s)^{H-1/2} - (-s)_+^{H-1/2}]\, dW_s$ with
  $c_H = \sqrt{\Gamma(2H+1) \sin(\pi H)} / \Gamma(H + 1/2)$;
* **type II** (Riemann-Liouville),
  $B_H(t) = \frac{1}{\Gamma(H+1/2)} \int_0^t (t-s)^{H-1/2}\, dW_s$, variance
  $t^{2H} / (2H\,\Gamma(H+1/2)^2)$.

:class:`MarkovFBM` implements the Markov approximation of Daems et al. (ICLR 2024,
"Variational Inference for SDEs Driven by Fractional Noise", Sec. 3, Eqs. 7-12, Prop. 1 and
App. B): $\hat B_H(t) = \sum_k \omega_k (Y_k(t) - Y_k(0))$ with
$dY_k = -\gamma_k Y_k\, dt + dW_t$ driven by one Brownian motion, and the weights $\omega$
that minimise $\int_0^T \mathbb{E}[(B_H(t) - \hat B_H(t))^2] dt$: the solution of
$A \omega = b$. Type I starts every $Y_k$ from its stationary law (jointly Gaussian with
covariance $1 / (\gamma_i + \gamma_j)$), type II starts at $Y_k(0) = 0$.

The weights are differentiable in the Hurst index: ``torch.special.gammainc`` has no
gradient in its first argument, so the regularised incomplete gamma functions here are
written as a power series (small argument) and Gauss-Laguerre quadrature (large argument),
both plain torch expressions that autograd differentiates in both arguments.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from probgen.exceptions import NotPositiveDefiniteError

__all__ = [
    "MarkovFBM",
    "fbm_covariance",
    "gammainc",
    "gammaincc_scaled",
    "geometric_gammas",
    "sample_fbm",
]

KINDS = ("type1", "type2")
_SERIES_TERMS = 90  # P(a, x) series for x < _SWITCH: terms beyond n ~ 80 are < 1e-20
_SWITCH = 10.0  # switch from the series to Gauss-Laguerre at x = 10
_LAGUERRE_NODES = 48


# --------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------
def _check_hurst(hurst) -> None:
    if isinstance(hurst, Tensor):
        if hurst.numel() != 1:
            raise ValueError(f"hurst must be a scalar, got a tensor of shape {tuple(hurst.shape)}")
        value = float(hurst.detach())
    elif isinstance(hurst, (int, float)) and not isinstance(hurst, bool):
        value = float(hurst)
    else:
        raise TypeError(f"hurst must be a float or a scalar tensor, got {type(hurst).__name__}")
    if not (0.0 < value < 1.0) or math.isnan(value):
        raise ValueError(f"hurst must lie in the open interval (0, 1), got {value}")


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def _check_times(ts: Tensor) -> None:
    if not isinstance(ts, Tensor):
        raise TypeError(f"ts must be a 1-D tensor of times, got {type(ts).__name__}")
    if ts.dim() != 1 or ts.numel() == 0:
        raise ValueError(f"ts must be a non-empty 1-D tensor, got shape {tuple(ts.shape)}")
    if not ts.is_floating_point():
        raise TypeError(f"ts must be floating point, got {ts.dtype}")
    if not torch.isfinite(ts).all():
        raise ValueError("ts contains NaN or inf")
    if (ts < 0).any():
        raise ValueError(f"ts must be >= 0 (fBM starts at t = 0), got min {float(ts.min())}")
    if ts.numel() > 1 and not (ts[1:] > ts[:-1]).all():
        raise ValueError("ts must be strictly increasing")


def _as_tensor(hurst, like: Tensor) -> Tensor:
    if isinstance(hurst, Tensor):
        return hurst.reshape(()).to(like)
    return torch.tensor(float(hurst), dtype=like.dtype, device=like.device)


# --------------------------------------------------------------------------------------
# incomplete gamma functions, differentiable in both arguments
# --------------------------------------------------------------------------------------
@lru_cache(maxsize=8)
def _laguerre(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.laguerre.laggauss(n)


def _gammainc_series(a: Tensor, x: Tensor) -> Tensor:
    """$P(a, x) = x^a e^{-x} \\sum_n x^n / \\Gamma(a + n + 1)$ (valid for all x, used for x < 10)."""
    n = torch.arange(_SERIES_TERMS, dtype=x.dtype, device=x.device)
    logx = torch.log(x).unsqueeze(-1)
    log_terms = (a.unsqueeze(-1) + n) * logx - x.unsqueeze(-1) - torch.lgamma(a.unsqueeze(-1) + n + 1)
    return torch.exp(log_terms).sum(-1)


def _gammaincc_scaled_laguerre(a: Tensor, x: Tensor) -> Tensor:
    r"""$e^x Q(a, x) = \frac{x^{a-1}}{\Gamma(a)} \int_0^\infty (1 + u/x)^{a-1} e^{-u} du$ (x >= 10)."""
    nodes, weights = _laguerre(_LAGUERRE_NODES)
    u = torch.as_tensor(nodes, dtype=x.dtype, device=x.device)
    w = torch.as_tensor(weights, dtype=x.dtype, device=x.device)
    am1 = (a - 1).unsqueeze(-1)
    integral = (w * torch.exp(am1 * torch.log1p(u / x.unsqueeze(-1)))).sum(-1)
    return torch.exp((a - 1) * torch.log(x) - torch.lgamma(a)) * integral


def gammainc(a: Tensor, x: Tensor) -> Tensor:
    r"""Regularised lower incomplete gamma $P(a, x) = \gamma(a, x) / \Gamma(a)$, differentiable in a and x.

    Unlike ``torch.special.gammainc`` this has a gradient in ``a``: it is a power series for
    $x < 10$ and $1 - e^{-x} \cdot$ :func:`gammaincc_scaled` (Gauss-Laguerre) above, both plain
    torch expressions. Accurate to ~1e-13 in float64 for $a \in (0, 5]$.

    Args:
        a: shape parameter, > 0; broadcasts with ``x``.
        x: argument, > 0.

    Returns:
        $P(a, x)$ with the broadcast shape.
    """
    a, x = torch.broadcast_tensors(torch.as_tensor(a), torch.as_tensor(x))
    small = x < _SWITCH
    x_small = torch.where(small, x, torch.full_like(x, 1.0)).clamp_min(torch.finfo(x.dtype).tiny)
    x_large = torch.where(small, torch.full_like(x, _SWITCH), x)
    series = _gammainc_series(a, x_small)
    tail = 1 - torch.exp(-x_large) * _gammaincc_scaled_laguerre(a, x_large)
    return torch.where(small, series, tail)


def gammaincc_scaled(a: Tensor, x: Tensor) -> Tensor:
    r"""$e^{x} Q(a, x)$, the scaled regularised upper incomplete gamma, stable for large x.

    Differentiable in both arguments (see :func:`gammainc`); the official code's
    ``gammaincc_ez`` computes the same quantity with a continued fraction.

    Args:
        a: shape parameter, > 0.
        x: argument, > 0.

    Returns:
        $e^x Q(a, x)$ with the broadcast shape.
    """
    a, x = torch.broadcast_tensors(torch.as_tensor(a), torch.as_tensor(x))
    small = x < _SWITCH
    x_small = torch.where(small, x, torch.full_like(x, 1.0)).clamp_min(torch.finfo(x.dtype).tiny)
    x_large = torch.where(small, torch.full_like(x, _SWITCH), x)
    series = torch.exp(x_small) * (1 - _gammainc_series(a, x_small))
    return torch.where(small, series, _gammaincc_scaled_laguerre(a, x_large))


# --------------------------------------------------------------------------------------
# exact fBM
# --------------------------------------------------------------------------------------
def _type1_scale(hurst: Tensor) -> Tensor:
    """$c_H \\Gamma(H + 1/2) = \\sqrt{\\Gamma(2H+1) \\sin(\\pi H)}$: type I kernel normaliser."""
    return torch.exp(0.5 * (torch.lgamma(2 * hurst + 1) + torch.log(torch.sin(math.pi * hurst))))


def fbm_covariance(ts: Tensor, hurst, kind: str = "type1") -> Tensor:
    r"""Covariance matrix of fBM at the times ``ts``.

    Type I: $\tfrac12 (t^{2H} + s^{2H} - |t-s|^{2H})$ (differentiable in ``hurst``).
    Type II (Riemann-Liouville), for $s \le t$:
    $\frac{s^{H+1/2} t^{H-1/2}}{(H+1/2)\Gamma(H+1/2)^2}\, {}_2F_1(1/2 - H, 1; H + 3/2; s/t)$,
    evaluated with ``scipy.special.hyp2f1`` in float64 (not differentiable).

    Args:
        ts: ``(n,)`` non-negative, strictly increasing times.
        hurst: Hurst index in (0, 1), float or scalar tensor.
        kind: ``"type1"`` or ``"type2"``.

    Returns:
        ``(n, n)`` covariance, dtype and device of ``ts``.

    Raises:
        ValueError: for a Hurst index outside (0, 1), an unknown kind or bad ``ts``.
    """
    _check_hurst(hurst)
    _check_kind(kind)
    _check_times(ts)
    if kind == "type1":
        h = _as_tensor(hurst, ts)
        t, s = ts[:, None], ts[None, :]
        p = 2 * h
        return 0.5 * (t.pow(p) + s.pow(p) - (t - s).abs().pow(p))
    from scipy.special import gamma as gamma_fn
    from scipy.special import hyp2f1

    h = float(hurst.detach()) if isinstance(hurst, Tensor) else float(hurst)
    alpha = h + 0.5
    tt = ts.detach().double().cpu().numpy()
    hi = np.maximum(tt[:, None], tt[None, :])
    lo = np.minimum(tt[:, None], tt[None, :])
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(hi > 0, lo / np.where(hi > 0, hi, 1.0), 0.0)
        cov = lo**alpha * hi ** (alpha - 1) / alpha * hyp2f1(1 - alpha, 1.0, alpha + 1, z)
    cov = np.where(lo > 0, cov, 0.0) / gamma_fn(alpha) ** 2
    return torch.as_tensor(cov, dtype=ts.dtype, device=ts.device)


def _fgn_autocovariance(hurst: float, m: int, dtype, device) -> Tensor:
    k = torch.arange(m, dtype=torch.float64, device=device)
    p = 2 * hurst
    return (0.5 * ((k + 1).pow(p) - 2 * k.pow(p) + (k - 1).abs().pow(p))).to(dtype)


def sample_fbm(
    ts: Tensor,
    hurst,
    num_samples: int,
    kind: str = "type1",
    method: str = "cholesky",
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Exact samples of fBM at the times ``ts``.

    ``method="cholesky"`` factorises :func:`fbm_covariance` in float64 (any ``ts``, both kinds;
    O(n^3)); ``method="davies-harte"`` embeds the fractional Gaussian noise autocovariance in
    a circulant matrix and samples by FFT (type I, uniform grid ``ts = t0 + k dt``, O(n log n)).
    Entries at ``t = 0`` are exactly zero.

    Args:
        ts: ``(n,)`` non-negative, strictly increasing times.
        hurst: Hurst index in (0, 1).
        num_samples: number of paths, > 0.
        kind: ``"type1"`` or ``"type2"``.
        method: ``"cholesky"`` or ``"davies-harte"``.
        generator: optional torch generator.

    Returns:
        ``(num_samples, n)`` paths, dtype and device of ``ts``.

    Raises:
        ValueError: bad arguments (Davies-Harte on a non-uniform grid or with type II).
        NotPositiveDefiniteError: the covariance stays non-PSD after jitter escalation, or
            the circulant embedding has a negative eigenvalue.
    """
    _check_hurst(hurst)
    _check_kind(kind)
    _check_times(ts)
    if not isinstance(num_samples, int) or num_samples <= 0:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    h = float(hurst.detach()) if isinstance(hurst, Tensor) else float(hurst)
    n = ts.numel()
    out = torch.zeros(num_samples, n, dtype=ts.dtype, device=ts.device)
    positive = ts > 0
    if method == "cholesky":
        tp = ts[positive].double()
        if tp.numel() == 0:
            return out
        cov = fbm_covariance(tp, h, kind)
        eye = torch.eye(tp.numel(), dtype=cov.dtype, device=cov.device)
        scale = float(cov.diagonal().mean())
        for jitter in (0.0, 1e-12, 1e-10, 1e-8):
            chol, info = torch.linalg.cholesky_ex(cov + jitter * scale * eye)
            if int(info) == 0:
                break
        else:
            raise NotPositiveDefiniteError(
                f"sample_fbm: fBM covariance ({kind}, H={h}) at {tp.numel()} times is not positive "
                "definite even with jitter 1e-8; use fewer or more widely spaced times"
            )
        z = torch.randn(num_samples, tp.numel(), dtype=torch.float64, device=ts.device, generator=generator)
        out[:, positive] = (z @ chol.T).to(ts.dtype)
        return out
    if method != "davies-harte":
        raise ValueError(f"method must be 'cholesky' or 'davies-harte', got {method!r}")
    if kind != "type1":
        raise ValueError("method='davies-harte' samples type I fBM only (stationary increments); use 'cholesky'")
    t64 = ts.double()
    grid = torch.cat([t64.new_zeros(1), t64]) if float(t64[0]) > 0 else t64
    steps = grid.diff()
    if steps.numel() == 0:
        return out
    dt = float(steps[0])
    if not torch.allclose(steps, torch.full_like(steps, dt), rtol=1e-6, atol=0.0):
        raise ValueError("method='davies-harte' needs a uniform grid ts = t0 + k dt with t0 in {0, dt}")
    m = steps.numel()
    acov = _fgn_autocovariance(h, m + 1, torch.float64, ts.device)
    row = torch.cat([acov[: m + 1], acov[1:m].flip(0)])  # circulant first row, size 2m
    lam = torch.fft.fft(row).real
    if (lam < -1e-10 * lam.abs().max()).any():
        raise NotPositiveDefiniteError(
            f"sample_fbm: Davies-Harte circulant embedding has negative eigenvalues (H={h}, m={m}); "
            "use method='cholesky'"
        )
    size = 2 * m
    zr = torch.randn(num_samples, size, dtype=torch.float64, device=ts.device, generator=generator)
    zi = torch.randn(num_samples, size, dtype=torch.float64, device=ts.device, generator=generator)
    w = torch.fft.fft(torch.sqrt(lam.clamp_min(0) / size) * torch.complex(zr, zi))
    fgn = w.real[:, :m] * dt**h
    path = torch.cat([fgn.new_zeros(num_samples, 1), fgn.cumsum(-1)], dim=-1)
    if float(t64[0]) > 0:
        path = path[:, 1:]
    return path.to(ts.dtype)


# --------------------------------------------------------------------------------------
# Markov approximation
# --------------------------------------------------------------------------------------
def geometric_gammas(n_ou: int, gamma_max: float, dtype=torch.float64, device=None) -> Tensor:
    r"""OU speeds $\gamma_k = r^{k - (K+1)/2}$, $k = 1..K$, geometric from $1/\gamma_{max}$ to $\gamma_{max}$.

    ``n_ou = 1`` gives $\gamma_1 = 1$ (the geometric mean of the range).
    """
    if n_ou == 1:
        return torch.ones(1, dtype=dtype, device=device)
    k = torch.arange(1, n_ou + 1, dtype=dtype, device=device)
    log_r = 2 * math.log(gamma_max) / (n_ou - 1)
    return torch.exp(log_r * (k - (n_ou + 1) / 2))


class MarkovFBM:
    r"""Markov approximation of fBM by K Ornstein-Uhlenbeck processes (Daems et al. 2024, Sec. 3).

    $\hat B_H(t) = \sum_k \omega_k (Y_k(t) - Y_k(0))$, $dY_k = -\gamma_k Y_k dt + dW_t$, with
    geometric speeds :attr:`gammas` and the weights :attr:`omegas` solving $A\omega = b$
    (App. B, "optimised" weights): the minimiser of $\int_0^T \mathbb{E}[(B_H - \hat B_H)^2] dt$.

    Type I targets the standard fBM (covariance $\frac12(t^{2H}+s^{2H}-|t-s|^{2H})$) with
    stationary $Y(0)$; type II targets the Riemann-Liouville fBM
    $\frac{1}{\Gamma(H+1/2)} \int_0^t (t-s)^{H-1/2} dW_s$ with $Y(0) = 0$. Note: the official
    code's type I right-hand side uses the Riemann-Liouville normaliser $1/\Gamma(H+1/2)$,
    whose Mandelbrot-van Ness process has variance $t^{2H} / (\Gamma(2H+1)\sin \pi H)$, not
    $t^{2H}$; here $b$ carries the factor $\sqrt{\Gamma(2H+1)\sin\pi H}$ so that the target is
    the fBM of :func:`fbm_covariance`.

    Everything is recomputed from :attr:`hurst` on access, so a learnt ``hurst`` tensor
    (e.g. ``torch.sigmoid(raw)``) gets gradients through :attr:`omegas`. Internally float64.

    Args:
        hurst: Hurst index in (0, 1), float or scalar tensor (may require grad).
        n_ou: number of OU processes K >= 1.
        gamma_max: largest speed, > 1 when ``n_ou > 1`` (speeds span [1/gamma_max, gamma_max]).
        horizon: T > 0, the interval [0, T] over which the L2 error is minimised.
        kind: ``"type1"`` or ``"type2"``.
        dtype: dtype of the returned tensors (default: hurst's dtype if a tensor, else
            ``torch.get_default_dtype()``).

    Raises:
        ValueError: Hurst index outside (0, 1), n_ou < 1, gamma_max or horizon not positive,
            unknown kind.
    """

    def __init__(
        self,
        hurst,
        n_ou: int = 5,
        gamma_max: float = 20.0,
        horizon: float = 1.0,
        kind: str = "type1",
        dtype: torch.dtype | None = None,
    ) -> None:
        _check_hurst(hurst)
        _check_kind(kind)
        if not isinstance(n_ou, int) or isinstance(n_ou, bool) or n_ou < 1:
            raise ValueError(f"n_ou must be an integer >= 1, got {n_ou!r} (use white noise for K = 0)")
        if not (gamma_max > 0) or not math.isfinite(gamma_max):
            raise ValueError(f"gamma_max must be positive and finite, got {gamma_max}")
        if n_ou > 1 and gamma_max <= 1:
            raise ValueError(f"gamma_max must be > 1 for n_ou > 1 (speeds span [1/gamma_max, gamma_max]), got {gamma_max}")
        if not (horizon > 0) or not math.isfinite(horizon):
            raise ValueError(f"horizon must be positive and finite, got {horizon}")
        self.hurst = hurst
        self.n_ou = n_ou
        self.gamma_max = float(gamma_max)
        self.horizon = float(horizon)
        self.kind = kind
        if dtype is None:
            dtype = hurst.dtype if isinstance(hurst, Tensor) else torch.get_default_dtype()
        self.dtype = dtype
        self.device = hurst.device if isinstance(hurst, Tensor) else torch.device("cpu")

    def __repr__(self) -> str:
        h = float(self.hurst.detach()) if isinstance(self.hurst, Tensor) else self.hurst
        return (
            f"MarkovFBM(hurst={h:.4g}, n_ou={self.n_ou}, gamma_max={self.gamma_max}, "
            f"horizon={self.horizon}, kind={self.kind!r})"
        )

    # -- parameters ---------------------------------------------------------------------
    def _h64(self) -> Tensor:
        if isinstance(self.hurst, Tensor):
            return self.hurst.reshape(()).to(torch.float64)
        return torch.tensor(float(self.hurst), dtype=torch.float64, device=self.device)

    def _gammas64(self) -> Tensor:
        return geometric_gammas(self.n_ou, self.gamma_max, torch.float64, self.device)

    @property
    def gammas(self) -> Tensor:
        """``(K,)`` OU speeds, geometric in [1/gamma_max, gamma_max]."""
        return self._gammas64().to(self.dtype)

    def linear_system(self) -> tuple[Tensor, Tensor]:
        r"""The matrix $A$ and right-hand side $b$ of $A\omega = b$ (float64, differentiable in H).

        $A_{ij} = \int_0^T \mathbb{E}[\hat Y_i(t)\hat Y_j(t)] dt$ and
        $b_k = \int_0^T \mathbb{E}[B_H(t)\hat Y_k(t)] dt$, where $\hat Y_k = Y_k(t) - Y_k(0)$
        (type I) or $Y_k(t)$ (type II). With $\alpha = H + 1/2$, $T$ the horizon:

        type I: $A_{ij} = \frac{2T - (1-e^{-\gamma_i T})/\gamma_i - (1-e^{-\gamma_j T})/\gamma_j}{\gamma_i+\gamma_j}$,
        $b_k = c\,[\frac{2T}{\gamma_k^{\alpha}} - \frac{T^{\alpha}}{\gamma_k\Gamma(\alpha+1)}
        + \frac{e^{-\gamma_k T} - e^{\gamma_k T} Q(\alpha, \gamma_k T)}{\gamma_k^{\alpha+1}}]$,
        $c = \sqrt{\Gamma(2H+1)\sin\pi H}$;

        type II: $A_{ij} = \frac{T - (1 - e^{-(\gamma_i+\gamma_j)T})/(\gamma_i+\gamma_j)}{\gamma_i+\gamma_j}$,
        $b_k = \frac{T P(\alpha, \gamma_k T)}{\gamma_k^{\alpha}} - \frac{\alpha P(\alpha+1, \gamma_k T)}{\gamma_k^{\alpha+1}}$.

        Returns:
            ``(A, b)`` of shapes ``(K, K)`` and ``(K,)``.
        """
        h = self._h64()
        g = self._gammas64()
        T = self.horizon
        alpha = h + 0.5
        gi, gj = g[:, None], g[None, :]
        if self.kind == "type1":
            A = (2 * T - (1 - torch.exp(-gi * T)) / gi - (1 - torch.exp(-gj * T)) / gj) / (gi + gj)
            x = g * T
            b = (
                2 * T / g.pow(alpha)
                - T**alpha / (g * torch.exp(torch.lgamma(alpha + 1)))
                + (torch.exp(-x) - gammaincc_scaled(alpha.expand_as(x), x)) / g.pow(alpha + 1)
            ) * _type1_scale(h)
        else:
            s = gi + gj
            A = (T - (1 - torch.exp(-s * T)) / s) / s
            x = g * T
            b = T * gammainc(alpha.expand_as(x), x) / g.pow(alpha) - alpha * gammainc(
                (alpha + 1).expand_as(x), x
            ) / g.pow(alpha + 1)
        return A, b

    def _omegas64(self) -> Tensor:
        A, b = self.linear_system()
        return torch.linalg.solve(A, b)

    @property
    def omegas(self) -> Tensor:
        """``(K,)`` optimal weights, the solution of $A\\omega = b$; differentiable in ``hurst``."""
        return self._omegas64().to(self.dtype)

    def _target_mean_square(self) -> Tensor:
        """$\\int_0^T \\mathbb{E}[B_H(t)^2] dt$."""
        h = self._h64()
        T = self.horizon
        c = T ** (2 * h + 1) / (2 * h + 1)
        if self.kind == "type2":
            c = c / (2 * h * torch.exp(2 * torch.lgamma(h + 0.5)))
        return c

    @property
    def error(self) -> Tensor:
        r"""Time-averaged squared error $\frac1T \int_0^T \mathbb{E}[(B_H(t) - \hat B_H(t))^2] dt$ at the optimum.

        Equals $(c - b^\top \omega) / T$ with $c = \int_0^T \mathbb{E}[B_H^2] dt$.
        """
        A, b = self.linear_system()
        omega = torch.linalg.solve(A, b)
        return ((self._target_mean_square() - b @ omega) / self.horizon).to(self.dtype)

    @property
    def relative_error(self) -> Tensor:
        """:attr:`error` divided by $\\frac1T\\int_0^T \\mathbb{E}[B_H^2] dt$ (0 is perfect, 1 is $\\hat B = 0$)."""
        return (self.error.to(torch.float64) * self.horizon / self._target_mean_square()).to(self.dtype)

    # -- closed-form second moments -----------------------------------------------------
    def _ou_cross(self, t: Tensor, s: Tensor, diagonal: bool = False) -> Tensor:
        """$\\mathbb{E}[\\hat Y_i(t) \\hat Y_j(s)]$, shape ``(len(t), len(s), K, K)`` (``(len(t), K, K)`` if diagonal)."""
        g = self._gammas64()
        gi, gj = g[:, None], g[None, :]
        if diagonal:
            t = s = t[:, None, None]
        else:
            t = t[:, None, None, None]
            s = s[None, :, None, None]

        if self.kind == "type1":
            def stat(a: Tensor, c: Tensor) -> Tensor:  # E[Y_i(a) Y_j(c)] for stationary OU
                d = a - c
                return torch.where(d >= 0, torch.exp(-gi * d.clamp_min(0)), torch.exp(gj * d.clamp_max(0))) / (gi + gj)

            zero = torch.zeros_like(t)
            return stat(t, s) - stat(t, zero * s) - stat(zero * t, s) + stat(zero * t, zero * s)
        m = torch.minimum(t, s)
        return (torch.exp(-gi * (t - m) - gj * (s - m)) - torch.exp(-gi * t - gj * s)) / (gi + gj)

    def covariance(self, ts: Tensor) -> Tensor:
        r"""Closed-form covariance of the approximation $\hat B_H$ at ``ts``: $\omega^\top \mathbb{E}[\hat Y(t)\hat Y(s)^\top]\omega$.

        Args:
            ts: ``(n,)`` non-negative increasing times.

        Returns:
            ``(n, n)`` covariance in the dtype of ``ts``.
        """
        _check_times(ts)
        t = ts.to(torch.float64)
        omega = self._omegas64()
        cov = torch.einsum("i,abij,j->ab", omega, self._ou_cross(t, t), omega)
        return cov.to(ts.dtype)

    def error_variance(self, ts: Tensor) -> Tensor:
        r"""Closed-form pointwise error $\mathbb{E}[(B_H(t) - \hat B_H(t))^2]$ at ``ts``.

        Uses $\mathbb{E}[B_H(t)\hat Y_k(t)] = \gamma_k^{-\alpha}\,c\,(2 - e^{-\gamma_k t} - e^{\gamma_k t}Q(\alpha, \gamma_k t))$
        (type I) and $\gamma_k^{-\alpha} P(\alpha, \gamma_k t)$ (type II).

        Args:
            ts: ``(n,)`` non-negative increasing times.

        Returns:
            ``(n,)`` in the dtype of ``ts``.
        """
        _check_times(ts)
        t = ts.to(torch.float64)
        h = self._h64()
        alpha = h + 0.5
        g = self._gammas64()
        omega = self._omegas64()
        x = (t[:, None] * g).clamp_min(1e-300)
        a = alpha.expand_as(x)
        if self.kind == "type1":
            cross = (2 - torch.exp(-x) - gammaincc_scaled(a, x)) / g.pow(alpha) * _type1_scale(h)
            target = t.pow(2 * h)
        else:
            cross = gammainc(a, x) / g.pow(alpha)
            target = t.pow(2 * h) / (2 * h * torch.exp(2 * torch.lgamma(alpha)))
        cross = torch.where(t[:, None] > 0, cross, torch.zeros_like(cross))
        yy = torch.einsum("i,aij,j->a", omega, self._ou_cross(t, t, diagonal=True), omega)
        return (target - 2 * cross @ omega + yy).to(ts.dtype)

    # -- simulation helpers ----------------------------------------------------------------
    def initial_state(
        self, shape: tuple[int, ...], generator: torch.Generator | None = None, dtype=None, device=None
    ) -> Tensor:
        """$Y(0)$ of shape ``(*shape, K)``: stationary $N(0, [1/(\\gamma_i+\\gamma_j)])$ (type I) or 0 (type II)."""
        dtype = dtype or self.dtype
        device = device or self.device
        if self.kind == "type2":
            return torch.zeros(*shape, self.n_ou, dtype=dtype, device=device)
        g = self._gammas64().to(device)
        cov = 1 / (g[:, None] + g[None, :])
        chol = torch.linalg.cholesky(cov + 1e-12 * torch.eye(self.n_ou, dtype=cov.dtype, device=device))
        z = torch.randn(*shape, self.n_ou, dtype=torch.float64, device=device, generator=generator)
        return (z @ chol.T).to(dtype)

    def check_dt(self, dt: float, max_gamma_dt: float = 0.5) -> None:
        """Raise if the Euler step is too coarse for the fastest OU speed.

        Raises:
            ValueError: when ``gamma_max * dt > max_gamma_dt`` (default 0.5; the Euler
                stationary variance of the fastest OU process is then off by
                ``gamma_max * dt / (2 - gamma_max * dt)``, 33% at 0.5, 11% at 0.2).
        """
        if not (dt > 0):
            raise ValueError(f"dt must be positive, got {dt}")
        gmax = float(self._gammas64().max())
        if gmax * dt > max_gamma_dt * (1 + 1e-9):
            raise ValueError(
                f"dt={dt} is too large for the fastest OU speed gamma_max={gmax:.4g}: gamma_max * dt = "
                f"{gmax * dt:.3g} must be <= {max_gamma_dt} (<= 0.2 keeps the fastest mode's Euler "
                f"variance error near 10%); use dt <= {max_gamma_dt / gmax:.3g} or a smaller gamma_max"
            )
