r"""The analytic fBM bridge of the paper's bridge experiment (Daems et al. 2024, Sec. 5.1).

With $X = B_H$ (type I or II), $X(0) = 0$ and one observation $y = X(T) + \epsilon$,
$\epsilon \sim \mathcal N(0, s^2)$, the posterior of $X(t)$ is Gaussian with variance
$k(t, t) - k(t, T)^2 / (k(T, T) + s^2)$, $k$ the fBM covariance.
"""

from __future__ import annotations

import torch
from torch import Tensor

from probgen.sde.fbm import fbm_covariance

__all__ = ["fbm_bridge_std"]


def fbm_bridge_std(ts: Tensor, hurst: float, obs_time: float, obs_std: float, kind: str = "type1") -> Tensor:
    """Posterior std of fBM at ``ts`` given $X(0) = 0$ and $X(T) + N(0, s^2)$ (mean zero if y = 0).

    Args:
        ts: ``(n,)`` non-negative increasing times.
        hurst: Hurst index in (0, 1).
        obs_time: $T > 0$.
        obs_std: $s \\ge 0$.
        kind: fBM kind.

    Returns:
        ``(n,)`` standard deviations, dtype of ``ts``.
    """
    if obs_time <= 0 or obs_std < 0:
        raise ValueError(f"need obs_time > 0 and obs_std >= 0, got {obs_time}, {obs_std}")
    t64 = ts.to(torch.float64)
    grid = torch.cat([t64, t64.new_tensor([obs_time])])
    order = torch.argsort(grid)
    inv = torch.argsort(order)
    sorted_grid = grid[order]
    unique, back = torch.unique_consecutive(sorted_grid, return_inverse=True)
    k = fbm_covariance(unique, hurst, kind)[back][:, back][inv][:, inv]
    var = k.diagonal()[:-1] - k[:-1, -1] ** 2 / (k[-1, -1] + obs_std**2)
    return var.clamp_min(0).sqrt().to(ts.dtype)
