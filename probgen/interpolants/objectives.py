"""Quadratic objectives of stochastic interpolants and the conversions between their fields.

Albergo, Boffi & Vanden-Eijnden (2023), Sec. 2-4. Every learnable field is a conditional
expectation given $x_t = x$, hence the unique minimiser of a quadratic loss:

==================  ==========================================  =====================================
field               conditional expectation                     loss (per sample, summed over dims)
==================  ==========================================  =====================================
$b$ (velocity)      $E[\\partial_t x_t]$                          $|\\hat b - \\partial_t x_t|^2$
$v$                 $E[\\partial_t I]$                            $|\\hat v - \\partial_t I|^2$
$s$ (score)         $\\nabla\\log\\rho_t = -E[\\zeta]/\\sigma$       $|\\hat s|^2 + 2\\sigma^{-1}\\zeta\\cdot\\hat s$
$\\eta$ (denoiser)   $E[\\zeta]$                                  $|\\hat\\eta - \\zeta|^2$
==================  ==========================================  =====================================

where the Gaussian noise is $\\zeta = z$ with coefficient $\\sigma = \\gamma$ (two-sided and mirror
interpolants) or $\\zeta = x_0$ with $\\sigma = \\alpha$ (one-sided). These are twice the paper's
quadratic objectives plus constants (the same minimisers; the MSE forms are nonnegative, the
score form is the paper's, whose constant $|\\zeta|^2/\\sigma^2$ would be infinite in expectation
near $\\sigma = 0$).

Antithetic sampling (proposed in the paper) evaluates each loss at $x_t^{\\pm} = I \\pm \\sigma\\zeta$ and
averages; for the score the $1/\\sigma$ terms then cancel to leading order, which removes the
variance blow-up as $\\sigma \\to 0$.

A *fields* callable ``fields(t, x) -> dict[str, Tensor]`` gives the network's outputs by name;
an :class:`Objective` says which names it needs (``outputs``), computes its loss, and turns
the learnt fields into the drift $b$ and (when identifiable) the score $s$ for
:func:`~probgen.interpolants.generate` and :func:`~probgen.interpolants.log_likelihood`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from probgen.interpolants.paths import Interpolant, InterpolantSample, _expand

__all__ = [
    "Objective",
    "VelocityObjective",
    "ScoreObjective",
    "DenoiserObjective",
    "VelocityScoreObjective",
    "VelocityDenoiserObjective",
    "OBJECTIVES",
    "make_objective",
    "velocity_from_v_and_score",
    "score_from_denoiser",
    "denoiser_from_score",
    "velocity_from_denoiser",
    "velocity_from_score",
    "score_from_velocity",
    "noise_coefficient",
    "valid_time_interval",
]

Fields = Callable[[Tensor, Tensor], dict[str, Tensor]]


def _sumsq(x: Tensor) -> Tensor:
    return x.pow(2).flatten(1).sum(-1)


def _dot(x: Tensor, y: Tensor) -> Tensor:
    return (x * y).flatten(1).sum(-1)


# ---------------------------------------------------------------------------------------------
# Conversions (closed forms; t: (batch,), x: (batch, *event))
# ---------------------------------------------------------------------------------------------
def noise_coefficient(interpolant: Interpolant, t: Tensor) -> Tensor:
    """$\\sigma(t)$, the coefficient of the Gaussian noise in $x_t$: $\\alpha$ (one-sided) or $\\gamma$."""
    return interpolant.alpha(t) if interpolant.kind == "one_sided" else interpolant.gamma(t)


def velocity_from_v_and_score(interpolant: Interpolant, t: Tensor, v: Tensor, s: Tensor) -> Tensor:
    """$b = v - \\gamma\\dot\\gamma\\, s$ (two-sided interpolants)."""
    return v - _expand(interpolant.gamma_dgamma(t), v) * s


def score_from_denoiser(interpolant: Interpolant, t: Tensor, eta: Tensor) -> Tensor:
    """$s = -\\eta / \\sigma(t)$ with $\\eta = E[\\zeta | x_t]$ ($\\eta_z$, or $\\eta_0$ one-sided)."""
    return -eta / _expand(noise_coefficient(interpolant, t), eta)


def denoiser_from_score(interpolant: Interpolant, t: Tensor, s: Tensor) -> Tensor:
    """$\\eta = -\\sigma(t)\\, s$."""
    return -_expand(noise_coefficient(interpolant, t), s) * s


def velocity_from_denoiser(interpolant: Interpolant, t: Tensor, x: Tensor, eta: Tensor) -> Tensor:
    """$b$ from the denoiser alone, where the interpolant makes it identifiable.

    One-sided ($x = \\alpha x_0 + \\beta x_1$, $\\eta = \\eta_0$): $\\eta_1 = (x - \\alpha\\eta_0)/\\beta$ and
    $b = \\dot\\alpha\\eta_0 + \\dot\\beta\\eta_1$ (singular at $t = 0$ where $\\beta = 0$).
    Mirror ($x = x_1 + \\gamma z$): $b = \\dot\\gamma\\,\\eta_z$.

    Raises:
        ValueError: for a two-sided interpolant with $\\gamma \\neq 0$ ($b$ also needs $v$).
    """
    if interpolant.kind == "one_sided":
        a, b = _expand(interpolant.alpha(t), x), _expand(interpolant.beta(t), x)
        da, db = _expand(interpolant.dalpha(t), x), _expand(interpolant.dbeta(t), x)
        return da * eta + db * (x - a * eta) / b
    if interpolant.kind == "mirror":
        return _expand(interpolant.dgamma(t), x) * eta
    raise ValueError(
        "velocity_from_denoiser: for a two-sided interpolant with gamma != 0 the velocity is not a function of "
        "the denoiser alone; learn b (objective 'velocity') or v and s ('velocity_score')"
    )


def velocity_from_score(interpolant: Interpolant, t: Tensor, x: Tensor, s: Tensor) -> Tensor:
    """$b$ from the score: one-sided via $\\eta_0 = -\\alpha s$; mirror $b = -\\gamma\\dot\\gamma s$."""
    if interpolant.kind == "mirror":
        return -_expand(interpolant.gamma_dgamma(t), s) * s
    return velocity_from_denoiser(interpolant, t, x, denoiser_from_score(interpolant, t, s))


def score_from_velocity(interpolant: Interpolant, t: Tensor, x: Tensor, b: Tensor) -> Tensor:
    """$s$ from $b$ for a one-sided interpolant (Gaussian base, independent coupling).

    Solving $b = \\dot\\alpha\\eta_0 + \\dot\\beta(x - \\alpha\\eta_0)/\\beta$ for $\\eta_0$:
    $\\eta_0 = (\\beta b - \\dot\\beta x)/(\\dot\\alpha\\beta - \\alpha\\dot\\beta)$ and $s = -\\eta_0/\\alpha$
    (linear path: $s = (t b - x)/(1 - t)$; singular at $t = 1$).

    Raises:
        ValueError: the interpolant is not one-sided.
    """
    if interpolant.kind != "one_sided":
        raise ValueError(
            f"score_from_velocity needs a one-sided interpolant (Gaussian base, x0 = z), got kind={interpolant.kind!r}"
        )
    a, bb = _expand(interpolant.alpha(t), x), _expand(interpolant.beta(t), x)
    da, db = _expand(interpolant.dalpha(t), x), _expand(interpolant.dbeta(t), x)
    eta0 = (bb * b - db * x) / (da * bb - a * db)
    return -eta0 / a


def _wronskian(interpolant: Interpolant) -> Callable[[Tensor], Tensor]:
    """$\\dot\\alpha\\beta - \\alpha\\dot\\beta$, the denominator of :func:`score_from_velocity`."""
    I = interpolant
    return lambda t: I.dalpha(t) * I.beta(t) - I.alpha(t) * I.dbeta(t)


def valid_time_interval(
    interpolant: Interpolant, objective: "Objective", *, score: bool = False, t_eps: float = 1e-3
) -> tuple[float, float]:
    """The times on which an objective's loss, its drift $b$ and (with ``score=True``) its score are finite.

    After SiT's ``check_interval``, but derived rather than tabulated: every coefficient the
    objective divides by (:meth:`Objective.denominators`) is evaluated at the ends of
    ``interpolant.t_bounds``; an end where one vanishes moves inwards by ``t_eps``. E.g. the
    one-sided linear path with the denoiser objective divides by $\\beta(0) = 0$ (so $t \\ge$
    ``t_eps``), and its velocity-derived score divides by $\\alpha(1) = 0$ (so $t \\le 1 -$ ``t_eps``).

    Args:
        interpolant: the interpolant.
        objective: the objective.
        score: also require the score (SDE sampling or the SDE likelihood).
        t_eps: distance kept from a singular end, in ``(0, 0.5)``.

    Returns:
        ``(t_min, t_max)``.

    Raises:
        ValueError: ``t_eps`` outside ``(0, 0.5)``; a denominator that vanishes inside the interval.
    """
    if not 0.0 < t_eps < 0.5:
        raise ValueError(f"t_eps must be in (0, 0.5), got {t_eps!r}")
    lo, hi = interpolant.t_bounds
    ends = torch.tensor([lo, hi, 0.5], dtype=torch.float64)
    for c in objective.denominators(interpolant, score=score):
        value = c(ends).abs()
        if float(value[2]) < 1e-12:
            raise ValueError(
                f"objective {objective.name!r} divides by a coefficient that vanishes at t = 1/2 for {interpolant!r} "
                "(e.g. a score on a two-sided path with gamma = 0): choose a nonzero gamma or another objective"
            )
        if not bool(torch.isfinite(value[0])) or float(value[0]) < 1e-12:
            lo = max(lo, t_eps)
        if not bool(torch.isfinite(value[1])) or float(value[1]) < 1e-12:
            hi = min(hi, 1.0 - t_eps)
    return lo, hi


# ---------------------------------------------------------------------------------------------
# Objectives
# ---------------------------------------------------------------------------------------------
class Objective:
    """A quadratic objective: which fields a network predicts and how they become $b$ and $s$.

    Args:
        antithetic: evaluate at $\\pm\\zeta$ and average (variance reduction).

    Attributes:
        outputs: names of the fields the network must return, in order.
    """

    name: str = ""
    outputs: tuple[str, ...] = ()
    needs_independent_noise: bool = False  # uses x0 as Gaussian noise for one-sided paths

    def __init__(self, antithetic: bool = False) -> None:
        self.antithetic = bool(antithetic)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(antithetic={self.antithetic})"

    # -- the loss ------------------------------------------------------------------------------
    def _draws(self, interpolant, x0, x1, t, z, generator) -> list[InterpolantSample]:
        first = interpolant.sample(x0, x1, t, z=z, generator=generator)
        if not self.antithetic:
            return [first]
        if interpolant.kind == "one_sided":
            return [first, interpolant.sample(-first.z, x1, t)]
        if interpolant.gamma_fn.is_zero:
            raise ValueError("antithetic=True needs Gaussian noise in x_t: a nonzero gamma or a one-sided path")
        return [first, interpolant.sample(x0, x1, t, z=-first.z)]

    def loss(
        self,
        fields: Fields,
        interpolant: Interpolant,
        x0: Tensor | None,
        x1: Tensor,
        t: Tensor,
        z: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Monte Carlo estimate of the objective on a batch.

        Args:
            fields: ``fields(t, x) -> {name: (batch, *event)}`` with at least ``self.outputs``.
            interpolant: the interpolant.
            x0: base samples (None for one-sided: drawn; ignored for mirror).
            x1: data ``(batch, *event)``.
            t: ``(batch,)`` times.
            z: optional latent noise.
            generator: for the noise draws.

        Returns:
            ``(loss, parts)``: the scalar batch mean and a dict of its named parts (detached).
        """
        draws = self._draws(interpolant, x0, x1, t, z, generator)
        if self.antithetic and "s" in self.outputs:
            return self._antithetic_score_loss(fields, interpolant, x0, x1, t, draws)
        parts: dict[str, Tensor] = {}
        total = 0.0
        for d in draws:
            out = fields(d.t, d.xt)
            for name, value in self._per_sample(out, interpolant, x0, x1, d).items():
                parts[name] = parts.get(name, 0.0) + value.mean() / len(draws)
        for value in parts.values():
            total = total + value
        return total, {k: v.detach() for k, v in parts.items()}

    def _per_sample(self, out, interpolant, x0, x1, d: InterpolantSample) -> dict[str, Tensor]:
        raise NotImplementedError

    def _score_terms(self, s_hat: Tensor, interpolant: Interpolant, d: InterpolantSample) -> Tensor:
        sigma = _expand(noise_coefficient(interpolant, d.t), s_hat)
        return _sumsq(s_hat) + 2.0 * _dot(d.z / sigma, s_hat)

    def _antithetic_score_loss(self, fields, interpolant, x0, x1, t, draws):
        # sum over the +/- pair: |s+|^2 + |s-|^2 + (2/sigma) z.(s+ - s-), halved; the 1/sigma
        # terms cancel to leading order in sigma.
        plus, minus = draws
        out_p, out_m = fields(plus.t, plus.xt), fields(minus.t, minus.xt)
        parts: dict[str, Tensor] = {}
        for name, value in self._per_sample(out_p, interpolant, x0, x1, plus).items():
            if name != "s":
                parts[name] = value.mean() / 2
        for name, value in self._per_sample(out_m, interpolant, x0, x1, minus).items():
            if name != "s":
                parts[name] = parts[name] + value.mean() / 2
        sigma = _expand(noise_coefficient(interpolant, t), plus.z)
        sp, sm = out_p["s"], out_m["s"]
        score = 0.5 * (_sumsq(sp) + _sumsq(sm)) + _dot(plus.z / sigma, sp - sm)
        parts["s"] = score.mean()
        total = sum(parts.values())
        return total, {k: v.detach() for k, v in parts.items()}

    # -- from fields to generative drifts --------------------------------------------------
    def velocity(self, fields: Fields, interpolant: Interpolant) -> Callable[[Tensor, Tensor], Tensor]:
        """The drift $b(t, x)$ of the probability flow, built from the learnt fields."""
        raise NotImplementedError

    def score(self, fields: Fields, interpolant: Interpolant) -> Callable[[Tensor, Tensor], Tensor] | None:
        """The score $s(t, x)$ if this objective identifies it (else None)."""
        return None

    # -- where the fields are finite -----------------------------------------------------------
    def _loss_denominators(self, interpolant: Interpolant) -> list[Callable[[Tensor], Tensor]]:
        return []

    def _velocity_denominators(self, interpolant: Interpolant) -> list[Callable[[Tensor], Tensor]]:
        return []

    def _score_denominators(self, interpolant: Interpolant) -> list[Callable[[Tensor], Tensor]]:
        return []

    def denominators(self, interpolant: Interpolant, score: bool = False) -> list[Callable[[Tensor], Tensor]]:
        """The time coefficients this objective divides by in its loss, in $b$ and (``score=True``) in $s$.

        :func:`valid_time_interval` keeps away from the ends where one of them vanishes.
        """
        out = self._loss_denominators(interpolant) + self._velocity_denominators(interpolant)
        return out + (self._score_denominators(interpolant) if score else [])


class VelocityObjective(Objective):
    """Learn $b$ directly: $|\\hat b(t, x_t) - \\partial_t x_t|^2$.

    The score follows from $b$ only for one-sided interpolants (:func:`score_from_velocity`).
    """

    name = "velocity"
    outputs = ("b",)

    def _per_sample(self, out, interpolant, x0, x1, d):
        return {"b": _sumsq(out["b"] - d.dxt)}

    def velocity(self, fields, interpolant):
        return lambda t, x: fields(t, x)["b"]

    def score(self, fields, interpolant):
        if interpolant.kind != "one_sided":
            return None
        return lambda t, x: score_from_velocity(interpolant, t, x, fields(t, x)["b"])

    def _score_denominators(self, interpolant):
        return [interpolant.alpha, _wronskian(interpolant)] if interpolant.kind == "one_sided" else []


class ScoreObjective(Objective):
    """Learn $s$: $|\\hat s|^2 + 2\\sigma^{-1}\\zeta\\cdot\\hat s$ (the paper's score objective).

    $b$ follows for one-sided ($\\eta_0 = -\\alpha s$) and mirror ($b = -\\gamma\\dot\\gamma s$) paths.
    """

    name = "score"
    outputs = ("s",)
    needs_independent_noise = True

    def _per_sample(self, out, interpolant, x0, x1, d):
        return {"s": self._score_terms(out["s"], interpolant, d)}

    def velocity(self, fields, interpolant):
        if interpolant.kind == "two_sided":
            raise ValueError("objective 'score' does not identify b for a two-sided interpolant: use 'velocity_score'")
        return lambda t, x: velocity_from_score(interpolant, t, x, fields(t, x)["s"])

    def score(self, fields, interpolant):
        return lambda t, x: fields(t, x)["s"]

    def _loss_denominators(self, interpolant):
        return [lambda t: noise_coefficient(interpolant, t)]

    def _velocity_denominators(self, interpolant):
        return [interpolant.beta] if interpolant.kind == "one_sided" else []


class DenoiserObjective(Objective):
    """Learn the denoiser $\\eta = E[\\zeta | x_t]$: $|\\hat\\eta - \\zeta|^2$ ($\\eta_z$, or $\\eta_0$
    for one-sided paths); $s = -\\eta/\\sigma$. $b$ follows for one-sided and mirror paths."""

    name = "denoiser"
    outputs = ("eta",)
    needs_independent_noise = True

    def _per_sample(self, out, interpolant, x0, x1, d):
        return {"eta": _sumsq(out["eta"] - d.z)}

    def velocity(self, fields, interpolant):
        if interpolant.kind == "two_sided":
            raise ValueError("objective 'denoiser' does not identify b for a two-sided interpolant: use 'velocity_denoiser'")
        return lambda t, x: velocity_from_denoiser(interpolant, t, x, fields(t, x)["eta"])

    def score(self, fields, interpolant):
        return lambda t, x: score_from_denoiser(interpolant, t, fields(t, x)["eta"])

    def _velocity_denominators(self, interpolant):
        return [interpolant.beta] if interpolant.kind == "one_sided" else []

    def _score_denominators(self, interpolant):
        return [lambda t: noise_coefficient(interpolant, t)]


class VelocityScoreObjective(Objective):
    """Learn $v = E[\\partial_t I]$ and $s$ separately; $b = v - \\gamma\\dot\\gamma s$.

    Splitting $b$ this way removes the $\\dot\\gamma z$ term (singular at the ends for the
    Brownian $\\gamma$) from the regression target.
    """

    name = "velocity_score"
    outputs = ("v", "s")
    needs_independent_noise = True

    def _per_sample(self, out, interpolant, x0, x1, d):
        x0_eff = d.z if interpolant.kind == "one_sided" else (x1 if interpolant.kind == "mirror" else x0)
        target = interpolant.mean_derivative(x0_eff, x1, d.t)
        return {"v": _sumsq(out["v"] - target), "s": self._score_terms(out["s"], interpolant, d)}

    def velocity(self, fields, interpolant):
        if interpolant.kind == "one_sided":  # gamma = 0 so b = v
            return lambda t, x: fields(t, x)["v"]

        def b(t, x):
            out = fields(t, x)
            return velocity_from_v_and_score(interpolant, t, out["v"], out["s"])

        return b

    def score(self, fields, interpolant):
        return lambda t, x: fields(t, x)["s"]

    def _loss_denominators(self, interpolant):
        return [lambda t: noise_coefficient(interpolant, t)]


class VelocityDenoiserObjective(Objective):
    """Learn $b$ and $\\eta$ together (the paper's practical choice for SDE sampling):
    $|\\hat b - \\partial_t x_t|^2 + |\\hat\\eta - \\zeta|^2$, with $s = -\\eta/\\sigma$."""

    name = "velocity_denoiser"
    outputs = ("b", "eta")
    needs_independent_noise = True

    def _per_sample(self, out, interpolant, x0, x1, d):
        return {"b": _sumsq(out["b"] - d.dxt), "eta": _sumsq(out["eta"] - d.z)}

    def velocity(self, fields, interpolant):
        return lambda t, x: fields(t, x)["b"]

    def score(self, fields, interpolant):
        return lambda t, x: score_from_denoiser(interpolant, t, fields(t, x)["eta"])

    def _score_denominators(self, interpolant):
        return [lambda t: noise_coefficient(interpolant, t)]


OBJECTIVES: dict[str, type[Objective]] = {
    o.name: o for o in (VelocityObjective, ScoreObjective, DenoiserObjective, VelocityScoreObjective, VelocityDenoiserObjective)
}


def make_objective(name: str | Objective, antithetic: bool = False) -> Objective:
    """Resolve an objective name (``OBJECTIVES``) to an object; objects pass through."""
    if isinstance(name, Objective):
        return name
    if name not in OBJECTIVES:
        raise ValueError(f"objective must be one of {sorted(OBJECTIVES)}, got {name!r}")
    return OBJECTIVES[name](antithetic=antithetic)
