"""Networks for interpolant fields (plain torch)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["TimeMLP", "ACTIVATIONS"]

ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "softplus": nn.Softplus}


class TimeMLP(nn.Module):
    """MLP on $[x, \\phi(t)]$ with Fourier time features $\\phi(t) = (t, \\sin 2\\pi k t, \\cos 2\\pi k t)_{k \\le K}$.

    Args:
        dim: data dimension $d$ (inputs are flattened to ``(batch, d)``).
        out_dim: output width (``len(fields) * d`` for several heads).
        hidden_dims: widths of the hidden layers.
        activation: a key of ``ACTIVATIONS``.
        time_frequencies: $K$; 0 feeds $t$ alone.
    """

    def __init__(self, dim: int, out_dim: int, hidden_dims=(256, 256, 256), activation: str = "silu", time_frequencies: int = 8) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if dim <= 0 or out_dim <= 0 or any(h <= 0 for h in hidden_dims):
            raise ValueError(f"dim, out_dim and hidden_dims must be positive, got {dim}, {out_dim}, {list(hidden_dims)}")
        self.dim, self.time_frequencies = dim, int(time_frequencies)
        self.register_buffer("freqs", 2 * math.pi * torch.arange(1, self.time_frequencies + 1, dtype=torch.float32), persistent=False)
        widths = [dim + 1 + 2 * self.time_frequencies, *hidden_dims]
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
        if self.time_frequencies:
            ang = t * self.freqs.to(x.dtype)
            feats += [torch.sin(ang), torch.cos(ang)]
        return self.net(torch.cat(feats, -1))
