"""Exact stationary moments of linear recursions with random (minibatch) coefficients.

A sampler on a linear-Gaussian model with minibatch gradients is the recursion

    z' = F z + c + D xi,   (F, c) = (F_bar, c_bar) + mean over the batch of (dF_i, dc_i),

with the batch drawn i.i.d. with replacement from N points (so the batch mean of the
centred per-point terms has covariance 1/B times their population covariance) and xi
standard normal. Its stationary mean mu and second moment M solve linear equations:

    mu = F_bar mu + c_bar
    M  = E[F M F^T] + E[F mu c^T] + E[c mu^T F^T] + E[c c^T] + D D^T,

where E[F M F^T] = F_bar M F_bar^T + (1/B) mean_i dF_i M dF_i^T, etc. This gives the exact
law of the discretised, minibatched chain (discretisation and gradient-noise bias included).
"""

import numpy as np


def stationary_moments(F_bar, c_bar, D, dF, dc, batch_size):
    """Args: F_bar (k, k), c_bar (k,), D (k, r), dF (N, k, k), dc (N, k) centred per-point
    terms, batch_size B. Returns (mean (k,), covariance (k, k))."""
    k = F_bar.shape[0]
    eye = np.eye(k)
    mu = np.linalg.solve(eye - F_bar, c_bar)
    op = np.kron(F_bar, F_bar) + np.einsum("nij,nkl->ikjl", dF, dF).reshape(k * k, k * k) / (
        dF.shape[0] * batch_size
    )
    cross = np.outer(F_bar @ mu, c_bar) + np.einsum("nij,j,nk->ik", dF, mu, dc) / (
        dF.shape[0] * batch_size
    )
    cc = np.outer(c_bar, c_bar) + dc.T @ dc / (dc.shape[0] * batch_size)
    const = cross + cross.T + cc + D @ D.T
    m = np.linalg.solve(np.eye(k * k) - op, const.reshape(-1)).reshape(k, k)
    return mu, m - np.outer(mu, mu)
