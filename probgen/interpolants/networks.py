"""Networks for interpolant fields (plain torch)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["TimeMLP", "ACTIVATIONS"]

ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "softplus": nn.Softplus}


class TimeMLP(nn.Module):
    """MLP on $[x, \\psi(x), \\phi(t)]$ with Fourier time features $\\phi(t) = (t, \\sin 2\\pi k t,
    \\cos 2\\pi k t)_{k \\le K}$ and optional Fourier space features $\\psi(x) = (\\sin \\omega_j x_i,
    \\cos \\omega_j x_i)$, $\\omega_j = 2^j \\pi / \\text{space\\_scale}$, $j < J$ (Tancik et al. 2020:
    plain MLPs are slow to fit high-frequency structure such as an 8x8 checkerboard).

    Args:
        dim: data dimension $d$ (inputs are flattened to ``(batch, d)``).
        out_dim: output width (``len(fields) * d`` for several heads).
        hidden_dims: widths of the hidden layers.
        activation: a key of ``ACTIVATIONS``.
        time_frequencies: $K$; 0 feeds $t$ alone.
        space_frequencies: $J$; 0 (default) feeds $x$ alone.
        space_scale: the longest period of the space features is ``2 * space_scale``.
    """

    def __init__(
        self,
        dim: int,
        out_dim: int,
        hidden_dims=(256, 256, 256),
        activation: str = "silu",
        time_frequencies: int = 8,
        space_frequencies: int = 0,
        space_scale: float = 8.0,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if dim <= 0 or out_dim <= 0 or any(h <= 0 for h in hidden_dims):
            raise ValueError(f"dim, out_dim and hidden_dims must be positive, got {dim}, {out_dim}, {list(hidden_dims)}")
        self.dim, self.time_frequencies = dim, int(time_frequencies)
        self.register_buffer("freqs", 2 * math.pi * torch.arange(1, self.time_frequencies + 1, dtype=torch.float32), persistent=False)
        self.space_frequencies = int(space_frequencies)
        omegas = math.pi * 2.0 ** torch.arange(self.space_frequencies, dtype=torch.float32) / float(space_scale)
        self.register_buffer("omegas", omegas, persistent=False)
        widths = [dim * (1 + 2 * self.space_frequencies) + 1 + 2 * self.time_frequencies, *hidden_dims]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), ACTIVATIONS[activation]()]
        layers.append(nn.Linear(widths[-1], out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        """``t: (batch,)``, ``x: (batch, *event)`` -> ``(batch, out_dim)``."""
        x = x.reshape(x.shape[0], -1)
        t = t.reshape(-1, 1).to(x.dtype)
        feats = [x, t]
        if self.space_frequencies:
            ang = (x[:, :, None] * self.omegas.to(x.dtype)).flatten(1)
            feats += [torch.sin(ang), torch.cos(ang)]
        if self.time_frequencies:
            ang = t * self.freqs.to(x.dtype)
            feats += [torch.sin(ang), torch.cos(ang)]
        return self.net(torch.cat(feats, -1))
