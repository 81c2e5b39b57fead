"""Hyperparameters: marginal-likelihood maximisation and the paper's validation-NLL grid.

Lee, Yun, Yang, Lee (2022, sec. 5.1 and their ``reg.sh``) choose depth, $\\sigma_w^2$, $\\sigma_b^2$,
the readout variance, the noise $\\epsilon$ and the prior's parameters by validation NLL over a
grid. :func:`grid_search` does that, reusing one Cholesky factor per kernel for all prior
parameters; :func:`fit_hyperparameters` instead maximises $\\log p(y)$ by autograd.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from probgen.exceptions import ProbgenNumericalError

__all__ = ["PAPER_GRID", "GridResult", "fit_hyperparameters", "grid_search"]

#: The grid of the paper's UCI experiments (authors' ``reg.sh``): ``noise`` is
#: $10^{-6 + e/2}$ for $e = 5, \dots, 9$; ``readout_var`` is the NNGP's last-layer variance.
PAPER_GRID: dict[str, list] = {
    "depth": [1, 4, 16],
    "weight_var": [1.0, 2.0, 4.0],
    "bias_var": [0.0, 0.09, 1.0],
    "activation": ["erf", "relu"],
    "noise": [10.0 ** (-6 + e / 2) for e in (5, 6, 7, 8, 9)],
    "readout_var": [1.0, 4.0],
    "alpha": [0.5, 1.0, 1.5, 2.0, 4.0, 8.0],
    "beta": [0.5, 1.0, 1.5, 2.0, 4.0, 8.0],
    "burr_c": [1.0, 2.0, 3.0],
    "burr_d": [1.0, 2.0, 3.0],
}


def fit_hyperparameters(
    process: torch.nn.Module,
    x: Tensor,
    y: Tensor,
    steps: int = 100,
    lr: float = 0.05,
    optimizer: str = "adam",
    parameters: Iterable[torch.nn.Parameter] | None = None,
    callback: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Maximise $\\log p(y)$ over the process's parameters (kernel variances, noise, prior) by autograd.

    Each step refits the Cholesky factor with gradients on, then the process is refitted once
    more without gradients so that it is ready to predict.

    Args:
        process: a fitted-or-not :class:`~probgen.nngp.GaussianProcess`,
            :class:`~probgen.nngp.StudentTProcess` or :class:`~probgen.nngp.ScaleMixtureGP`.
        x: ``(n, d)``; y: ``(n,)`` or ``(n, C)``.
        steps: optimiser steps (LBFGS: outer iterations).
        lr: learning rate.
        optimizer: ``"adam"`` or ``"lbfgs"``.
        parameters: which parameters to learn (default: all of ``process``).
        callback: called as ``callback(step, loss)``.

    Returns:
        The loss ($-\\log p(y) / N$) per step.

    Raises:
        ProbgenNumericalError: the loss became NaN or inf.
    """
    if steps < 1 or lr <= 0:
        raise ValueError(f"steps must be >= 1 and lr > 0, got {steps}, {lr}")
    params = list(process.parameters() if parameters is None else parameters)
    num_obs = y.numel()
    if optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr)
    elif optimizer == "lbfgs":
        opt = torch.optim.LBFGS(params, lr=lr, max_iter=20, line_search_fn="strong_wolfe")
    else:
        raise ValueError(f"optimizer must be 'adam' or 'lbfgs', got {optimizer!r}")
    history: list[float] = []

    def closure():
        opt.zero_grad()
        loss = -process.fit(x, y).log_marginal_likelihood() / num_obs
        if not torch.isfinite(loss):
            raise ProbgenNumericalError(
                f"fit_hyperparameters: -log p(y) is {loss.item()} after {len(history)} steps; "
                "lower lr, use float64, or start from a larger noise")
        loss.backward()
        return loss

    process.train()
    for step in range(steps):
        with torch.enable_grad():
            loss = opt.step(closure)
        history.append(float(loss.detach()))
        if callback is not None:
            callback(step, history[-1])
    process.eval()
    with torch.no_grad():
        process.fit(x, y)
    return history


@dataclass
class GridResult:
    """Outcome of :func:`grid_search`.

    Attributes:
        best: the chosen configuration (kernel and prior parameters).
        best_score: its validation NLL per point.
        scores: ``(config, validation NLL)`` for every grid point, in order.
    """

    best: dict
    best_score: float
    scores: list[tuple[dict, float]] = field(default_factory=list)


def grid_search(
    make_process: Callable[[dict], torch.nn.Module],
    kernel_grid: Mapping[str, Iterable],
    score: Callable[[torch.nn.Module, dict], Iterable[tuple[dict, float]]],
    x_train: Tensor,
    y_train: Tensor,
) -> GridResult:
    """The paper's model selection: fit once per kernel configuration, score many prior settings.

    Args:
        make_process: builds an unfitted process from one kernel configuration.
        kernel_grid: ``{name: values}``; the product is enumerated.
        score: given the fitted process and its kernel configuration, yields
            ``(prior_config, validation_nll)`` pairs (e.g. over an $(\\alpha, \\beta)$ grid via
            ``predict_from_base``): these share the process's Cholesky factor.
        x_train, y_train: training data.

    Returns:
        :class:`GridResult` (lower NLL is better; NaN scores are skipped).
    """
    names = list(kernel_grid)
    best, best_score, scores = None, math.inf, []
    for values in itertools.product(*(list(kernel_grid[n]) for n in names)):
        config = dict(zip(names, values))
        try:
            with torch.no_grad():
                process = make_process(config).fit(x_train, y_train)
        except ProbgenNumericalError:
            continue
        for prior_config, value in score(process, config):
            full = {**config, **prior_config}
            scores.append((full, value))
            if math.isfinite(value) and value < best_score:
                best, best_score = full, value
    if best is None:
        raise ProbgenNumericalError("grid_search: no grid point gave a finite validation NLL")
    return GridResult(best, best_score, scores)
