r"""The compiled fixed-step path: ``sdeint(..., compile=True)`` and ``odeint(..., compile=True)``.

Eager PyTorch pays a dispatch per tensor op (a few microseconds on CPU), about eight ops per
step of a small neural SDE, so at small batches the solve is dispatch-bound. Here the solver's
own ``step`` is unrolled ``chunk`` times and compiled with :func:`torch.compile` (inductor),
which fuses the pointwise work of the chunk into a few kernels:

* the Brownian increments are drawn before the loop, as in the eager path (the same
  ``grid_increments``, so the same generator gives the same noise), and fed to the
  compiled chunk as a ``(chunk, batch, m)`` slice, so one graph serves every chunk;
* the node times enter as a ``(chunk, nodes)`` tensor, so shifting the grid does not
  recompile; the step size does: the solvers pass it to ops such as
  ``torch.add(x, f, alpha=h)``, which dynamo specialises on, so each step size compiles
  its own chunk (steps that differ only by rounding are merged first, and a chunk with
  unequal steps, such as a shortened last step, runs eagerly);
* output times fall on chunk boundaries: between two outputs the steps run in whole
  chunks and the remainder (fewer than ``chunk`` steps) runs eagerly;
* the compiled chunk is cached per SDE/vector-field object, solver class, options,
  chunk length, step size and ``logqp`` (a weak-keyed cache: it goes with the object), and
  dynamo compiles it once per input shape, dtype, device and grad mode (``dynamic=False``).
  Each cache entry has its own code object, so dynamo's per-function recompile limit
  counts per entry. Inductor also caches the generated code on disk (its FX graph
  cache), so a new process pays far less than the first.

Results equal the eager path's to floating-point tolerance (the compiled kernels
reassociate and fuse, so they are not bit-identical). Differentiation is plain backprop
through the unrolled steps (AOTAutograd compiles the backward too).
"""

from __future__ import annotations

import types
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from probgen.sde.compat import interpolated_output

__all__ = [
    "DEFAULT_CHUNK",
    "cached_chunk",
    "canonical_steps",
    "clear_cache",
    "run_compiled",
    "solve_ode",
    "solve_sde",
]

#: steps unrolled per compiled chunk (see ``benchmarks/sde_vs_torchsde.py --chunk`` for the trade-off)
DEFAULT_CHUNK = 10

#: inductor options of every compiled chunk (``torch.compile(..., options=COMPILE_OPTIONS)``;
#: part of the cache key). On CPU, inductor's generated ``tanh`` calls Sleef's 1-ulp
#: ``Sleef_tanhf16_u10``, several times slower than the MKL VML kernel eager aten calls
#: (``benchmarks/sde_vs_torchsde.py --tanh-bench``); ``cpp.use_decompose_tanh`` writes it as
#: ``2 / (1 + exp(-2x)) - 1`` instead (absolute error about one float ulp of 1).
COMPILE_OPTIONS: dict[str, Any] = {"cpp.use_decompose_tanh": True}

_CACHE: weakref.WeakKeyDictionary[Any, dict[tuple, Callable]] = weakref.WeakKeyDictionary()
_STRONG: dict[
    int, tuple[Any, dict[tuple, Callable]]
] = {}  # owners that cannot be weakly referenced


def clear_cache() -> None:
    """Forget every compiled chunk (dynamo's and inductor's own caches are left alone)."""
    _CACHE.clear()
    _STRONG.clear()


def _entries(owner: Any) -> dict[tuple, Callable]:
    try:
        return _CACHE.setdefault(owner, {})
    except TypeError:  # not weakly referenceable: keep it alive with its entries
        return _STRONG.setdefault(id(owner), (owner, {}))[1]


def _chunk_template(step, y, nodes, hs, noise):
    for j in range(len(hs)):
        t = tuple(nodes[j].unbind(0))
        y = step(t, hs[j], y) if noise is None else step(t, hs[j], y, noise[j])
    return y


def cached_chunk(owner: Any, key: tuple, make_step: Callable[[], Callable]) -> Callable:
    """The compiled ``chunk(y, nodes, hs, noise)`` for ``owner`` and ``key``, built on first use.

    Args:
        owner: the object the solve belongs to (the SDE or the ODE vector field); the entry
            lives as long as it does.
        key: what else the compiled code depends on (solver class, options, chunk length,
            the step size, ...).
        make_step: builds the solver's ``step`` (called once per entry).

    Returns:
        A function running ``len(hs)`` steps: ``y: (batch, d)``, ``nodes: (chunk, n_nodes)``,
        ``hs``: list of floats (all equal to the step size in ``key``), ``noise:
        (chunk, batch, m)`` or ``None``.
    """
    entries = _entries(owner)
    fn = entries.get(key)
    if fn is None:
        step = make_step()
        # a fresh code object per entry: dynamo's cache and recompile limit are per code object
        code = _chunk_template.__code__.replace(co_name=f"sde_chunk_{len(entries)}_{id(owner):x}")
        template = types.FunctionType(code, _chunk_template.__globals__, code.co_name)
        compiled = torch.compile(template, dynamic=False, options=dict(COMPILE_OPTIONS) or None)

        def fn(y: Tensor, nodes: Tensor, hs: list[float], noise: Tensor | None) -> Tensor:
            return compiled(step, y, nodes, hs, noise)

        entries[key] = fn
    return fn


def canonical_steps(hs: list[float], rel: float = 1e-12) -> list[float]:
    """Step sizes that differ only by rounding (``rel``) made equal to the first of them.

    The solvers pass the step size to ops such as ``torch.add(x, f, alpha=h)``, where
    dynamo bakes it into the graph, so each distinct float would compile again; the steps
    of an evenly cut interval differ in their last bits only.
    """
    seen: list[float] = []
    out = []
    for h in hs:
        for c in seen:
            if abs(h - c) <= rel * abs(c):
                out.append(c)
                break
        else:
            seen.append(h)
            out.append(h)
    return out


def run_compiled(
    get_chunk: Callable[[float], Callable],
    step: Callable,
    y: Tensor,
    ends: list[int],
    weights: list[tuple[float, float] | None] | None,
    nodes: Tensor,
    hs: list[float],
    noise: Tensor | None,
    chunk: int,
    *,
    affine: bool = False,
) -> list[Tensor]:
    """The time loop in compiled chunks: the states at the outputs.

    Args:
        get_chunk: ``get_chunk(h)``, the compiled chunk for step size ``h`` (from
            :func:`cached_chunk`).
        step: the same solver's eager ``step`` (for the remainders and uneven chunks).
        y: the initial state.
        ends: for each output ``i = 1..T-1``, the number of steps taken before it (cumulative).
        weights: ``None`` (each output is a grid point) or per output ``None`` / ``(w0, w1)``:
            linear interpolation between the last two states, as
            :func:`probgen.sde.compat.run_interpolated` (``affine``: torchdiffeq's form).
        nodes: ``(n, n_nodes)`` node times of every step.
        hs: the ``n`` step sizes.
        noise: ``(n, batch, m)`` increments, or ``None`` for an ODE.
        chunk: steps per compiled call.

    Returns:
        The states at the outputs (``len(ends) + 1`` tensors, the first ``y``).
    """
    hs = canonical_steps(hs)

    def eager(k: int, y: Tensor) -> Tensor:
        t = tuple(nodes[k].unbind(0))
        return step(t, hs[k], y) if noise is None else step(t, hs[k], y, noise[k])

    ys = [y]
    prev = y
    k = 0
    for i, end in enumerate(ends):
        w = None if weights is None else weights[i]
        last = end - 1 if w is not None and end > k else end  # keep the state before the last step
        while last - k >= chunk:
            h = hs[k]
            if all(x == h for x in hs[k + 1 : k + chunk]):
                dW = None if noise is None else noise[k : k + chunk]
                y = get_chunk(h)(y, nodes[k : k + chunk], hs[k : k + chunk], dW)
                k += chunk
            else:  # a shorter last step: step eagerly up to it
                y = eager(k, y)
                k += 1
        while k < end:
            prev = y
            y = eager(k, y)
            k += 1
        ys.append(interpolated_output(prev, y, w, affine))
    return ys


def node_tensor(node_t: list[tuple[Tensor, ...]], n_nodes: int, like: Tensor) -> Tensor:
    """The per-step node times as one ``(n, n_nodes)`` tensor."""
    if not node_t:
        return like.new_zeros(0, n_nodes)
    return torch.stack([torch.stack(t) for t in node_t])


def solve_sde(
    owner: Any,
    solver_cls: type,
    terms: Any,
    options: dict[str, Any] | None,
    key: tuple,
    step: Callable,
    y: Tensor,
    ends: list[int],
    weights: list[tuple[float, float] | None] | None,
    node_t: list[tuple[Tensor, ...]],
    hs: list[float],
    noise: Any,
) -> Tensor:
    """``sdeint``'s fixed-step solve in compiled chunks: ``ys: (T, batch, d)``.

    Args:
        owner: the SDE object the compiled chunks are cached on.
        solver_cls: the :class:`~probgen.sde.sde_solvers.SDESolver` subclass.
        terms: the SDE's resolved terms (a chunk builds its own solver from them).
        options: the solver's options.
        key: what else the chunk depends on (``logqp``, the ``names`` renaming).
        step: the eager solver's ``step`` (remainders and uneven chunks).
        y: initial (possibly ``logqp``-augmented) state ``(batch, d)``.
        ends, weights, hs: as :func:`run_compiled`.
        node_t: per step the tuple of 0-dim node times.
        noise: the ``n`` increments ``(batch, m)`` (a list or a stacked tensor).
    """
    chunk = DEFAULT_CHUNK
    full_key = (solver_cls, repr(sorted((options or {}).items())), *key, chunk, repr(COMPILE_OPTIONS))

    def chunk_fn(h: float) -> Callable:
        return cached_chunk(owner, (*full_key, h), lambda: solver_cls(terms, options).step)

    noise_t = torch.stack(list(noise)) if len(hs) else None
    nodes = node_tensor(node_t, len(solver_cls.nodes), y)
    return torch.stack(run_compiled(chunk_fn, step, y, ends, weights, nodes, hs, noise_t, chunk), dim=0)


def solve_ode(
    func: Callable,
    solver_cls: type,
    step: Callable,
    y0: Tensor,
    ends: list[int],
    weights: list[tuple[float, float] | None] | None,
    node_t: list[tuple[Tensor, ...]],
    hs: list[float],
) -> Tensor:
    """``odeint``'s fixed-step solve in compiled chunks (cached on ``func``): ``ys: (T, *S)``."""
    chunk = DEFAULT_CHUNK

    def chunk_fn(h: float) -> Callable:
        key = (solver_cls, chunk, h, repr(COMPILE_OPTIONS))
        return cached_chunk(func, key, lambda: solver_cls(func).step)

    nodes = node_tensor(node_t, len(solver_cls.nodes), y0)
    return torch.stack(
        run_compiled(chunk_fn, step, y0, ends, weights, nodes, hs, None, chunk, affine=True), dim=0
    )
