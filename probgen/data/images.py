"""A user's images from a folder of image files or a tensor file, without torchvision.

Two sources:

- a folder: image files (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.gif``) read with Pillow,
  either in one sub-folder per class (labels are the sorted sub-folder names) or all at the
  top level (no labels);
- a tensor file (``.pt`` / ``.pth``, loaded with ``weights_only=True``): a tensor ``(N, C, H, W)``
  or ``(N, H, W)``, or a dict with ``"images"`` and optionally ``"labels"`` ``(N,)``.

Integer pixels on ``levels`` levels are dequantised uniformly, ``x = (pixel + u) / levels`` with
``u ~ U[0, 1)`` (so densities convert to bits/dim on that grid), or scaled by ``1 / (levels - 1)``;
float images must already lie in ``[0, 1]`` and are used as they are. ``centered`` maps to
``[-1, 1]``. Images are flattened to ``(N, C*H*W)``; :attr:`ImageDataModule.image_shape` gives
``(C, H, W)`` for a U-Net.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from probgen.data.base import ProbgenDataModule, plot_samples

__all__ = ["ImageDataModule", "load_image_folder", "load_image_tensors", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def _read_image(path: Path, mode: str, size: tuple[int, int] | None) -> Tensor:
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert(mode)
        if size is not None and img.size != (size[1], size[0]):
            img = img.resize((size[1], size[0]), Image.BILINEAR)
        data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
        w, h = img.size
    return data.reshape(h, w, -1).permute(2, 0, 1).clone()  # (C, H, W) uint8


def load_image_folder(root: str | Path, channels: int | None = None, image_size=None) -> tuple[Tensor, Tensor | None, list[str]]:
    """Read every image under ``root``.

    Args:
        root: a folder of images, or of one sub-folder of images per class.
        channels: 1 (grayscale) or 3 (RGB); None: grayscale if the first image is, else RGB.
        image_size: resize every image to ``(H, W)`` (an int for square); None: all images must
            have the same size.

    Returns:
        ``(images (N, C, H, W) uint8, labels (N,) long or None, class_names)``.

    Raises:
        ValueError: no images, mixed sizes without ``image_size``, bad ``channels``.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"image folder {str(root)!r} does not exist or is not a folder")
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1, 3 or None, got {channels!r}")
    size = None if image_size is None else ((int(image_size),) * 2 if isinstance(image_size, int) else tuple(int(v) for v in image_size))
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ValueError(f"image_size must be a positive int or (H, W), got {image_size!r}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if classes:
        files = [(f, k) for k, c in enumerate(classes) for f in sorted((root / c).iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    else:
        files = [(f, -1) for f in sorted(root.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise ValueError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) found in {str(root)!r} or its sub-folders")
    if channels is None:
        from PIL import Image

        with Image.open(files[0][0]) as first:
            channels = 1 if first.mode in ("1", "L", "I", "I;16", "F") else 3
    mode = "L" if channels == 1 else "RGB"
    images = []
    for f, _ in files:
        img = _read_image(f, mode, size)
        if images and img.shape != images[0].shape:
            raise ValueError(
                f"image {str(f)!r} has shape {tuple(img.shape)} but {str(files[0][0])!r} has {tuple(images[0].shape)}: "
                "pass image_size to resize them"
            )
        images.append(img)
    labels = torch.tensor([k for _, k in files], dtype=torch.long) if classes else None
    return torch.stack(images), labels, classes


def load_image_tensors(path: str | Path) -> tuple[Tensor, Tensor | None]:
    """Read images (and labels) from a ``torch.save`` file, see the module docstring.

    Returns:
        ``(images (N, C, H, W), labels (N,) long or None)``.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"tensor file {str(path)!r} does not exist")
    obj = torch.load(path, weights_only=True, map_location="cpu")
    labels = None
    if isinstance(obj, dict):
        if "images" not in obj:
            raise ValueError(f"a tensor file holding a dict needs an 'images' entry, got keys {sorted(obj)}")
        images, labels = obj["images"], obj.get("labels")
    else:
        images = obj
    if not isinstance(images, Tensor) or images.dim() not in (3, 4):
        raise ValueError(f"images must be a tensor (N, C, H, W) or (N, H, W), got {getattr(images, 'shape', type(images))}")
    if images.dim() == 3:
        images = images[:, None]
    if labels is not None:
        labels = torch.as_tensor(labels)
        if labels.shape != (images.shape[0],) or labels.is_floating_point():
            raise ValueError(f"labels must be integers of shape ({images.shape[0]},), got {labels.dtype} {tuple(labels.shape)}")
        labels = labels.long()
    return images, labels


class ImageDataModule(ProbgenDataModule):
    """Images from a folder or a tensor file, split into train/val/test at random (seeded).

    Batches are ``(x,)`` or, with labels and ``with_labels=True``, ``(x, y)`` (for a
    class-conditional :class:`~probgen.interpolants.StochasticInterpolant` with ``num_classes``).

    Args:
        path: an image folder or a ``.pt`` / ``.pth`` tensor file.
        channels: for folders, 1 or 3 (None: from the first image).
        image_size: for folders, resize to ``(H, W)`` or a square side.
        levels: number of pixel levels of integer images (256 for 8-bit).
        dequantize: add ``U[0, 1)`` noise to integer pixels before scaling (see module docstring).
        centered: map ``[0, 1]`` to ``[-1, 1]``.
        with_labels: give ``(x, y)`` batches when labels exist.
        val_fraction, test_fraction: sizes of the held-out splits.
        batch_size, eval_batch_size, num_workers, seed: see :class:`ProbgenDataModule`.
    """

    def __init__(
        self,
        path: str,
        channels: int | None = None,
        image_size: int | list[int] | None = None,
        levels: int = 256,
        dequantize: bool = True,
        centered: bool = True,
        with_labels: bool = True,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers, seed=seed)
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
            raise ValueError(f"levels must be an integer >= 2, got {levels!r}")
        for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"{name} must be in [0, 1), got {value!r}")
        if val_fraction + test_fraction >= 1:
            raise ValueError(f"val_fraction + test_fraction must be < 1, got {val_fraction} + {test_fraction}")
        self.path, self.channels, self.image_size = Path(path), channels, image_size
        self.levels, self.dequantize, self.centered, self.with_labels = levels, dequantize, centered, with_labels
        self.val_fraction, self.test_fraction = float(val_fraction), float(test_fraction)
        self._image_shape: tuple[int, int, int] | None = None
        self.class_names: list[str] = []

    def _load(self) -> tuple[Tensor, Tensor | None]:
        if self.path.is_dir():
            images, labels, self.class_names = load_image_folder(self.path, self.channels, self.image_size)
        elif self.path.suffix in (".pt", ".pth"):
            images, labels = load_image_tensors(self.path)
        else:
            raise ValueError(f"path must be an image folder or a .pt/.pth tensor file, got {str(self.path)!r}")
        return images, labels

    def to_unit(self, x: Tensor) -> Tensor:
        """Map model-space images back to ``[0, 1]``."""
        return (x + 1) / 2 if self.centered else x

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the images (reads the data on first use)."""
        self.setup()
        return self._image_shape

    @property
    def num_classes(self) -> int:
        self.setup()
        return len(self.class_names) if self.class_names else int(self._num_classes)

    def build_splits(self) -> dict[str, tuple[Tensor, ...]]:
        images, labels = self._load()
        self._image_shape = tuple(images.shape[1:])
        self._num_classes = 0 if labels is None else int(labels.max()) + 1
        g = torch.Generator().manual_seed(self.seed)
        if images.is_floating_point():
            x = images.float()
            if bool((x < 0).any() or (x > 1).any()):
                raise ValueError("float images must lie in [0, 1] (integer images are scaled by their levels)")
        else:
            pixels = images.float()
            if bool((pixels >= self.levels).any() or (pixels < 0).any()):
                raise ValueError(f"integer pixels must lie in [0, levels) = [0, {self.levels}), got max {int(pixels.max())}")
            x = (pixels + torch.rand(pixels.shape, generator=g)) / self.levels if self.dequantize else pixels / (self.levels - 1)
        if self.centered:
            x = 2 * x - 1
        x = x.reshape(len(x), -1)
        n = len(x)
        order = torch.randperm(n, generator=g)
        n_val, n_test = int(round(self.val_fraction * n)), int(round(self.test_fraction * n))
        parts = {"train": order[n_val + n_test :], "val": order[:n_val], "test": order[n_val : n_val + n_test]}
        keep_labels = labels is not None and self.with_labels
        return {k: ((x[v], labels[v]) if keep_labels else (x[v],)) for k, v in parts.items() if len(v) > 0}

    def plot_samples(self, samples: Tensor, path: str | Path) -> Path:
        self.setup()
        C, H, W = self._image_shape
        samples = self.to_unit(samples).clamp(0, 1)
        if C == 1:
            return plot_samples(samples, path, reference=self.to_unit(self.splits["train"][0][:64]), image_shape=(H, W))
        return save_image_grid(samples.reshape(-1, C, H, W), path)


def save_image_grid(images: Tensor, path: str | Path, nrow: int | None = None) -> Path:
    """Write ``(n, C, H, W)`` images in ``[0, 1]`` (C = 1 or 3) as one PNG grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = images.detach().float().cpu().clamp(0, 1)
    n, C, H, W = images.shape
    k = nrow or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / k))
    canvas = torch.ones(C, rows * (H + 1), k * (W + 1))
    for i, img in enumerate(images):
        r, c = divmod(i, k)
        canvas[:, r * (H + 1) : r * (H + 1) + H, c * (W + 1) : c * (W + 1) + W] = img
    fig, ax = plt.subplots(figsize=(max(3, k * W / 16), max(3, rows * H / 16)))
    ax.imshow(canvas[0].numpy() if C == 1 else canvas.permute(1, 2, 0).numpy(), cmap="gray_r" if C == 1 else None)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
