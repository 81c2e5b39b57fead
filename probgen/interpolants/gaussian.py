"""Exact interpolant fields when both endpoints are Gaussian mixtures.

If $\\rho_0 = \\sum_i p_i N(m^0_i, C^0_i)$, $\\rho_1 = \\sum_j q_j N(m^1_j, C^1_j)$, $x_0 \\perp x_1$
(independent coupling) and $z \\sim N(0, I)$, then for each pair $c = (i, j)$ the vector
$(x_t, \\partial_t x_t)$ is jointly Gaussian, so $x_t$ is the mixture
$\\rho_t = \\sum_c p_i q_j N(\\mu_c, \\Sigma_c)$ with

$$\\mu_c = \\alpha m^0_i + \\beta m^1_j, \\qquad \\Sigma_c = \\alpha^2 C^0_i + \\beta^2 C^1_j + \\gamma^2 I,$$

and every conditional expectation the paper learns is a posterior-weighted sum of Gaussian
conditional means: with $K_c = \\mathrm{Cov}(\\partial_t x_t, x_t) = \\alpha\\dot\\alpha C^0_i +
\\beta\\dot\\beta C^1_j + \\gamma\\dot\\gamma I$ and $w_c(x) \\propto p_i q_j N(x; \\mu_c, \\Sigma_c)$,

$$b(t, x) = \\sum_c w_c(x) [\\dot\\alpha m^0_i + \\dot\\beta m^1_j + K_c \\Sigma_c^{-1}(x - \\mu_c)],
\\qquad s(t, x) = -\\sum_c w_c(x) \\Sigma_c^{-1} (x - \\mu_c).$$

For a one-sided path pass the standard normal as ``base``; for a mirror path ``base`` is
ignored ($\\alpha = 0$). These fields are the closed forms the tests compare against, and a
ready "perfectly trained model" for tutorials.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from probgen.data.toy2d import GaussianMixture
from probgen.interpolants.paths import Interpolant

__all__ = ["GaussianMixtureFields", "standard_normal"]


def _apply(K: Tensor, v: Tensor) -> Tensor:
    """Batched matrix-vector product ``K: (n or 1, C, d, d)``, ``v: (n, C, d)``."""
    return (K @ v[..., None])[..., 0]


def standard_normal(dim: int) -> GaussianMixture:
    """$N(0, I_d)$ as a one-component :class:`GaussianMixture`."""
    return GaussianMixture(torch.zeros(1, dim), stds=torch.ones(1))


class GaussianMixtureFields:
    """Closed-form $b$, $v$, $s$, $\\eta_z$, $\\eta_0$, $\\eta_1$ and $\\log\\rho_t$ for mixture endpoints.

    Args:
        interpolant: the :class:`~probgen.interpolants.Interpolant`.
        base: $\\rho_0$ (a :class:`~probgen.data.toy2d.GaussianMixture`; $N(0, I)$ for one-sided).
        target: $\\rho_1$.

    All methods take ``t: (n,)`` or a float and ``x: (n, d)`` and compute in x's dtype.
    """

    def __init__(self, interpolant: Interpolant, base: GaussianMixture, target: GaussianMixture) -> None:
        if base.dim != target.dim:
            raise ValueError(f"base and target dimensions differ: {base.dim} vs {target.dim}")
        self.interpolant, self.base, self.target = interpolant, base, target
        self.dim = target.dim
        if interpolant.kind == "mirror":
            base = target  # ignored: alpha = 0
        K0, K1 = base.num_components, target.num_components
        self._m0 = base.means.repeat_interleave(K1, 0)  # (C, d) with c = i * K1 + j
        self._C0 = base.covs.repeat_interleave(K1, 0)
        self._m1 = target.means.repeat(K0, 1)
        self._C1 = target.covs.repeat(K0, 1, 1)
        self._logw = (torch.log(base.weights)[:, None] + torch.log(target.weights)[None, :]).reshape(-1)

    def _coeffs(self, t, x: Tensor):
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if t.dim() == 1 and t.shape != x.shape[:1]:
            raise ValueError(f"t must be a float or have shape ({x.shape[0]},), got {tuple(t.shape)}")
        if t.dim() == 1 and bool((t == t[0]).all()):
            t = t[0]  # one time for the whole batch (as in a solver): one covariance per component
        if t.dim() == 0:
            t = t.reshape(1)
        elif t.dim() != 1:
            raise ValueError(f"t must be a float or have shape ({x.shape[0]},), got {tuple(t.shape)}")
        I = self.interpolant
        return tuple(c[:, None, None, None] for c in (I.alpha(t), I.beta(t), I.gamma(t), I.dalpha(t), I.dbeta(t), I.gamma_dgamma(t)))

    def _moments(self, t, x):
        a, b, g, da, db, gdg = self._coeffs(t, x)  # (n or 1, 1, 1, 1)
        dt, dev = x.dtype, x.device
        m0, m1 = self._m0.to(dev, dt), self._m1.to(dev, dt)
        C0, C1 = self._C0.to(dev, dt)[None], self._C1.to(dev, dt)[None]
        eye = torch.eye(self.dim, dtype=dt, device=dev)
        mu = a[..., 0] * m0[None] + b[..., 0] * m1[None]  # (n or 1, C, d)
        Sigma = a**2 * C0 + b**2 * C1 + g**2 * eye  # (n or 1, C, d, d)
        chol = torch.linalg.cholesky(Sigma)
        prec = torch.cholesky_inverse(chol)
        diff = x[:, None, :] - mu  # (n, C, d)
        sol = _apply(prec, diff)  # Sigma^{-1}(x - mu), (n, C, d)
        maha = (diff * sol).sum(-1)
        logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        logp = self._logw.to(dev, dt)[None] - 0.5 * (maha + logdet + self.dim * math.log(2 * math.pi))
        w = torch.softmax(logp, dim=-1)
        return dict(a=a, b=b, g=g, da=da, db=db, gdg=gdg, m0=m0, m1=m1, C0=C0, C1=C1, eye=eye, sol=sol, logp=logp, w=w)

    @staticmethod
    def _mix(w: Tensor, comp: Tensor) -> Tensor:
        return (w[..., None] * comp).sum(1)

    def log_density(self, t, x: Tensor) -> Tensor:
        """$\\log \\rho_t(x)$, ``(n,)``."""
        return torch.logsumexp(self._moments(t, x)["logp"], -1)

    def score(self, t, x: Tensor) -> Tensor:
        """$s = \\nabla \\log\\rho_t$, ``(n, d)``."""
        M = self._moments(t, x)
        return self._mix(M["w"], -M["sol"])

    def mean_velocity(self, t, x: Tensor) -> Tensor:
        """$v = E[\\partial_t I \\mid x_t = x]$ (no $\\dot\\gamma z$ term), ``(n, d)``."""
        M = self._moments(t, x)
        mean = M["da"][..., 0] * M["m0"][None] + M["db"][..., 0] * M["m1"][None]
        K = M["a"] * M["da"] * M["C0"] + M["b"] * M["db"] * M["C1"]
        comp = mean + _apply(K, M["sol"])
        return self._mix(M["w"], comp)

    def velocity(self, t, x: Tensor) -> Tensor:
        """$b = E[\\partial_t x_t \\mid x_t = x] = v - \\gamma\\dot\\gamma s$, ``(n, d)``."""
        M = self._moments(t, x)
        mean = M["da"][..., 0] * M["m0"][None] + M["db"][..., 0] * M["m1"][None]
        K = M["a"] * M["da"] * M["C0"] + M["b"] * M["db"] * M["C1"] + M["gdg"] * M["eye"]
        comp = mean + _apply(K, M["sol"])
        return self._mix(M["w"], comp)

    def eta_z(self, t, x: Tensor) -> Tensor:
        """$\\eta_z = E[z \\mid x_t = x] = -\\gamma s$, ``(n, d)``."""
        M = self._moments(t, x)
        return self._mix(M["w"], M["g"][..., 0] * M["sol"])

    def eta0(self, t, x: Tensor) -> Tensor:
        """$\\eta_0 = E[x_0 \\mid x_t = x]$, ``(n, d)``."""
        M = self._moments(t, x)
        comp = M["m0"][None] + _apply(M["a"] * M["C0"], M["sol"])
        return self._mix(M["w"], comp)

    def eta1(self, t, x: Tensor) -> Tensor:
        """$\\eta_1 = E[x_1 \\mid x_t = x]$, ``(n, d)``."""
        M = self._moments(t, x)
        comp = M["m1"][None] + _apply(M["b"] * M["C1"], M["sol"])
        return self._mix(M["w"], comp)

    def sample(self, t: float, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` samples of $x_t$ from the mixture $\\rho_t$, ``(n, d)`` float64."""
        x = torch.zeros(1, self.dim, dtype=torch.float64)
        M = self._moments(float(t), x)
        Sigma = M["a"][0] ** 2 * M["C0"][0] + M["b"][0] ** 2 * M["C1"][0] + M["g"][0] ** 2 * M["eye"]
        mu = M["a"][0, :, 0] * M["m0"] + M["b"][0, :, 0] * M["m1"]
        k = torch.multinomial(torch.exp(self._logw), n, replacement=True, generator=generator)
        eps = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return mu[k] + torch.einsum("nij,nj->ni", torch.linalg.cholesky(Sigma)[k], eps)
