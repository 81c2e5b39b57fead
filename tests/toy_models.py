"""A minimal probgen model and datamodule for testing the CLI machinery in isolation."""

import time
from pathlib import Path

import lightning as L
import torch
from torch import nn

from probgen.base import ProbgenModule
from probgen.data.base import ProbgenDataModule


class GaussianData(ProbgenDataModule):
    """Samples of N(mean, I) in 2-D."""

    def __init__(self, mean: float = 1.5, n: int = 512, batch_size: int = 64, seed: int = 0):
        super().__init__(batch_size=batch_size, seed=seed)
        self.mean, self.n = mean, n

    def build_splits(self):
        g = torch.Generator().manual_seed(self.seed)
        x = torch.randn(2 * self.n, 2, generator=g) + self.mean
        return {"train": (x[: self.n],), "val": (x[self.n :],)}


class GaussianFit(ProbgenModule):
    """Maximum-likelihood Gaussian with a tiny MLP feature (so there are weights to compare)."""

    def __init__(self, lr: float = 0.05, hidden: int = 8):
        super().__init__()
        self.save_hyperparameters()
        self.mu = nn.Parameter(torch.zeros(2))
        self.log_sigma = nn.Parameter(torch.zeros(2))
        self.net = nn.Linear(2, hidden)

    def nll(self, x):
        z = (x - self.mu) / self.log_sigma.exp()
        return (0.5 * z.square() + self.log_sigma).sum(-1).mean() + 1e-3 * self.net(x).square().mean()

    def training_step(self, batch, batch_idx):
        loss = self.nll(batch[0])
        self.log("train/nll", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/nll", self.nll(batch[0]), sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    def sample(self, num_samples, generator=None):
        eps = torch.randn(num_samples, 2, generator=generator, device=self.mu.device)
        return self.mu + self.log_sigma.exp() * eps


class PauseAfterStep(L.Callback):
    """Test helper: after optimiser step ``step``, write ``marker`` and sleep until killed.

    The kill-and-resume tests (``tests/test_resume.py``) run ``probgen fit`` with this
    callback and send SIGKILL once ``marker`` exists, so the run dies at a known step,
    mid-epoch, after a checkpoint and with no chance to clean up.
    """

    def __init__(self, step: int, marker: str):
        self.step, self.marker = step, marker

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            Path(self.marker).write_text(str(trainer.global_step))
            time.sleep(3600)
