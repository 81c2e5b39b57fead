"""Energy modules and their composition algebra.

An :class:`Energy` maps a batch ``x: (batch, *event_shape)`` to energies ``(batch,)``; the
model density is $p_\\theta(x) = \\exp(-E_\\theta(x)) / Z_\\theta$. Energies compose as in
Du, Li & Mordatch (2020), "Compositional visual generation with energy based models":

- ``E1 + E2``: product of experts, $p \\propto p_1 p_2$ (conjunction);
- ``a * E1 + b * E2``: weighted sum, $p \\propto p_1^a p_2^b$ (``b < 0``: negation, ``E1 - E2``);
- :class:`SoftMinEnergy`: $E = -T \\log \\sum_i w_i \\exp(-E_i / T)$, at ``T = 1`` the mixture
  $p \\propto \\sum_i w_i p_i$ (disjunction); ``T -> 0`` gives $\\min_i E_i$;
- :meth:`Energy.condition` (clamp coordinates) and :meth:`ConditionalMLPEnergy.given` (a label).

Every composite is itself an :class:`Energy`, so every loss, sampler and estimator accepts it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ConditionalMLPEnergy",
    "ConditionedEnergy",
    "ConvEnergy",
    "Energy",
    "LabelConditionedEnergy",
    "MLPEnergy",
    "QuadraticEnergy",
    "SoftMinEnergy",
    "SumEnergy",
    "build_energy",
]

_ACTIVATIONS = {"silu": nn.SiLU, "softplus": nn.Softplus, "tanh": nn.Tanh, "elu": nn.ELU, "gelu": nn.GELU}


class Energy(nn.Module):
    """Base class: ``forward(x) -> (batch,)`` energies of ``x: (batch, *event_shape)``.

    Args:
        event_shape: shape of one sample, e.g. ``(2,)`` or ``(64,)``.
    """

    def __init__(self, event_shape: Sequence[int]) -> None:
        super().__init__()
        shape = tuple(event_shape)
        if not shape or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in shape):
            raise ValueError(f"event_shape (dim) must be a non-empty tuple of positive ints, got {shape!r}")
        self.event_shape = shape

    @property
    def dim(self) -> int:
        """Number of coordinates of one sample."""
        return math.prod(self.event_shape)

    def _check(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a Tensor, got {type(x).__name__}")
        if tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(
                f"x must have shape (batch, {', '.join(map(str, self.event_shape))}), got {tuple(x.shape)}"
            )

    def unnormalized_log_prob(self, x: Tensor) -> Tensor:
        """$-E(x)$, shape ``(batch,)``."""
        return -self(x)

    def score(self, x: Tensor, create_graph: bool = False) -> Tensor:
        """$\\nabla_x \\log p(x) = -\\nabla_x E(x)$, shape of ``x``."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True) if not x.requires_grad else x
            (grad,) = torch.autograd.grad(self(x).sum(), x, create_graph=create_graph)
        return -grad

    # -- algebra ---------------------------------------------------------------------------
    def __add__(self, other: Energy) -> SumEnergy:
        if not isinstance(other, Energy):
            return NotImplemented
        return SumEnergy([self, other])

    def __sub__(self, other: Energy) -> SumEnergy:
        if not isinstance(other, Energy):
            return NotImplemented
        return SumEnergy([self, other], weights=[1.0, -1.0])

    def __mul__(self, weight: float) -> SumEnergy:
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            return NotImplemented
        return SumEnergy([self], weights=[float(weight)])

    __rmul__ = __mul__

    def __neg__(self) -> SumEnergy:
        return SumEnergy([self], weights=[-1.0])

    def condition(self, index: Sequence[int], value: Tensor) -> ConditionedEnergy:
        """Energy of the remaining coordinates with ``x[..., index] = value`` clamped.

        $E(x_B \\mid x_A = a) = E([x_A = a, x_B])$: the conditional density up to its own
        normaliser. Only for flat events ``(dim,)``.
        """
        return ConditionedEnergy(self, index, value)

    # so that two energies can be summed with the builtin sum() (0 + E)
    def __radd__(self, other):
        if isinstance(other, (int, float)) and other == 0:
            return self
        return NotImplemented


def _same_event(energies: Sequence[Energy]) -> tuple[int, ...]:
    if len(energies) == 0:
        raise ValueError("energies must be a non-empty sequence of Energy")
    for e in energies:
        if not isinstance(e, Energy):
            raise TypeError(f"every term must be an Energy, got {type(e).__name__}")
    shapes = {e.event_shape for e in energies}
    if len(shapes) != 1:
        raise ValueError(f"all terms must share one event_shape, got {sorted(shapes)}")
    return energies[0].event_shape


class SumEnergy(Energy):
    """Weighted sum $E(x) = \\sum_i w_i E_i(x)$: product of experts $\\prod_i p_i^{w_i}$.

    Negative weights are negation terms (Du et al. 2020, Eq. 8): $p_1 / p_2^{\\alpha}$. Nested
    sums are flattened.

    Args:
        energies: the terms, all with one ``event_shape``.
        weights: one float per term (default all 1).
        learn_weights: make the weights trainable parameters.
    """

    def __init__(self, energies: Sequence[Energy], weights: Sequence[float] | None = None, learn_weights: bool = False) -> None:
        energies = list(energies)
        weights = [1.0] * len(energies) if weights is None else [float(w) for w in weights]
        if len(weights) != len(energies):
            raise ValueError(f"weights must have one entry per energy ({len(energies)}), got {len(weights)}")
        flat_e: list[Energy] = []
        flat_w: list[float] = []
        for e, w in zip(energies, weights):
            if isinstance(e, SumEnergy) and not e.learn_weights and not learn_weights:
                flat_e.extend(e.terms)
                flat_w.extend(w * float(v) for v in e.weights)
            else:
                flat_e.append(e)
                flat_w.append(w)
        super().__init__(_same_event(flat_e))
        self.terms = nn.ModuleList(flat_e)
        self.learn_weights = learn_weights
        w = torch.tensor(flat_w, dtype=torch.get_default_dtype())
        if learn_weights:
            self.weights = nn.Parameter(w)
        else:
            self.register_buffer("weights", w)

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        out = 0.0
        for w, e in zip(self.weights.to(x.dtype), self.terms):
            out = out + w * e(x)
        return out


class SoftMinEnergy(Energy):
    """Soft-min disjunction $E(x) = -T \\log \\sum_i w_i \\exp(-E_i(x) / T)$.

    At ``temperature = 1`` this is the mixture $p \\propto \\sum_i w_i e^{-E_i}$ (Du et al. 2020,
    Eq. 7); as ``temperature -> 0`` it tends to $\\min_i E_i$.

    Args:
        energies: the terms, all with one ``event_shape``.
        temperature: $T > 0$.
        weights: mixture weights $w_i > 0$ (default all 1).
    """

    def __init__(self, energies: Sequence[Energy], temperature: float = 1.0, weights: Sequence[float] | None = None) -> None:
        energies = list(energies)
        super().__init__(_same_event(energies))
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        weights = [1.0] * len(energies) if weights is None else [float(w) for w in weights]
        if len(weights) != len(energies) or any(not w > 0 for w in weights):
            raise ValueError(f"weights must be {len(energies)} positive floats, got {weights}")
        self.terms = nn.ModuleList(energies)
        self.temperature = float(temperature)
        self.register_buffer("log_weights", torch.tensor(weights, dtype=torch.get_default_dtype()).log())

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        stacked = torch.stack([-e(x) / self.temperature for e in self.terms], dim=-1)
        return -self.temperature * torch.logsumexp(stacked + self.log_weights.to(x.dtype), dim=-1)


class ConditionedEnergy(Energy):
    """$E(x_B \\mid x_A = a)$: an energy over the coordinates not in ``index``.

    Args:
        energy: an energy over flat events ``(dim,)``.
        index: the clamped coordinates $A$.
        value: their values, shape ``(len(index),)``.
    """

    def __init__(self, energy: Energy, index: Sequence[int], value: Tensor) -> None:
        if len(energy.event_shape) != 1:
            raise ValueError(f"condition needs a flat event_shape (dim,), got {energy.event_shape}")
        dim = energy.event_shape[0]
        index = [int(i) for i in index]
        if not index or len(set(index)) != len(index) or any(not 0 <= i < dim for i in index) or len(index) >= dim:
            raise ValueError(f"index must be distinct coordinates in [0, {dim}) leaving at least one free, got {index}")
        value = torch.as_tensor(value, dtype=torch.get_default_dtype()).reshape(-1)
        if value.numel() != len(index):
            raise ValueError(f"value must have {len(index)} entries (one per index), got {value.numel()}")
        free = [i for i in range(dim) if i not in index]
        super().__init__((len(free),))
        self.energy = energy
        self.register_buffer("index", torch.tensor(index, dtype=torch.long))
        self.register_buffer("free", torch.tensor(free, dtype=torch.long))
        self.register_buffer("value", value)

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        full = x.new_empty(x.shape[0], self.energy.event_shape[0])
        full[:, self.free] = x
        full[:, self.index] = self.value.to(x)
        return self.energy(full)


class QuadraticEnergy(Energy):
    """Gaussian energy $E(x) = \\tfrac12 (x - \\mu)^\\top P (x - \\mu)$, $P = L L^\\top$.

    Its normaliser is known: $\\log Z = \\tfrac d2 \\log 2\\pi - \\tfrac12 \\log\\det P$, which makes
    it the closed-form test case of every objective.

    Args:
        dim: event dimension $d$.
        mean: initial $\\mu$ ``(d,)`` (default 0).
        precision: initial $P$ ``(d, d)`` or a float times the identity (default 1).
        learn_mean: train $\\mu$.
        learn_precision: train $L$ (lower-triangular, log-diagonal parametrisation).
    """

    def __init__(self, dim: int, mean=None, precision=None, learn_mean: bool = True, learn_precision: bool = True) -> None:
        if not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        super().__init__((dim,))
        dtype = torch.get_default_dtype()
        mean = torch.zeros(dim, dtype=dtype) if mean is None else torch.as_tensor(mean, dtype=dtype).reshape(dim)
        if precision is None:
            precision = torch.eye(dim, dtype=dtype)
        elif isinstance(precision, (int, float)):
            if precision <= 0:
                raise ValueError(f"precision must be > 0, got {precision}")
            precision = precision * torch.eye(dim, dtype=dtype)
        else:
            precision = torch.as_tensor(precision, dtype=dtype).reshape(dim, dim)
        try:
            chol = torch.linalg.cholesky(precision)
        except RuntimeError as err:
            raise ValueError(f"precision must be symmetric positive definite, got {precision.tolist()}") from err
        raw = torch.tril(chol, -1) + torch.diag(chol.diagonal().log())
        self.mean = nn.Parameter(mean, requires_grad=learn_mean)
        self.raw_chol = nn.Parameter(raw, requires_grad=learn_precision)

    @property
    def precision_cholesky(self) -> Tensor:
        """$L$ with positive diagonal, ``(d, d)``."""
        return torch.tril(self.raw_chol, -1) + torch.diag(self.raw_chol.diagonal().exp())

    @property
    def precision(self) -> Tensor:
        L = self.precision_cholesky
        return L @ L.T

    def log_partition(self) -> Tensor:
        """Exact $\\log Z = \\tfrac d2 \\log 2\\pi - \\sum_i \\log L_{ii}$."""
        return 0.5 * self.dim * math.log(2 * math.pi) - self.raw_chol.diagonal().sum()

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        z = (x - self.mean.to(x)) @ self.precision_cholesky.to(x)
        return 0.5 * z.pow(2).sum(-1)


def _mlp(dim_in: int, hidden: int, depth: int, activation: str) -> nn.Sequential:
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    if depth < 1 or hidden < 1:
        raise ValueError(f"depth and hidden must be >= 1, got depth={depth}, hidden={hidden}")
    layers: list[nn.Module] = []
    d = dim_in
    for _ in range(depth):
        layers += [nn.Linear(d, hidden), _ACTIVATIONS[activation]()]
        d = hidden
    layers.append(nn.Linear(d, 1))
    return nn.Sequential(*layers)


class MLPEnergy(Energy):
    """$E(x) = \\mathrm{MLP}(\\phi(x)) + \\tfrac{\\epsilon}{2} \\lVert x \\rVert^2$.

    The optional quadratic envelope $\\epsilon$ keeps $\\exp(-E)$ integrable far from the data
    (a smooth activation keeps Langevin and score matching well defined).

    Fourier features (Tancik et al. 2020, "Fourier features let networks learn high frequency
    functions", Eq. 5): with ``fourier_features = F > 0`` the input is
    $\\phi(x) = [x, \\sin 2\\pi B x, \\cos 2\\pi B x]$, $B \\in \\mathbb R^{F \\times d}$,
    $B_{ij} \\sim \\mathcal N(0, \\sigma^2)$ fixed (a buffer, drawn from ``fourier_seed``), so a
    small MLP can represent the sharp edges of e.g. the checkerboard. $\\sigma$
    (``fourier_scale``) sets the resolved frequencies: about $1/\\sigma$ in the data's units.

    Args:
        dim: event dimension (inputs of any ``event_shape`` with that many entries are flattened).
        hidden: hidden width.
        depth: number of hidden layers.
        activation: one of silu, softplus, tanh, elu, gelu.
        envelope: $\\epsilon \\geq 0$.
        event_shape: optional non-flat event shape with ``prod == dim``.
        fourier_features: $F \\geq 0$ (0: the raw input).
        fourier_scale: $\\sigma > 0$.
        fourier_seed: seed of $B$.
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 128,
        depth: int = 3,
        activation: str = "silu",
        envelope: float = 0.0,
        event_shape: Sequence[int] | None = None,
        fourier_features: int = 0,
        fourier_scale: float = 1.0,
        fourier_seed: int = 0,
    ) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        event_shape = (dim,) if event_shape is None else tuple(event_shape)
        if math.prod(event_shape) != dim:
            raise ValueError(f"event_shape {event_shape} must have dim={dim} entries")
        if envelope < 0:
            raise ValueError(f"envelope must be >= 0, got {envelope}")
        if isinstance(fourier_features, bool) or not isinstance(fourier_features, int) or fourier_features < 0:
            raise ValueError(f"fourier_features must be an int >= 0, got {fourier_features!r}")
        if not fourier_scale > 0:
            raise ValueError(f"fourier_scale must be > 0, got {fourier_scale!r}")
        super().__init__(event_shape)
        gen = torch.Generator().manual_seed(int(fourier_seed))
        B = fourier_scale * torch.randn(fourier_features, dim, generator=gen, dtype=torch.float64)
        self.register_buffer("fourier_matrix", B.to(torch.get_default_dtype()))
        self.net = _mlp(dim + 2 * fourier_features, hidden, depth, activation)
        self.envelope = float(envelope)

    def features(self, flat: Tensor) -> Tensor:
        """$\\phi(x)$: ``(batch, dim) -> (batch, dim + 2F)``."""
        if self.fourier_matrix.shape[0] == 0:
            return flat
        proj = 2 * math.pi * flat @ self.fourier_matrix.to(flat).T
        return torch.cat([flat, proj.sin(), proj.cos()], -1)

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        flat = x.reshape(x.shape[0], -1)
        out = self.net(self.features(flat)).squeeze(-1)
        if self.envelope:
            out = out + 0.5 * self.envelope * flat.pow(2).sum(-1)
        return out


class ConvEnergy(Energy):
    """Small conv net energy for ``side x side`` grey images (8x8 digits by default).

    Three 3x3 convolutions (SiLU, two with stride 2), then a linear readout, plus the optional
    envelope $\\tfrac{\\epsilon}{2}\\lVert x \\rVert^2$. Accepts ``(batch, side*side)`` or
    ``(batch, 1, side, side)`` according to ``event_shape``.

    Args:
        side: image side.
        channels: width of the first conv layer (doubled after).
        envelope: $\\epsilon \\geq 0$.
        flat: events are flat vectors ``(side*side,)`` (else ``(1, side, side)``).
    """

    def __init__(self, side: int = 8, channels: int = 32, envelope: float = 0.0, flat: bool = True) -> None:
        super().__init__((side * side,) if flat else (1, side, side))
        self.side = int(side)
        c = int(channels)
        self.net = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1), nn.SiLU(),
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(2 * c, 2 * c, 3, stride=2, padding=1), nn.SiLU(),
            nn.Flatten(),
        )
        reduced = math.ceil(math.ceil(self.side / 2) / 2)  # two stride-2 convolutions, padding 1
        self.head = nn.Linear(2 * c * reduced * reduced, 1)
        self.envelope = float(envelope)

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        img = x.reshape(x.shape[0], 1, self.side, self.side)
        out = self.head(self.net(img)).squeeze(-1)
        if self.envelope:
            out = out + 0.5 * self.envelope * img.flatten(1).pow(2).sum(-1)
        return out


class ConditionalMLPEnergy(nn.Module):
    """Class-conditional energy $E(x, y)$; :meth:`given` fixes $y$ and returns an :class:`Energy`.

    Args:
        dim: event dimension.
        num_classes: number of labels.
        hidden, depth, activation, envelope: as :class:`MLPEnergy`.
    """

    def __init__(self, dim: int, num_classes: int, hidden: int = 128, depth: int = 3, activation: str = "silu", envelope: float = 0.0) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.dim = int(dim)
        self.num_classes = int(num_classes)
        self.net = _mlp(dim + num_classes, hidden, depth, activation)
        self.envelope = float(envelope)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Energies ``(batch,)`` of ``x: (batch, dim)`` under labels ``y: (batch,)`` (long)."""
        onehot = F.one_hot(y.long(), self.num_classes).to(x)
        out = self.net(torch.cat([x, onehot], -1)).squeeze(-1)
        if self.envelope:
            out = out + 0.5 * self.envelope * x.pow(2).sum(-1)
        return out

    def given(self, label: int) -> LabelConditionedEnergy:
        """$E(\\cdot \\mid y = \\text{label})$ as an :class:`Energy`."""
        if not 0 <= int(label) < self.num_classes:
            raise ValueError(f"label must be in [0, {self.num_classes}), got {label}")
        return LabelConditionedEnergy(self, int(label))


class LabelConditionedEnergy(Energy):
    """$E(x \\mid y)$ for a fixed label (see :meth:`ConditionalMLPEnergy.given`)."""

    def __init__(self, conditional: ConditionalMLPEnergy, label: int) -> None:
        super().__init__((conditional.dim,))
        self.conditional = conditional
        self.label = label

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        y = torch.full((x.shape[0],), self.label, dtype=torch.long, device=x.device)
        return self.conditional(x, y)


_KINDS = {"quadratic": QuadraticEnergy, "mlp": MLPEnergy, "conv": ConvEnergy}


def build_energy(spec: dict) -> Energy:
    """Build an energy from a plain-dict spec (what YAML configs hold).

    ``{"kind": "mlp" | "quadratic" | "conv", **init_args}`` builds a leaf;
    ``{"kind": "sum", "terms": [spec, ...], "weights": [...]}`` a weighted sum;
    ``{"kind": "softmin", "terms": [...], "temperature": T, "weights": [...]}`` a soft-min.

    Raises:
        ValueError: unknown kind or malformed spec.
    """
    if not isinstance(spec, dict) or "kind" not in spec:
        raise ValueError(f"energy spec must be a dict with a 'kind' key, got {spec!r}")
    spec = dict(spec)
    kind = spec.pop("kind")
    if kind in ("sum", "softmin"):
        terms = spec.pop("terms", None)
        if not terms:
            raise ValueError(f"energy spec of kind {kind!r} needs a non-empty 'terms' list")
        built = [build_energy(t) for t in terms]
        return SumEnergy(built, **spec) if kind == "sum" else SoftMinEnergy(built, **spec)
    if kind not in _KINDS:
        raise ValueError(f"energy kind must be one of {sorted(_KINDS) + ['softmin', 'sum']}, got {kind!r}")
    return _KINDS[kind](**spec)
