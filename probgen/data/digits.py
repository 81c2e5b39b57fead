"""scikit-learn's bundled 8x8 digits (1,797 images), for generation, classification and OOD.

Pixels (integers 0..16) are scaled to [0, 1]. For generative models the images are
dequantised uniformly: ``x = (pixel + u) / 17`` with ``u ~ U[0, 1)``, so densities are
comparable with bits/dim on the 17-level grid. Classification keeps ``pixel / 16``.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from probgen.data.base import ProbgenDataModule, plot_samples
from probgen.validation import check_bool

IMAGE_SHAPE = (8, 8)
NUM_LEVELS = 17
CORRUPTIONS = ("noise", "blur", "rotation")


def load_digits_tensors(dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """All 1,797 digits as ``(pixels (n, 64) integer-valued in [0, 16] as float, labels (n,))``."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return torch.as_tensor(data.data, dtype=dtype), torch.as_tensor(data.target, dtype=torch.long)


def corrupt_digits(x: Tensor, kind: str, severity: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """Corrupt flattened digit images in [0, 1].

    Args:
        x: ``(n, 64)`` images in [0, 1].
        kind: ``"noise"`` (additive Gaussian, std 0.25 * severity, clipped),
            ``"blur"`` (Gaussian blur with std severity pixels) or
            ``"rotation"`` (rotation by 30 * severity degrees, bilinear).
        severity: strength, > 0.
        generator: randomness for ``"noise"``.

    Returns:
        ``(n, 64)`` corrupted images in [0, 1].
    """
    if kind not in CORRUPTIONS:
        raise ValueError(f"kind must be one of {CORRUPTIONS}, got {kind!r}")
    if not severity > 0:
        raise ValueError(f"severity must be > 0, got {severity}")
    if x.dim() != 2 or x.shape[1] != 64:
        raise ValueError(f"x must be (n, 64) flattened 8x8 images, got {tuple(x.shape)}")
    img = x.reshape(-1, 1, *IMAGE_SHAPE)
    if kind == "noise":
        noise = torch.randn(img.shape, generator=generator, dtype=x.dtype, device=x.device)
        out = img + 0.25 * severity * noise
    elif kind == "blur":
        r = torch.arange(-3, 4, dtype=x.dtype, device=x.device)
        k1 = torch.exp(-0.5 * (r / severity) ** 2)
        k1 = k1 / k1.sum()
        out = F.conv2d(F.pad(img, (3, 3, 3, 3), mode="replicate"), (k1[:, None] * k1[None, :])[None, None])
    else:
        a = math.radians(30.0 * severity)
        theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]], dtype=x.dtype, device=x.device)
        grid = F.affine_grid(theta.expand(len(img), 2, 3), list(img.shape), align_corners=False)
        out = F.grid_sample(img, grid, align_corners=False)
    return out.clamp(0, 1).reshape(-1, 64)


class DigitsDataModule(ProbgenDataModule):
    """8x8 digits as 64-d vectors, for generation (``batch = (x,)``), class-conditional generation
    (``(x, y)``, dequantised like generation) or classification (``(x, y)``).

    Splits are a seeded random 70/15/15 partition of the classes kept; images of
    ``held_out_classes`` form an extra ``"ood"`` split (never trained on).

    Args:
        task: ``"generation"``, ``"conditional_generation"`` or ``"classification"``.
        held_out_classes: digit classes removed from train/val/test and put into ``"ood"``.
        dequantize: for generation, add uniform noise on the 17-level grid (see module doc).
        centered: map images from [0, 1] to [-1, 1] (often better for flows).
        batch_size: training batch size.
    """

    def __init__(
        self,
        task: str = "generation",
        held_out_classes: list[int] | tuple[int, ...] = (),
        dequantize: bool = True,
        centered: bool = False,
        batch_size: int = 128,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        if task not in ("generation", "conditional_generation", "classification"):
            raise ValueError(f"task must be 'generation', 'conditional_generation' or 'classification', got {task!r}")
        check_bool("dequantize", dequantize)
        check_bool("centered", centered)
        bad = [c for c in held_out_classes if c not in range(10)]
        if bad:
            raise ValueError(f"held_out_classes must be digits 0..9, got {bad}")
        self.task, self.held_out_classes = task, tuple(held_out_classes)
        self.dequantize, self.centered = dequantize, centered

    def to_unit(self, x: Tensor) -> Tensor:
        """Map model-space images back to [0, 1]."""
        return (x + 1) / 2 if self.centered else x

    def build_splits(self) -> dict[str, tuple[Tensor, ...]]:
        g = torch.Generator().manual_seed(self.seed)
        pixels, labels = load_digits_tensors()
        if self.task != "classification" and self.dequantize:
            x = (pixels + torch.rand(pixels.shape, generator=g)) / NUM_LEVELS
        else:
            x = pixels / (NUM_LEVELS - 1)
        if self.centered:
            x = 2 * x - 1
        ood = torch.isin(labels, torch.tensor(self.held_out_classes, dtype=torch.long))
        idx = torch.nonzero(~ood).squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_train, n_val = int(0.7 * len(idx)), int(0.15 * len(idx))
        parts = {"train": idx[:n_train], "val": idx[n_train : n_train + n_val], "test": idx[n_train + n_val :]}
        if ood.any():
            parts["ood"] = torch.nonzero(ood).squeeze(1)
        if self.task == "generation":
            return {k: (x[v],) for k, v in parts.items()}
        return {k: (x[v], labels[v]) for k, v in parts.items()}

    @property
    def num_classes(self) -> int:
        return 10

    def plot_samples(self, samples: Tensor, path: str | Path) -> Path:
        self.setup()
        return plot_samples(
            self.to_unit(samples).clamp(0, 1), path, reference=self.to_unit(self.splits["test"][0][:64]), image_shape=IMAGE_SHAPE
        )
