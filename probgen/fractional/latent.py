r"""Encoder, decoder and context of the latent video model (Daems et al. 2024, Sec. 5.3), small.

Frames are encoded one by one by an MLP; a temporal convolution over the frame codes gives
the control's context (the code of the next frame to explain, as in the official ``Infer``);
a static content vector from the first frames and the latent path $X_t$ are decoded frame by
frame. $q(x_0)$ is a diagonal Gaussian computed from the first three frame codes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from probgen.fractional.model import MLP

__all__ = ["VideoDecoder", "VideoEncoder", "frame_context"]


class VideoEncoder(nn.Module):
    """Frame codes, control context, content vector and $q(x_0)$ from a video.

    Args:
        pixels: pixels per frame.
        latent_dim: $d$ of the latent SDE.
        hidden: width of the frame MLP.
        context_dim: size of the control's context per frame.
        content_dim: size of the static content vector.
        num_content_frames: frames averaged for the content vector.
    """

    def __init__(self, pixels: int, latent_dim: int, hidden: int = 128, context_dim: int = 16,
                 content_dim: int = 16, num_content_frames: int = 3) -> None:
        super().__init__()
        self.frame = MLP(pixels, hidden, hidden, 1, "silu")
        self.temporal = nn.Sequential(
            nn.Conv1d(hidden, hidden, 3, padding=1), nn.SiLU(), nn.Conv1d(hidden, context_dim, 3, padding=1)
        )
        self.content = MLP(hidden, content_dim, hidden, 1, "silu")
        self.x0 = MLP(3 * hidden, 2 * latent_dim, hidden, 1, "silu")
        self.num_content_frames = num_content_frames
        self.latent_dim = latent_dim

    def forward(self, frames: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Args: ``frames (B, T, P)`` with ``T >= 3``.

        Returns:
            ``context (B, T, context_dim)``, ``content (B, content_dim)``,
            ``q(x0)`` mean and log-variance ``(B, d)`` each.
        """
        h = self.frame(frames)  # (B, T, hidden)
        context = self.temporal(h.transpose(1, 2)).transpose(1, 2)
        content = self.content(h[:, : self.num_content_frames].mean(1))
        mean, logvar = self.x0(h[:, :3].flatten(1)).chunk(2, dim=-1)
        return context, content, mean, logvar.clamp(-10, 5)


class VideoDecoder(nn.Module):
    """Frame means in (0, 1) from ``[x_t, content]``: ``(..., d + content_dim) -> (..., P)``."""

    def __init__(self, latent_dim: int, content_dim: int, pixels: int, hidden: int = 128) -> None:
        super().__init__()
        self.net = MLP(latent_dim + content_dim, pixels, hidden, 2, "silu")

    def forward(self, x: Tensor, content: Tensor) -> Tensor:
        content = content.expand(*x.shape[:-1], content.shape[-1])
        return torch.sigmoid(self.net(torch.cat([x, content], dim=-1)))


def frame_context(times: Tensor, context: Tensor, dt: float):
    """``context(t, x) -> (B, c)``: the context of the next frame at or after ``t + dt/2``.

    Args:
        times: ``(T,)`` frame times; context: ``(B, T, c)``; dt: solver step.
    """

    def fn(t: Tensor, x: Tensor) -> Tensor:
        t = torch.as_tensor(t, dtype=times.dtype, device=times.device).reshape(1)
        idx = torch.searchsorted(times, t + 0.5 * dt).clamp_max(times.numel() - 1)
        return context[:, idx[0]].to(x)

    return fn
