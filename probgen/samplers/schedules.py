"""Step-size schedules for SG-MCMC: cyclical (cSG-MCMC) and polynomial decay.

Each schedule is a plain function of the step index (for functional samplers and
:func:`probgen.samplers.langevin`'s ``anneal``) and a ``torch.optim.lr_scheduler.LRScheduler``
(for the optimizer samplers; call ``scheduler.step()`` after every ``optimizer.step()``).
Step indices are 0-based: step 0 uses the initial step size.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

__all__ = [
    "CyclicalLR",
    "PolynomialDecayLR",
    "cyclical_phase",
    "cyclical_schedule",
    "polynomial_schedule",
]


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _cycle_length(total_steps: int, num_cycles: int) -> int:
    _check_int("total_steps", total_steps, 1)
    _check_int("num_cycles", num_cycles, 1)
    if num_cycles > total_steps:
        raise ValueError(
            f"num_cycles must be <= total_steps, got num_cycles={num_cycles}, "
            f"total_steps={total_steps}"
        )
    return math.ceil(total_steps / num_cycles)


def _check_fraction(exploration_fraction: float) -> None:
    if not (0.0 <= exploration_fraction <= 1.0):
        raise ValueError(f"exploration_fraction must lie in [0, 1], got {exploration_fraction}")


def cyclical_schedule(step: int, total_steps: int, num_cycles: int, lr0: float) -> float:
    """Cosine cyclical step size of cSG-MCMC (Zhang et al., 2020, eq. 1).

    $$\\alpha_k = \\frac{\\alpha_0}{2}\\Big[\\cos\\Big(\\frac{\\pi\\,
    \\mathrm{mod}(k, \\lceil K/M \\rceil)}{\\lceil K/M \\rceil}\\Big) + 1\\Big]$$

    with $k$ = ``step`` (0-based, the paper's $k-1$), $K$ = ``total_steps``, $M$ =
    ``num_cycles`` and $\\alpha_0$ = ``lr0``. Each cycle starts at $\\alpha_0$ and decays
    towards 0.

    Args:
        step: step index $k \\ge 0$.
        total_steps: $K \\ge 1$.
        num_cycles: $M$, between 1 and $K$.
        lr0: initial step size $\\alpha_0 > 0$.

    Returns:
        The step size $\\alpha_k$.
    """
    length = _cycle_length(total_steps, num_cycles)
    _check_int("step", step, 0)
    if not lr0 > 0:
        raise ValueError(f"lr0 must be > 0, got {lr0}")
    r = (step % length) / length
    return 0.5 * lr0 * (math.cos(math.pi * r) + 1.0)


def cyclical_phase(
    step: int, total_steps: int, num_cycles: int, exploration_fraction: float = 0.8
) -> tuple[int, bool]:
    """Cycle index and stage of step ``step`` in cSG-MCMC (Zhang et al., 2020, Algorithm 1).

    A step is in the *exploration* stage while $r(k) = \\mathrm{mod}(k, \\lceil K/M\\rceil) /
    \\lceil K/M \\rceil < \\beta$ (run the optimizer without noise there) and in the
    *sampling* stage otherwise (run the sampler and collect samples). Zhang et al. sample in
    the last few epochs of each cycle (e.g. 3 of 50 on CIFAR-10, $\\beta = 0.94$).

    Args:
        step: step index $k \\ge 0$.
        total_steps: $K \\ge 1$.
        num_cycles: $M$, between 1 and $K$.
        exploration_fraction: $\\beta \\in [0, 1]$.

    Returns:
        ``(cycle, sampling)``: the 0-based cycle index and whether the step is in the
        sampling stage.
    """
    length = _cycle_length(total_steps, num_cycles)
    _check_int("step", step, 0)
    _check_fraction(exploration_fraction)
    return step // length, (step % length) / length >= exploration_fraction


def polynomial_schedule(step: int, a: float, b: float, gamma: float) -> float:
    """Polynomially decaying step size $\\epsilon_t = a (b + t)^{-\\gamma}$ (Welling & Teh,
    2011, sec. 3; Teh et al., 2016).

    $\\gamma \\in (0.5, 1]$ satisfies the Robbins-Monro conditions $\\sum_t \\epsilon_t =
    \\infty$, $\\sum_t \\epsilon_t^2 < \\infty$ under which SGLD is consistent; Teh et al.
    (2016) show $\\gamma = 1/3$ is optimal for the weighted-average MSE of finite runs.

    Args:
        step: step index $t \\ge 0$.
        a: scale $a > 0$.
        b: offset $b > 0$.
        gamma: decay exponent $\\gamma \\ge 0$.

    Returns:
        The step size $\\epsilon_t$.
    """
    _check_int("step", step, 0)
    if not a > 0:
        raise ValueError(f"a must be > 0, got {a}")
    if not b > 0:
        raise ValueError(f"b must be > 0, got {b}")
    if not gamma >= 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    return a * (b + step) ** (-gamma)


class CyclicalLR(LRScheduler):
    """cSG-MCMC's cyclical schedule (:func:`cyclical_schedule`) for a torch optimizer.

    The initial ``lr`` of each parameter group is $\\alpha_0$. With ``noise_in_exploration
    = False`` (the paper's cSG-MCMC) the scheduler sets each group's ``"temperature"`` (if it
    has one: :class:`~probgen.samplers.SGLD`, :class:`~probgen.samplers.PSGLD`,
    :class:`~probgen.samplers.SGHMC`) to 0 during the exploration stage and back to its initial
    value during the sampling stage. :attr:`sampling` says whether the *next* optimizer step
    is in the sampling stage (collect the sample after that step), :attr:`cycle` its cycle.

    Args:
        optimizer: the wrapped optimizer.
        total_steps: $K$, the number of optimizer steps of the whole run.
        num_cycles: $M$.
        exploration_fraction: $\\beta$, see :func:`cyclical_phase`.
        noise_in_exploration: keep the sampler's noise on in the exploration stage.
        last_epoch: index of the last step taken (-1 to start afresh), as in torch.

    Example:
        >>> opt = SGLD(model.parameters(), lr=0.1, num_data=n)
        >>> sched = CyclicalLR(opt, total_steps=10_000, num_cycles=4)
        >>> for k in range(10_000):
        ...     take_step(opt)
        ...     if sched.sampling: collect(model)
        ...     sched.step()
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        num_cycles: int,
        exploration_fraction: float = 0.8,
        noise_in_exploration: bool = False,
        last_epoch: int = -1,
    ) -> None:
        _cycle_length(total_steps, num_cycles)
        _check_fraction(exploration_fraction)
        self.total_steps = total_steps
        self.num_cycles = num_cycles
        self.exploration_fraction = float(exploration_fraction)
        self.noise_in_exploration = bool(noise_in_exploration)
        for group in optimizer.param_groups:
            if "temperature" in group:
                group.setdefault("initial_temperature", group["temperature"])
        super().__init__(optimizer, last_epoch)

    @property
    def cycle(self) -> int:
        """0-based cycle of the next optimizer step."""
        return cyclical_phase(
            max(self.last_epoch, 0), self.total_steps, self.num_cycles, self.exploration_fraction
        )[0]

    @property
    def sampling(self) -> bool:
        """Whether the next optimizer step is in the sampling stage."""
        return cyclical_phase(
            max(self.last_epoch, 0), self.total_steps, self.num_cycles, self.exploration_fraction
        )[1]

    def get_lr(self) -> list[float]:
        step = max(self.last_epoch, 0)
        if not self.noise_in_exploration:
            sampling = self.sampling
            for group in self.optimizer.param_groups:
                if "initial_temperature" in group:
                    group["temperature"] = group["initial_temperature"] if sampling else 0.0
        return [
            cyclical_schedule(step, self.total_steps, self.num_cycles, base_lr)
            for base_lr in self.base_lrs
        ]


class PolynomialDecayLR(LRScheduler):
    """Polynomial decay $\\epsilon_t = a (b + t)^{-\\gamma}$ for a torch optimizer.

    $a$ is set from each group's initial ``lr`` so that $\\epsilon_0$ = ``lr``:
    $a = \\mathrm{lr}\\, b^{\\gamma}$, i.e. $\\epsilon_t = \\mathrm{lr}\\,(1 + t/b)^{-\\gamma}$.

    Args:
        optimizer: the wrapped optimizer.
        b: offset $b > 0$ (in steps).
        gamma: decay exponent $\\gamma \\ge 0$.
        last_epoch: index of the last step taken (-1 to start afresh).
    """

    def __init__(
        self, optimizer: Optimizer, b: float, gamma: float = 0.55, last_epoch: int = -1
    ) -> None:
        if not b > 0:
            raise ValueError(f"b must be > 0, got {b}")
        if not gamma >= 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.b = float(b)
        self.gamma = float(gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        step = max(self.last_epoch, 0)
        return [
            polynomial_schedule(step, base_lr * self.b**self.gamma, self.b, self.gamma)
            for base_lr in self.base_lrs
        ]
