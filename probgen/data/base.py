"""Base DataModule and the default sample plot.

Every probgen DataModule holds its splits as tensors: subclasses implement
:meth:`ProbgenDataModule.build_splits`, which returns ``{"train": (x, ...), "val": ...,
"test": ...}``; data made in code uses ``self.seed`` so that the same config gives the
same data on every machine.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler, TensorDataset

from probgen.validation import check_int


class EpochShuffle(Sampler[int]):
    """A random permutation per epoch that depends only on ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` before each epoch, so a run resumed from a
    checkpoint at an epoch boundary sees exactly the batches of an uninterrupted run.
    """

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def permutation(self) -> Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.n, generator=g)

    def __iter__(self):
        # a generator: the permutation is drawn at the first next(), after Lightning's
        # set_epoch (Lightning may create the iterator before calling set_epoch)
        yield from self.permutation().tolist()


class EpochBatches(EpochShuffle):
    """Index batches ``(batch_size,)`` of an :class:`EpochShuffle` permutation (or in order).

    Used with ``DataLoader(dataset, sampler=EpochBatches(...), batch_size=None)`` so that a
    tensor dataset gathers a whole batch with one indexing operation instead of
    ``batch_size`` ``__getitem__`` calls. :meth:`resume_at` makes the next iteration of a
    given epoch start at a given batch (mid-epoch resume, see :class:`ResumableDataLoader`).
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, shuffle: bool = True, drop_last: bool = False) -> None:
        super().__init__(n, seed)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self._resume: tuple[int, int] | None = None  # (epoch, first batch) of the next iteration
        self._start = 0

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def resume_at(self, epoch: int, batch: int) -> None:
        """Start the next iteration of ``epoch`` at batch ``batch`` (0-based) instead of batch 0."""
        if not 0 <= batch <= len(self):
            raise ValueError(f"batch must be in [0, {len(self)}] (the batches per epoch), got {batch}")
        self.epoch, self._resume = epoch, (epoch, batch)

    def claim_start(self) -> int:
        """The first batch of the iteration about to begin: the :meth:`resume_at` offset if
        it was set for the current epoch, else 0. Consumes the offset."""
        resume, self._resume = self._resume, None
        self._start = resume[1] if resume is not None and resume[0] == self.epoch else 0
        return self._start

    def __iter__(self):
        start, self._start = self._start, 0
        order = self.permutation() if self.shuffle else torch.arange(self.n)
        for i in range(start, len(self)):
            yield order[i * self.batch_size : (i + 1) * self.batch_size]


class ResumableDataLoader(DataLoader):
    """A DataLoader over an :class:`EpochBatches` sampler that resumes mid-epoch exactly.

    It follows Lightning's stateful-loader protocol: :meth:`state_dict` (saved in every
    checkpoint under ``loops.fit_loop.state_dict.combined_loader``) is the epoch and the
    number of batches handed to the training loop in it; :meth:`load_state_dict` makes the
    next iteration of that epoch continue with the following batch, so a run resumed from
    a mid-epoch checkpoint sees exactly the batches of an uninterrupted run.

    The count is of batches handed out: Lightning does not prefetch from a loader whose
    length is known (ours always is), so it equals the batches trained on. The iterator
    is created lazily, at the first ``next()``, i.e. after Lightning's ``set_epoch``, so
    worker processes also start on the right epoch's permutation.
    """

    def __iter__(self):
        return self._batches()

    def _batches(self):
        sampler = self.sampler
        self._epoch = getattr(sampler, "epoch", 0)
        self._position = sampler.claim_start() if isinstance(sampler, EpochBatches) else 0
        for batch in super().__iter__():
            self._position += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "batches"}``: the current epoch and the batches handed out in it."""
        if not hasattr(self, "_position"):
            return {"epoch": int(getattr(self.sampler, "epoch", 0)), "batches": 0}
        return {"epoch": int(self._epoch), "batches": int(self._position)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue epoch ``state["epoch"]`` after batch ``state["batches"]`` at the next iteration.

        Raises:
            ValueError: if ``state`` lacks ``"epoch"`` or ``"batches"``.
        """
        if not {"epoch", "batches"} <= set(state):
            raise ValueError(f"state must hold 'epoch' and 'batches' (a ResumableDataLoader.state_dict()), got keys {sorted(state)}")
        epoch, batches = int(state["epoch"]), int(state["batches"])
        if isinstance(self.sampler, EpochBatches):
            if batches < len(self.sampler):  # a finished epoch needs no offset: the next one starts at 0
                self.sampler.resume_at(epoch, batches)
        elif batches > 0:
            import warnings

            warnings.warn(
                f"ResumableDataLoader: the sampler is a {type(self.sampler).__name__} (e.g. a distributed "
                "wrapper), which cannot skip batches; the resumed epoch starts again from its first batch",
                stacklevel=2,
            )


class ProbgenDataModule(L.LightningDataModule):
    """Tensor-backed DataModule: subclasses say how to build the splits.

    Args:
        batch_size: training batch size, > 0.
        eval_batch_size: batch size for val/test/predict (defaults to ``batch_size``).
        num_workers: DataLoader workers (0 keeps everything in the main process).
        seed: seed for data made in code and for the training shuffle.
    """

    def __init__(
        self,
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_int("batch_size", batch_size, ge=1)
        check_int("eval_batch_size", eval_batch_size, ge=1, allow_none=True)
        check_int("num_workers", num_workers, ge=0)
        check_int("seed", seed)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.splits: dict[str, tuple[Tensor, ...]] | None = None

    # -- to implement -------------------------------------------------------------------
    def build_splits(self) -> dict[str, tuple[Tensor, ...]]:
        """Return ``{"train": tensors, "val": tensors, "test": tensors}`` (val/test optional)."""
        raise NotImplementedError

    # -- Lightning hooks ------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.splits is None:
            splits = self.build_splits()
            if "train" not in splits:
                raise ValueError(f"{type(self).__name__}.build_splits must return a 'train' split")
            for name, tensors in splits.items():
                for t in tensors:
                    if t.is_floating_point() and not torch.isfinite(t).all():
                        raise ValueError(f"split {name!r} of {type(self).__name__} contains NaN or inf")
            self.splits = splits

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        if split not in self.splits:
            split = "val" if split == "test" and "val" in self.splits else "train"
        n = len(self.splits[split][0])
        batches = EpochBatches(
            n,
            self.batch_size if shuffle else self.eval_batch_size,
            seed=self.seed,
            shuffle=shuffle,
            drop_last=shuffle and n > self.batch_size,
        )
        # the loader's own generator seeds worker processes; without it, every iterator
        # creation would draw from the global RNG and shift the model's random stream
        generator = torch.Generator().manual_seed(self.seed)
        return ResumableDataLoader(
            TensorDataset(*self.splits[split]),
            sampler=batches,
            batch_size=None,
            num_workers=self.num_workers,
            generator=generator,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    # -- plotting -------------------------------------------------------------------------
    def plot_samples(self, samples: Tensor, path: str | Path) -> Path:
        """Write a PNG of model samples next to held-out data where that makes sense."""
        self.setup()
        reference = self.splits.get("test", self.splits["train"])[0]
        return plot_samples(samples, path, reference=reference)


def plot_samples(
    samples: Tensor,
    path: str | Path,
    reference: Tensor | None = None,
    image_shape: tuple[int, ...] | None = None,
    title: str = "samples",
) -> Path:
    """Default plot: 2-D scatter/histogram, 1-D histogram, image grid, or path plot.

    Args:
        samples: ``(n, d)`` points, ``(n, T, d)`` paths, or ``(n, *image_shape)``.
        path: PNG path to write.
        reference: optional data of the same shape, drawn beside the samples.
        image_shape: if given, each sample is reshaped to it and shown as an image.
        title: figure title.

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = samples.detach().float().cpu()
    panels = [("model", samples)] + ([("data", reference.detach().float().cpu())] if reference is not None else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.5), squeeze=False)
    for ax, (name, x) in zip(axes[0], panels):
        if image_shape is not None or x.dim() == 3 and x.shape[-1] == x.shape[-2]:
            shape = image_shape or tuple(x.shape[1:])
            imgs = x[:64].reshape(-1, *shape[-2:])
            k = int(math.ceil(math.sqrt(len(imgs))))
            h, w = imgs.shape[-2:]
            canvas = torch.zeros(k * (h + 1), k * (w + 1))
            for i, img in enumerate(imgs):
                r, c = divmod(i, k)
                canvas[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = img
            ax.imshow(canvas.numpy(), cmap="gray_r")
            ax.axis("off")
        elif x.dim() == 3:  # paths (n, T, d): plot the first coordinate
            for p in x[:32]:
                ax.plot(p[:, 0].numpy(), lw=0.8, alpha=0.7)
            ax.set_xlabel("time step")
        elif x.dim() == 2 and x.shape[1] == 2:
            lim = float(x.abs().quantile(0.995)) * 1.05 if len(x) > 1 else 1.0
            ax.hist2d(x[:, 0].numpy(), x[:, 1].numpy(), bins=100, range=[[-lim, lim], [-lim, lim]], cmap="viridis")
            ax.set_aspect("equal")
        else:
            ax.hist(x.reshape(len(x), -1)[:, 0].numpy(), bins=80, density=True)
        ax.set_title(f"{title}: {name}" if len(panels) > 1 else title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
