"""The linear-Gaussian oracle against a dense Gaussian likelihood of the same Euler chain."""

from __future__ import annotations

import torch

from probgen.data.fou import simulate_fou
from probgen.fractional.oracle import backward_messages, fou_chain, log_likelihood, prior_start_elbo
from probgen.sde import MarkovFBM

D = torch.float64


def _dense_log_likelihood(chain, values):
    """log N(y; mean, C): the chain's covariance by the moment recursion, observations picked out."""
    z_mean, z_cov = chain.z0_mean, chain.z0_factor @ chain.z0_factor.T
    v = chain.noise
    means, covs, trans = [z_mean], [z_cov], []
    for k in range(len(chain.grid) - 1):
        M, h = chain.step_matrix(k)
        trans.append(M)
        means.append(M @ means[-1])
        covs.append(M @ covs[-1] @ M.T + h * v @ v.T)
    idx = chain.obs_steps
    n = len(idx)
    C = torch.zeros(n, n, dtype=D)
    for a in range(n):
        R = torch.eye(len(z_mean), dtype=D)
        for b in range(a, n):
            for k in range(idx[b - 1] if b > a else idx[a], idx[b]):
                R = trans[k] @ R
            C[a, b] = C[b, a] = (R @ covs[idx[a]])[0, 0]
    C = C + chain.obs_var[0] * torch.eye(n, dtype=D)
    mu = torch.stack([means[j][0] for j in idx])
    return torch.distributions.MultivariateNormal(mu, C).log_prob(values[..., 0])


def test_backward_messages_give_the_dense_gaussian_likelihood():
    for kind, dt in (("type1", 0.03), ("type2", 0.05)):  # dt = 0.03: unequal steps per interval
        m = MarkovFBM(0.35, n_ou=3, gamma_max=6.0, horizon=1.0, kind=kind, dtype=D)
        times, paths = simulate_fou(6, 0.35, theta=0.7, horizon=1.0, n_obs=4, generator=torch.Generator().manual_seed(0),
                                    dtype=D)
        chain = fou_chain(m, 0.7, 1.3, times, dt, 0.1, x0=0.2)
        values = (paths + 0.2).unsqueeze(-1)
        ll = log_likelihood(chain, values)
        assert torch.allclose(ll, _dense_log_likelihood(chain, values), atol=1e-10, rtol=0)
        msg = backward_messages(chain, values)
        # starting from the prior's z0 loses the KL of p(z0) to p(z0 | y): >= 0, and 0 for a known z0 (type II)
        gap = ll - prior_start_elbo(chain, msg)
        assert (gap >= -1e-12).all()
        if kind == "type2":
            assert torch.allclose(gap, torch.zeros_like(gap), atol=1e-12)
        else:
            assert (gap > 1e-4).all()
