"""Many chains of one network: stacked parameters and one forward for all chains.

A chain's state is the network's parameters. ``K`` chains are held as a dict of stacked
tensors ``{name: (K, *shape)}``; :class:`ChainForward` evaluates the network for every chain
at once with :func:`torch.func.functional_call` under :func:`torch.func.vmap` (one batched
forward), or chain by chain for networks that vmap cannot handle. The inputs are either one
minibatch shared by all chains, ``(batch, ...)``, or one minibatch per chain,
``(K, batch, ...)`` (``per_chain=True``: bootstrap ensembles, cross-validation folds or
independent data sets run as one vmapped ensemble).
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

VECTORIZE_MODES = ("vmap", "sequential", "auto")
# layers that act elementwise (any shape, no parameters): a Sequential of these and Linear layers
# runs for all chains as batched matrix products without vmap
ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.GELU, nn.SiLU, nn.ELU, nn.Sigmoid, nn.LeakyReLU, nn.Softplus, nn.Identity)


def init_chains(
    network: nn.Module, num_chains: int, generator: torch.Generator | None = None
) -> dict[str, Tensor]:
    """Draw ``num_chains`` independent initialisations of ``network``'s parameters.

    Each chain is the network's own initialisation (every submodule's ``reset_parameters``)
    under its own seed; the seeds come from ``generator`` (or the global RNG), so the same
    seed gives the same chains.

    Args:
        network: the architecture; its own parameters are left untouched.
        num_chains: number of chains ``K`` > 0.
        generator: optional CPU generator for the per-chain seeds.

    Returns:
        ``{name: (K, *param.shape)}`` detached tensors, dtype and device of ``network``.
    """
    if not isinstance(num_chains, int) or num_chains <= 0:
        raise ValueError(f"num_chains must be a positive integer, got {num_chains!r}")
    seeds = torch.randint(0, 2**62, (num_chains,), generator=generator).tolist()
    draws: list[dict[str, Tensor]] = []
    replica = copy.deepcopy(network)
    for seed in seeds:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for m in replica.modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()
        draws.append({k: v.detach().clone() for k, v in replica.named_parameters()})
    return {k: torch.stack([d[k] for d in draws]) for k in draws[0]}


def chain(params: dict[str, Tensor], index: int) -> dict[str, Tensor]:
    """The parameters of chain ``index`` from stacked ``{name: (K, ...)}``."""
    return {k: v[index] for k, v in params.items()}


def check_per_chain(name: str, value: Tensor, num_chains: int) -> None:
    """ValueError naming ``name`` unless ``value`` is a per-chain stack ``(num_chains, batch, ...)``."""
    if value.dim() < 2 or value.shape[0] != num_chains:
        raise ValueError(
            f"{name} must be per-chain, of shape (num_chains={num_chains}, batch, ...) with per_chain=True, "
            f"got shape {tuple(value.shape)}"
        )


def num_chains_of(params: dict[str, Tensor]) -> int:
    """Leading (chain) dimension shared by all stacked tensors; ValueError if they disagree."""
    sizes = {v.shape[0] for v in params.values()}
    if len(sizes) != 1:
        raise ValueError(f"stacked params must share their leading (chain) dimension, got sizes {sorted(sizes)}")
    return sizes.pop()


class ChainForward:
    """Evaluate one network under many parameter sets: ``(K, ...) params, x -> (K, batch, ...)``.

    Args:
        network: the architecture (its parameters are replaced by the chains'; its buffers
            are shared by all chains, so layers that update buffers in training mode,
            such as BatchNorm, are not supported).
        vectorize: ``"vmap"`` (one batched forward for all chains), ``"sequential"`` (a
            Python loop over chains), or ``"auto"`` (vmap, falling back to the loop, with a
            warning, the first time vmap fails for this network). Under ``"vmap"`` and
            ``"auto"``, an ``nn.Sequential`` of ``nn.Linear`` and elementwise activation layers
            (``ELEMENTWISE``) with 2-D inputs runs as batched matrix products
            (``torch.baddbmm``) instead: the same forward without the per-call cost of
            ``vmap`` and ``functional_call``, which dominates a step of small networks.
    """

    def __init__(self, network: nn.Module, vectorize: str = "vmap") -> None:
        if vectorize not in VECTORIZE_MODES:
            raise ValueError(f"vectorize must be one of {VECTORIZE_MODES}, got {vectorize!r}")
        self.network = network
        self.vectorize = vectorize
        # a plain MLP: the layers, with the parameter names of each Linear, for the batched-matmul path
        self.linear_stack: list[tuple[str, str, bool] | nn.Module] | None = None
        if isinstance(network, nn.Sequential) and len(list(network.buffers())) == 0 and all(
            isinstance(m, (nn.Linear, *ELEMENTWISE)) for m in network
        ):
            self.linear_stack = [(f"{i}.weight", f"{i}.bias", m.bias is not None) if isinstance(m, nn.Linear) else m
                                 for i, m in enumerate(network)]

    def _linear_stack(self, params: dict[str, Tensor], x: Tensor, per_chain: bool) -> Tensor:
        """The vmapped forward of a Sequential of Linear and elementwise layers as batched matmuls:
        layer $\\ell$ maps ``h (K, batch, in)`` to ``h W_k^T + b_k``; a shared ``x`` is a stride-0 view."""
        k = num_chains_of(params)
        h = x if per_chain else x.expand(k, *x.shape)
        for layer in self.linear_stack:
            if isinstance(layer, tuple):
                w, b, has_bias = layer
                wt = params[w].transpose(1, 2)
                h = torch.baddbmm(params[b].unsqueeze(1), h, wt) if has_bias else torch.bmm(h, wt)
            else:
                h = layer(h)
        return h

    def _single(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        buffers = dict(self.network.named_buffers())
        return functional_call(self.network, (params, buffers), (x,))

    def _sequential(self, params: dict[str, Tensor], x: Tensor, per_chain: bool) -> Tensor:
        return torch.stack([self._single(chain(params, i), x[i] if per_chain else x)
                            for i in range(num_chains_of(params))])

    def _vmapped(self, params: dict[str, Tensor], x: Tensor, per_chain: bool) -> Tensor:
        return vmap(self._single, in_dims=(0, 0 if per_chain else None), randomness="different")(params, x)

    def __call__(self, params: dict[str, Tensor], x: Tensor, chunk_size: int | None = None,
                 per_chain: bool = False) -> Tensor:
        """Network outputs for every parameter set.

        Args:
            params: ``{name: (K, *shape)}`` stacked parameters.
            x: ``(batch, ...)`` inputs shared by all chains, or ``(K, batch, ...)`` with
                ``per_chain=True`` (chain ``k`` sees ``x[k]``).
            chunk_size: evaluate at most this many parameter sets at a time (bounds memory
                when ``K`` is the number of stored samples); None: all at once.
            per_chain: whether ``x`` has a leading chain axis.

        Returns:
            ``(K, batch, *out_shape)``.

        Raises:
            ValueError: ``per_chain`` and ``x`` is not ``(K, batch, ...)``.
        """
        k = num_chains_of(params)
        if per_chain:
            check_per_chain("x", x, k)
        if chunk_size is not None and chunk_size < k:
            return torch.cat([
                self({n: v[i : i + chunk_size] for n, v in params.items()}, x[i : i + chunk_size] if per_chain else x,
                     per_chain=per_chain)
                for i in range(0, k, chunk_size)
            ])
        if self.vectorize == "sequential":
            return self._sequential(params, x, per_chain)
        if self.linear_stack is not None and x.dim() == 2 + per_chain:  # (batch, in) or (K, batch, in)
            return self._linear_stack(params, x, per_chain)
        if self.vectorize == "vmap":
            return self._vmapped(params, x, per_chain)
        try:
            return self._vmapped(params, x, per_chain)
        except (RuntimeError, NotImplementedError) as err:  # pragma: no cover - depends on the network
            warnings.warn(
                f"vmap failed for {type(self.network).__name__} ({err}); running chains sequentially",
                RuntimeWarning,
                stacklevel=2,
            )
            self.vectorize = "sequential"
            return self._sequential(params, x, per_chain)


def mlp(
    input_dim: int, output_dim: int, hidden_dims: list[int] | tuple[int, ...] = (50,), activation: str = "relu"
) -> nn.Sequential:
    """A fully connected network ``input -> hidden... -> output`` with the given activation.

    Args:
        input_dim: input features, > 0.
        output_dim: outputs, > 0.
        hidden_dims: widths of the hidden layers (empty: a linear model).
        activation: ``"relu"``, ``"tanh"``, ``"gelu"``, ``"silu"`` or ``"elu"``.
    """
    acts = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU, "elu": nn.ELU}
    if activation not in acts:
        raise ValueError(f"activation must be one of {sorted(acts)}, got {activation!r}")
    for name, v in (("input_dim", input_dim), ("output_dim", output_dim)):
        if not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if any((not isinstance(h, int)) or h <= 0 for h in hidden_dims):
        raise ValueError(f"hidden_dims must be positive integers, got {list(hidden_dims)}")
    layers: list[nn.Module] = []
    width = input_dim
    for h in hidden_dims:
        layers += [nn.Linear(width, h), acts[activation]()]
        width = h
    layers.append(nn.Linear(width, output_dim))
    return nn.Sequential(*layers)
