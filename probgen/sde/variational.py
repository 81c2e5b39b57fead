r"""Variational Gaussian transitions on the Euler grid, with exact conditioning on observations.

For an Ito SDE $dz = f\,dt + g\,dW$ the Euler prior transition is
$z_{k+1} = z_k + f(t_k, z_k) h + g(t_k, z_k)\, w_k$ with $w_k \sim p = \mathcal N(0, h I_m)$.
:class:`VariationalEuler` replaces the law of $w_k$ by a learnt Gaussian

$$r(w_k \mid z_k) = \mathcal N\big(u h,\ h\,\mathrm{diag}(\kappa^2)\big), \qquad \kappa \in (0, 1]^m,$$

so that a step can shift its mean *and* shrink its variance along the noise directions $g$.
Its KL to the prior transition is, per step (a Gaussian KL in $w$; $z_{k+1}$ is an affine
image of $w$, which leaves the KL unchanged),

$$\mathrm{KL}(r \,\|\, p) = \tfrac12 \sum_j \big(u_j^2 h + \kappa_j^2 - 1 - \log \kappa_j^2\big).$$

With $\kappa = 1$ this is $\tfrac12 |u|^2 h$: the Euler-discretised Girsanov KL of a control
$u$ (Daems et al. 2024, Eq. 15; Li et al. 2020), which the transition reproduces exactly
(``log_var=None``).

**Observation steps.** When the step lands on an observation
$y = z_{k+1}[\text{index}] + \epsilon$, $\epsilon \sim \mathcal N(0, \mathrm{diag}\, s^2)$
(:class:`LinearGaussianObservations`), the step's law is $r$ conditioned on $y$ in closed form,
$q(w) = r(w)\, \mathcal N(y; C(z_k + f h) + G w, R) / Z$ with $G = C g$, and the step contributes

$$\log Z + \mathbb E_q[\log p(w) - \log r(w)], \qquad Z = \mathcal N\big(y;\ C(z_k + f h) + G u h,\ G \Sigma_r G^\top + R\big)$$

to the ELBO in place of the observation's log-likelihood and the step's KL. With $r = p$
this is the log evidence $\log \mathcal N(y; C(z_k + fh), h G G^\top + R)$ of the step. The
family contains the exact posterior of a linear-Gaussian model (affine $u$, time-dependent
$\kappa$), so its optimum is the exact log-likelihood of the Euler chain.

The running negative ELBO (KL on ordinary steps, minus the contribution above on observation
steps) is added to the state's **last coordinate**, whose drift and diffusion the SDE must
leave at zero (e.g. the KL coordinate of a prior SDE without a control).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from probgen.sde.solvers import NOISE_TYPES, SDESolver

__all__ = [
    "LinearGaussianObservations",
    "VariationalEuler",
    "condition_on_observation",
    "gaussian_transition_kl",
]


def gaussian_transition_kl(u: Tensor, log_var: Tensor | None, h: float) -> Tensor:
    r"""$\mathrm{KL}(\mathcal N(uh, h\kappa^2) \,\|\, \mathcal N(0, h))$ summed over the last axis.

    Args:
        u: ``(batch, m)`` drift of the noise (a control).
        log_var: ``(batch, m)`` $\log \kappa^2 \le 0$, or ``None`` for $\kappa = 1$.
        h: step size.

    Returns:
        ``(batch,)`` $\tfrac12 \sum_j (u_j^2 h + \kappa_j^2 - 1 - \log\kappa_j^2)$.
    """
    kl = h * u * u
    if log_var is not None:
        kl = kl + torch.expm1(log_var) - log_var
    return 0.5 * kl.sum(-1)


def condition_on_observation(
    mean: Tensor, gain: Tensor, mu_r: Tensor, var_r: Tensor, y: Tensor, obs_var: Tensor, h: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""Condition the noise $w \sim r = \mathcal N(\mu_r, \mathrm{diag}\,v_r)$ of one step on $y = m + G w + \epsilon$.

    Information form (always positive definite): $\Lambda = \mathrm{diag}(1/v_r) + G^\top R^{-1} G$,
    $\mu_q = \mu_r + \Lambda^{-1} G^\top R^{-1} (y - m - G\mu_r)$, $\Sigma_q = \Lambda^{-1}$;
    $\log Z = \log \mathcal N(y; m + G\mu_r, G\,\mathrm{diag}(v_r) G^\top + R)$ by the matrix
    determinant lemma and Woodbury's identity.

    Args:
        mean: ``(batch, p)`` $m = C(z_k + f h)$, the predicted observation without noise.
        gain: ``(batch, p, m)`` $G = C g$.
        mu_r: ``(batch, m)`` mean of $r$.
        var_r: ``(batch, m)`` variances of $r$ (positive).
        y: ``(batch, p)`` the observation.
        obs_var: ``(p,)`` or ``(batch, p)`` observation variances $R$ (positive).
        h: step size ($p = \mathcal N(0, h I)$ is the prior of $w$).

    Returns:
        ``(mu_q (batch, m), chol (batch, m, m), log_z (batch,), elbo (batch,))``: the posterior
        mean, a factor $L$ with $L L^\top = \Sigma_q$ (sample $w = \mu_q + L\xi$), the log
        evidence under $r$, and the step's ELBO contribution $\log Z + \mathbb E_q[\log p(w) - \log r(w)]$.
    """
    obs_var = obs_var.expand_as(y)
    g_r = gain / obs_var.unsqueeze(-1)  # R^{-1} G  (batch, p, m)
    prec = torch.diag_embed(1.0 / var_r) + gain.transpose(1, 2) @ g_r  # (batch, m, m)
    chol_prec = torch.linalg.cholesky(prec)
    resid = y - mean - (gain @ mu_r.unsqueeze(-1)).squeeze(-1)  # (batch, p)
    b = (g_r.transpose(1, 2) @ resid.unsqueeze(-1))  # G^T R^{-1} resid  (batch, m, 1)
    shift = torch.cholesky_solve(b, chol_prec).squeeze(-1)
    mu_q = mu_r + shift
    # Sigma_q = Lambda^{-1} = L^{-T} L^{-1}: the factor L^{-T} (upper triangular) samples it.
    eye = torch.eye(prec.shape[-1], dtype=prec.dtype, device=prec.device).expand_as(prec)
    inv_chol = torch.linalg.solve_triangular(chol_prec, eye, upper=False)  # L^{-1}
    factor = inv_chol.transpose(1, 2)
    cov_diag = (inv_chol * inv_chol).sum(-2)  # diag(L^{-T} L^{-1})
    # log det S = log det R + log det diag(v_r) + log det Lambda; resid^T S^-1 resid by Woodbury
    logdet = obs_var.log().sum(-1) + var_r.log().sum(-1) + 2 * chol_prec.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    quad = (resid * resid / obs_var).sum(-1) - (b.squeeze(-1) * shift).sum(-1)
    p = y.shape[-1]
    log_z = -0.5 * (quad + logdet + p * math.log(2 * math.pi))
    second_p = (mu_q * mu_q).sum(-1) + cov_diag.sum(-1)
    second_r = ((shift * shift + cov_diag) / var_r).sum(-1)
    e_log_ratio = 0.5 * (var_r / h).log().sum(-1) - 0.5 * second_p / h + 0.5 * second_r
    return mu_q, factor, log_z, log_z + e_log_ratio


class LinearGaussianObservations:
    r"""Observations $y_i = z(t_i)[\text{index}] + \mathcal N(0, \mathrm{diag}\, s^2)$ for :class:`VariationalEuler`.

    Args:
        times: ``(n,)`` observation times; each must be a point of the step grid (pass them
            in ``ts``).
        values: ``(batch, n, p)`` observed values.
        std: observation noise std $s$: a positive float or a ``(p,)`` tensor.
        index: the ``p`` observed state coordinates (default ``range(p)``).

    Raises:
        ValueError: shapes that do not match, a non-positive std, times not increasing.
    """

    def __init__(self, times: Tensor | Sequence[float], values: Tensor, std: float | Tensor,
                 index: Sequence[int] | None = None) -> None:
        if not torch.is_tensor(values) or values.dim() != 3:
            raise ValueError(f"values must be a (batch, n, p) tensor, got {getattr(values, 'shape', values)!r}")
        times_list = [float(t) for t in (times.detach().cpu().tolist() if torch.is_tensor(times) else times)]
        if len(times_list) != values.shape[1]:
            raise ValueError(f"times has {len(times_list)} entries but values has n = {values.shape[1]}")
        if any(b <= a for a, b in zip(times_list, times_list[1:])):
            raise ValueError(f"times must be strictly increasing, got {times_list[:8]}")
        p = values.shape[2]
        self.index = list(range(p)) if index is None else [int(i) for i in index]
        if len(self.index) != p:
            raise ValueError(f"index has {len(self.index)} coordinates but values has p = {p}")
        std_t = torch.as_tensor(std, dtype=values.dtype, device=values.device)
        if std_t.dim() > 1 or (std_t.dim() == 1 and std_t.numel() != p) or not bool((std_t > 0).all()):
            raise ValueError(f"std must be a positive float or a ({p},) tensor of positive values, got {std}")
        self.times, self.values = times_list, values
        self.obs_var = (std_t * std_t).expand(p).clone()


class VariationalEuler(SDESolver):
    r"""Euler step whose noise has a learnt Gaussian law, conditioned exactly on observations.

    ``sdeint(sde, z0, ts, method=VariationalEuler, dt=h, options={...})`` with options

    * ``"transition"``: ``transition(t, z) -> (u, log_var)``, ``u: (batch, m)`` the drift of
      the noise and ``log_var: (batch, m)`` $\log\kappa^2 \le 0$, or ``None`` for $\kappa = 1$
      (the Girsanov control);
    * ``"observations"``: optional :class:`LinearGaussianObservations`.

    The step is $z_{k+1} = z_k + f h + g\,w$ with $w = u h + \kappa\,\Delta W$ (ordinary steps)
    or $w = \mu_q + L\,\Delta W / \sqrt h$ (observation steps, see
    :func:`condition_on_observation`); the state's last coordinate accumulates the negative
    ELBO (see :mod:`probgen.sde.variational`). Weak order 1 for the prior chain; Ito.
    """

    strong_order = 0.5
    weak_order = 1.0
    sde_type = "ito"
    noise_types = NOISE_TYPES

    def __init__(self, terms: Any, options: dict[str, Any] | None = None) -> None:
        super().__init__(terms, options)
        unknown = set(self.options) - {"transition", "observations"}
        if unknown:
            raise ValueError(f"VariationalEuler options are 'transition' and 'observations', got {sorted(unknown)}")
        transition = self.options.get("transition")
        if not callable(transition):
            raise TypeError(f"VariationalEuler needs options['transition'] = transition(t, z) -> (u, log_var), "
                            f"got {transition!r}")
        obs = self.options.get("observations")
        if obs is not None and not isinstance(obs, LinearGaussianObservations):
            raise TypeError(f"options['observations'] must be LinearGaussianObservations or None, got {type(obs).__name__}")
        self.transition: Callable[[Tensor, Tensor], tuple[Tensor, Tensor | None]] = transition
        self.observations = obs
        self._obs_at: dict[int, int] = {}
        self._k = 0

    def bind_grid(self, times: list[float]) -> None:
        """Map each observation time to the grid step that ends on it."""
        self._k = 0
        self._obs_at = {}
        if self.observations is None:
            return
        for i, t in enumerate(self.observations.times):
            j = bisect.bisect_left(times, t - 1e-9 * max(1.0, abs(t)))
            if j == 0 or j >= len(times) or abs(times[j] - t) > 1e-6 * max(1.0, abs(t)):
                raise ValueError(
                    f"observation time {t} is not a point of the step grid after t0 = {times[0]}: "
                    "pass the observation times in ts"
                )
            self._obs_at[j] = i

    def _gain(self, g: Tensor) -> Tensor:
        """$C g$ as ``(batch, p, m)``."""
        if self.noise_type == "diagonal":
            g = torch.diag_embed(g)
        return g[:, self.observations.index, :]

    def step(self, t: tuple[Tensor, ...], h: float, y: Tensor, dW: Tensor) -> Tensor:
        f, g = self.f_and_g(t[0], y)
        u, log_var = self.transition(t[0], y)
        if u.shape != dW.shape or (log_var is not None and log_var.shape != dW.shape):
            raise ValueError(f"transition(t, z) must return u and log_var of the noise's shape {tuple(dW.shape)}, "
                             f"got {tuple(u.shape)} and {None if log_var is None else tuple(log_var.shape)}")
        self._k += 1
        i = self._obs_at.get(self._k)
        mean = torch.add(y, f, alpha=h)
        if i is None:
            w = u * h + (dW if log_var is None else torch.exp(0.5 * log_var) * dW)
            delta = gaussian_transition_kl(u, log_var, h)
        else:
            obs = self.observations
            var_r = h * (torch.ones_like(u) if log_var is None else torch.exp(log_var))
            mu_q, factor, _, elbo = condition_on_observation(
                mean[:, obs.index], self._gain(g), u * h, var_r, obs.values[:, i].to(y), obs.obs_var.to(y), h
            )
            w = mu_q + (factor @ dW.unsqueeze(-1)).squeeze(-1) / math.sqrt(h)
            delta = -elbo
        z = self.diffuse(mean, g, w)
        return torch.cat([z[:, :-1], z[:, -1:] + delta.unsqueeze(-1)], dim=-1)
