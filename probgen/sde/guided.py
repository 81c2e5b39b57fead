r"""Guided proposals on the Euler grid: backward filtering, forward guiding (BFFG).

For an SDE $dz = f(t, z)\,dt + g(t, z)\,dW$ observed at grid points through
$y_i = C z(t_i) + \mathcal N(0, R)$, a *linear auxiliary* chain
$\tilde z_{k+1} = M_k \tilde z_k + v\, w_k$, $M_k = I + h_k F$, $w_k \sim \mathcal N(0, h_k I_m)$
(van der Meulen & Schauer 2017; Mider, Schauer & van der Meulen 2021) has Gaussian backward
messages

$$V_j(z) = \log \tilde p(y_{t_i \ge t_j} \mid \tilde z_j = z) = -\tfrac12 z^\top P_j z + q_j^\top z + c_j,$$

from one Riccati recursion over the grid (:func:`backward_filter`; per step, with
$A = I + h\, v^\top P_{k+1} v$):

$$P_k = M^\top (P_{k+1} - h P_{k+1} v A^{-1} v^\top P_{k+1}) M, \quad
q_k = M^\top (I - h P_{k+1} v A^{-1} v^\top) q_{k+1}, \quad
c_k = c_{k+1} + \tfrac{h}{2} q_{k+1}^\top v A^{-1} v^\top q_{k+1} - \tfrac12 \log\det A,$$

plus the observation's $C^\top R^{-1} C$, $C^\top R^{-1} y$ and log-normaliser at observation
points. :class:`GuidedEuler` then *guides* the model's own Euler step
$z_{k+1} = m_k + g\,w_k$, $m_k = z_k + f(t_k, z_k) h$, by the message at the step's end:

$$q(w_k \mid z_k) \propto \mathcal N(w_k; 0, h I)\, e^{V_{k+1}(m_k + g w_k)}
 = \mathcal N\big(h A^{-1} g^\top (q_{k+1} - P_{k+1} m_k),\ h A^{-1}\big), \quad A = I + h g^\top P_{k+1} g,$$

and a learnt residual moves its mean by $u h$ and scales its covariance to
$L\,\mathrm{diag}(\kappa^2) L^\top$ ($L L^\top = h A^{-1}$). When the model *is* the auxiliary
(linear drift $f = F z$, $g = v$) the guided step with zero residual is the exact posterior
transition of the Euler chain, and with $z_0$ from the exact posterior
(:func:`guided_initial_state`) the per-path ELBO

$$\sum_k \log\frac{p(w_k)}{q(w_k \mid z_k)} + \sum_i \log p(y_i \mid z(t_i)) + \log\frac{p(z_0)}{q(z_0)}$$

telescopes to the exact $\log p(y)$ for every sample: no Monte Carlo error, and its gradient in
the model's parameters (e.g. a Hurst index inside $F$ and $v$) is $\nabla \log p(y)$. For a
nonlinear drift the same step is a valid proposal (the auxiliary only guides it) and the
residual corrects it.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from probgen.sde.sde_solvers import SDESolver
from probgen.sde.protocol import NOISE_TYPES

__all__ = ["GuidedEuler", "LinearGaussianChain", "Messages", "backward_filter", "guided_initial_state"]


@dataclass
class LinearGaussianChain:
    """Euler chain $z_{k+1} = (I + h_k F) z_k + v w_k$, $w_k \\sim \\mathcal N(0, h_k I_m)$, observed at grid points.

    Attributes:
        drift: ``(D, D)`` matrix $F$ of the linear drift.
        noise: ``(D, m)`` noise directions $v$.
        grid: the step grid (Python floats), e.g. from :func:`probgen.sde.step_grid`.
        obs_steps: grid index of each observation, length ``n`` (increasing, ``>= 1``).
        index: observed coordinates (``p``): $C$ picks them out.
        obs_var: ``(p,)`` observation variances (the diagonal of $R$).
        z0_mean: ``(D,)`` mean and ``z0_factor: (D, r)`` factor of the covariance of $z_0$
            (``r = 0``: a known start).
    """

    drift: Tensor
    noise: Tensor
    grid: list[float]
    obs_steps: list[int]
    index: list[int]
    obs_var: Tensor
    z0_mean: Tensor
    z0_factor: Tensor

    def __post_init__(self) -> None:
        D = self.drift.shape[0]
        if self.drift.shape != (D, D) or self.noise.dim() != 2 or self.noise.shape[0] != D:
            raise ValueError(f"drift must be (D, D) and noise (D, m), got {tuple(self.drift.shape)} and "
                             f"{tuple(self.noise.shape)}")
        if any(not 1 <= j < len(self.grid) for j in self.obs_steps) or any(
                b <= a for a, b in zip(self.obs_steps, self.obs_steps[1:])):
            raise ValueError(f"obs_steps must be increasing grid indices in [1, {len(self.grid) - 1}], "
                             f"got {self.obs_steps[:8]}")
        if self.z0_mean.shape != (D,) or self.z0_factor.dim() != 2 or self.z0_factor.shape[0] != D:
            raise ValueError(f"z0_mean must be ({D},) and z0_factor ({D}, r), got {tuple(self.z0_mean.shape)} "
                             f"and {tuple(self.z0_factor.shape)}")

    def step_matrix(self, k: int) -> tuple[Tensor, float]:
        """$M_k = I + h_k F$ and $h_k$ of step ``k``."""
        h = self.grid[k + 1] - self.grid[k]
        eye = torch.eye(self.drift.shape[0], dtype=self.drift.dtype, device=self.drift.device)
        return eye + h * self.drift, h


@dataclass
class Messages:
    """Backward messages per grid point $j$: ``V`` includes the observation at $j$, ``W`` does not.

    ``P[j]: (D, D)``, ``q[j]: (B, D)``, ``c[j]: (B,)`` for ``V``; ``WP``, ``Wq``, ``Wc`` for ``W``;
    ``gap[k]``: $\\tfrac12[\\mathrm{tr}(h v^\\top P_{k+1} v) - \\log\\det(I + h v^\\top P_{k+1} v)]$,
    the loss of step ``k`` of a fixed-variance (Girsanov) transition; ``grid``: the chain's grid.
    """

    P: list[Tensor]
    q: list[Tensor]
    c: list[Tensor]
    WP: list[Tensor]
    Wq: list[Tensor]
    Wc: list[Tensor]
    gap: list[Tensor]
    grid: list[float]

    def to(self, dtype: torch.dtype) -> Messages:
        """The messages cast to ``dtype`` (gradients flow through the cast)."""
        cast = [[t.to(dtype) for t in ts] for ts in (self.P, self.q, self.c, self.WP, self.Wq, self.Wc, self.gap)]
        return Messages(*cast, self.grid)


def backward_filter(chain: LinearGaussianChain, values: Tensor) -> Messages:
    """The Riccati recursion of the messages $V_j$ and $W_j$ (module docstring); differentiable.

    Args:
        chain: the linear-Gaussian auxiliary chain.
        values: ``(B, n, p)`` observations.

    Returns:
        :class:`Messages` in the chain's dtype.

    Raises:
        ValueError: ``values`` whose ``n`` or ``p`` do not match the chain.
    """
    if values.dim() != 3 or values.shape[1] != len(chain.obs_steps) or values.shape[2] != len(chain.index):
        raise ValueError(f"values must be (B, {len(chain.obs_steps)}, {len(chain.index)}) for this chain, "
                         f"got {tuple(values.shape)}")
    dtype, device = chain.drift.dtype, chain.drift.device
    D = chain.drift.shape[0]
    n_grid = len(chain.grid)
    B = values.shape[0]
    v = chain.noise
    m = v.shape[1]
    obs_at = {j: i for i, j in enumerate(chain.obs_steps)}
    sel = torch.zeros(len(chain.index), D, dtype=dtype, device=device)
    sel[range(len(chain.index)), chain.index] = 1.0
    obs_var = chain.obs_var.to(dtype)
    r_inv = 1.0 / obs_var
    obs_norm = 0.5 * torch.log(2 * math.pi * obs_var).sum()
    eye_m = torch.eye(m, dtype=dtype, device=device)
    P = torch.zeros(D, D, dtype=dtype, device=device)
    q = torch.zeros(B, D, dtype=dtype, device=device)
    c = torch.zeros(B, dtype=dtype, device=device)
    out = Messages(*[[None] * n_grid for _ in range(6)], [None] * (n_grid - 1), list(chain.grid))
    for j in range(n_grid - 1, -1, -1):
        out.WP[j], out.Wq[j], out.Wc[j] = P, q, c
        if j in obs_at:
            y = values[:, obs_at[j]].to(dtype)
            P = P + sel.T @ (r_inv[:, None] * sel)
            q = q + (y * r_inv) @ sel
            c = c - 0.5 * (y * y * r_inv).sum(-1) - obs_norm
        out.P[j], out.q[j], out.c[j] = P, q, c
        if j == 0:
            break
        M, h = chain.step_matrix(j - 1)
        Pv = P @ v  # (D, m)
        hA = eye_m + h * (v.T @ Pv)
        A_inv = h * torch.linalg.inv(hA)
        vq = q @ v  # (B, m)
        logdet = torch.linalg.slogdet(hA)[1]
        out.gap[j - 1] = 0.5 * (torch.diagonal(hA).sum() - m - logdet)
        c = c + 0.5 * ((vq @ A_inv) * vq).sum(-1) - 0.5 * logdet
        q = (q - vq @ A_inv @ Pv.T) @ M
        P = M.T @ (P - Pv @ A_inv @ Pv.T) @ M
        P = 0.5 * (P + P.T)
    return out


def guided_initial_state(chain: LinearGaussianChain, messages: Messages,
                         generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    r"""A draw of $z_0$ from $q(z_0) \propto p(z_0)\, e^{V_0(z_0)}$, the auxiliary chain's exact posterior.

    With $z_0 = \mu + L e$, $e \sim \mathcal N(0, I_r)$: $q(e) = \mathcal N(\Lambda^{-1} b, \Lambda^{-1})$,
    $\Lambda = I + L^\top P_0 L$, $b = L^\top (q_0 - P_0 \mu)$.

    Args:
        chain: the chain (its ``z0_mean``, ``z0_factor``).
        messages: from :func:`backward_filter` on it.
        generator: for the draw.

    Returns:
        ``z0: (B, D)`` and ``log_ratio: (B,)`` $= \log p(z_0) - \log q(z_0)$ at the draw (in $e$,
        which the affine map leaves unchanged).
    """
    P, q = messages.P[0], messages.q[0]
    mean, L = chain.z0_mean.to(P), chain.z0_factor.to(P)
    B, r = q.shape[0], L.shape[1]
    if r == 0:
        return mean.expand(B, -1).clone(), q.new_zeros(B)
    lam = torch.eye(r, dtype=P.dtype, device=P.device) + L.T @ P @ L
    chol = torch.linalg.cholesky(lam)
    b = (q - mean @ P) @ L  # (B, r)
    mu_e = torch.cholesky_solve(b.unsqueeze(-1), chol).squeeze(-1)
    xi = torch.randn(B, r, dtype=P.dtype, device=P.device, generator=generator)
    e = mu_e + torch.linalg.solve_triangular(chol.T, xi.T, upper=True).T  # cov Lambda^{-1}
    log_q = -0.5 * (xi * xi).sum(-1) + torch.log(torch.diagonal(chol)).sum()
    log_p = -0.5 * (e * e).sum(-1)
    return mean + e @ L.T, log_p - log_q


class GuidedEuler(SDESolver):
    r"""Euler step with the guided proposal of a backward filter and a learnt residual (module docstring).

    ``sdeint(sde, z0, ts, method=GuidedEuler, dt=h, options={...})`` with options

    * ``"guide"``: :class:`Messages` of :func:`backward_filter` on the solver's own grid, over the
      state's first ``D`` coordinates (``D`` = state size - 1);
    * ``"transition"``: optional residual ``transition(t, z) -> (u, log_var)``, ``u: (batch, m)``
      shifting the step's noise mean by ``u h`` and ``log_var: (batch, m)`` (or ``None``) scaling
      its covariance factor by $\kappa = e^{\log\kappa^2 / 2}$ (any real value); zero is the pure guided step.

    The state's last coordinate accumulates $\log q(w_k \mid z_k) - \log p(w_k)$ at the drawn
    $w_k$ (the SDE must leave its drift and diffusion at zero); the observations' log-likelihood
    and $z_0$'s log ratio are the caller's. In that density the residual's outputs are detached
    ("sticking the landing", Roeder et al. 2017): its score term, of mean zero, is dropped, so
    the residual's gradient is zero for every sample where the guided step is exact, while the
    gradient in the guide's own parameters (e.g. H) keeps the exact identity above. Weak order 1
    for the prior chain; Ito.
    """

    strong_order = 0.5
    weak_order = 1.0
    sde_type = "ito"
    noise_types = NOISE_TYPES

    def __init__(self, terms: Any, options: dict[str, Any] | None = None) -> None:
        super().__init__(terms, options)
        unknown = set(self.options) - {"guide", "transition"}
        if unknown:
            raise ValueError(f"GuidedEuler options are 'guide' and 'transition', got {sorted(unknown)}")
        guide = self.options.get("guide")
        if not isinstance(guide, Messages):
            raise TypeError(f"GuidedEuler needs options['guide'] = Messages from backward_filter, got {type(guide).__name__}")
        transition = self.options.get("transition")
        if transition is not None and not callable(transition):
            raise TypeError(f"options['transition'] must be transition(t, z) -> (u, log_var) or None, got {transition!r}")
        self.guide: Messages = guide
        self.transition: Callable[[Tensor, Tensor], tuple[Tensor, Tensor | None]] | None = transition
        self._k = 0

    def bind_grid(self, times: list[float]) -> None:
        """Check that the guide's grid is the solver's."""
        self._k = 0
        grid = self.guide.grid
        if len(grid) != len(times) or any(abs(a - b) > 1e-6 * max(1.0, abs(a)) for a, b in zip(grid, times)):
            raise ValueError(f"the guide's grid ({len(grid)} points from {grid[0]} to {grid[-1]}) is not the solver's "
                             f"({len(times)} points from {times[0]} to {times[-1]}): build the chain on step_grid(ts, dt)")

    def step(self, t: tuple[Tensor, ...], h: float, y: Tensor, dW: Tensor) -> Tensor:
        f, g = self.f_and_g(t[0], y)
        self._k += 1
        P, q = self.guide.P[self._k], self.guide.q[self._k]
        D = P.shape[0]
        if y.shape[1] != D + 1 or q.shape[0] != y.shape[0]:
            raise ValueError(f"the guide covers {D} coordinates of {q.shape[0]} paths; the state is {tuple(y.shape)} "
                             "(D + 1 coordinates, the last the accumulator)")
        G = torch.diag_embed(g) if self.noise_type == "diagonal" else g  # (batch, D + 1, m)
        V = G[:, :D, :]
        mean = torch.add(y, f, alpha=h)
        m = V.shape[-1]
        r = q - mean[:, :D] @ P  # (batch, D): the message's gradient at the Euler mean
        if m == 1:  # scalar noise per path: A is (batch, 1), its Cholesky factor sqrt(A)
            v = V[..., 0]
            A = 1.0 + h * (v * (v @ P)).sum(-1, keepdim=True)
            mu = h * (v * r).sum(-1, keepdim=True) / A
            root = torch.sqrt(A)
            chol_t_inv = lambda x: x / root  # noqa: E731  (chol^{-T} x)
            chol_t = lambda x: root * x  # noqa: E731
            log_det = 0.5 * torch.log(A).sum(-1)
        else:
            A = torch.eye(m, dtype=y.dtype, device=y.device) + h * (V.transpose(1, 2) @ (P @ V))
            chol = torch.linalg.cholesky(A)
            mu = h * torch.cholesky_solve(V.transpose(1, 2) @ r.unsqueeze(-1), chol).squeeze(-1)
            chol_t_inv = lambda x: torch.linalg.solve_triangular(  # noqa: E731
                chol.transpose(1, 2), x.unsqueeze(-1), upper=True).squeeze(-1)
            chol_t = lambda x: (chol.transpose(1, 2) @ x.unsqueeze(-1)).squeeze(-1)  # noqa: E731
            log_det = torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        xi = dW / math.sqrt(h)
        u, log_var = self.transition(t[0], y) if self.transition is not None else (None, None)
        if u is not None and (u.shape != dW.shape or (log_var is not None and log_var.shape != dW.shape)):
            raise ValueError(f"transition(t, z) must return u and log_var of the noise's shape {tuple(dW.shape)}, "
                             f"got {tuple(u.shape)} and {None if log_var is None else tuple(log_var.shape)}")
        scaled = xi if log_var is None else torch.exp(0.5 * log_var) * xi
        shift = mu if u is None else mu + u * h
        w = shift + math.sqrt(h) * chol_t_inv(scaled)
        # log q(w) - log p(w) with the residual (u, log_var) detached in the density (its score term has mean
        # zero; dropping it makes the residual's gradient vanish where the guide is exact): with
        # e = diag(kappa)^{-1} chol^T (w - mu - u h) / sqrt(h) (= xi in value),
        # log q(w) = -|e|^2 / 2 - log det(factor), log det(factor) = (m/2) log h - log det chol + sum log_var / 2
        resid = w - mu if u is None else w - mu - u.detach() * h
        e = chol_t(resid) / math.sqrt(h)
        if log_var is not None:
            e = e * torch.exp(-0.5 * log_var.detach())
            log_det = log_det - 0.5 * log_var.detach().sum(-1)
        delta = -0.5 * (e * e).sum(-1) + log_det + 0.5 * (w * w).sum(-1) / h
        z = self.diffuse(mean, g, w)
        return torch.cat([z[:, :-1], z[:, -1:] + delta.unsqueeze(-1)], dim=-1)
