r"""The torchsde SDE protocol as the fast path reads it: terms, renaming, ``logqp``, checks.

* :class:`_SDETerms` resolves an SDE's callables once (``f_and_g``, ``g``) and picks the
  noise-type specific products ``diffuse(y, g, dW) = y + g dW`` and ``prod(g, dW) = g dW``,
  so no solver branches on the noise type inside the loop;
* :class:`_RenamedSDE` is torchsde's ``names=`` argument;
* :class:`_LogqpSDE` augments the state with the latent-SDE KL integral (``logqp=True``);
* :func:`_check_sde` / :func:`_check_sde_shapes` validate an SDE before the loop.

References:
    X. Li, T.-K. L. Wong, R. T. Q. Chen and D. Duvenaud, "Scalable gradients for stochastic
    differential equations", AISTATS 2020: the latent-SDE KL term (``logqp``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

NOISE_TYPES = ("diagonal", "additive", "scalar", "general")
SDE_TYPES = ("ito", "stratonovich")


# ---------------------------------------------------------------------------------------------
# Noise-type specific products, chosen once per solve.
#   diffuse(y, g, dW) = y + g dW        prod(g, dW) = g dW        vec(g) = g as (batch, d) (m == 1)
# diagonal: g (batch, d), dW (batch, d); scalar: g (batch, d, 1), dW (batch, 1);
# additive / general: g (batch, d, m), dW (batch, m).
# ---------------------------------------------------------------------------------------------


def _diffuse_diagonal(y: Tensor, g: Tensor, dW: Tensor) -> Tensor:
    return torch.addcmul(y, g, dW)


def _diffuse_scalar(y: Tensor, g: Tensor, dW: Tensor) -> Tensor:
    return torch.addcmul(y, g.squeeze(-1), dW)


def _diffuse_matrix(y: Tensor, g: Tensor, dW: Tensor) -> Tensor:
    return torch.baddbmm(y.unsqueeze(-1), g, dW.unsqueeze(-1)).squeeze(-1)


def _prod_diagonal(g: Tensor, dW: Tensor) -> Tensor:
    return g * dW


def _prod_scalar(g: Tensor, dW: Tensor) -> Tensor:
    return g.squeeze(-1) * dW


def _prod_matrix(g: Tensor, dW: Tensor) -> Tensor:
    return torch.bmm(g, dW.unsqueeze(-1)).squeeze(-1)


_DIFFUSE = {
    "diagonal": _diffuse_diagonal,
    "scalar": _diffuse_scalar,
    "additive": _diffuse_matrix,
    "general": _diffuse_matrix,
}
_PROD = {
    "diagonal": _prod_diagonal,
    "scalar": _prod_scalar,
    "additive": _prod_matrix,
    "general": _prod_matrix,
}


class _SDETerms:
    """The SDE's callables, resolved once: ``f_and_g``, ``g`` and the noise-type products."""

    def __init__(self, sde: Any) -> None:
        self.noise_type = sde.noise_type
        f_and_g = getattr(sde, "f_and_g", None)
        if f_and_g is None:
            f, g = sde.f, sde.g

            def f_and_g(t: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
                return f(t, y), g(t, y)

        self.f_and_g = f_and_g
        g = getattr(sde, "g", None)
        if g is None:

            def g(t: Tensor, y: Tensor) -> Tensor:
                return f_and_g(t, y)[1]

        self.g = g
        self.diffuse = _DIFFUSE[sde.noise_type]
        self.prod = _PROD[sde.noise_type]


class _RenamedSDE:
    """torchsde's ``names={"drift": ..., "diffusion": ..., "prior_drift": ...}``."""

    _keys: ClassVar[dict[str, str]] = {
        "drift": "f",
        "diffusion": "g",
        "prior_drift": "h",
        "drift_and_diffusion": "f_and_g",
        "diffusion_prod": "g_prod",
        "drift_and_diffusion_prod": "f_and_g_prod",
    }

    def __init__(self, sde: Any, names: dict[str, str]) -> None:
        unknown = set(names) - set(self._keys)
        if unknown:
            raise ValueError(
                f"names has unknown keys {sorted(unknown)}; allowed: {sorted(self._keys)}"
            )
        self.noise_type = getattr(sde, "noise_type", None)
        self.sde_type = getattr(sde, "sde_type", None)
        for attr in self._keys.values():
            if hasattr(sde, attr):
                setattr(self, attr, getattr(sde, attr))
        for key, attr in names.items():
            setattr(self, self._keys[key], getattr(sde, attr))


def _stable_division(a: Tensor, b: Tensor, eps: float = 1e-7) -> Tensor:
    b = torch.where(b.abs().detach() > eps, b, torch.full_like(b, eps) * b.sign())
    return a / b


class _LogqpSDE:
    r"""Augments the state with $\int_0^t \tfrac12 |u|^2 ds$, $u = g^{-1}(f - h)$ (Li et al. 2020, eq. 10).

    The extra coordinate has zero diffusion, so every method integrates it with its own
    drift rule, exactly as torchsde does. $g^{-1}$ is the elementwise inverse for diagonal
    noise and the pseudo-inverse otherwise.
    """

    def __init__(self, sde: Any) -> None:
        self.noise_type, self.sde_type = sde.noise_type, sde.sde_type
        if not hasattr(sde, "h"):
            raise ValueError(
                "logqp=True needs the SDE to define the prior drift h(t, y) (torchsde's latent SDE)"
            )
        terms = _SDETerms(sde)
        self._f, self._h = terms.f_and_g, sde.h
        self.diagonal = sde.noise_type == "diagonal"

    def f_and_g(self, t: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        x = y[:, :-1]
        f, g = self._f(t, x)
        h = self._h(t, x)
        if self.diagonal:
            u = _stable_division(f - h, g)
            g_aug = torch.cat([g, g.new_zeros(g.shape[0], 1)], dim=1)
        else:
            u = torch.linalg.pinv(g).matmul((f - h).unsqueeze(-1)).squeeze(-1)
            g_aug = torch.cat([g, g.new_zeros(g.shape[0], 1, g.shape[2])], dim=1)
        kl_rate = 0.5 * (u * u).sum(dim=1, keepdim=True)
        return torch.cat([f, kl_rate], dim=1), g_aug

    def g(self, t: Tensor, y: Tensor) -> Tensor:
        return self.f_and_g(t, y)[1]


def _check_sde(sde: Any) -> None:
    for attr, allowed in (("noise_type", NOISE_TYPES), ("sde_type", SDE_TYPES)):
        value = getattr(sde, attr, None)
        if value is None:
            raise TypeError(
                f"sde must have the attribute {attr} (one of {allowed}), as torchsde SDEs do"
            )
        if value not in allowed:
            raise ValueError(f"sde.{attr}={value!r} is not one of {allowed}")
    if not (hasattr(sde, "f_and_g") or hasattr(sde, "f") or hasattr(sde, "f_and_g_prod")):
        raise TypeError("sde must define f(t, y) (or f_and_g / f_and_g_prod)")
    if not (
        hasattr(sde, "f_and_g")
        or hasattr(sde, "g")
        or hasattr(sde, "g_prod")
        or hasattr(sde, "f_and_g_prod")
    ):
        raise TypeError("sde must define g(t, y) (or f_and_g / g_prod / f_and_g_prod)")


def _check_sde_shapes(f: Tensor, g: Tensor, noise_type: str, batch: int, d: int) -> int:
    """Check the first drift/diffusion evaluation; return the noise dimension m."""
    if not (torch.is_tensor(f) and torch.is_tensor(g)):
        raise TypeError(
            f"the drift and diffusion must return tensors, got {type(f).__name__}, {type(g).__name__}"
        )
    if tuple(f.shape) != (batch, d):
        raise ValueError(
            f"the drift f(t, y) must have shape (batch, d) = {(batch, d)}, got {tuple(f.shape)}"
        )
    if noise_type == "diagonal":
        if tuple(g.shape) != (batch, d):
            raise ValueError(
                f"with noise_type='diagonal' the diffusion g(t, y) must have shape (batch, d) = {(batch, d)}, "
                f"got {tuple(g.shape)}"
            )
        return d
    if g.dim() != 3 or tuple(g.shape[:2]) != (batch, d):
        raise ValueError(
            f"with noise_type={noise_type!r} the diffusion g(t, y) must have shape (batch, d, m) = "
            f"({batch}, {d}, m), got {tuple(g.shape)}"
        )
    if noise_type == "scalar" and g.shape[2] != 1:
        raise ValueError(
            f"with noise_type='scalar' the diffusion must have m = 1, got shape {tuple(g.shape)}"
        )
    return int(g.shape[2])
