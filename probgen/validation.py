"""Argument checks shared by every probgen constructor (models, datamodules, samplers).

Each check raises ``ValueError`` (bad value) or ``TypeError`` (bad type) whose message names
the argument, the value and what is allowed, e.g. ``lr must be a real number > 0, got -1``.
The raised exception carries the argument's name in ``err.argument``, which the CLI uses to
name the flag (``--model.init_args.lr``). The checks are plain Python (no tensor
comparisons), so calling them costs nothing at construction time.

Example:
    >>> check_real("lr", lr, gt=0)
    >>> check_int("num_chains", num_chains, ge=1)
    >>> check_choice("sampler", sampler, ("sgld", "psgld", "sghmc"))
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "check_bool",
    "check_choice",
    "check_finite",
    "check_int",
    "check_real",
    "check_reals",
    "describe_range",
]


def _error(cls: type[Exception], name: str, message: str) -> Exception:
    err = cls(message)
    err.argument = name  # the CLI turns this into the flag's name
    return err


def describe_range(gt=None, ge=None, lt=None, le=None) -> str:
    """``"> 0"``, ``">= 1"``, ``"in (0, 1]"``: the allowed range in words."""
    lo = (f"({gt:g}", gt) if gt is not None else (f"[{ge:g}", ge) if ge is not None else None
    hi = (f"{lt:g})", lt) if lt is not None else (f"{le:g}]", le) if le is not None else None
    if lo and hi:
        return f"in {lo[0]}, {hi[0]}"
    if lo:
        return f"> {gt:g}" if gt is not None else f">= {ge:g}"
    if hi:
        return f"< {lt:g}" if lt is not None else f"<= {le:g}"
    return "finite"


def _in_range(value: float, gt, ge, lt, le) -> bool:
    return (
        (gt is None or value > gt)
        and (ge is None or value >= ge)
        and (lt is None or value < lt)
        and (le is None or value <= le)
    )


def check_real(
    name: str,
    value: Any,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    allow_none: bool = False,
    allow_inf: bool = False,
) -> float | None:
    """Check that ``value`` is a finite real number in the given range.

    Args:
        name: the argument's name, as the user spells it.
        value: the value passed.
        gt, ge, lt, le: bounds (strict / inclusive), any subset.
        allow_none: accept ``None`` (returned as is).
        allow_inf: accept ``+inf`` / ``-inf`` (never NaN).

    Returns:
        ``float(value)`` (or None).

    Raises:
        TypeError: not a real number (booleans and strings included).
        ValueError: NaN, inf (unless allowed) or outside the range.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, Tensor) and value.numel() == 1 and not value.requires_grad:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _error(
            TypeError, name, f"{name} must be a real number{' or None' if allow_none else ''}, "
            f"got {value!r} of type {type(value).__name__}"
        )
    allowed = describe_range(gt, ge, lt, le)
    what = "a real number" if allowed == "finite" else f"a real number {allowed}"
    if math.isnan(value) or (math.isinf(value) and not allow_inf) or not _in_range(value, gt, ge, lt, le):
        raise _error(ValueError, name, f"{name} must be {what}, got {value!r}")
    return float(value)


def check_reals(
    name: str,
    values: Any,
    *,
    length: int | Sequence[int] | None = None,
    **bounds: float,
) -> list[float]:
    """Check a real number or a list of them (each with :func:`check_real`'s bounds).

    Args:
        name: the argument's name.
        values: a number or an iterable of numbers.
        length: allowed list lengths (an int or several); a single number is always allowed.
        **bounds: ``gt`` / ``ge`` / ``lt`` / ``le`` as for :func:`check_real`.

    Returns:
        The values as a list of floats.
    """
    if isinstance(values, numbers.Real) and not isinstance(values, bool):
        return [check_real(name, values, **bounds)]
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise _error(TypeError, name, f"{name} must be a real number or a list of them, got {values!r}")
    out = [check_real(f"{name}[{i}]", v, **bounds) for i, v in enumerate(values)]
    allowed = (length,) if isinstance(length, int) else tuple(length) if length is not None else None
    if allowed is not None and len(out) not in allowed:
        raise _error(ValueError, name, f"{name} must have length {' or '.join(map(str, allowed))}, "
                     f"got {len(out)} values {list(values)!r}")
    if not out:
        raise _error(ValueError, name, f"{name} must not be empty")
    return out


def check_int(
    name: str,
    value: Any,
    *,
    ge: int | None = None,
    gt: int | None = None,
    le: int | None = None,
    lt: int | None = None,
    allow_none: bool = False,
) -> int | None:
    """Check that ``value`` is an integer (not a bool, not a float) in the given range.

    Raises:
        TypeError: not an integer.
        ValueError: outside the range.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _error(
            TypeError, name, f"{name} must be an integer{' or None' if allow_none else ''}, "
            f"got {value!r} of type {type(value).__name__}"
        )
    if not _in_range(value, gt, ge, lt, le):
        raise _error(ValueError, name, f"{name} must be an integer {describe_range(gt, ge, lt, le)}, got {value!r}")
    return int(value)


def check_choice(name: str, value: Any, choices: Iterable[Any], *, allow_none: bool = False) -> Any:
    """Check that ``value`` is one of ``choices``.

    Raises:
        ValueError: not one of them (the message lists them).
    """
    choices = tuple(choices)
    if value is None and allow_none:
        return None
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise _error(ValueError, name, f"{name} must be one of {listed}{' or None' if allow_none else ''}, got {value!r}")
    return value


def check_bool(name: str, value: Any, *, allow_none: bool = False) -> bool | None:
    """Check that ``value`` is ``True`` or ``False`` (not 0/1, not a string)."""
    if value is None and allow_none:
        return None
    if not isinstance(value, bool):
        raise _error(TypeError, name, f"{name} must be true or false, got {value!r}")
    return value


def check_finite(name: str, tensor: Tensor) -> Tensor:
    """Check that a floating tensor holds no NaN or inf (one host sync).

    Raises:
        TypeError: not a tensor.
        ValueError: NaN or inf entries (the message counts them and gives the first index).
    """
    if not isinstance(tensor, Tensor):
        raise _error(TypeError, name, f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.is_floating_point() or tensor.is_complex():
        bad = ~torch.isfinite(tensor)
        if bool(bad.any()):
            n_nan = int(torch.isnan(tensor).sum())
            first = tuple(int(i) for i in bad.nonzero()[0])
            kind = "NaN" if n_nan == int(bad.sum()) else "inf" if n_nan == 0 else "NaN and inf"
            raise _error(ValueError, name, f"{name} contains {kind} ({int(bad.sum())} of {tensor.numel()} "
                         f"entries, first at index {first}); all entries must be finite")
    return tensor
