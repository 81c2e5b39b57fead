"""Log likelihoods of interpolant models: probability-flow ODE and the SDE estimator.

ODE (instantaneous change of variables): along $\\dot X_t = b(t, X_t)$ with $X_1 = x$,

$$\\log\\rho_1(x) = \\log\\rho_0(X_0) - \\int_0^1 \\nabla\\cdot b(t, X_t)\\,dt,$$

solved backwards from $t = 1$ with the divergence computed exactly (``torch.func`` Jacobian,
for small $d$) or by Hutchinson's estimator $\\nabla\\cdot b \\approx \\epsilon^\\top (\\partial_x b)
\\epsilon$ with the probes $\\epsilon$ drawn **once** per solve (so adaptive solvers see one
smooth ODE) and ``num_probes`` of them averaged.

SDE (after the likelihood section of Albergo, Boffi & Vanden-Eijnden 2023). Let $p_1$ be the density at $t = 1$ of the model's
forward SDE $dX = b_F\\,dt + \\sqrt{2\\epsilon}\\,dW$, $b_F = b + \\epsilon s$, $X_0 \\sim \\rho_0$ (the
sampler of ``generate(method="sde")``). Along the backward SDE $dY = [b - \\epsilon s]dt +
\\sqrt{2\\epsilon}\\,d\\bar W$ from $Y_1 = x$, put

$$L = \\log\\rho_0(Y_0) - \\int_0^1 \\big[\\nabla\\cdot b_F + \\epsilon|s|^2\\big](t, Y_t)\\,dt
- \\int_0^1 \\sqrt{2\\epsilon}\\, s(t, Y_t)\\cdot d\\bar W_t.$$

Feynman-Kac for the forward Fokker-Planck equation of $b_F$, with a Girsanov change of drift
from $-b_F$ to $-(b - \\epsilon s)$, gives $E[e^L] = p_1(x)$ for **any** $s$: $e^L$ is unbiased
for the density, $L$ itself is not. $E[L] \\le \\log p_1(x)$ (Jensen), with equality only when
$s$ is the exact score of the model's marginals (then $L$ is exact path by path). With
$b = 0$, $s = -2x$, $\\epsilon = 1$, $\\rho_0 = N(0, 1)$ the model is an OU process with
$p_1 = N(0, \\tfrac12 + \\tfrac12 e^{-4})$: $\\log p_1 = -0.581, -1.563, -4.509$ at $x = 0, 1, 2$,
while $E[L] = -0.673, -1.663, -4.642$. :func:`log_likelihood` therefore returns the
log-mean-exp of $L$ over ``num_paths`` paths per point, $\\log\\frac1K\\sum_k e^{L_k}$, and its
delta-method standard error $\\hat\\sigma(e^{L})/(\\sqrt K\\,\\overline{e^{L}})$; it is consistent
as $K \\to \\infty$ and biased low by about half its squared standard error at finite $K$.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from probgen.interpolants.generate import (
    ODE_SOLVERS,
    _check_common,
    _check_eps_on_grid,
    _eps_fn,
    _eps_is_zero,
)
from probgen.sde import odeint, sdeint

__all__ = ["bits_per_dim", "dequantized_log_likelihood", "divergence", "log_likelihood"]

Field = Callable[[Tensor, Tensor], Tensor]
LIKELIHOOD_SOLVERS = tuple(m for m in ODE_SOLVERS if m != "edm")


def divergence(
    field: Callable[[Tensor], Tensor], x: Tensor, method: str = "exact", probes: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Value and divergence of a batched field ``x: (batch, d) -> (batch, d)``.

    The field must act on each row independently (no batch coupling such as batch norm).

    Args:
        field: the map, called once on the whole batch.
        x: ``(batch, d)``.
        method: ``"exact"`` (``vmap(jacrev)``: $d$ backward passes, fine for small $d$),
            ``"exact_batch"`` (the same trace from $d$ vector-Jacobian products on the whole
            batch, no ``vmap``: for fields that close over per-sample data, e.g. a condition) or
            ``"hutchinson"``.
        probes: ``(num_probes, batch, d)`` for Hutchinson.

    Returns:
        ``(field(x), div)`` with ``div: (batch,)``.
    """
    if method == "exact":

        def single(xi: Tensor) -> tuple[Tensor, Tensor]:
            out = field(xi[None])[0]
            return out, out

        jac, out = torch.func.vmap(torch.func.jacrev(single, has_aux=True))(x)
        return out, jac.diagonal(dim1=-2, dim2=-1).sum(-1)
    if method == "exact_batch":
        out, vjp_fn = torch.func.vjp(field, x)
        div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for i in range(x.shape[1]):
            # a fresh basis vector per pass: under grad mode the vjp's graph keeps it, so reusing
            # one tensor in place breaks a backward pass through the divergence
            basis = torch.zeros_like(x)
            basis[:, i] = 1.0
            (v,) = vjp_fn(basis)
            div = div + v[:, i]
        return out, div
    if method == "hutchinson":
        if probes is None:
            raise ValueError("divergence(method='hutchinson') needs probes (num_probes, batch, d)")
        out, vjp_fn = torch.func.vjp(field, x)
        div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for eps in probes:
            (v,) = vjp_fn(eps)
            div = div + (v * eps).sum(-1)
        return out, div / probes.shape[0]
    raise ValueError(f"divergence method must be 'exact', 'exact_batch' or 'hutchinson', got {method!r}")


def _probes(kind: str, num: int, shape, dtype, device, generator) -> Tensor:
    if kind == "rademacher":
        return torch.randint(0, 2, (num, *shape), generator=generator, device=device).to(dtype) * 2 - 1
    if kind == "gaussian":
        return torch.randn((num, *shape), generator=generator, dtype=dtype, device=device)
    raise ValueError(f"probe must be 'rademacher' or 'gaussian', got {kind!r}")


def log_likelihood(
    velocity: Field,
    x1: Tensor,
    base_log_prob: Callable[[Tensor], Tensor],
    steps: int = 100,
    divergence: str = "exact",
    *,
    method: str = "ode",
    solver: str = "rk4",
    score: Field | None = None,
    eps: float | Callable[[Tensor], Tensor | float] = 0.0,
    num_probes: int = 1,
    probe: str = "rademacher",
    t_span: tuple[float, float] = (0.0, 1.0),
    rtol: float = 1e-5,
    atol: float = 1e-5,
    num_paths: int = 16,
    generator: torch.Generator | None = None,
    return_stderr: bool = False,
    return_nfe: bool = False,
    create_graph: bool = False,
) -> Tensor | tuple[Tensor, ...]:
    """$\\log\\rho_1(x_1)$ of the model defined by $b$ (ODE) or by $(b, s, \\epsilon)$ (SDE).

    Args:
        velocity: $b(t, x)$, ``t: (batch,)``; must act on each sample independently.
        x1: points ``(batch, *event)``.
        base_log_prob: $\\log\\rho_0$, ``(batch, *event) -> (batch,)``.
        steps: fixed steps over ``t_span`` (``dopri5`` ignores it).
        divergence: ``"exact"``, ``"exact_batch"`` (see :func:`divergence`) or ``"hutchinson"``.
        method: ``"ode"`` (probability flow) or ``"sde"``: the log-mean-exp over ``num_paths``
            backward-SDE paths per point of the estimator $L$ above, which estimates the log density
            of the model's forward SDE $dX = [b + \\epsilon s]dt + \\sqrt{2\\epsilon}dW$ from $\\rho_0$
            (Euler-Maruyama; needs ``score`` and ``eps > 0``).
        solver: ODE solver, one of ``"euler"``, ``"heun"``, ``"rk4"``, ``"dopri5"``.
        score: $s(t, x)$ for ``method="sde"``.
        eps: the SDE's diffusion $\\epsilon(t)$.
        num_probes: Hutchinson probes averaged (fixed for the whole solve).
        probe: ``"rademacher"`` or ``"gaussian"``.
        t_span: $[t_0, t_1]$; the solve runs from $t_1$ (data) to $t_0$ (base).
        rtol, atol: ``dopri5`` tolerances.
        num_paths: $K$, the SDE paths per point (``method="sde"``; the solve runs on
            ``K * batch`` states).
        generator: for the probes and the SDE noise.
        return_stderr: also return the Monte Carlo standard error of each value, ``(batch,)``
            (SDE: the delta-method error of the log-mean-exp, NaN for ``num_paths=1``; ODE:
            zeros, the ODE estimate being deterministic given the probes).
        return_nfe: also return the number of field evaluations.
        create_graph: ``method="ode"`` only: keep the autograd graph through the solve (and
            through the divergence), so the result is differentiable in ``x1`` (and in the
            field's parameters) and its gradient is that of the computed, discretised value;
            costs one more backward pass through every field evaluation. With Hutchinson the
            probes are fixed for the solve, so the estimate is a smooth function of ``x1``.

    Returns:
        ``(batch,)`` log densities in nats, followed by the standard errors and the NFE when asked.

    Raises:
        ValueError: bad arguments.
        SolverDivergedError: the solve produced NaN/inf.
    """
    t0, t1 = _check_common(x1, steps, t_span)
    if divergence not in ("exact", "exact_batch", "hutchinson"):
        raise ValueError(f"divergence must be 'exact', 'exact_batch' or 'hutchinson', got {divergence!r}")
    if isinstance(num_probes, bool) or not isinstance(num_probes, int) or num_probes < 1:
        raise ValueError(f"num_probes must be a positive integer, got {num_probes!r}")
    if method not in ("ode", "sde"):
        raise ValueError(f"method must be 'ode' or 'sde', got {method!r}")
    if create_graph and method != "ode":
        raise ValueError("create_graph=True is only supported for method='ode'")
    if isinstance(num_paths, bool) or not isinstance(num_paths, int) or num_paths < 1:
        raise ValueError(f"num_paths must be a positive integer, got {num_paths!r}")
    points = x1.shape[0]
    if method == "sde":
        x1 = x1.repeat(num_paths, *([1] * (x1.dim() - 1)))  # (K * batch, ...), path k of point i at k * batch + i
    shape, batch = x1.shape[1:], x1.shape[0]
    d = int(math.prod(shape))
    y0 = torch.cat([x1.reshape(batch, d), torch.zeros(batch, 1, dtype=x1.dtype, device=x1.device)], 1)
    probes = (
        _probes(probe, num_probes, (batch, d), x1.dtype, x1.device, generator) if divergence == "hutchinson" else None
    )
    dt = (t1 - t0) / steps

    def flat(field: Field, t: Tensor) -> Callable[[Tensor], Tensor]:
        return lambda x: field(t.expand(x.shape[0]) if t.dim() == 0 else t[: x.shape[0]], x.reshape(x.shape[0], *shape)).reshape(
            x.shape[0], d
        )

    if method == "ode":
        if solver not in LIKELIHOOD_SOLVERS:
            raise ValueError(f"ODE solver must be one of {LIKELIHOOD_SOLVERS}, got {solver!r}")

        def func(t: Tensor, y: Tensor) -> Tensor:
            # forward-time ODE (dx/dt = b, dA/dt = div b) solved from t1 down to t0
            with torch.enable_grad():
                b, div = _div_at(velocity, t, y[:, :d], shape, divergence, probes)
            out = torch.cat([b, div[:, None]], 1)
            return out if create_graph else out.detach()

        ts = [t1, t0]
        if solver == "dopri5":
            ys, nfe = odeint(func, y0, ts, method="dopri5", rtol=rtol, atol=atol, return_nfe=True, y0_name="x1")
        else:
            ys, nfe = odeint(func, y0, ts, method=solver, dt=dt, return_nfe=True, y0_name="x1")
        x0, A = ys[-1][:, :d], ys[-1][:, d]
        # A(t0) = int_{t1}^{t0} div b dt = -int_{t0}^{t1} div b dt
        out = base_log_prob(x0.reshape(batch, *shape)) + A
        return _returns(out, torch.zeros_like(out), int(nfe), return_stderr, return_nfe)

    # SDE estimator: solver time tau in [0, t1 - t0], physical t = t1 - tau.
    if score is None:
        raise ValueError("method='sde' needs the score s(t, x)")
    eps_fn = _eps_fn(eps)
    if _eps_is_zero(eps):
        raise ValueError("method='sde' needs eps > 0 (with eps = 0 use method='ode')")
    if callable(eps):
        _check_eps_on_grid(eps_fn, t1 - torch.linspace(0.0, t1 - t0, steps + 1, dtype=x1.dtype, device=x1.device))
    counter = [0]

    class _LikelihoodSDE:
        noise_type = "general"
        sde_type = "ito"

        def f_and_g(self, tau: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
            counter[0] += 1
            t = t1 - tau
            e = torch.as_tensor(eps_fn(t), dtype=y.dtype, device=y.device)
            x = y[:, :d]

            def forward_drift(tt, xx):
                return velocity(tt, xx) + e * score(tt, xx)

            with torch.enable_grad():
                bF, div = _div_at(forward_drift, t, x, shape, divergence, probes)
                s = flat(score, t)(x)
            bB = bF - 2 * e * s
            drift = torch.cat([-bB, (div + e * s.pow(2).sum(-1))[:, None]], 1).detach()
            root = torch.sqrt(2 * e)
            g = torch.cat([root * torch.eye(d, dtype=y.dtype, device=y.device).expand(y.shape[0], d, d), root * s.detach()[:, None, :]], 1)
            return drift, g

    ys = sdeint(_LikelihoodSDE(), y0, [0.0, t1 - t0], method="euler", dt=dt, generator=generator, y0_name="x1")
    x0, A = ys[-1][:, :d], ys[-1][:, d]
    L = (base_log_prob(x0.reshape(batch, *shape)) - A).reshape(num_paths, points)
    out = torch.logsumexp(L, 0) - math.log(num_paths)
    w = torch.exp(L - L.max(0).values)  # weights e^{L_k} up to a common factor per point
    stderr = w.std(0) / (math.sqrt(num_paths) * w.mean(0)) if num_paths > 1 else torch.full_like(out, math.nan)
    return _returns(out, stderr, counter[0], return_stderr, return_nfe)


def _returns(out: Tensor, stderr: Tensor, nfe: int, return_stderr: bool, return_nfe: bool):
    extra = ((stderr,) if return_stderr else ()) + ((nfe,) if return_nfe else ())
    return (out, *extra) if extra else out


def _div_at(field: Field, t: Tensor, x: Tensor, shape, method: str, probes: Tensor | None):
    """Value and divergence of ``field(t, .)`` at flat ``x: (batch, d)`` (t a 0-dim tensor)."""
    batch = x.shape[0]
    if method == "exact":

        def single(xi: Tensor) -> Tensor:
            return field(t.reshape(1), xi.reshape(1, *shape)).reshape(-1)

        def single_aux(xi):
            out = single(xi)
            return out, out

        jac, out = torch.func.vmap(torch.func.jacrev(single_aux, has_aux=True))(x)
        return out, jac.diagonal(dim1=-2, dim2=-1).sum(-1)

    def batched(xx: Tensor) -> Tensor:
        return field(t.expand(batch), xx.reshape(batch, *shape)).reshape(batch, -1)

    return divergence(batched, x, method=method, probes=probes)


def bits_per_dim(log_prob: Tensor, dim: int, scale: float = 1.0) -> Tensor:
    """Bits per dimension of data modelled after an affine rescaling.

    If the model's variable is $y = a\\,u + c$ where $u$ is the uniformly dequantised data on
    its native scale (e.g. integer pixel values plus $U[0, 1)$ noise), then
    $\\log p_u(u) = \\log p_y(y) + d \\log a$ and the result is $-\\log p_u / (d \\ln 2)$.

    Args:
        log_prob: $\\log p_y(y)$ in nats, ``(batch,)``.
        dim: data dimension $d$.
        scale: $a$.

    Returns:
        ``(batch,)`` bits per dimension.
    """
    if dim <= 0 or scale <= 0:
        raise ValueError(f"dim and scale must be positive, got dim={dim}, scale={scale}")
    return -(log_prob + dim * math.log(scale)) / (dim * math.log(2.0))


def _log_mean_exp(L: Tensor) -> tuple[Tensor, Tensor]:
    """Log-mean-exp over dim 0 of ``L: (K, batch)`` and its delta-method standard error (NaN for K = 1)."""
    K = L.shape[0]
    out = torch.logsumexp(L, 0) - math.log(K)
    w = torch.exp(L - L.max(0).values)
    stderr = w.std(0) / (math.sqrt(K) * w.mean(0)) if K > 1 else torch.full_like(out, math.nan)
    return out, stderr


def dequantized_log_likelihood(
    log_prob: Callable[[Tensor], Tensor],
    x: Tensor,
    num_samples: int = 1,
    scale: float = 1.0,
    shift: float = 0.0,
    proposal: Callable[[Tensor, int, torch.Generator | None], tuple[Tensor, Tensor]] | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Importance-weighted dequantisation: $\\log P(k)$ of integer data under a continuous model.

    The model's variable is $y = a(k + u) + c$ with $u \\in [0, 1)^d$ (``scale`` $a$, ``shift``
    $c$), so $P(k) = \\int_{[0,1)^d} p_y(a(k + u) + c)\\,a^d\\,du$. With $K$ draws $u_j \\sim q(u \\mid k)$,

    $$\\log \\hat P(k) = \\log \\frac1K \\sum_{j=1}^K \\frac{p_y(a(k + u_j) + c)\\,a^d}{q(u_j \\mid k)},$$

    a lower bound in expectation that tightens as $K$ grows and is consistent as $K \\to \\infty$
    (the importance-weighted bound of Burda et al. 2016 applied to dequantisation, as in Ho et al.
    2019, Flow++). $K = 1$ with the uniform $q$ is plain uniform dequantisation. A
    variational $q$ (any ``proposal``) only changes the variance and the gap of the bound.

    Args:
        log_prob: $\\log p_y$, ``(n, *event) -> (n,)`` (e.g. a closure over :func:`log_likelihood`).
        x: integer-valued data $k$, ``(batch, *event)`` (any float or integer dtype).
        num_samples: $K \\geq 1$.
        scale, shift: $a > 0$, $c$.
        proposal: ``(x, K, generator) -> (u, log_q)`` with ``u: (K, batch, *event)`` in $[0, 1)$ and
            ``log_q: (K, batch)``; None for the uniform $q$ ($\\log q = 0$).
        generator: for the uniform draws.

    Returns:
        ``(log_P, stderr)``, each ``(batch,)`` in nats: the estimate and the delta-method standard
        error of the log-mean-exp (NaN for $K = 1$). Bits per dimension: ``-log_P / (d ln 2)``.

    Raises:
        ValueError: ``num_samples < 1``, ``scale <= 0``, or a proposal of the wrong shape.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    if not (isinstance(scale, (int, float)) and scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
    dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
    k = x.to(dtype)
    K, batch, d = num_samples, x.shape[0], x[0].numel()
    if proposal is None:
        u = torch.rand((K, *x.shape), generator=generator, dtype=dtype, device=x.device)
        log_q = torch.zeros(K, batch, dtype=dtype, device=x.device)
    else:
        u, log_q = proposal(k, K, generator)
        if u.shape != (K, *x.shape) or log_q.shape != (K, batch):
            raise ValueError(
                f"proposal must return u of shape {(K, *x.shape)} and log_q of shape {(K, batch)}, got {tuple(u.shape)} and {tuple(log_q.shape)}"
            )
    y = scale * (k[None] + u) + shift
    lp = log_prob(y.reshape(K * batch, *x.shape[1:])).reshape(K, batch)
    return _log_mean_exp(lp + d * math.log(scale) - log_q)
