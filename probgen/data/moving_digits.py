"""Stochastic moving digits: scikit-learn's 8x8 digits bouncing on a small canvas.

A small stand-in for the "stochastic moving MNIST" of Denton & Fergus (2018) used by Daems
et al. (2024): each video shows one digit whose position follows a velocity that is kicked
by Gaussian noise every frame and reflected at the canvas walls, rendered by bilinear
interpolation (sub-pixel positions).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from probgen.data.base import ProbgenDataModule
from probgen.data.digits import load_digits_tensors
from probgen.validation import check_int, check_real

__all__ = ["MovingDigits", "make_moving_digits"]


def _reflect(p: Tensor, v: Tensor, high: float) -> tuple[Tensor, Tensor]:
    """Reflect positions into [0, high] and flip the velocity of those that hit a wall."""
    over, under = p > high, p < 0
    p = torch.where(over, 2 * high - p, torch.where(under, -p, p))
    v = torch.where(over | under, -v, v)
    return p.clamp(0, high), v


def make_moving_digits(
    num_videos: int,
    num_frames: int = 12,
    canvas: int = 16,
    speed: float = 1.0,
    velocity_noise: float = 0.3,
    generator: torch.Generator | None = None,
    digit_indices: Tensor | None = None,
) -> Tensor:
    """Videos ``(num_videos, num_frames, canvas, canvas)`` in [0, 1].

    Args:
        num_videos: number of videos.
        num_frames: frames per video.
        canvas: canvas side in pixels (>= 9; the digit is 8x8).
        speed: initial speed in pixels per frame (random direction).
        velocity_noise: std of the per-frame Gaussian velocity kick (the stochasticity).
        generator: torch generator.
        digit_indices: optional indices into the 1,797 sklearn digits (default: random).
    """
    if canvas < 9 or num_frames < 2:
        raise ValueError(f"need canvas >= 9 and num_frames >= 2, got canvas={canvas}, num_frames={num_frames}")
    pixels, _ = load_digits_tensors()
    images = (pixels / 16.0).reshape(-1, 1, 8, 8)
    if digit_indices is None:
        digit_indices = torch.randint(0, len(images), (num_videos,), generator=generator)
    digits = images[digit_indices]  # (n, 1, 8, 8)
    high = float(canvas - 8)
    pos = torch.rand(num_videos, 2, generator=generator) * high
    angle = torch.rand(num_videos, generator=generator) * 2 * torch.pi
    vel = speed * torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1)
    positions = []
    for _ in range(num_frames):  # data generation, not an SDE solve
        positions.append(pos)
        vel = vel + velocity_noise * torch.randn(num_videos, 2, generator=generator)
        pos, vel = _reflect(pos + vel, vel, high)
    positions = torch.stack(positions, dim=1)  # (n, T, 2) top-left corner (row, col)
    # bilinear placement: pad the digit to the canvas and translate with grid_sample
    padded = F.pad(digits, (0, canvas - 8, 0, canvas - 8))  # digit at the top-left corner
    n, t = num_videos, num_frames
    src = padded.unsqueeze(1).expand(n, t, 1, canvas, canvas).reshape(n * t, 1, canvas, canvas)
    shift = positions.reshape(n * t, 2) * 2 / canvas  # in normalised coordinates
    theta = torch.zeros(n * t, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = -shift[:, 1]
    theta[:, 1, 2] = -shift[:, 0]
    grid = F.affine_grid(theta, (n * t, 1, canvas, canvas), align_corners=False)
    frames = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return frames.reshape(n, t, canvas, canvas).clamp(0, 1)


class MovingDigits(ProbgenDataModule):
    """Stochastic moving 8x8 digits; batches are ``(videos (B, T, C, C), times (B, T))``.

    Frame ``i`` is observed at time ``i * frame_dt``. Train/val/test use disjoint digit images
    (the 1,797 digits split 70/15/15 by a fixed permutation).

    Args:
        num_train, num_val, num_test: numbers of videos.
        num_frames, canvas, speed, velocity_noise: see :func:`make_moving_digits`.
        frame_dt: time between frames.
    """

    def __init__(
        self,
        num_train: int = 1024,
        num_val: int = 128,
        num_test: int = 128,
        num_frames: int = 12,
        canvas: int = 16,
        speed: float = 1.0,
        velocity_noise: float = 0.3,
        frame_dt: float = 0.1,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, seed)
        for name, value in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test)):
            check_int(name, value, ge=1)
        check_int("num_frames", num_frames, ge=2)
        check_int("canvas", canvas, ge=9)
        check_real("speed", speed, ge=0)
        check_real("velocity_noise", velocity_noise, ge=0)
        check_real("frame_dt", frame_dt, gt=0)
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.num_frames, self.canvas, self.speed = num_frames, canvas, speed
        self.velocity_noise, self.frame_dt = velocity_noise, frame_dt

    def build_splits(self) -> dict[str, tuple[Tensor, ...]]:
        gen = torch.Generator().manual_seed(self.seed)
        perm = torch.randperm(1797, generator=gen)
        pools = {"train": perm[:1258], "val": perm[1258:1527], "test": perm[1527:]}
        times = torch.arange(self.num_frames, dtype=torch.float32) * self.frame_dt
        out = {}
        for name, n in self.sizes.items():
            pool = pools[name]
            idx = pool[torch.randint(0, len(pool), (n,), generator=gen)]
            videos = make_moving_digits(n, self.num_frames, self.canvas, self.speed, self.velocity_noise,
                                        generator=gen, digit_indices=idx)
            out[name] = (videos, times.expand(n, -1).contiguous())
        return out

    def plot_samples(self, samples: Tensor, path: str | Path) -> Path:
        """Rows of videos: ``samples (n, T, C, C)``."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        x = samples.detach().float().cpu()[:8]
        n, t = x.shape[:2]
        fig, axes = plt.subplots(n, t, figsize=(t * 0.8, n * 0.8), squeeze=False)
        for i in range(n):
            for j in range(t):
                axes[i][j].imshow(x[i, j].numpy(), cmap="gray", vmin=0, vmax=1)
                axes[i][j].axis("off")
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        return path
