"""Noise distributions $q$ for importance-sampled $\\log Z$, the compositional objective and NCE.

A noise distribution is an ``nn.Module`` with ``sample(n, generator=None) -> (n, *event_shape)``,
``log_prob(x) -> (n,)`` and ``fit(x) -> self``. Its parameters are buffers (fitted, not
trained), so they travel in checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from probgen.energy.energies import Energy
from probgen.exceptions import NotPositiveDefiniteError

__all__ = ["GaussianMixtureNoise", "GaussianNoise", "NoiseDistribution", "build_noise"]


def _robust_cholesky(cov: Tensor, where: str) -> Tensor:
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    scale = cov.diagonal(dim1=-2, dim2=-1).mean(-1, keepdim=True).clamp_min(1e-12)[..., None]
    for jitter in (0.0, 1e-8, 1e-6, 1e-4, 1e-2):
        chol, info = torch.linalg.cholesky_ex(cov + jitter * scale * eye)
        if not bool((info != 0).any()):
            return chol
    raise NotPositiveDefiniteError(f"{where}: covariance not positive definite after jitter 1e-2; add more data or raise min_var")


class NoiseDistribution(nn.Module):
    """Base class for $q$.

    Args:
        event_shape: shape of one sample.
    """

    def __init__(self, event_shape: Sequence[int]) -> None:
        super().__init__()
        self.event_shape = tuple(int(s) for s in event_shape)

    @property
    def dim(self) -> int:
        return math.prod(self.event_shape)

    def _flat(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(f"x must have shape (batch, {', '.join(map(str, self.event_shape))}), got {tuple(x.shape)}")
        return x.reshape(x.shape[0], -1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def log_prob(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def fit(self, x: Tensor) -> NoiseDistribution:  # pragma: no cover - abstract
        raise NotImplementedError

    def sample_and_log_prob(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``(x, log q(x))`` for ``n`` fresh samples."""
        x = self.sample(n, generator)
        return x, self.log_prob(x)


class GaussianNoise(NoiseDistribution):
    """$q = \\mathcal N(m, s^2 \\Sigma)$ with $(m, \\Sigma)$ the data mean and covariance.

    Args:
        event_shape: shape of one sample (an int means ``(dim,)``).
        scale: inflation $s \\geq$ 1 widens $q$ so that it covers the data's tails.
        diagonal: fit only the variances.
        mean, cov: optional fixed parameters (skip :meth:`fit`).
    """

    def __init__(self, event_shape, scale: float = 1.0, diagonal: bool = False, mean=None, cov=None) -> None:
        super().__init__((event_shape,) if isinstance(event_shape, int) else event_shape)
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.scale = float(scale)
        self.diagonal = bool(diagonal)
        d, dtype = self.dim, torch.get_default_dtype()
        self.register_buffer("loc", torch.zeros(d, dtype=dtype) if mean is None else torch.as_tensor(mean, dtype=dtype).reshape(d).clone())
        cov = torch.eye(d, dtype=dtype) if cov is None else torch.as_tensor(cov, dtype=dtype).reshape(d, d)
        self.register_buffer("scale_tril", _robust_cholesky(cov * self.scale**2, "GaussianNoise"))

    @torch.no_grad()
    def fit(self, x: Tensor) -> GaussianNoise:
        """Set the mean and (inflated) covariance from data ``x: (n, *event_shape)``."""
        flat = self._flat(x).to(self.loc.dtype)
        if flat.shape[0] < 2:
            raise ValueError(f"fit needs at least 2 samples, got {flat.shape[0]}")
        self.loc.copy_(flat.mean(0))
        centred = flat - self.loc
        cov = centred.T @ centred / (flat.shape[0] - 1)
        if self.diagonal:
            cov = torch.diag(cov.diagonal())
        cov = cov + 1e-6 * cov.diagonal().mean() * torch.eye(self.dim, dtype=cov.dtype, device=cov.device)
        self.scale_tril.copy_(_robust_cholesky(cov * self.scale**2, "GaussianNoise.fit"))
        return self

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        eps = torch.randn(n, self.dim, generator=generator, dtype=self.loc.dtype, device=self.loc.device)
        return (self.loc + eps @ self.scale_tril.T).reshape(n, *self.event_shape)

    def log_prob(self, x: Tensor) -> Tensor:
        flat = self._flat(x)
        L = self.scale_tril.to(flat)
        z = torch.linalg.solve_triangular(L, (flat - self.loc.to(flat)).T, upper=False).T
        return -0.5 * z.pow(2).sum(-1) - L.diagonal().log().sum() - 0.5 * self.dim * math.log(2 * math.pi)


class GaussianMixtureNoise(NoiseDistribution):
    """Gaussian mixture $q = \\sum_k \\pi_k \\mathcal N(m_k, s^2 \\Sigma_k)$ fitted by EM.

    Args:
        event_shape: shape of one sample (an int means ``(dim,)``).
        num_components: $K$.
        scale: covariance inflation $s$.
        diagonal: diagonal covariances (use for high dimensions, e.g. digits).
        iterations: EM iterations in :meth:`fit`.
        min_var: variance floor added to every covariance.
        seed: seed of the k-means++ initialisation.
    """

    def __init__(self, event_shape, num_components: int = 8, scale: float = 1.0, diagonal: bool = False, iterations: int = 100, min_var: float = 1e-3, seed: int = 0) -> None:
        super().__init__((event_shape,) if isinstance(event_shape, int) else event_shape)
        if not isinstance(num_components, int) or num_components < 1:
            raise ValueError(f"num_components must be a positive int, got {num_components!r}")
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.num_components, self.scale, self.diagonal = num_components, float(scale), bool(diagonal)
        self.iterations, self.min_var, self.seed = int(iterations), float(min_var), int(seed)
        K, d, dtype = num_components, self.dim, torch.get_default_dtype()
        self.register_buffer("logits", torch.zeros(K, dtype=dtype))
        self.register_buffer("locs", torch.zeros(K, d, dtype=dtype))
        self.register_buffer("scale_trils", torch.eye(d, dtype=dtype).expand(K, d, d).clone() * self.scale)

    def _component_log_prob(self, flat: Tensor) -> Tensor:
        L = self.scale_trils.to(flat)  # (K, d, d)
        diff = (flat[None] - self.locs.to(flat)[:, None]).transpose(-1, -2)  # (K, d, n)
        z = torch.linalg.solve_triangular(L, diff, upper=False)
        logdet = L.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        return (-0.5 * z.pow(2).sum(-2) - logdet[:, None] - 0.5 * self.dim * math.log(2 * math.pi)).T  # (n, K)

    @torch.no_grad()
    def fit(self, x: Tensor) -> GaussianMixtureNoise:
        """EM from a k-means++ start on ``x: (n, *event_shape)``; the covariances are then inflated by ``scale**2``."""
        flat = self._flat(x).to(self.locs.dtype)
        n, d, K = flat.shape[0], self.dim, self.num_components
        if n < 2 * K:
            raise ValueError(f"fit needs at least 2 * num_components = {2 * K} samples, got {n}")
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        centres = [flat[torch.randint(n, (1,), generator=gen).item()]]
        for _ in range(1, K):
            d2 = torch.cdist(flat, torch.stack(centres)).pow(2).min(1).values
            centres.append(flat[torch.multinomial(d2.cpu() + 1e-12, 1, generator=gen).item()])
        locs = torch.stack(centres)
        eye = torch.eye(d, dtype=flat.dtype, device=flat.device)
        var0 = flat.var(0).mean()
        covs = (var0 / K + self.min_var) * eye.expand(K, d, d).clone()
        log_pi = torch.full((K,), -math.log(K), dtype=flat.dtype, device=flat.device)
        for _ in range(self.iterations):
            self.locs.copy_(locs)
            self.scale_trils.copy_(_robust_cholesky(covs, "GaussianMixtureNoise.fit"))
            log_r = self._component_log_prob(flat) + log_pi
            log_r = log_r - torch.logsumexp(log_r, -1, keepdim=True)
            r = log_r.exp()  # (n, K)
            nk = r.sum(0) + 1e-10
            log_pi = (nk / n).log()
            locs = (r.T @ flat) / nk[:, None]
            diff = flat[None] - locs[:, None]  # (K, n, d)
            if self.diagonal:
                covs = torch.diag_embed((r.T[..., None] * diff.pow(2)).sum(1) / nk[:, None] + self.min_var)
            else:
                covs = torch.einsum("kn,kni,knj->kij", r.T, diff, diff) / nk[:, None, None] + self.min_var * eye
        self.logits.copy_(log_pi)
        self.locs.copy_(locs)
        self.scale_trils.copy_(_robust_cholesky(covs * self.scale**2, "GaussianMixtureNoise.fit"))
        return self

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        probs = torch.softmax(self.logits, 0)
        k = torch.multinomial(probs, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.dim, generator=generator, dtype=self.locs.dtype, device=self.locs.device)
        x = self.locs[k] + torch.einsum("nij,nj->ni", self.scale_trils[k], eps)
        return x.reshape(n, *self.event_shape)

    def log_prob(self, x: Tensor) -> Tensor:
        flat = self._flat(x)
        return torch.logsumexp(self._component_log_prob(flat) + torch.log_softmax(self.logits.to(flat), 0), -1)


class NoiseEnergy(Energy):
    """$E(x) = -\\log q(x)$: a fixed, normalised noise distribution as an expert.

    ``net + NoiseEnergy(q)`` is the exponentially tilted model $p \\propto q\\,e^{-E_{net}}$: its
    importance weights under $q$ are $e^{-E_{net}}$, bounded at initialisation, which keeps the
    compositional, minibatch and NCE objectives usable in high dimensions. The noise's buffers
    are not trained.

    Args:
        noise: a fitted noise distribution.
    """

    def __init__(self, noise: NoiseDistribution) -> None:
        super().__init__(noise.event_shape)
        self.noise = noise

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        return -self.noise.log_prob(x)


def build_noise(kind: str, event_shape, **kwargs) -> NoiseDistribution:
    """``kind``: ``"gaussian"`` or ``"mixture"``; ``kwargs`` go to the class."""
    kinds = {"gaussian": GaussianNoise, "mixture": GaussianMixtureNoise}
    if kind not in kinds:
        raise ValueError(f"noise kind must be one of {sorted(kinds)} (or a trained flow via FlowNoise), got {kind!r}")
    return kinds[kind](event_shape, **kwargs)
