r"""Closed-form oracle for the linear-Gaussian case: exact likelihood and each family's best ELBO.

For the fOU prior $dX = -\theta X dt + \sigma d\hat B_H$ (Markov approximation, Daems et al. 2024,
Eq. 13) the Euler chain of $z = [X, Y_1..Y_K]$ is linear-Gaussian,
$z_{k+1} = M_k z_k + v\, w_k$, $M_k = I + h_k F$, $w_k \sim \mathcal N(0, h_k)$, with noise direction
$v = [\sigma \sum_k \omega_k, 1, \dots, 1]$; observations are $y_i = X(t_i) + \mathcal N(0, s^2)$.
The backward messages $V_j(z) = \log p(y_{t \ge t_j} \mid z_j = z) = -\tfrac12 z^\top P_j z + q_j^\top z + c_j$
follow from one Riccati recursion (:func:`backward_messages`). From them, in closed form:

* the exact log-likelihood $\log p(y) = \log \mathbb E_{z_0}[e^{V_0(z_0)}]$ (:func:`log_likelihood`);
* the optimal transition of the learnt-variance family (:class:`probgen.sde.variational.VariationalEuler`):
  $q(w_k \mid z_k) \propto p(w_k)\, e^{W_{k+1}(M_k z_k + v w_k)}$ ($W$ the message without the
  observation that the step conditions on exactly), whose ELBO given $z_0$ equals $V_0(z_0)$;
* the best ELBO of the Girsanov family ($\kappa = 1$): the same $P_j, q_j$ with the per-step
  loss $\tfrac12[h v^\top P_{k+1} v - \log(1 + h v^\top P_{k+1} v)]$ (:func:`girsanov_gap`), which
  does not depend on the data and, on a step into an observation with $P \approx 1/s^2$, is the
  $\tfrac12(\rho - \log(1 + \rho))$, $\rho = v_0^2 h / s^2$, of the issue.
"""

from __future__ import annotations

import torch
from torch import Tensor

from probgen.sde.fbm import MarkovFBM
from probgen.sde.guided import LinearGaussianChain, Messages, backward_filter
from probgen.sde.solvers import step_grid

__all__ = ["LinearGaussianChain", "backward_messages", "fou_chain", "girsanov_gap", "log_likelihood",
           "optimal_transition"]


def fou_chain(markov: MarkovFBM, theta: float, sigma: float, times: Tensor, dt: float, obs_std: float,
              x0: float = 0.0) -> LinearGaussianChain:
    """The Euler chain of the model ``FractionalSDE(drift="ou", theta, sigma)`` on ``sdeint``'s grid.

    Args:
        markov: the Markov approximation (its dtype is the chain's).
        theta, sigma: OU drift and constant diffusion.
        times: ``(n,)`` observation times > 0 (the grid runs through ``[0, *times]``).
        dt: the solver step.
        obs_std: observation std $s$.
        x0: known $X(0)$; $Y(0)$ is stationary (type I) or zero (type II).
    """
    g, w = markov.gammas, markov.omegas
    dtype = g.dtype
    k = g.numel()
    F = torch.zeros(k + 1, k + 1, dtype=dtype)
    F[0, 0] = -theta
    F[0, 1:] = -sigma * g * w
    F[1:, 1:] = torch.diag(-g)
    v = torch.cat([(sigma * w.sum()).reshape(1), torch.ones(k, dtype=dtype)]).unsqueeze(-1)
    ts = [0.0] + [float(t) for t in times]
    grid, counts = step_grid(ts, dt)
    obs_steps = [int(sum(counts[: i + 1])) for i in range(len(counts))]
    mean = torch.zeros(k + 1, dtype=dtype)
    mean[0] = x0
    factor = torch.zeros(k + 1, k, dtype=dtype)
    if markov.kind == "type1":
        factor[1:] = torch.linalg.cholesky(1.0 / (g[:, None] + g[None, :]))
    return LinearGaussianChain(F, v, grid, obs_steps, [0], torch.tensor([obs_std**2], dtype=dtype), mean, factor)


def backward_messages(chain: LinearGaussianChain, values: Tensor) -> Messages:
    """The Riccati recursion for $V_j$ and $W_j$: :func:`probgen.sde.guided.backward_filter`.

    Args:
        chain: the chain.
        values: ``(B, n, p)`` observations.
    """
    return backward_filter(chain, values)


def _expect_exp_quadratic(P: Tensor, q: Tensor, c: Tensor, mean: Tensor, factor: Tensor) -> Tensor:
    r"""$\log \mathbb E[\exp(-\tfrac12 z^\top P z + q^\top z + c)]$, $z = \text{mean} + L e$, $e \sim N(0, I)$."""
    b = q - mean @ P  # (B, D)
    v0 = c + (q * mean).sum(-1) - 0.5 * mean @ P @ mean
    if factor.shape[1] == 0:
        return v0
    A = factor.T @ P @ factor
    eye = torch.eye(A.shape[0], dtype=A.dtype)
    bl = b @ factor
    sol = torch.linalg.solve(eye + A, bl.T).T
    return v0 + 0.5 * (bl * sol).sum(-1) - 0.5 * torch.linalg.slogdet(eye + A)[1]


def log_likelihood(chain: LinearGaussianChain, values: Tensor, messages: Messages | None = None,
                   z0: Tensor | None = None) -> Tensor:
    """Exact $\\log p(y)$ per path ``(B,)``, or $\\log p(y \\mid z_0)$ when ``z0: (B, D)`` is given."""
    msg = backward_messages(chain, values) if messages is None else messages
    P, q, c = msg.P[0], msg.q[0], msg.c[0]
    if z0 is not None:
        return c + (q * z0).sum(-1) - 0.5 * ((z0 @ P) * z0).sum(-1)
    return _expect_exp_quadratic(P, q, c, chain.z0_mean, chain.z0_factor)


def prior_start_elbo(chain: LinearGaussianChain, messages: Messages) -> Tensor:
    r"""$\mathbb E_{p(z_0)}[V_0(z_0)]$ per path: the ELBO of the exact transitions with $z_0$ from its prior."""
    P, q, c = messages.P[0], messages.q[0], messages.c[0]
    mean, L = chain.z0_mean, chain.z0_factor
    return c + (q * mean).sum(-1) - 0.5 * mean @ P @ mean - 0.5 * torch.trace(L.T @ P @ L)


def girsanov_gap(messages: Messages) -> Tensor:
    r"""$\sum_k \tfrac12[\mathrm{tr}(h_k v^\top P_{k+1} v) - \log\det(I + h_k v^\top P_{k+1} v)]$: best Girsanov ELBO deficit."""
    return torch.stack(messages.gap).sum()


def optimal_transition(chain: LinearGaussianChain, messages: Messages, k: int, z: Tensor,
                       girsanov: bool = False) -> tuple[Tensor, Tensor | None]:
    """The optimal ``(u, log_var)`` of step ``k`` at states ``z: (B, D)`` (``m = 1``).

    ``girsanov=False``: the exact posterior transition without the observation at ``k + 1``
    (which :class:`~probgen.sde.variational.VariationalEuler` conditions on exactly);
    ``girsanov=True``: the best control with $\\kappa = 1$ (``log_var`` is then ``None``).
    """
    M, h = chain.step_matrix(k)
    if girsanov:
        P, q = messages.P[k + 1], messages.q[k + 1]
    else:
        P, q = messages.WP[k + 1], messages.Wq[k + 1]
    v = chain.noise
    Pv = P @ v
    hA = torch.eye(v.shape[1], dtype=P.dtype) + h * (v.T @ Pv)
    mz = z @ M.T
    b = q @ v - mz @ Pv  # (B, m)
    mean_w = h * torch.linalg.solve(hA, b.T).T
    u = mean_w / h
    if girsanov:
        return u, None
    log_var = -torch.log(torch.diagonal(hA)).expand_as(u)
    return u, log_var
