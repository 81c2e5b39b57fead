"""Optimising the interpolant: the Schrodinger bridge as a max-min problem.

Albergo, Boffi & Vanden-Eijnden (2023), Sec. 3.4 ("Optimizing the interpolant"): for a fixed
diffusion $\\epsilon > 0$ the forward drift $b_F = b + \\epsilon s$ of the interpolant is the
minimiser of a quadratic objective, and maximising that objective's minimum over the
interpolant minimises the kinetic action $\\tfrac12\\int_0^1 E|b_F(t, x_t)|^2 dt$ among all
density paths that an interpolant can produce. The forward SDE
$dX = b_F dt + \\sqrt{2\\epsilon} dW$ has the interpolant's marginals, so when the Schrodinger
bridge's marginals are reachable by the family, the max-min solution is the Schrodinger bridge
with reference $\\sqrt{2\\epsilon} W$ (the dynamic form of entropic OT with the Brownian kernel
of variance $2\\epsilon$), and the joint law of $(X_0, X_1)$ is the entropic OT coupling.

The objective, per time $t$ (with Stein's identity $E[z \\cdot u(x_t)] = \\gamma E[\\nabla\\cdot u]$
for the latent noise and $E[s \\cdot u] = -E[\\nabla \\cdot u]$ for the score):

$$L_t[\\hat u] = E\\Big[\\tfrac12|\\hat u(t, x_t)|^2 - (\\dot\\alpha x_0 + \\dot\\beta x_1)\\cdot \\hat u(t, x_t)
+ (\\epsilon - \\gamma\\dot\\gamma)\\, \\nabla\\cdot \\hat u(t, x_t)\\Big]
= E[\\tfrac12 |\\hat u|^2 - b_F \\cdot \\hat u],$$

so $\\min_{\\hat u} L_t = -\\tfrac12 E|b_F(t, x_t)|^2$ at $\\hat u = b_F$ and
$\\max_{I}\\min_{\\hat u}\\int_0^1 L_t\\,dt$ is the kinetic-action minimisation. Writing the noise term
through $\\gamma\\dot\\gamma$ (finite at the ends) instead of $\\dot\\gamma z$ (singular for
$\\gamma \\propto \\sqrt{t(1-t)}$) removes the estimator's infinite variance at $t = 0, 1$.

:class:`LearnedPath` and :class:`LearnedGamma` are trainable $(\\alpha, \\beta)$ and $\\gamma$
(``nn.Module`` s that are also a :class:`~probgen.interpolants.Path` / :class:`~probgen.interpolants.Gamma`);
:func:`maxmin_objective` is $\\int L_t dt$ by Monte Carlo; :func:`optimize_interpolant` runs the
alternating (gradient descent on $\\hat u$, ascent on the interpolant) optimisation;
:func:`gaussian_schrodinger_bridge` is the closed form it is tested against.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from probgen.interpolants.likelihood import divergence
from probgen.interpolants.paths import Gamma, Interpolant, Path, _expand

__all__ = [
    "AffineDrift",
    "LearnedGamma",
    "LearnedPath",
    "forward_bridge",
    "gaussian_schrodinger_bridge",
    "maxmin_objective",
    "optimize_interpolant",
]


def _poly(t: Tensor, coef: Tensor) -> tuple[Tensor, Tensor]:
    """$p(t) = \\sum_k c_k u^k$ with $u = 2t - 1$, and $dp/dt$; ``coef: (K,)``, ``t`` any shape."""
    coef = coef.to(dtype=t.dtype, device=t.device)
    u = 2.0 * t - 1.0
    p = torch.zeros_like(t) + coef[0]
    dp = torch.zeros_like(t)
    for k in range(1, coef.shape[0]):
        p = p + coef[k] * u**k
        dp = dp + 2.0 * k * coef[k] * u ** (k - 1)
    return p, dp


def _check_degree(degree) -> int:
    if isinstance(degree, bool) or not isinstance(degree, int) or degree < 0:
        raise ValueError(f"degree must be an integer >= 0, got {degree!r}")
    return degree


class LearnedPath(Path, nn.Module):
    """Trainable path: the linear path plus a correction that vanishes at both ends,

    $$\\alpha(t) = 1 - t + t(1 - t)\\,p(t), \\qquad \\beta(t) = t + t(1 - t)\\,q(t),$$

    with $p, q$ polynomials of degree ``degree`` in $u = 2t - 1$ (coefficients ``p``, ``q``,
    initialised at 0: the linear path). The end conditions $\\alpha(0) = \\beta(1) = 1$,
    $\\alpha(1) = \\beta(0) = 0$ hold for every value of the parameters.

    Args:
        degree: polynomial degree of the correction ($\\geq 0$).
    """

    kind = "two_sided"

    def __init__(self, degree: int = 3) -> None:
        nn.Module.__init__(self)
        degree = _check_degree(degree)
        self.p = nn.Parameter(torch.zeros(degree + 1, dtype=torch.float64))
        self.q = nn.Parameter(torch.zeros(degree + 1, dtype=torch.float64))

    def alpha(self, t):
        p, _ = _poly(t, self.p)
        return 1.0 - t + t * (1.0 - t) * p

    def beta(self, t):
        q, _ = _poly(t, self.q)
        return t + t * (1.0 - t) * q

    def dalpha(self, t):
        p, dp = _poly(t, self.p)
        return -1.0 + (1.0 - 2.0 * t) * p + t * (1.0 - t) * dp

    def dbeta(self, t):
        q, dq = _poly(t, self.q)
        return 1.0 + (1.0 - 2.0 * t) * q + t * (1.0 - t) * dq

    def __repr__(self):
        return f"LearnedPath(degree={self.p.shape[0] - 1})"


class LearnedGamma(Gamma, nn.Module):
    """Trainable latent noise $\\gamma(t) = \\sqrt{t(1-t)}\\, e^{h(t)}$, $h$ a polynomial of degree
    ``degree`` in $u = 2t - 1$ (coefficients ``h``).

    $\\gamma(0) = \\gamma(1) = 0$ and $\\gamma > 0$ inside for every value of the parameters;
    $\\gamma\\dot\\gamma = \\tfrac12 \\tfrac{d}{dt}[t(1-t)e^{2h}] = e^{2h}[\\tfrac12(1 - 2t) + t(1-t)h']$
    is finite at the ends, $\\dot\\gamma$ is not (so ``t_bounds`` stops ``t_eps`` short of them, as
    for :class:`~probgen.interpolants.BrownianGamma`). ``init_scale`` $a$ sets $h \\equiv \\log a$:
    the Brownian $\\gamma = a\\sqrt{t(1-t)}$.

    Args:
        degree: polynomial degree of $h$ ($\\geq 0$).
        init_scale: $a > 0$ at initialisation.
        t_eps: distance from the ends where solvers stop.
    """

    def __init__(self, degree: int = 3, init_scale: float = 1.0, t_eps: float = 1e-3) -> None:
        nn.Module.__init__(self)
        Gamma.__init__(self, 1.0)
        degree = _check_degree(degree)
        if isinstance(init_scale, bool) or not isinstance(init_scale, (int, float)) or not init_scale > 0 or not math.isfinite(init_scale):
            raise ValueError(f"init_scale must be a finite number > 0, got {init_scale!r}")
        if not 0 < t_eps < 0.5:
            raise ValueError(f"t_eps must be in (0, 0.5), got {t_eps}")
        h = torch.zeros(degree + 1, dtype=torch.float64)
        h[0] = math.log(init_scale)
        self.h = nn.Parameter(h)
        self.is_zero = False
        self.t_bounds = (float(t_eps), 1.0 - float(t_eps))

    def _gamma(self, t):
        h, _ = _poly(t, self.h)
        return torch.sqrt(t * (1.0 - t)) * torch.exp(h)

    def _gamma_dgamma(self, t):
        h, dh = _poly(t, self.h)
        return torch.exp(2.0 * h) * (0.5 * (1.0 - 2.0 * t) + t * (1.0 - t) * dh)

    def _dgamma(self, t):
        return self._gamma_dgamma(t) / self._gamma(t)

    def __repr__(self):
        return f"LearnedGamma(degree={self.h.shape[0] - 1})"


class AffineDrift(nn.Module):
    """$\\hat u(t, x) = A(t) x + c(t)$ with $A, c$ from an MLP of $t$: the exact function class of
    $b_F$ when both endpoints are Gaussian (then $x_t$ is Gaussian and every field is affine), so
    the inner minimisation carries no approximation error. ``divergence(t, x)`` is $\\mathrm{tr} A(t)$.

    Args:
        dim: $d$.
        width: hidden width of the MLP.
        diagonal: $A$ diagonal (enough for isotropic or axis-aligned endpoints) or full.
    """

    def __init__(self, dim: int, width: int = 64, diagonal: bool = False) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.dim, self.diagonal = dim, bool(diagonal)
        out = dim + (dim if diagonal else dim * dim)
        self.net = nn.Sequential(nn.Linear(1, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, out))

    def _coeffs(self, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.net(t.to(x.dtype).reshape(-1, 1))
        c, a = h[:, : self.dim], h[:, self.dim :]
        if self.diagonal:
            return torch.diag_embed(a), c
        return a.reshape(-1, self.dim, self.dim), c

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        A, c = self._coeffs(t, x)
        return (A @ x[..., None])[..., 0] + c

    def divergence(self, t: Tensor, x: Tensor) -> Tensor:
        A, _ = self._coeffs(t, x)
        return torch.diagonal(A, dim1=-2, dim2=-1).sum(-1)


Drift = Callable[[Tensor, Tensor], Tensor]


def maxmin_objective(
    interpolant: Interpolant, drift: Drift, x0: Tensor, x1: Tensor, eps: float, t: Tensor | None = None, z: Tensor | None = None
) -> Tensor:
    """Monte Carlo estimate of $\\int_0^1 L_t[\\hat u]\\,dt$ (module docstring), a scalar.

    Minimised over ``drift`` it is $-\\tfrac12\\int_0^1 E|b_F|^2 dt$ with $b_F = b + \\epsilon s$ of
    ``interpolant``; its gradient flows into both the drift's and the interpolant's parameters.

    Args:
        interpolant: a two-sided :class:`~probgen.interpolants.Interpolant` (e.g. with
            :class:`LearnedPath` / :class:`LearnedGamma`).
        drift: $\\hat u(t, x)$, ``t: (batch,)``, ``x: (batch, d)`` -> ``(batch, d)``; its divergence
            is ``drift.divergence(t, x)`` when it has one, else exact by autograd ($d$ passes).
        x0, x1: coupled endpoint samples ``(batch, d)``.
        eps: diffusion $\\epsilon \\geq 0$ of the forward SDE.
        t: ``(batch,)`` times, uniform on ``interpolant.t_bounds`` if None.
        z: ``(batch, d)`` latent noise, standard normal if None.

    Raises:
        ValueError: a one-sided or mirror interpolant, bad shapes or a negative ``eps``.
    """
    if interpolant.kind != "two_sided":
        raise ValueError(f"the max-min objective needs a two-sided interpolant (x0 from the base), got kind {interpolant.kind!r}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0 or not math.isfinite(eps):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    if x0.dim() != 2 or x0.shape != x1.shape:
        raise ValueError(f"x0 and x1 must both have shape (batch, d), got {tuple(x0.shape)} and {tuple(x1.shape)}")
    n = x1.shape[0]
    if t is None:
        lo, hi = interpolant.t_bounds
        t = lo + (hi - lo) * torch.rand(n, dtype=x1.dtype, device=x1.device)
    if z is None:
        z = torch.randn_like(x1)
    a, b, g = (_expand(f(t), x1) for f in (interpolant.alpha, interpolant.beta, interpolant.gamma))
    da, db = _expand(interpolant.dalpha(t), x1), _expand(interpolant.dbeta(t), x1)
    gdg = interpolant.gamma_dgamma(t)
    xt = a * x0 + b * x1 + g * z
    if hasattr(drift, "divergence"):
        u, div = drift(t, xt), drift.divergence(t, xt)
    else:
        u, div = divergence(lambda y: drift(t, y), xt, method="exact_batch")
    mean_vel = da * x0 + db * x1
    per = 0.5 * (u * u).sum(-1) - (mean_vel * u).sum(-1) + (eps - gdg) * div
    return per.mean()


def optimize_interpolant(
    interpolant: Interpolant,
    drift: nn.Module,
    sample_base: Callable[[int], Tensor],
    sample_target: Callable[[int], Tensor],
    eps: float,
    steps: int = 2000,
    batch_size: int = 512,
    inner_steps: int = 5,
    lr_drift: float = 3e-3,
    lr_interpolant: float = 1e-2,
    final_lr_fraction: float = 0.05,
) -> list[float]:
    """Alternating optimisation of $\\max_I \\min_{\\hat u} \\int L_t dt$ (independent coupling).

    Each outer step takes ``inner_steps`` Adam steps on the drift, then one Adam ascent step on
    the interpolant's parameters (envelope theorem: at the inner minimiser the partial gradient in
    the interpolant is the gradient of the profiled objective). Both learning rates decay
    linearly to ``final_lr_fraction`` of their start.

    Args:
        interpolant: whose ``path`` and/or ``gamma_fn`` are ``nn.Module`` s with parameters.
        drift: $\\hat u$ (e.g. :class:`AffineDrift`).
        sample_base, sample_target: ``n -> (n, d)`` independent draws of $\\rho_0$, $\\rho_1$.
        eps: $\\epsilon \\geq 0$.
        steps: outer steps.
        batch_size: samples per objective estimate.
        inner_steps: drift steps per interpolant step.
        lr_drift, lr_interpolant: Adam learning rates.
        final_lr_fraction: learning-rate factor at the last step.

    Returns:
        The objective after each outer step's drift update (an estimate of $-\\tfrac12$ the action).

    Raises:
        ValueError: the interpolant has no trainable parameters, or bad integers.
    """
    for name, v in (("steps", steps), ("batch_size", batch_size), ("inner_steps", inner_steps)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    params = [p for part in (interpolant.path, interpolant.gamma_fn) if isinstance(part, nn.Module) for p in part.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the interpolant has no trainable parameters: use a LearnedPath and/or a LearnedGamma")
    opt_u = torch.optim.Adam(drift.parameters(), lr=lr_drift)
    opt_i = torch.optim.Adam(params, lr=lr_interpolant)
    decay = lambda k: 1.0 - (1.0 - final_lr_fraction) * k / steps
    sched_u = torch.optim.lr_scheduler.LambdaLR(opt_u, decay)
    sched_i = torch.optim.lr_scheduler.LambdaLR(opt_i, decay)
    history = []
    for _ in range(steps):
        for _ in range(inner_steps):
            x0, x1 = sample_base(batch_size), sample_target(batch_size)
            opt_u.zero_grad(set_to_none=True)
            loss = maxmin_objective(interpolant, drift, x0, x1, eps)
            loss.backward()
            opt_u.step()
        history.append(float(loss.detach()))
        x0, x1 = sample_base(batch_size), sample_target(batch_size)
        opt_i.zero_grad(set_to_none=True)
        (-maxmin_objective(interpolant, drift, x0, x1, eps)).backward()
        opt_i.step()
        sched_u.step()
        sched_i.step()
    return history


def _sqrtm(S: Tensor) -> Tensor:
    vals, vecs = torch.linalg.eigh(S)
    return (vecs * vals.clamp_min(0).sqrt()[..., None, :]) @ vecs.transpose(-1, -2)


def gaussian_schrodinger_bridge(S0: Tensor, S1: Tensor, eps: float) -> Tensor:
    """Cross-covariance $C = \\mathrm{Cov}(X_0, X_1)$ of the Schrodinger bridge between
    $N(m_0, \\Sigma_0)$ and $N(m_1, \\Sigma_1)$ with reference $\\sqrt{2\\epsilon}\\,W$ (equivalently the
    entropic OT plan for the cost $|x - y|^2$ with regularisation $4\\epsilon$ times the relative
    entropy to $\\rho_0 \\otimes \\rho_1$):

    $$C = \\Sigma_0^{1/2}\\big(\\Sigma_0^{1/2}\\Sigma_1\\Sigma_0^{1/2} + \\epsilon^2 I\\big)^{1/2}\\Sigma_0^{-1/2} - \\epsilon I$$

    (Janati et al. 2020; Mallasto et al. 2022, with $\\sigma^2 = 2\\epsilon$). The means do not
    enter $C$; the bridge's marginal at $t$ is $N((1-t)m_0 + t m_1, \\Sigma_t)$ with
    $\\Sigma_t = (1-t)^2\\Sigma_0 + t^2\\Sigma_1 + t(1-t)(C + C^\\top + 2\\epsilon I)$.
    In 1-D, $C = \\sqrt{\\epsilon^2 + \\sigma_0^2\\sigma_1^2} - \\epsilon$.

    Args:
        S0, S1: ``(d, d)`` symmetric positive definite covariances.
        eps: $\\epsilon > 0$.

    Returns:
        ``(d, d)`` cross-covariance in the inputs' dtype.
    """
    if not (isinstance(eps, (int, float)) and not isinstance(eps, bool) and eps > 0 and math.isfinite(eps)):
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    if S0.dim() != 2 or S0.shape[0] != S0.shape[1] or S1.shape != S0.shape:
        raise ValueError(f"S0 and S1 must be square matrices of one shape, got {tuple(S0.shape)} and {tuple(S1.shape)}")
    eye = torch.eye(S0.shape[0], dtype=S0.dtype, device=S0.device)
    R = _sqrtm(S0)
    R_inv = torch.linalg.inv(R)
    inner = _sqrtm(R @ S1 @ R + eps**2 * eye)
    return R @ inner @ R_inv - eps * eye


def forward_bridge(
    drift: Drift, x0: Tensor, eps: float, steps: int = 200, solver: str = "heun", generator: torch.Generator | None = None
) -> Tensor:
    """Solve $dX = \\hat u(t, X) dt + \\sqrt{2\\epsilon} dW$ from $X_0 = $ ``x0`` to $t = 1$.

    With $\\hat u = b_F$ of an optimised interpolant this is the (learnt) Schrodinger bridge;
    the pairs ``(x0, X_1)`` sample its coupling. The time stepping is
    :func:`~probgen.interpolants.generate` (``method="sde"``, the drift passed as $b$ with a zero score).

    Args:
        drift: the forward drift $\\hat u(t, x)$.
        x0: ``(batch, d)`` draws of $\\rho_0$.
        eps: $\\epsilon \\geq 0$.
        steps: solver steps on $[0, 1]$.
        solver: ``"euler"`` or ``"heun"`` (additive noise: both solve the Ito equation).
        generator: random generator of the noise.

    Returns:
        $X_1$, ``(batch, d)``.
    """
    from probgen.interpolants.generate import generate

    return generate(
        drift, x0, steps=steps, method="sde", score=lambda t, x: torch.zeros_like(x), eps=eps, solver=solver, generator=generator
    )
