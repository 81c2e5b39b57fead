r"""The augmented SDE of a fractional-noise neural SDE and its variational objective.

Daems et al. (ICLR 2024), Sec. 4: with the Markov approximation
$\hat B_H = \sum_k \omega_k (Y_k - Y_k(0))$ of :class:`probgen.sde.MarkovFBM`, the SDE
$dX = b(t, X) dt + \sigma(t, X) d\hat B_H$ becomes the Markov system (Eq. 13)

$$dY_k = (-\gamma_k Y_k + u)\,dt + dW_t, \qquad
  dX = b(t, X)\,dt + \sigma(t, X) \sum_k \omega_k\, dY_k,$$

where $u = u(t, X, Y, \text{context})$ is the variational control ($u = 0$ is the prior).
By Girsanov (Eq. 15) the path KL between posterior and prior is
$\tfrac12 \int_0^T |u|^2 dt$, accumulated here as one extra state coordinate, so that the
shared solver :func:`probgen.sde.sdeint` integrates it with the path (no time loop here).

Each latent coordinate $X_i$ has its own Brownian motion $W_i$, shared by its $K$ OU
processes $Y_{i,1..K}$ and by $X_i$ itself; the SDE therefore has "general" noise with
$m = d$ Brownian motions. ``white=True`` (no OU processes) gives the Brownian baseline
$dX = (b + \sigma u) dt + \sigma dW$.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["AugmentedFractionalSDE", "split_state"]


def split_state(z: Tensor, dim: int, n_ou: int) -> tuple[Tensor, Tensor, Tensor]:
    """Split the augmented state.

    Args:
        z: ``(..., d + d K + 1)`` state ``[X, Y, KL]``.
        dim: ``d``.
        n_ou: ``K``.

    Returns:
        ``X: (..., d)``, ``Y: (..., d, K)``, running KL ``(...,)``.
    """
    x = z[..., :dim]
    y = z[..., dim : dim + dim * n_ou].unflatten(-1, (dim, n_ou))
    return x, y, z[..., -1]


class AugmentedFractionalSDE(nn.Module):
    r"""Torchsde-protocol SDE on $[X, Y_{1..K}, \text{KL}]$ (Daems et al. 2024, Eqs. 13 and 15).

    Args:
        drift: $b(t, x)$, ``t`` a 0-dim tensor, ``x: (batch, d)`` -> ``(batch, d)``.
        diffusion: $\sigma(t, x)$, -> ``(batch, d)`` (diagonal).
        gammas: ``(K,)`` OU speeds (``K = 0`` for white noise).
        omegas: ``(K,)`` Markov-approximation weights; gradients flow into them (learnt H).
        dim: ``d``.
        control: $u(t, x, y, c)$ -> ``(batch, d)``, or ``None`` for the prior; ``y: (batch, d, K)``.
        context: optional ``context(t, x) -> (batch, c)`` passed to the control as ``c``.
        constant_diffusion: $\sigma$ depends on neither t nor x (then the noise is additive,
            and $\sigma$ and ``g`` are evaluated once per solve).

    The state has ``D = d (K + 1) + 1`` coordinates; ``g`` returns ``(batch, D, d)``.
    """

    sde_type = "ito"

    def __init__(
        self,
        drift: Callable[[Tensor, Tensor], Tensor],
        diffusion: Callable[[Tensor, Tensor], Tensor],
        gammas: Tensor,
        omegas: Tensor,
        dim: int,
        control: Callable[..., Tensor] | None = None,
        context: Callable[[Tensor, Tensor], Tensor] | None = None,
        constant_diffusion: bool = False,
    ) -> None:
        super().__init__()
        self.noise_type = "additive" if constant_diffusion else "general"
        self.constant_diffusion = constant_diffusion
        self._sigma_g: tuple[Tensor, Tensor] | None = None
        if gammas.shape != omegas.shape or gammas.dim() != 1:
            raise ValueError(f"gammas and omegas must be 1-D of equal length, got {tuple(gammas.shape)} and {tuple(omegas.shape)}")
        self.drift, self.diffusion = drift, diffusion
        self.control, self.context = control, context
        self.gammas, self.omegas = gammas, omegas
        self.dim = dim
        self.n_ou = gammas.numel()
        self.state_dim = dim * (self.n_ou + 1) + 1
        self._g_cache: tuple | None = None

    def initial_state(self, x0: Tensor, y0: Tensor | None = None) -> Tensor:
        """``[x0, y0, 0]`` of shape ``(batch, D)``; ``y0: (batch, d, K)`` (default zeros)."""
        batch = x0.shape[0]
        if y0 is None:
            y0 = x0.new_zeros(batch, self.dim, self.n_ou)
        return torch.cat([x0, y0.reshape(batch, -1), x0.new_zeros(batch, 1)], dim=-1)

    def _ou_block(self, like: Tensor) -> Tensor:
        """Constant ``(d K, d)`` block of g: every $Y_{i,k}$ is driven by $W_i$."""
        key = (like.dtype, like.device)
        if self._g_cache is None or self._g_cache[0] != key:
            eye = torch.eye(self.dim, dtype=like.dtype, device=like.device)
            self._g_cache = (key, eye.repeat_interleave(self.n_ou, dim=0))
        return self._g_cache[1]

    def _sigma_and_g(self, t: Tensor, x: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        if self._sigma_g is not None and self._sigma_g[1].shape[0] == z.shape[0]:
            return self._sigma_g
        batch = z.shape[0]
        sigma = self.diffusion(t, x)
        scale = sigma * self.omegas.to(z.dtype).sum() if self.n_ou > 0 else sigma
        g = torch.cat(
            [torch.diag_embed(scale), self._ou_block(z).expand(batch, -1, -1), z.new_zeros(batch, 1, self.dim)],
            dim=1,
        )
        if self.constant_diffusion:
            self._sigma_g = (sigma, g)
        return sigma, g

    def f_and_g(self, t: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        x, y, _ = split_state(z, self.dim, self.n_ou)
        sigma, g = self._sigma_and_g(t, x, z)
        b = self.drift(t, x)
        if self.control is None:
            u = torch.zeros_like(x)
        else:
            c = self.context(t, x) if self.context is not None else None
            u = self.control(t, x, y, c)
        if self.n_ou == 0:
            fx = torch.addcmul(b, sigma, u)
            f = torch.cat([fx, 0.5 * (u * u).sum(-1, keepdim=True)], dim=-1)
        else:
            dy = torch.addcmul(u.unsqueeze(-1), self.gammas.to(z.dtype), y, value=-1.0)  # (batch, d, K)
            fx = torch.addcmul(b, sigma, dy @ self.omegas.to(z.dtype))
            f = torch.cat([fx, dy.flatten(1), 0.5 * (u * u).sum(-1, keepdim=True)], dim=-1)
        return f, g

    def f(self, t: Tensor, z: Tensor) -> Tensor:
        return self.f_and_g(t, z)[0]

    def g(self, t: Tensor, z: Tensor) -> Tensor:
        return self.f_and_g(t, z)[1]
