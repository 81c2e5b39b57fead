"""Convergence diagnostics for Markov chains: R-hat and effective sample size.

Both follow Vehtari, Gelman, Simpson, Carpenter & Buerkner (2021), "Rank-normalization,
folding, and localization: an improved R-hat for assessing convergence of MCMC"
(Bayesian Analysis 16(2)), the estimators of Stan and ArviZ:

* chains are split in half (so a trend within a chain shows up as disagreement);
* *rank normalisation* replaces every draw by the normal score
  $z = \\Phi^{-1}((r - 3/8)/(S + 1/4))$ of its rank $r$ among all $S$ draws (eq. 14),
  which makes the diagnostics well defined for heavy tails and invariant to monotone maps;
* the autocorrelation sum is truncated by Geyer's (1992) initial monotone sequence.

All functions take ``chains`` shaped ``(n_chains, n_draws, ...)``; trailing dimensions are
independent scalar quantities and are kept in the output (``...``). Computation is in
float64; the result has the input's floating dtype (float64 for integer input).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from probgen.validation import check_finite

__all__ = ["autocorrelation", "ess", "rank_normalize", "rhat", "split_chains"]


def _as_chains(chains, min_draws: int = 4) -> tuple[Tensor, torch.dtype]:
    if not isinstance(chains, Tensor):
        chains = torch.as_tensor(chains)
    if chains.dim() < 2:
        raise ValueError(
            f"chains must have shape (n_chains, n_draws, ...), got shape {tuple(chains.shape)}"
        )
    if chains.shape[1] < min_draws:
        raise ValueError(f"chains need at least {min_draws} draws, got {chains.shape[1]}")
    # a NaN/inf draw has no rank and no variance: the diagnostics would look converged
    check_finite("chains", chains)
    out_dtype = chains.dtype if chains.is_floating_point() else torch.float64
    return chains.to(torch.float64), out_dtype


def split_chains(chains: Tensor) -> Tensor:
    """Split each chain into its first and second half (dropping the middle draw if odd).

    Args:
        chains: ``(n_chains, n_draws, ...)``.

    Returns:
        ``(2 * n_chains, n_draws // 2, ...)``.
    """
    n = chains.shape[1]
    half = n // 2
    return torch.cat([chains[:, :half], chains[:, n - half :]], dim=0)


def rank_normalize(chains: Tensor) -> Tensor:
    """Normal scores of the pooled ranks (Vehtari et al., 2021, eq. 14), ties averaged.

    Args:
        chains: ``(n_chains, n_draws, ...)``.

    Returns:
        ``(n_chains, n_draws, ...)`` of $\\Phi^{-1}((r - 3/8) / (S + 1/4))$, $S$ = all draws.
    """
    m, n = chains.shape[:2]
    rest = chains.shape[2:]
    flat = chains.reshape(m * n, -1).T.contiguous()  # (K, S)
    s = flat.shape[1]
    sorted_vals, order = flat.sort(dim=1)
    if bool((sorted_vals[:, 1:] == sorted_vals[:, :-1]).any()):
        lo = torch.searchsorted(sorted_vals, flat, right=False)
        hi = torch.searchsorted(sorted_vals, flat, right=True)
        ranks = (lo + 1 + hi).to(chains.dtype) / 2.0  # average 1-based rank of ties
    else:
        positions = torch.arange(1, s + 1, dtype=chains.dtype, device=chains.device)
        ranks = torch.empty_like(flat).scatter_(1, order, positions.expand_as(flat))
    z = torch.special.ndtri((ranks - 0.375) / (s + 0.25))
    return z.T.reshape(m, n, *rest)


def autocorrelation(chains: Tensor) -> Tensor:
    """Biased autocovariance of each chain along the draws, by FFT.

    Args:
        chains: ``(n_chains, n_draws, ...)``.

    Returns:
        ``(n_chains, n_draws, ...)``: $\\hat\\gamma_t = \\frac{1}{n}\\sum_{s}
        (x_s - \\bar x)(x_{s+t} - \\bar x)$ for lags $t = 0, \\dots, n-1$.
    """
    n = chains.shape[1]
    x = chains - chains.mean(dim=1, keepdim=True)
    nfft = 1 << (2 * n - 1).bit_length()
    f = torch.fft.rfft(x, n=nfft, dim=1)
    acov = torch.fft.irfft(f * f.conj(), n=nfft, dim=1)[:, :n]
    return acov / n


def _rhat_classic(chains: Tensor) -> Tensor:
    """Potential scale reduction of (already split) chains (Gelman et al., BDA3, eq. 11.4)."""
    n = chains.shape[1]
    chain_mean = chains.mean(dim=1)
    chain_var = chains.var(dim=1, unbiased=True)
    between = n * chain_mean.var(dim=0, unbiased=True)
    within = chain_var.mean(dim=0)
    var_plus = (n - 1) / n * within + between / n
    return (var_plus / within).sqrt()


def _ess_core(chains: Tensor) -> Tensor:
    """Multi-chain ESS of (already split / normalised) chains with Geyer's initial monotone
    sequence (Vehtari et al., 2021, eqs. 10-13; Stan's estimator)."""
    m, n = chains.shape[:2]
    total = float(m * n)
    # a quantity constant over all draws (e.g. a quantile indicator that never changes) has
    # ESS = m * n, as in ArviZ (its autocorrelations are 0 / 0)
    flat = chains.reshape(m * n, *chains.shape[2:])
    constant = (flat.amax(dim=0) - flat.amin(dim=0)) < torch.finfo(torch.float64).resolution
    acov = autocorrelation(chains)  # (m, n, ...)
    chain_mean = chains.mean(dim=1)
    mean_var = acov[:, 0].mean(dim=0) * n / (n - 1)  # W
    var_plus = mean_var * (n - 1) / n
    if m > 1:
        var_plus = var_plus + chain_mean.var(dim=0, unbiased=True)
    # rho_t = 1 - (W - mean_m acov_{t,m}) / var_plus   (eq. 10)
    rho = 1.0 - (mean_var - acov.mean(dim=0)) / var_plus  # (n, ...)
    rho[0] = 1.0
    n_pairs = (n - 1) // 2  # pairs (rho_{2k}, rho_{2k+1}) with 2k+1 <= n-1
    if n_pairs == 0:
        out = torch.full_like(chain_mean[0], total * math.log10(total))
        return torch.where(constant, torch.full_like(out, total), out)
    even = rho[0 : 2 * n_pairs : 2]
    pairs = even + rho[1 : 2 * n_pairs : 2]  # (n_pairs, ...)
    # initial positive sequence: pairs up to (excluding) the first negative one
    n_kept = torch.cumprod((pairs >= 0).to(torch.long), dim=0).sum(dim=0)
    # Stan / ArviZ: the pairs before the last examined one, J (the first negative pair, or the
    # last pair), are summed, made monotone; then rho_{2J} is added once (if positive when J
    # is the first negative pair).
    last = n_kept.clamp(max=n_pairs - 1)
    idx = torch.arange(n_pairs, device=pairs.device).reshape(-1, *([1] * (pairs.dim() - 1)))
    summed = idx < last
    # initial monotone sequence: running minimum of the summed pairs
    mono = torch.cummin(torch.where(summed, pairs, torch.zeros_like(pairs)), dim=0).values
    rho_last = even.gather(0, last.unsqueeze(0)).squeeze(0)
    rho_last = torch.where(n_kept < n_pairs, rho_last.clamp(min=0.0), rho_last)
    tau = -1.0 + 2.0 * (mono * summed).sum(dim=0) + rho_last
    tau = torch.clamp(tau, min=1.0 / math.log10(total))
    return torch.where(constant, torch.full_like(tau, total), total / tau)


def rhat(chains, method: str = "rank") -> Tensor:
    """Potential scale reduction $\\hat R$ of several chains.

    ``method="rank"`` (default): the rank-normalised split-$\\hat R$ of Vehtari et al.
    (2021, sec. 4.2), the maximum of the *bulk* $\\hat R$ (split chains, rank-normalised) and
    the *tail* $\\hat R$ (the same on the folded draws $|x - \\mathrm{median}(x)|$), so that
    chains differing in location or in scale are both flagged. ``method="split"``: the
    classic split-$\\hat R$ (Gelman et al., BDA3, eq. 11.4 on split chains).

    Values below 1.01 are the recommended threshold for convergence. A quantity that is
    constant across all draws gives NaN (0 / 0, as in ArviZ).

    Args:
        chains: ``(n_chains, n_draws, ...)`` with ``n_draws >= 4``.
        method: ``"rank"`` or ``"split"``.

    Returns:
        $\\hat R$, shape ``(...)``.

    Raises:
        ValueError: ``chains`` has the wrong shape or holds NaN or inf.
    """
    x, out_dtype = _as_chains(chains)
    if method == "split":
        return _rhat_classic(split_chains(x)).to(out_dtype)
    if method != "rank":
        raise ValueError(f"method must be 'rank' or 'split', got {method!r}")
    split = split_chains(x)
    bulk = _rhat_classic(rank_normalize(split))
    # fold at numpy's median of the split draws (mean of the two middle ones), as ArviZ does;
    # torch's median would take the lower one
    srt = split.reshape(-1, *split.shape[2:]).sort(dim=0).values
    s = srt.shape[0]
    median = 0.5 * (srt[(s - 1) // 2] + srt[s // 2])
    folded = (split - median).abs()
    tail = _rhat_classic(rank_normalize(folded))
    return torch.maximum(bulk, tail).to(out_dtype)


def ess(chains, method: str = "bulk") -> Tensor:
    """Effective sample size of several chains (Vehtari et al., 2021, sec. 3).

    ``method="bulk"`` (default): ESS of the rank-normalised split chains, the efficiency of
    estimates of the centre of the distribution (and of quantiles), valid for heavy tails.
    ``method="basic"``: ESS of the split chains as they are: use it for the Monte Carlo
    standard error of a mean, $\\mathrm{sd}(x)/\\sqrt{\\mathrm{ESS}}$. ``method="tail"``: the
    minimum ESS of the 5% and 95% quantile indicators.

    The autocorrelations $\\hat\\rho_t$ combine within- and between-chain variance (eq. 10);
    their sum is truncated at the first negative pair $P_J = \\hat\\rho_{2J} + \\hat\\rho_{2J+1}$
    and made monotone (Geyer's initial monotone sequence), and
    $\\mathrm{ESS} = MN / \\hat\\tau$ with $\\hat\\tau = -1 + 2\\sum_{k<J} P_k
    + \\max(\\hat\\rho_{2J}, 0)$ (Stan's and ArviZ's estimator), bounded below by
    $1/\\log_{10}(MN)$ as in Stan (antithetic chains may give ESS > MN). A quantity that
    is constant over all draws (e.g. a tail indicator that never changes) has ESS $= MN$,
    as in ArviZ.

    Args:
        chains: ``(n_chains, n_draws, ...)`` with ``n_draws >= 4``.
        method: ``"bulk"``, ``"basic"`` or ``"tail"``.

    Returns:
        ESS, shape ``(...)``.

    Raises:
        ValueError: ``chains`` has the wrong shape or holds NaN or inf.
    """
    x, out_dtype = _as_chains(chains)
    if method == "bulk":
        return _ess_core(rank_normalize(split_chains(x))).to(out_dtype)
    if method == "basic":
        return _ess_core(split_chains(x)).to(out_dtype)
    if method == "tail":
        flat = x.reshape(-1, *x.shape[2:])
        q = torch.quantile(flat, torch.tensor([0.05, 0.95], dtype=x.dtype, device=x.device), dim=0)
        lo = _ess_core(split_chains((x <= q[0]).to(x.dtype)))
        hi = _ess_core(split_chains((x <= q[1]).to(x.dtype)))
        return torch.minimum(lo, hi).to(out_dtype)
    raise ValueError(f"method must be 'bulk', 'basic' or 'tail', got {method!r}")
