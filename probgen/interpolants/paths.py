"""Interpolant coefficients and the :class:`Interpolant` itself.

Albergo, Boffi & Vanden-Eijnden (2023), "Stochastic Interpolants: A Unifying Framework for
Flows and Diffusions" (arXiv:2303.08797), Definition 2.1:

$$x_t = I(t, x_0, x_1) + \\gamma(t) z = \\alpha(t) x_0 + \\beta(t) x_1 + \\gamma(t) z,
\\qquad z \\sim N(0, I) \\perp (x_0, x_1),$$

with $\\alpha(0) = \\beta(1) = 1$, $\\alpha(1) = \\beta(0) = 0$ and $\\gamma(0) = \\gamma(1) = 0$.
A :class:`Path` gives $(\\alpha, \\beta)$ and their time derivatives in closed form; a
:class:`Gamma` gives $\\gamma$, $\\dot\\gamma$ and the product $\\gamma\\dot\\gamma$ (finite at
$t = 0, 1$ for every built-in choice even where $\\dot\\gamma$ is not). Names are resolved to
objects once, in :class:`Interpolant`'s constructor; user callables are accepted through
:class:`CustomPath` and :class:`CustomGamma`.

Three kinds of interpolant (``Path.kind``):

- ``"two_sided"``: any base $\\rho_0$, any coupling of $(x_0, x_1)$ (Sec. 2).
- ``"one_sided"``: Gaussian base, $x_0 = z$ and $\\gamma = 0$: $x_t = \\alpha z + \\beta x_1$
  (the one-sided interpolants of Sec. 4); includes the VP / score-based-diffusion path.
- ``"mirror"``: $x_0 = x_1$, $x_t = x_1 + \\gamma(t) z$ (the mirror interpolants of Sec. 4).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "Path",
    "LinearPath",
    "TrigonometricPath",
    "CosSinPath",
    "EncoderDecoderPath",
    "VPPath",
    "MirrorPath",
    "CustomPath",
    "Gamma",
    "ZeroGamma",
    "BrownianGamma",
    "Sin2Gamma",
    "SigmoidGamma",
    "QuadraticGamma",
    "CustomGamma",
    "Interpolant",
    "InterpolantSample",
    "PATHS",
    "GAMMAS",
]

KINDS = ("two_sided", "one_sided", "mirror")


def _autograd_derivative(fn: Callable[[Tensor], Tensor], t: Tensor) -> Tensor:
    """d fn / dt elementwise by autograd (used only for user callables without a derivative)."""
    with torch.enable_grad():
        tt = t.detach().requires_grad_(True)
        (d,) = torch.autograd.grad(fn(tt).sum(), tt)
    return d


# ---------------------------------------------------------------------------------------------
# Paths: alpha(t), beta(t)
# ---------------------------------------------------------------------------------------------
class Path:
    """The pair $(\\alpha, \\beta)$ of Definition 2.1 with closed-form derivatives.

    Subclasses implement ``alpha``, ``beta``, ``dalpha``, ``dbeta`` on a tensor ``t`` of any shape
    (elementwise) and set ``kind``. ``t_bounds`` is the closed interval on which the
    coefficients and their derivatives are finite.
    """

    kind: str = "two_sided"
    t_bounds: tuple[float, float] = (0.0, 1.0)

    def alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def beta(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def dalpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def dbeta(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def bind(self, gamma: "Gamma") -> "Path":
        """The path to use beside ``gamma`` (itself, unless the coefficients depend on $\\gamma$)."""
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LinearPath(Path):
    """$\\alpha = 1 - t$, $\\beta = t$ ("linear"; with $\\gamma = 0$ and a Gaussian base this
    is flow matching / rectified flow).

    Args:
        one_sided: if True the base is $N(0, I)$ and $x_0$ plays the part of $z$.
    """

    def __init__(self, one_sided: bool = False) -> None:
        self.kind = "one_sided" if one_sided else "two_sided"

    def alpha(self, t):
        return 1.0 - t

    def beta(self, t):
        return t

    def dalpha(self, t):
        return torch.full_like(t, -1.0)

    def dbeta(self, t):
        return torch.ones_like(t)

    def __repr__(self):
        return f"LinearPath(one_sided={self.kind == 'one_sided'})"


class TrigonometricPath(Path):
    """The paper's trigonometric interpolant (its trigonometric example of a spatially linear interpolant): $\\alpha = \\sqrt{1 - \\gamma^2}\\cos(\\pi t / 2)$,
    $\\beta = \\sqrt{1 - \\gamma^2}\\sin(\\pi t / 2)$, so $\\alpha^2 + \\beta^2 + \\gamma^2 = 1$: with
    independent unit-variance $x_0$, $x_1$, $z$ the variance of $x_t$ is 1 at every $t$.

    The factor needs $\\gamma$: :class:`Interpolant` binds its $\\gamma$ (:meth:`bind`), which must
    stay below 1 on $[0, 1]$. Unbound (or with $\\gamma = 0$) the path is $(\\cos, \\sin)$.
    With $r = \\sqrt{1 - \\gamma^2}$, $\\dot r = -\\gamma\\dot\\gamma / r$ (finite at the ends).

    Args:
        one_sided: if True the base is $N(0, I)$ and $x_0$ plays the part of $z$ (then $\\gamma = 0$).
        gamma: the :class:`Gamma` of the interpolant, or None.

    Raises:
        ValueError: $\\max_t \\gamma(t) \\geq 1$.
    """

    def __init__(self, one_sided: bool = False, gamma: Gamma | None = None) -> None:
        self.kind = "one_sided" if one_sided else "two_sided"
        if gamma is not None and not isinstance(gamma, Gamma):
            raise TypeError(f"gamma must be a Gamma or None, got {type(gamma).__name__}")
        if gamma is not None and not gamma.is_zero:
            grid = torch.linspace(0.0, 1.0, 2001, dtype=torch.float64)
            top = float(gamma.gamma(grid).max())
            if not top < 1.0:
                raise ValueError(
                    f"the trigonometric path sqrt(1 - gamma^2) (cos, sin) needs gamma(t) < 1 on [0, 1], got max gamma = {top:.4g} "
                    f"for {gamma!r}: lower gamma_scale, or use path='cos_sin' (no sqrt(1 - gamma^2) factor)"
                )
        self.gamma_fn = None if gamma is None or gamma.is_zero else gamma

    def bind(self, gamma: Gamma) -> "TrigonometricPath":
        return TrigonometricPath(one_sided=self.kind == "one_sided", gamma=gamma)

    def _r(self, t):
        if self.gamma_fn is None:
            return torch.ones_like(t)
        return torch.sqrt(1.0 - self.gamma_fn.gamma(t) ** 2)

    def _dr(self, t):
        if self.gamma_fn is None:
            return torch.zeros_like(t)
        return -self.gamma_fn.gamma_dgamma(t) / self._r(t)

    def alpha(self, t):
        return self._r(t) * torch.cos(0.5 * math.pi * t)

    def beta(self, t):
        return self._r(t) * torch.sin(0.5 * math.pi * t)

    def dalpha(self, t):
        return self._dr(t) * torch.cos(0.5 * math.pi * t) - 0.5 * math.pi * self._r(t) * torch.sin(0.5 * math.pi * t)

    def dbeta(self, t):
        return self._dr(t) * torch.sin(0.5 * math.pi * t) + 0.5 * math.pi * self._r(t) * torch.cos(0.5 * math.pi * t)

    def __repr__(self):
        return f"TrigonometricPath(one_sided={self.kind == 'one_sided'}, gamma={self.gamma_fn!r})"


class CosSinPath(Path):
    """$\\alpha = \\cos(\\pi t / 2)$, $\\beta = \\sin(\\pi t / 2)$ whatever $\\gamma$ is (``"cos_sin"``;
    probgen's ``"trig"`` before it became the paper's :class:`TrigonometricPath`). Variance
    preserving only when $\\gamma = 0$.

    Args:
        one_sided: if True the base is $N(0, I)$ and $x_0$ plays the part of $z$.
    """

    def __init__(self, one_sided: bool = False) -> None:
        self.kind = "one_sided" if one_sided else "two_sided"

    def alpha(self, t):
        return torch.cos(0.5 * math.pi * t)

    def beta(self, t):
        return torch.sin(0.5 * math.pi * t)

    def dalpha(self, t):
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * t)

    def dbeta(self, t):
        return 0.5 * math.pi * torch.cos(0.5 * math.pi * t)

    def __repr__(self):
        return f"CosSinPath(one_sided={self.kind == 'one_sided'})"


class EncoderDecoderPath(Path):
    """Encoder-decoder path (paper, Sec. 4): $\\alpha = \\cos^2(\\pi t) 1_{t < 1/2}$,
    $\\beta = \\cos^2(\\pi t) 1_{t > 1/2}$, so $x_{1/2} = \\gamma(1/2) z$: $x_0$ is encoded into noise
    and decoded into $x_1$. Pair it with a $\\gamma$ that is positive at $t = 1/2$, e.g.
    ``"sin2"`` ($\\sin^2(\\pi t)$, the paper's choice). $\\alpha, \\beta$ are $C^1$ at $1/2$.
    """

    def alpha(self, t):
        return torch.where(t < 0.5, torch.cos(math.pi * t) ** 2, torch.zeros_like(t))

    def beta(self, t):
        return torch.where(t > 0.5, torch.cos(math.pi * t) ** 2, torch.zeros_like(t))

    def dalpha(self, t):
        return torch.where(t < 0.5, -math.pi * torch.sin(2 * math.pi * t), torch.zeros_like(t))

    def dbeta(self, t):
        return torch.where(t > 0.5, -math.pi * torch.sin(2 * math.pi * t), torch.zeros_like(t))


class VPPath(Path):
    """One-sided variance-preserving path of score-based diffusion (paper, Sec. 5, "score-based diffusion").

    With $u = 1 - t$ and the linear noise schedule $\\beta(r) = b_{min} + r (b_{max} - b_{min})$,
    $a(t) = \\exp(-\\tfrac12 \\int_0^u \\beta(r) dr)$, the path is $\\alpha = \\sqrt{1 - a^2}$ (on
    the noise $x_0 = z$), $\\beta = a$ (on the data). $\\alpha(0) = \\sqrt{1 - e^{-(b_{min} +
    b_{max})/2}}$ is close to but not exactly 1, as in diffusion models; $\\dot\\alpha$ is singular
    at $t = 1$, so ``t_bounds`` stops at ``1 - t_eps``.

    Args:
        beta_min: $b_{min} > 0$.
        beta_max: $b_{max} \\geq b_{min}$.
        t_eps: distance from $t = 1$ where training and solvers stop.
    """

    kind = "one_sided"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_eps: float = 1e-3) -> None:
        if not 0 < beta_min <= beta_max:
            raise ValueError(f"VPPath needs 0 < beta_min <= beta_max, got beta_min={beta_min}, beta_max={beta_max}")
        if not 0 < t_eps < 0.5:
            raise ValueError(f"t_eps must be in (0, 0.5), got {t_eps}")
        self.beta_min, self.beta_max, self.t_eps = float(beta_min), float(beta_max), float(t_eps)
        self.t_bounds = (0.0, 1.0 - self.t_eps)

    def _log_a2(self, t):  # log a(t)^2 = -int_0^u beta(r) dr
        u = 1.0 - t
        return -(self.beta_min * u + 0.5 * (self.beta_max - self.beta_min) * u**2)

    def _da_over_a(self, t):
        u = 1.0 - t
        return 0.5 * (self.beta_min + (self.beta_max - self.beta_min) * u)

    def alpha(self, t):
        return torch.sqrt(-torch.expm1(self._log_a2(t)))

    def beta(self, t):
        return torch.exp(0.5 * self._log_a2(t))

    def dalpha(self, t):
        a2 = torch.exp(self._log_a2(t))
        return -a2 * self._da_over_a(t) / torch.sqrt(-torch.expm1(self._log_a2(t)))

    def dbeta(self, t):
        return self.beta(t) * self._da_over_a(t)

    def __repr__(self):
        return f"VPPath(beta_min={self.beta_min}, beta_max={self.beta_max}, t_eps={self.t_eps})"


class MirrorPath(Path):
    """Mirror interpolant (paper, Sec. 4): $x_0 = x_1$, so $x_t = x_1 + \\gamma(t) z$ (here
    $\\alpha = 0$, $\\beta = 1$ and the ``x0`` argument of :meth:`Interpolant.sample` is ignored).
    The generative process maps $\\rho_1$ to itself through noise; pair with a nonzero $\\gamma$."""

    kind = "mirror"

    def alpha(self, t):
        return torch.zeros_like(t)

    def beta(self, t):
        return torch.ones_like(t)

    def dalpha(self, t):
        return torch.zeros_like(t)

    def dbeta(self, t):
        return torch.zeros_like(t)


class CustomPath(Path):
    """A path from user callables; derivatives by autograd when not given.

    Args:
        alpha, beta: callables ``t -> Tensor`` (elementwise) with $\\alpha(0)=\\beta(1)=1$,
            $\\alpha(1)=\\beta(0)=0$ (checked).
        dalpha, dbeta: their derivatives, or None for autograd.
        kind: ``"two_sided"``, ``"one_sided"`` or ``"mirror"``.
    """

    def __init__(self, alpha, beta, dalpha=None, dbeta=None, kind: str = "two_sided") -> None:
        for name, fn in (("alpha", alpha), ("beta", beta), ("dalpha", dalpha), ("dbeta", dbeta)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable or None, got {type(fn).__name__}")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.kind = kind
        self._alpha, self._beta, self._dalpha, self._dbeta = alpha, beta, dalpha, dbeta
        ends = torch.tensor([0.0, 1.0], dtype=torch.float64)
        a, b = alpha(ends), beta(ends)
        if kind != "mirror" and not (
            torch.allclose(a, torch.tensor([1.0, 0.0], dtype=a.dtype), atol=1e-6)
            and torch.allclose(b, torch.tensor([0.0, 1.0], dtype=b.dtype), atol=1e-6)
        ):
            raise ValueError(
                f"custom path needs alpha(0)=1, alpha(1)=0, beta(0)=0, beta(1)=1; got alpha={a.tolist()}, beta={b.tolist()}"
            )

    def alpha(self, t):
        return self._alpha(t)

    def beta(self, t):
        return self._beta(t)

    def dalpha(self, t):
        return self._dalpha(t) if self._dalpha is not None else _autograd_derivative(self._alpha, t)

    def dbeta(self, t):
        return self._dbeta(t) if self._dbeta is not None else _autograd_derivative(self._beta, t)


# ---------------------------------------------------------------------------------------------
# Latent noise: gamma(t)
# ---------------------------------------------------------------------------------------------
class Gamma:
    """Latent-noise coefficient $\\gamma(t) \\ge 0$ with $\\gamma(0) = \\gamma(1) = 0$.

    Every built-in $\\gamma$ takes ``scale`` $a$ and is $a$ times the unit shape. Subclasses
    implement ``_gamma``, ``_dgamma`` and ``_gamma_dgamma`` for $a = 1$; the last must be finite
    on $[0, 1]$ (it is what enters $b = v - \\gamma\\dot\\gamma s$).
    """

    t_bounds: tuple[float, float] = (0.0, 1.0)
    is_zero: bool = False

    def __init__(self, scale: float = 1.0) -> None:
        if not (isinstance(scale, (int, float)) and scale >= 0 and math.isfinite(scale)):
            raise ValueError(f"gamma scale must be a finite number >= 0, got {scale!r}")
        self.scale = float(scale)
        if self.scale == 0.0:
            self.is_zero = True

    def gamma(self, t: Tensor) -> Tensor:
        return self.scale * self._gamma(t)

    def dgamma(self, t: Tensor) -> Tensor:
        return self.scale * self._dgamma(t)

    def gamma_dgamma(self, t: Tensor) -> Tensor:
        return self.scale**2 * self._gamma_dgamma(t)

    def _gamma(self, t):
        raise NotImplementedError

    def _dgamma(self, t):
        raise NotImplementedError

    def _gamma_dgamma(self, t):
        return self._gamma(t) * self._dgamma(t)

    def __repr__(self):
        return f"{type(self).__name__}(scale={self.scale})"


class ZeroGamma(Gamma):
    """$\\gamma = 0$: deterministic interpolant (flow matching / rectified flow when the base is Gaussian)."""

    is_zero = True

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__(scale)
        self.is_zero = True

    def _gamma(self, t):
        return torch.zeros_like(t)

    def _dgamma(self, t):
        return torch.zeros_like(t)

    def _gamma_dgamma(self, t):
        return torch.zeros_like(t)


class BrownianGamma(Gamma):
    """$\\gamma = a\\sqrt{t(1-t)}$ (the Brownian-bridge choice). $\\dot\\gamma =
    a(1-2t)/(2\\sqrt{t(1-t)})$ is singular at both ends; $\\gamma\\dot\\gamma = a^2(1-2t)/2$ is not.
    ``t_bounds`` keeps training and solvers ``t_eps`` away from the singularities."""

    def __init__(self, scale: float = 1.0, t_eps: float = 1e-3) -> None:
        super().__init__(scale)
        if not 0 < t_eps < 0.5:
            raise ValueError(f"t_eps must be in (0, 0.5), got {t_eps}")
        self.t_bounds = (float(t_eps), 1.0 - float(t_eps))

    def _gamma(self, t):
        return torch.sqrt(t * (1.0 - t))

    def _dgamma(self, t):
        return (1.0 - 2.0 * t) / (2.0 * torch.sqrt(t * (1.0 - t)))

    def _gamma_dgamma(self, t):
        return 0.5 * (1.0 - 2.0 * t)


class Sin2Gamma(Gamma):
    """$\\gamma = a\\sin^2(\\pi t)$, smooth at both ends (the encoder-decoder choice)."""

    def _gamma(self, t):
        return torch.sin(math.pi * t) ** 2

    def _dgamma(self, t):
        return math.pi * torch.sin(2.0 * math.pi * t)

    def _gamma_dgamma(self, t):
        return math.pi * torch.sin(math.pi * t) ** 2 * torch.sin(2.0 * math.pi * t)


class SigmoidGamma(Gamma):
    """Sigmoid-type bump: $\\gamma = a[\\sigma(f(t - \\tfrac12) + 1) - \\sigma(f(t - \\tfrac12) - 1) - c]$
    with $c$ its value at $t = 0$ (so $\\gamma(0) = \\gamma(1) = 0$); flat in the middle, steep at
    the ends, smooth everywhere. $f$ is the sharpness (10 by default)."""

    def __init__(self, scale: float = 1.0, sharpness: float = 10.0) -> None:
        super().__init__(scale)
        if not sharpness > 0:
            raise ValueError(f"sharpness must be > 0, got {sharpness}")
        self.sharpness = float(sharpness)
        f = self.sharpness
        sig = lambda v: 1.0 / (1.0 + math.exp(-v))  # noqa: E731
        self._offset = sig(-f / 2 + 1) - sig(-f / 2 - 1)

    def _gamma(self, t):
        u = self.sharpness * (t - 0.5)
        return torch.sigmoid(u + 1.0) - torch.sigmoid(u - 1.0) - self._offset

    def _dgamma(self, t):
        u = self.sharpness * (t - 0.5)
        sp, sm = torch.sigmoid(u + 1.0), torch.sigmoid(u - 1.0)
        return self.sharpness * (sp * (1 - sp) - sm * (1 - sm))

    def __repr__(self):
        return f"SigmoidGamma(scale={self.scale}, sharpness={self.sharpness})"


class QuadraticGamma(Gamma):
    """$\\gamma = a\\,t(1 - t)$ (the paper's smooth alternative to $\\sqrt{t(1-t)}$): $\\dot\\gamma = a(1 - 2t)$
    is finite at both ends, so no ``t_eps`` is needed."""

    def _gamma(self, t):
        return t * (1.0 - t)

    def _dgamma(self, t):
        return 1.0 - 2.0 * t


class CustomGamma(Gamma):
    """A $\\gamma$ from user callables; derivative by autograd when not given.

    Args:
        gamma: callable ``t -> Tensor`` with $\\gamma(0) = \\gamma(1) = 0$ (checked).
        dgamma: its derivative, or None for autograd.
        gamma_dgamma: $\\gamma\\dot\\gamma$ in a form stable at the ends, or None for the product.
        t_bounds: interval on which $\\dot\\gamma$ is finite.
    """

    def __init__(self, gamma, dgamma=None, gamma_dgamma=None, t_bounds=(0.0, 1.0)) -> None:
        super().__init__(1.0)
        for name, fn in (("gamma", gamma), ("dgamma", dgamma), ("gamma_dgamma", gamma_dgamma)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable or None, got {type(fn).__name__}")
        ends = gamma(torch.tensor([0.0, 1.0], dtype=torch.float64))
        if ends.abs().max() > 1e-6:
            raise ValueError(f"custom gamma needs gamma(0) = gamma(1) = 0, got {ends.tolist()}")
        self._g, self._dg, self._gdg = gamma, dgamma, gamma_dgamma
        self.t_bounds = (float(t_bounds[0]), float(t_bounds[1]))
        self.is_zero = False

    def _gamma(self, t):
        return self._g(t)

    def _dgamma(self, t):
        return self._dg(t) if self._dg is not None else _autograd_derivative(self._g, t)

    def _gamma_dgamma(self, t):
        return self._gdg(t) if self._gdg is not None else self._gamma(t) * self._dgamma(t)


PATHS: dict[str, Callable[[], Path]] = {
    "linear": LinearPath,
    "trig": TrigonometricPath,
    "trigonometric": TrigonometricPath,
    "cos_sin": CosSinPath,
    "encoder_decoder": EncoderDecoderPath,
    "vp": VPPath,
    "one_sided_linear": lambda: LinearPath(one_sided=True),
    "one_sided_trig": lambda: TrigonometricPath(one_sided=True),
    "mirror": MirrorPath,
}

GAMMAS: dict[str, Callable[..., Gamma]] = {
    "zero": ZeroGamma,
    "brownian": BrownianGamma,
    "sin2": Sin2Gamma,
    "sigmoid": SigmoidGamma,
    "quadratic": QuadraticGamma,
}


# ---------------------------------------------------------------------------------------------
# The interpolant
# ---------------------------------------------------------------------------------------------
@dataclass
class InterpolantSample:
    """One draw of the interpolant at times ``t``.

    Attributes:
        xt: $x_t$, ``(batch, *event)``.
        dxt: $\\partial_t x_t = \\dot\\alpha x_0 + \\dot\\beta x_1 + \\dot\\gamma z$, the regression
            target of the velocity $b$, ``(batch, *event)``.
        t: ``(batch,)``.
        z: the latent noise used, ``(batch, *event)`` (for one-sided paths, $x_0$ itself).
    """

    xt: Tensor
    dxt: Tensor
    t: Tensor
    z: Tensor


def _expand(c: Tensor, like: Tensor) -> Tensor:
    """Reshape per-sample coefficients ``(batch,)`` to broadcast against ``(batch, *event)``."""
    return c.reshape(c.shape + (1,) * (like.dim() - c.dim()))


class Interpolant:
    """The stochastic interpolant $x_t = \\alpha(t) x_0 + \\beta(t) x_1 + \\gamma(t) z$ (Definition 2.1).

    Args:
        path: a name in ``PATHS`` (``"linear"``, ``"trig"``, ``"cos_sin"``, ``"encoder_decoder"``,
            ``"vp"``, ``"one_sided_linear"``, ``"one_sided_trig"``, ``"mirror"``) or a :class:`Path`.
        gamma: a name in ``GAMMAS`` (``"zero"``, ``"brownian"``, ``"quadratic"``, ``"sin2"``,
            ``"sigmoid"``) or a :class:`Gamma`.
        gamma_scale: the factor $a$ in $a\\,\\gamma(t)$ when ``gamma`` is a name.

    Raises:
        ValueError: unknown names; a one-sided path with nonzero $\\gamma$; a mirror or
            encoder-decoder path with $\\gamma = 0$; ``"trig"`` with $\\max\\gamma \\ge 1$.
    """

    def __init__(self, path: str | Path = "linear", gamma: str | Gamma = "brownian", gamma_scale: float = 1.0) -> None:
        if isinstance(path, str):
            if path not in PATHS:
                raise ValueError(f"path must be one of {sorted(PATHS)} or a Path, got {path!r}")
            path = PATHS[path]()
        elif not isinstance(path, Path):
            raise TypeError(f"path must be a str or a Path, got {type(path).__name__}")
        if isinstance(gamma, str):
            if gamma not in GAMMAS:
                raise ValueError(f"gamma must be one of {sorted(GAMMAS)} or a Gamma, got {gamma!r}")
            gamma = GAMMAS[gamma](scale=gamma_scale)
        elif not isinstance(gamma, Gamma):
            raise TypeError(f"gamma must be a str or a Gamma, got {type(gamma).__name__}")
        path = path.bind(gamma)
        if path.kind == "one_sided" and not gamma.is_zero:
            raise ValueError(
                f"a one-sided path ({path!r}) already uses x0 = z as its noise: use gamma='zero', got {gamma!r}"
            )
        if path.kind == "mirror" and gamma.is_zero:
            raise ValueError("the mirror path x_t = x1 + gamma(t) z needs a nonzero gamma, got gamma = 0")
        if isinstance(path, EncoderDecoderPath) and float(gamma.gamma(torch.tensor(0.5))) <= 0:
            raise ValueError("the encoder-decoder path needs gamma(1/2) > 0 (e.g. gamma='sin2')")
        self.path, self.gamma_fn = path, gamma
        self.kind = path.kind
        lo = max(path.t_bounds[0], gamma.t_bounds[0])
        hi = min(path.t_bounds[1], gamma.t_bounds[1])
        self.t_bounds = (lo, hi)

    def __repr__(self) -> str:
        return f"Interpolant(path={self.path!r}, gamma={self.gamma_fn!r})"

    # coefficient shortcuts -------------------------------------------------------------------
    def alpha(self, t: Tensor) -> Tensor:
        return self.path.alpha(t)

    def beta(self, t: Tensor) -> Tensor:
        return self.path.beta(t)

    def gamma(self, t: Tensor) -> Tensor:
        return self.gamma_fn.gamma(t)

    def dalpha(self, t: Tensor) -> Tensor:
        return self.path.dalpha(t)

    def dbeta(self, t: Tensor) -> Tensor:
        return self.path.dbeta(t)

    def dgamma(self, t: Tensor) -> Tensor:
        return self.gamma_fn.dgamma(t)

    def gamma_dgamma(self, t: Tensor) -> Tensor:
        return self.gamma_fn.gamma_dgamma(t)

    # sampling ----------------------------------------------------------------------------
    def sample(
        self, x0: Tensor | None, x1: Tensor, t: Tensor, z: Tensor | None = None, generator: torch.Generator | None = None
    ) -> InterpolantSample:
        """Draw $x_t$ and $\\partial_t x_t$ (Definition 2.1 and its time derivative).

        Args:
            x0: base samples ``(batch, *event)``; for a one-sided path it is the Gaussian noise
                (drawn if None); for a mirror path it is ignored ($x_0 = x_1$).
            x1: target samples ``(batch, *event)``.
            t: times ``(batch,)`` in ``[0, 1]``.
            z: latent noise ``(batch, *event)``; drawn from $N(0, I)$ if None (not used when
                $\\gamma = 0$; pass ``-z`` for the antithetic partner).
            generator: for the draws of ``z`` / ``x0``.

        Returns:
            :class:`InterpolantSample` ``(xt, dxt, t, z)``.

        Raises:
            ValueError: ``t`` not of shape ``(batch,)`` or outside ``[0, 1]`` (or NaN; on an accelerator
                an asynchronous device assert instead, to avoid a host sync per call); shape mismatches.
        """
        if not isinstance(t, Tensor) or t.dim() != 1 or t.shape[0] != x1.shape[0]:
            raise ValueError(f"t must have shape (batch,) = ({x1.shape[0]},), got {tuple(getattr(t, 'shape', ()))}")
        t = t.to(dtype=x1.dtype, device=x1.device)
        inside = (t >= 0) & (t <= 1)  # also catches NaN
        if t.device.type != "cpu":  # no host sync per training step on an accelerator: an asynchronous device assert
            torch._assert_async(inside.all(), "t must lie in [0, 1]")
        elif not bool(inside.all()):
            bad = t[~inside]
            raise ValueError(f"t must lie in [0, 1], got {bad.numel()} value(s) outside it, e.g. t = {float(bad[0])}")
        if self.kind == "one_sided":
            if x0 is None:
                x0 = torch.randn(x1.shape, generator=generator, dtype=x1.dtype, device=x1.device)
            z = x0
        elif self.kind == "mirror":
            x0 = x1
        elif x0 is None:
            raise ValueError("x0 is required for a two-sided interpolant")
        if x0.shape != x1.shape:
            raise ValueError(f"x0 and x1 must have the same shape, got {tuple(x0.shape)} and {tuple(x1.shape)}")
        if z is None:
            if self.gamma_fn.is_zero:
                z = torch.zeros_like(x1)
            else:
                z = torch.randn(x1.shape, generator=generator, dtype=x1.dtype, device=x1.device)
        elif z.shape != x1.shape:
            raise ValueError(f"z must have shape {tuple(x1.shape)}, got {tuple(z.shape)}")
        a, b = _expand(self.alpha(t), x1), _expand(self.beta(t), x1)
        da, db = _expand(self.dalpha(t), x1), _expand(self.dbeta(t), x1)
        if self.kind == "one_sided" or self.gamma_fn.is_zero:
            xt = a * x0 + b * x1
            dxt = da * x0 + db * x1
        elif self.kind == "mirror":
            g, dg = _expand(self.gamma(t), x1), _expand(self.dgamma(t), x1)
            xt = x1 + g * z
            dxt = dg * z
        else:
            g, dg = _expand(self.gamma(t), x1), _expand(self.dgamma(t), x1)
            xt = a * x0 + b * x1 + g * z
            dxt = da * x0 + db * x1 + dg * z
        return InterpolantSample(xt=xt, dxt=dxt, t=t, z=z)

    def mean_derivative(self, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        """$\\partial_t I = \\dot\\alpha x_0 + \\dot\\beta x_1$, the target of $v$."""
        if self.kind == "mirror":
            return torch.zeros_like(x1)
        return _expand(self.dalpha(t), x1) * x0 + _expand(self.dbeta(t), x1) * x1
