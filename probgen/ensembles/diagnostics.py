"""R-hat and ESS across chains, on predictions and on chosen parameters of a Bayesian ensemble.

Networks' weight posteriors are symmetric under permutations of hidden units, so chains that
sit in different (equivalent) modes have large weight R-hat by construction; R-hat of the
*predictions* is the meaningful convergence check (and the weight R-hat says whether chains
explore one mode or many).
"""

from __future__ import annotations

import torch
from torch import Tensor

from probgen.samplers.diagnostics import ess, rhat


def chain_diagnostics(ensemble, x: Tensor, num_params: int = 5, source: str = "store") -> dict[str, float]:
    """Split-R-hat and bulk ESS of the stored samples (``K`` chains x ``m`` draws, ``m >= 4``).

    ESS assumes draws evenly spaced in time. The reservoir store's draws are a random
    subsample of the run (unevenly spaced: their ESS is not the run's); ``source="recent"``
    diagnoses the ensemble's ``recent`` store instead (the last ``recent_size`` collected draws,
    evenly spaced), which is what run control uses.

    Args:
        ensemble: a :class:`~probgen.ensembles.ensemble.BayesianEnsemble` with a filled store.
        x: ``(n, ...)`` inputs whose predictions are diagnosed (keep ``n`` small, e.g. 64).
        num_params: how many scalar weights (the first entries of the flattened parameter
            vector, plus a learnt noise scale) are diagnosed.
        source: ``"store"`` (the sample store) or ``"recent"`` (the last-M store; the ensemble
            needs ``recent_size > 0``).

    Returns:
        ``rhat_pred_max``, ``rhat_pred_median``, ``ess_pred_min``, ``ess_pred_median`` over
        the predictive means at ``x``; ``rhat_param_max``, ``ess_param_min`` over the chosen
        parameters. NaN where the store holds fewer than 4 draws per chain.
    """
    if source not in ("store", "recent"):
        raise ValueError(f"source must be 'store' or 'recent', got {source!r}")
    store = ensemble.store if source == "store" else getattr(ensemble, "recent", None)
    if store is None:
        raise ValueError("source='recent' needs an ensemble built with recent_size > 0")
    samples = store.samples()  # {name: (K, m, ...)}
    k, m = next(iter(samples.values())).shape[:2]
    nan = float("nan")
    if m < 4:
        return {"rhat_pred_max": nan, "rhat_pred_median": nan, "ess_pred_min": nan, "ess_pred_median": nan,
                    "rhat_param_max": nan, "ess_param_min": nan}
    flat = {n: v.reshape(k * m, *v.shape[2:]) for n, v in samples.items()}
    net, lik = ensemble.split(flat)
    with torch.no_grad():
        out = ensemble.forward_chains(net, x, chunk_size=512)  # (K*m, n, out)
        if hasattr(ensemble.likelihood, "moments"):
            pred = ensemble.likelihood.moments(out, lik)[0]
        else:
            pred = ensemble.likelihood.probs(out)
    pred = pred.reshape(k, m, -1).double()
    params = torch.cat([v.reshape(k, m, -1) for n, v in samples.items() if not n.startswith("likelihood.")], -1)
    chosen = [params[..., :num_params]]
    chosen += [v.reshape(k, m, -1) for n, v in samples.items() if n.startswith("likelihood.")]
    chosen = torch.cat(chosen, -1).double()
    r_pred, e_pred = rhat(pred), ess(pred)
    r_par, e_par = rhat(chosen), ess(chosen)
    return {
        "rhat_pred_max": float(r_pred.max()), "rhat_pred_median": float(r_pred.median()),
        "ess_pred_min": float(e_pred.min()), "ess_pred_median": float(e_pred.median()),
        "rhat_param_max": float(r_par.max()), "ess_param_min": float(e_par.min()),
    }
