"""Networks for interpolant fields (plain torch): an MLP with Fourier features and a small U-Net.

Both take ``forward(t, x, cond=None, drop=None)``: ``cond`` is an optional condition (class
labels ``(batch,)`` long when ``num_classes > 0``, or any tensor ``(batch, *cond_shape)``
flattened to ``cond_dim`` features) and ``drop`` a boolean ``(batch,)`` mask of samples whose
condition is replaced by a learnt null embedding: the unconditional field of classifier-free
guidance (Ho & Salimans 2022) is the same network with every condition dropped.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["TimeMLP", "UNet", "ConditionEmbedding", "ACTIVATIONS", "NETWORKS"]

ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "softplus": nn.Softplus}


class ConditionEmbedding(nn.Module):
    """Embeds a condition (class labels or a tensor) into ``width`` features, with a null embedding.

    Args:
        width: output features.
        num_classes: $K > 0$ for labels in ``{0, ..., K-1}`` (an ``nn.Embedding`` with a row
            ``K`` for "no condition"); 0 for tensor conditions.
        cond_dim: features of a flattened tensor condition (a linear map, and a learnt null
            vector), used when ``num_classes = 0``.

    ``forward(cond, drop, batch)`` returns ``(batch, width)``; ``cond=None`` drops every row.
    """

    def __init__(self, width: int, num_classes: int = 0, cond_dim: int = 0) -> None:
        super().__init__()
        if num_classes < 0 or cond_dim < 0 or (num_classes > 0 and cond_dim > 0) or (num_classes == 0 and cond_dim == 0):
            raise ValueError(f"give exactly one of num_classes > 0 or cond_dim > 0, got num_classes={num_classes}, cond_dim={cond_dim}")
        self.num_classes, self.cond_dim, self.width = int(num_classes), int(cond_dim), int(width)
        if self.num_classes:
            self.embed = nn.Embedding(self.num_classes + 1, width)
        else:
            self.proj = nn.Linear(self.cond_dim, width)
            self.null = nn.Parameter(torch.zeros(width))

    def forward(self, cond: Tensor | None, drop: Tensor | None, batch: int, dtype: torch.dtype) -> Tensor:
        if self.num_classes:
            if cond is None:
                labels = torch.full((batch,), self.num_classes, dtype=torch.long, device=self.embed.weight.device)
            else:
                if cond.shape != (batch,):
                    raise ValueError(f"class labels must have shape ({batch},), got {tuple(cond.shape)}")
                labels = cond.long()
                if drop is not None:
                    labels = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
            return self.embed(labels).to(dtype)
        null = self.null.to(dtype).expand(batch, self.width)
        if cond is None:
            return null
        c = cond.reshape(batch, -1).to(dtype)
        if c.shape[1] != self.cond_dim:
            raise ValueError(f"the condition must have {self.cond_dim} features per sample, got {tuple(cond.shape)}")
        out = self.proj(c)
        return out if drop is None else torch.where(drop[:, None], null, out)


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
        num_classes, cond_dim: a condition (see :class:`ConditionEmbedding`), embedded into
            ``cond_width`` features appended to the input; both 0: unconditional.
        cond_width: width of the condition embedding.
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
        num_classes: int = 0,
        cond_dim: int = 0,
        cond_width: int = 32,
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
        self.cond = ConditionEmbedding(cond_width, num_classes, cond_dim) if (num_classes or cond_dim) else None
        extra = cond_width if self.cond is not None else 0
        widths = [dim * (1 + 2 * self.space_frequencies) + 1 + 2 * self.time_frequencies + extra, *hidden_dims]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), ACTIVATIONS[activation]()]
        layers.append(nn.Linear(widths[-1], out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, t: Tensor, x: Tensor, cond: Tensor | None = None, drop: Tensor | None = None) -> Tensor:
        """``t: (batch,)``, ``x: (batch, *event)``, optional ``cond`` / ``drop`` -> ``(batch, out_dim)``."""
        x = x.reshape(x.shape[0], -1)
        t = t.reshape(-1, 1).to(x.dtype)
        feats = [x, t]
        if self.space_frequencies:
            ang = (x[:, :, None] * self.omegas.to(x.dtype)).flatten(1)
            feats += [torch.sin(ang), torch.cos(ang)]
        if self.time_frequencies:
            ang = t * self.freqs.to(x.dtype)
            feats += [torch.sin(ang), torch.cos(ang)]
        if self.cond is not None:
            feats.append(self.cond(cond, drop, x.shape[0], x.dtype))
        return self.net(torch.cat(feats, -1))


def _groups(channels: int, groups: int) -> int:
    """The largest divisor of ``channels`` not above ``groups`` (GroupNorm needs one)."""
    return max(g for g in range(1, min(groups, channels) + 1) if channels % g == 0)


class _ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the embedding added in between (as a per-channel shift), plus a skip."""

    def __init__(self, c_in: int, c_out: int, emb: int, groups: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(_groups(c_in, groups), c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb, c_out)
        self.norm2, self.conv2 = nn.GroupNorm(_groups(c_out, groups), c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, e: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(e)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class _Attention(nn.Module):
    """Multi-head self-attention over the pixels of a feature map, with a residual connection."""

    def __init__(self, channels: int, heads: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels, groups), channels)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q = self.norm(x).flatten(2).transpose(1, 2)  # (b, h w, c)
        out, _ = self.attn(q, q, q, need_weights=False)
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class UNet(nn.Module):
    """A small U-Net for image fields (after Ho et al. 2020's DDPM network, much reduced).

    Sinusoidal time embedding and an MLP; per resolution ``num_res_blocks`` residual blocks
    (the time + condition embedding added inside each), self-attention at the resolutions in
    ``attention_resolutions``, 2x down/up-sampling between levels, skip connections, and a
    middle block (res-attention-res) at the lowest resolution. The output layer starts at
    zero, so an untrained field is 0. For 8x8 digits on a CPU: ``channels=16,
    channel_mults=(1, 2)``, attention at 4x4 (0.18M parameters; 0.7M with ``channels=32``);
    for 32x32 images on a GPU: ``channels=64, channel_mults=(1, 2, 2)``, attention at 8x8
    (4.4M parameters).

    Args:
        image_shape: ``(C, H, W)``; inputs arrive flattened ``(batch, C*H*W)`` or as images.
        out_channels: output channels (``C * len(fields)`` for several heads); the output is
            flattened field-major, ``(batch, out_channels * H * W)``.
        channels: width of the first level.
        channel_mults: width multipliers per level; ``H`` and ``W`` must be divisible by
            ``2 ** (len(channel_mults) - 1)``.
        num_res_blocks: residual blocks per level.
        attention_resolutions: feature-map sides (e.g. ``(4,)``) that get self-attention.
        heads: attention heads (must divide the widths there).
        groups: GroupNorm groups (at most; reduced to a divisor of the width).
        num_classes, cond_dim: a condition (see :class:`ConditionEmbedding`).
    """

    def __init__(
        self,
        image_shape,
        out_channels: int | None = None,
        channels: int = 32,
        channel_mults=(1, 2),
        num_res_blocks: int = 1,
        attention_resolutions=(4,),
        heads: int = 4,
        groups: int = 8,
        num_classes: int = 0,
        cond_dim: int = 0,
    ) -> None:
        super().__init__()
        image_shape = tuple(int(v) for v in image_shape)
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ValueError(f"image_shape must be (C, H, W) with positive entries, got {image_shape}")
        if channels < 1 or not channel_mults or any(m < 1 for m in channel_mults) or num_res_blocks < 1:
            raise ValueError(
                f"channels, channel_mults and num_res_blocks must be positive, got {channels}, {list(channel_mults)}, {num_res_blocks}"
            )
        C, H, W = image_shape
        factor = 2 ** (len(channel_mults) - 1)
        if H % factor or W % factor:
            raise ValueError(f"image sides {H}x{W} must be divisible by 2^(levels - 1) = {factor} for channel_mults={list(channel_mults)}")
        self.image_shape, self.out_channels = image_shape, int(out_channels or C)
        emb = 4 * channels
        self.time_mlp = nn.Sequential(nn.Linear(channels, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.cond = ConditionEmbedding(emb, num_classes, cond_dim) if (num_classes or cond_dim) else None
        self.inp = nn.Conv2d(C, channels, 3, padding=1)
        widths = [channels * m for m in channel_mults]
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        skips, c, side = [channels], channels, H
        for i, w in enumerate(widths):
            for _ in range(num_res_blocks):
                block = nn.ModuleList([_ResBlock(c, w, emb, groups)])
                if side in attention_resolutions:
                    block.append(_Attention(w, heads, groups))
                self.down.append(block)
                c = w
                skips.append(c)
            if i < len(widths) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
                side //= 2
        self.mid1, self.mid_attn, self.mid2 = _ResBlock(c, c, emb, groups), _Attention(c, heads, groups), _ResBlock(c, c, emb, groups)
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, w in reversed(list(enumerate(widths))):
            for _ in range(num_res_blocks + 1):
                block = nn.ModuleList([_ResBlock(c + skips.pop(), w, emb, groups)])
                if side in attention_resolutions:
                    block.append(_Attention(w, heads, groups))
                self.up.append(block)
                c = w
            if i > 0:
                self.upsample.append(nn.Conv2d(c, c, 3, padding=1))
                side *= 2
        self.out_norm = nn.GroupNorm(_groups(c, groups), c)
        self.out = nn.Conv2d(c, self.out_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.num_res_blocks, self.levels = num_res_blocks, len(widths)
        half = channels // 2
        self.register_buffer("freqs", torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float32) / max(half, 1)), persistent=False)

    def _time_embedding(self, t: Tensor, dtype: torch.dtype) -> Tensor:
        ang = 1000.0 * t.reshape(-1, 1).to(dtype) * self.freqs.to(dtype)  # t in [0, 1], DDPM-like scale
        feats = torch.cat([torch.sin(ang), torch.cos(ang)], -1)
        if feats.shape[1] < self.time_mlp[0].in_features:  # odd channel count
            feats = F.pad(feats, (0, self.time_mlp[0].in_features - feats.shape[1]))
        return self.time_mlp(feats)

    def forward(self, t: Tensor, x: Tensor, cond: Tensor | None = None, drop: Tensor | None = None) -> Tensor:
        """``t: (batch,)``, ``x: (batch, C*H*W)`` or ``(batch, C, H, W)`` -> ``(batch, out_channels*H*W)``."""
        batch = x.shape[0]
        h = x.reshape(batch, *self.image_shape)
        e = self._time_embedding(t.expand(batch) if t.dim() == 0 else t, h.dtype)
        if self.cond is not None:
            e = e + self.cond(cond, drop, batch, h.dtype)
        h = self.inp(h)
        hs = [h]
        k = 0
        for i in range(self.levels):
            for _ in range(self.num_res_blocks):
                block = self.down[k]
                k += 1
                h = block[0](h, e)
                for extra in block[1:]:
                    h = extra(h)
                hs.append(h)
            if i < self.levels - 1:
                h = self.downsample[i](h)
                hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, e)), e)
        k = 0
        for j in range(self.levels):
            for _ in range(self.num_res_blocks + 1):
                block = self.up[k]
                k += 1
                h = block[0](torch.cat([h, hs.pop()], 1), e)
                for extra in block[1:]:
                    h = extra(h)
            if j < self.levels - 1:
                h = self.upsample[j](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.out(F.silu(self.out_norm(h))).reshape(batch, -1)


NETWORKS = {"mlp": TimeMLP, "unet": UNet}
