"""Generation with a learnt interpolant: probability-flow ODE and forward/backward SDEs.

Albergo, Boffi & Vanden-Eijnden (2023), Sec. 2: for any diffusion $\\epsilon(t) \\ge 0$ the
density $\\rho_t$ of $x_t$ solves both the transport equation of the ODE

$$\\dot X_t = b(t, X_t)$$

and the forward and backward Fokker-Planck equations of

$$dX^F_t = [b + \\epsilon s](t, X^F_t)\\,dt + \\sqrt{2\\epsilon(t)}\\,dW_t \\quad (\\text{solved forward from } \\rho_0),$$
$$dX^B_t = [b - \\epsilon s](t, X^B_t)\\,dt + \\sqrt{2\\epsilon(t)}\\,d\\bar W_t \\quad (\\text{solved backward from } \\rho_1).$$

All time stepping is :func:`probgen.sde.odeint` / :func:`probgen.sde.sdeint`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from probgen.sde import odeint, sdeint

__all__ = ["generate", "time_grid", "diffusion_schedule", "ODE_SOLVERS", "SDE_SOLVERS", "TIME_GRIDS", "EPS_FORMS"]  # noqa: RUF022

ODE_SOLVERS = ("euler", "heun", "rk4", "dopri5", "edm")
TIME_GRIDS = ("uniform", "edm")
SDE_SOLVERS = ("euler", "heun")
EPS_FORMS = ("constant", "vanishing", "linear", "sigma", "sbdm", "decreasing", "increasing_decreasing")
Field = Callable[[Tensor, Tensor], Tensor]


def _check_common(x: Tensor, steps, t_span) -> tuple[float, float]:
    if not isinstance(x, Tensor) or x.dim() < 2:
        raise ValueError(f"the initial state must be a tensor (batch, *event), got {getattr(x, 'shape', type(x))}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    t0, t1 = (float(v) for v in t_span)
    if not 0.0 <= t0 < t1 <= 1.0:
        raise ValueError(f"t_span must satisfy 0 <= t0 < t1 <= 1, got {t_span!r}")
    return t0, t1


def _eps_fn(eps) -> Callable[[Tensor], Tensor | float]:
    if callable(eps):
        return eps
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite float >= 0 or a callable eps(t), got {eps!r}")
    value = float(eps)
    return lambda t: value


def _eps_is_zero(eps) -> bool:
    """True for a constant eps of 0 (decided on the Python value: no device sync)."""
    return not callable(eps) and float(eps) == 0.0


def _check_eps_on_grid(eps_fn, times: Tensor) -> None:
    """Evaluate a diffusion coefficient at every solver time once, before the solve.

    One host sync for the whole solve (instead of one per step); a negative or non-finite
    $\\epsilon(t)$ raises here rather than surfacing as a NaN from $\\sqrt{2\\epsilon}$ mid-solve.

    Raises:
        ValueError: ``eps(t) < 0`` or not finite at some grid time.
    """
    values = torch.stack([torch.as_tensor(eps_fn(t), dtype=times.dtype, device=times.device).reshape(()) for t in times.unbind(0)])
    bad = ~(torch.isfinite(values) & (values >= 0))
    if bool(bad.any()):
        k = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"eps must be >= 0 and finite at every solver time (it enters sqrt(2 eps)); the callable eps gave "
            f"eps({float(times[k]):.6g}) = {float(values[k])!r}"
        )


def time_grid(kind, t0: float, t1: float, steps: int, rho: float = 7.0) -> list[float]:
    """The solver's time grid on $[t_0, t_1]$: ``steps + 1`` increasing times.

    Args:
        kind: ``"uniform"``; ``"edm"``, Karras et al. (2022)'s $\\rho$-schedule (their Eq. 5)
            with noise level $\\sigma = 1 - t$ (the coefficient of the noise on the linear
            path): $\\sigma_i = (\\sigma_{max}^{1/\\rho} + \\tfrac{i}{N}(\\sigma_{min}^{1/\\rho} -
            \\sigma_{max}^{1/\\rho}))^\\rho$, $t_i = 1 - \\sigma_i$, which puts the short steps near the
            data end; or any increasing sequence of times from ``t0`` to ``t1`` (then ``steps``
            is ignored).
        t0, t1: the interval.
        steps: number of steps $N$.
        rho: $\\rho > 0$ of the EDM grid.

    Raises:
        ValueError: an unknown kind, or a sequence that is not increasing from t0 to t1.
    """
    if isinstance(kind, str):
        if kind == "uniform":
            return [t0 + (t1 - t0) * i / steps for i in range(steps + 1)]
        if kind == "edm":
            if not rho > 0:
                raise ValueError(f"rho must be > 0, got {rho!r}")
            hi, lo = (1.0 - t0) ** (1.0 / rho), (1.0 - t1) ** (1.0 / rho)
            grid = [1.0 - (hi + i / steps * (lo - hi)) ** rho for i in range(steps + 1)]
            grid[0], grid[-1] = t0, t1
            return grid
        raise ValueError(f"time_grid must be one of {TIME_GRIDS} or an increasing sequence of times, got {kind!r}")
    grid = [float(v) for v in (kind.tolist() if isinstance(kind, Tensor) else kind)]
    if len(grid) < 2 or any(b <= a for a, b in zip(grid[:-1], grid[1:])) or abs(grid[0] - t0) > 1e-12 or abs(grid[-1] - t1) > 1e-12:
        raise ValueError(f"a time_grid sequence must increase strictly from t0={t0} to t1={t1}, got {grid[:3]}...{grid[-2:]}")
    return grid


def diffusion_schedule(form: str, norm: float = 1.0, interpolant=None) -> Callable[[Tensor], Tensor]:
    """A diffusion coefficient $\\epsilon(t)$ of the generative SDE, from SiT's families (Ma et al.
    2024, their "diffusion forms"), written in this module's time (data at $t = 1$) and in terms of
    $\\epsilon$ (the SDE is $dX = [b + \\epsilon s] dt + \\sqrt{2\\epsilon} dW$). With $n$ = ``norm``:

    - ``"constant"``: $n$.
    - ``"vanishing"`` / ``"linear"``: $n(1 - t)$ (no noise at the data end).
    - ``"sigma"``: $n\\sigma(t)$, the coefficient of the Gaussian noise in $x_t$: $\\alpha(t)$ for a
      one-sided path, $\\gamma(t)$ otherwise (needs ``interpolant``).
    - ``"sbdm"``: $n(\\alpha^2\\dot\\beta/\\beta - \\alpha\\dot\\alpha)$ for a one-sided path (needs
      ``interpolant``). On the VP path this is $\\tfrac12\\beta_s(1 - t)$, half the squared diffusion of
      the VP SDE of score-based diffusion, so $\\sqrt{2\\epsilon}$ is its $g$; it is infinite where
      $\\beta = 0$ (keep $t_0 > 0$ on the linear path).
    - ``"decreasing"``: $\\tfrac14(n\\cos(\\pi t) + 1)^2$.
    - ``"increasing_decreasing"``: $n\\sin^2(\\pi t)$.

    Args:
        form: one of ``EPS_FORMS``.
        norm: $n \\geq 0$.
        interpolant: the :class:`~probgen.interpolants.Interpolant`, for ``"sigma"`` and ``"sbdm"``.

    Returns:
        ``eps(t)`` for a tensor ``t`` (elementwise), in ``t``'s dtype.

    Raises:
        ValueError: unknown ``form``, negative or non-finite ``norm``, a missing ``interpolant``, or
            ``"sbdm"`` with a path that is not one-sided.
    """
    if form not in EPS_FORMS:
        raise ValueError(f"diffusion form must be one of {EPS_FORMS}, got {form!r}")
    if isinstance(norm, bool) or not isinstance(norm, (int, float)) or not math.isfinite(norm) or norm < 0:
        raise ValueError(f"norm must be a finite number >= 0, got {norm!r}")
    n = float(norm)
    if form in ("sigma", "sbdm") and interpolant is None:
        raise ValueError(f"diffusion form {form!r} needs the interpolant (interpolant=...)")
    if form == "constant":
        return lambda t: torch.full_like(t, n)
    if form in ("vanishing", "linear"):
        return lambda t: n * (1.0 - t)
    if form == "decreasing":
        return lambda t: 0.25 * (n * torch.cos(math.pi * t) + 1.0) ** 2
    if form == "increasing_decreasing":
        return lambda t: n * torch.sin(math.pi * t) ** 2
    I = interpolant
    if form == "sigma":
        return (lambda t: n * I.alpha(t)) if I.kind == "one_sided" else (lambda t: n * I.gamma(t))
    if I.kind != "one_sided":
        raise ValueError(f"diffusion form 'sbdm' is defined for one-sided paths (x_t = alpha z + beta x1), got kind {I.kind!r}")
    return lambda t: n * (I.alpha(t) ** 2 * I.dbeta(t) / I.beta(t) - I.alpha(t) * I.dalpha(t))


def _noise_ratio(interpolant, t: float) -> float:
    """EDM's noise level $\\sigma(t) = \\alpha(t) / \\beta(t)$ of a one-sided path (inf where $\\beta = 0$)."""
    tt = torch.tensor(t, dtype=torch.float64)
    a, b = float(interpolant.alpha(tt)), float(interpolant.beta(tt))
    return math.inf if b <= 0 else a / b


def churn_back_times(interpolant, times: list[float], churn: float) -> list[float]:
    """EDM's raised noise levels $\\hat\\sigma_i = (1 + \\gamma)\\sigma(t_i)$, $\\gamma = \\min(S_{churn}/N, \\sqrt2 - 1)$
    (Karras et al. 2022, Algorithm 2, with $S_{tmin} = 0$, $S_{tmax} = \\infty$), as times $\\hat t_i \\le t_i$
    on the one-sided path ($\\sigma = \\alpha / \\beta$ decreases in $t$; bisection), never before ``times[0]``.
    Steps where $\\sigma(t_i)$ is infinite (the pure-noise start) are not churned."""
    n = len(times) - 1
    g = min(churn / n, math.sqrt(2.0) - 1.0)
    out = []
    for t in times[:-1]:
        sig = _noise_ratio(interpolant, t)
        if g == 0 or not math.isfinite(sig) or _noise_ratio(interpolant, times[0]) <= sig * (1 + g):
            out.append(t if g == 0 or not math.isfinite(sig) else times[0])
            continue
        lo, hi, target = times[0], t, sig * (1 + g)  # sigma(lo) > target >= sigma(hi)
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if _noise_ratio(interpolant, mid) > target:
                lo = mid
            else:
                hi = mid
        out.append(hi)
    return out


def _one_sided_renoise(interpolant):
    """$x_{\\hat t} = (\\hat\\beta / \\beta) x_t + \\sqrt{\\hat\\alpha^2 - (\\hat\\beta\\alpha/\\beta)^2}\\,\\xi$: exact in law for
    $x_t = \\alpha z + \\beta x_1$ (a Gaussian move of $z$'s share), whatever $\\rho_1$ is."""

    def renoise(y: Tensor, t: float, t_hat: float, generator) -> Tensor:
        c = torch.tensor([t, t_hat], dtype=torch.float64)
        a, b = interpolant.alpha(c).tolist(), interpolant.beta(c).tolist()
        scale = b[1] / b[0]
        var = max(a[1] ** 2 - (scale * a[0]) ** 2, 0.0)
        noise = torch.randn(y.shape, generator=generator, dtype=y.dtype, device=y.device)
        return scale * y + math.sqrt(var) * noise

    return renoise


class _Flat:
    """Calls a field on the event shape while a solver sees ``(batch, d)`` and a 0-dim ``t``."""

    def __init__(self, field: Field, shape: torch.Size, time_map: Callable[[Tensor], Tensor]) -> None:
        self.field, self.shape, self.time_map = field, shape, time_map

    def __call__(self, t: Tensor, y: Tensor) -> Tensor:
        tt = self.time_map(t).expand(y.shape[0])
        return self.field(tt, y.reshape(y.shape[0], *self.shape)).reshape(y.shape[0], -1)


class _InterpolantSDE:
    """$dY = \\pm[b \\pm \\epsilon s](t(\\tau), Y) d\\tau + \\sqrt{2\\epsilon}\\, dW$ in solver time $\\tau$."""

    noise_type = "diagonal"

    def __init__(self, velocity: _Flat, score: _Flat, eps, time_map, sign: float, sde_type: str, counter: list[int]) -> None:
        self.velocity, self.score, self.eps = velocity, score, eps
        self.time_map, self.sign, self.sde_type, self.counter = time_map, sign, sde_type, counter

    def f_and_g(self, tau: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        self.counter[0] += 1
        eps = self.eps(self.time_map(tau))
        if not isinstance(eps, Tensor):
            eps = torch.as_tensor(eps, dtype=y.dtype, device=y.device)
        b = self.velocity(tau, y)
        # score is None exactly when eps is the constant 0 (decided before the solve: no per-step sync)
        drift = b if self.score is None else b + self.sign * eps * self.score(tau, y)
        direction = 1.0 if self.sign > 0 else -1.0
        return direction * drift, torch.sqrt(2.0 * eps).expand_as(y)

    def f(self, tau, y):
        return self.f_and_g(tau, y)[0]

    def g(self, tau, y):
        return self.f_and_g(tau, y)[1]


def generate(
    velocity: Field,
    x0: Tensor,
    steps: int = 100,
    method: str = "ode",
    score: Field | None = None,
    eps: float | Callable[[Tensor], Tensor | float] = 0.0,
    *,
    solver: str | None = None,
    direction: str = "forward",
    t_span: tuple[float, float] = (0.0, 1.0),
    rtol: float = 1e-5,
    atol: float = 1e-5,
    generator: torch.Generator | None = None,
    return_nfe: bool = False,
    grid: str | list[float] | Tensor = "uniform",
    rho: float = 7.0,
    denoise_last: bool = False,
    churn: float = 0.0,
    interpolant=None,
) -> Tensor | tuple[Tensor, int]:
    """Push samples through the probability-flow ODE or the forward / backward SDE.

    Args:
        velocity: $b(t, x)$, ``t: (batch,)``, ``x: (batch, *event)`` -> ``(batch, *event)``.
        x0: initial samples ``(batch, *event)``: from $\\rho_0$ (``direction="forward"``) or
            $\\rho_1$ (``"backward"``).
        steps: number of fixed steps over ``t_span`` (ignored by ``dopri5``).
        method: ``"ode"`` or ``"sde"``.
        score: $s(t, x)$, required when ``method="sde"`` and ``eps`` is not zero.
        eps: diffusion $\\epsilon(t) \\ge 0$, a float or a callable of a 0-dim time tensor.
        solver: ODE: ``"euler"``, ``"heun"``, ``"rk4"`` (default), ``"dopri5"``, ``"edm"``
            (Karras et al. 2022's deterministic second-order sampler: Heun on the ``"edm"`` grid
            unless ``grid`` is given otherwise); SDE:
            ``"euler"`` (Euler-Maruyama, default) or ``"heun"`` (the noise is additive, so the
            Stratonovich Heun scheme solves the same equation).
        direction: ``"forward"`` ($t_0 \\to t_1$, base to data) or ``"backward"`` (data to base).
        t_span: the time interval $[t_0, t_1] \\subseteq [0, 1]$; keep it inside
            ``Interpolant.t_bounds`` when a field is singular at the ends.
        rtol, atol: tolerances of ``dopri5``.
        generator: random generator of the SDE noise.
        return_nfe: also return the number of drift evaluations (each one evaluates $b$ and,
            for the SDE with $\\epsilon \\neq 0$, $s$ once).
        grid: the time grid (see :func:`time_grid`): ``"uniform"``, ``"edm"`` or an increasing
            sequence from ``t_span[0]`` to ``t_span[1]``; one solver step per grid interval
            (traversed from the end for ``direction="backward"``).
        rho: $\\rho$ of the ``"edm"`` grid.
        denoise_last: SDE only: take the last step without noise (the mean of the
            Euler-Maruyama step, as SiT's last-step "Mean"), so the output carries no noise of
            size $\\sqrt{2\\epsilon h}$ from the final step.
        churn: ``solver="edm"`` only: EDM's stochastic sampler (Karras et al. 2022, Algorithm 2)
            with $S_{churn}$ = ``churn`` ($S_{noise} = 1$): before each Heun step the state is moved
            back to the noise level $(1 + \\gamma)\\sigma$, $\\gamma = \\min(S_{churn}/N, \\sqrt2 - 1)$,
            $\\sigma = \\alpha/\\beta$, by an exact Gaussian draw (:func:`probgen.samplers.churn_sampler`).
            Needs the one-sided ``interpolant`` and ``direction="forward"``. 0: the deterministic sampler.
        interpolant: the :class:`~probgen.interpolants.Interpolant` of the fields (for ``churn``).

    Returns:
        The samples at the end time ``(batch, *event)``, or ``(samples, nfe)``.

    Raises:
        ValueError: bad ``method``, ``solver``, ``direction``, ``steps``, ``t_span``, ``eps`` (a
            callable ``eps`` is evaluated once at every solver time, and a negative or non-finite
            value is refused before the solve), or a missing ``score``.
        SolverDivergedError: the solve produced NaN/inf.
    """
    t0, t1 = _check_common(x0, steps, t_span)
    if method not in ("ode", "sde"):
        raise ValueError(f"method must be 'ode' or 'sde', got {method!r}")
    if direction not in ("forward", "backward"):
        raise ValueError(f"direction must be 'forward' or 'backward', got {direction!r}")
    if not callable(velocity):
        raise TypeError(f"velocity must be callable, got {type(velocity).__name__}")
    shape, batch = x0.shape[1:], x0.shape[0]
    y0 = x0.reshape(batch, -1)
    if solver == "edm" and method == "ode" and isinstance(grid, str) and grid == "uniform":
        grid = "edm"
    times = time_grid(grid, t0, t1, steps, rho)
    dt = max(b - a for a, b in zip(times[:-1], times[1:]))  # >= every interval: one step each
    if denoise_last and method != "sde":
        raise ValueError("denoise_last applies to method='sde' only")
    if method == "ode":
        solver = solver or "rk4"
        if solver not in ODE_SOLVERS:
            raise ValueError(f"ODE solver must be one of {ODE_SOLVERS}, got {solver!r}")
        func = _Flat(velocity, shape, lambda t: t)
        ts = times if direction == "forward" else times[::-1]
        if isinstance(churn, bool) or not isinstance(churn, (int, float)) or not math.isfinite(churn) or churn < 0:
            raise ValueError(f"churn must be a finite number >= 0, got {churn!r}")
        if churn > 0:
            if solver != "edm" or direction != "forward":
                raise ValueError(f"churn > 0 is EDM's stochastic sampler: use solver='edm', direction='forward', got solver={solver!r}, direction={direction!r}")
            if interpolant is None or getattr(interpolant, "kind", None) != "one_sided":
                raise ValueError("churn > 0 re-noises along a one-sided path x_t = alpha z + beta x1: pass its interpolant=...")
            from probgen.samplers.churn import churn_sampler

            back = churn_back_times(interpolant, times, float(churn))
            y, nfe = churn_sampler(func, y0, times, back, _one_sided_renoise(interpolant), method="heun", generator=generator)
            out = y.reshape(x0.shape)
            return (out, int(nfe)) if return_nfe else out
        if solver == "dopri5":
            ys, nfe = odeint(func, y0, [ts[0], ts[-1]], method="dopri5", rtol=rtol, atol=atol, return_nfe=True, y0_name="x0")
        else:
            ys, nfe = odeint(func, y0, ts, method="heun" if solver == "edm" else solver, dt=dt, return_nfe=True, y0_name="x0")
        out = ys[-1].reshape(x0.shape)
        return (out, int(nfe)) if return_nfe else out

    solver = solver or "euler"
    if solver not in SDE_SOLVERS:
        raise ValueError(f"SDE solver must be one of {SDE_SOLVERS}, got {solver!r}")
    eps_fn = _eps_fn(eps)
    if _eps_is_zero(eps):
        score = None  # b alone: never evaluate s
        const = torch.zeros((), dtype=x0.dtype, device=x0.device)
        eps_fn = lambda t: const  # noqa: E731
    elif score is None:
        raise ValueError("method='sde' with eps != 0 needs the score s(t, x): pass score=...")
    elif not callable(score):
        raise TypeError(f"score must be callable, got {type(score).__name__}")
    elif not callable(eps):
        const = torch.tensor(float(eps), dtype=x0.dtype, device=x0.device)
        eps_fn = lambda t: const  # noqa: E731
    # Solver time tau runs forward over [0, t1 - t0]; physical time t = t0 + tau (forward)
    # or t1 - tau (backward).
    time_map = (lambda tau: t0 + tau) if direction == "forward" else (lambda tau: t1 - tau)
    # solver times tau, increasing from 0
    taus = [t - t0 for t in times] if direction == "forward" else [t1 - t for t in times[::-1]]
    if callable(eps):
        _check_eps_on_grid(eps_fn, time_map(torch.tensor(taus, dtype=x0.dtype, device=x0.device)))
    sign = 1.0 if direction == "forward" else -1.0
    counter = [0]
    sde = _InterpolantSDE(
        _Flat(velocity, shape, time_map),
        _Flat(score, shape, time_map) if score is not None else None,
        eps_fn,
        time_map,
        sign,
        "ito" if solver == "euler" else "stratonovich",
        counter,
    )
    if denoise_last and len(taus) > 2:
        y = sdeint(sde, y0, taus[:-1], method=solver, dt=dt, generator=generator, y0_name="x0")[-1]
    elif denoise_last:
        y = y0
    else:
        y = sdeint(sde, y0, taus, method=solver, dt=dt, generator=generator, y0_name="x0")[-1]
    if denoise_last:  # the noise-free mean of the last Euler-Maruyama step, through the shared ODE solver
        y = odeint(sde.f, y, taus[-2:], method="euler", dt=taus[-1] - taus[-2])[-1]
    out = y.reshape(x0.shape)
    return (out, counter[0]) if return_nfe else out
