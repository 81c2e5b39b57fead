"""A bounded per-chain store of posterior samples (memory flat over arbitrarily long runs).

Each chain keeps at most ``capacity`` samples in preallocated buffers, so the store lives in
the module's ``state_dict`` (and hence the Lightning checkpoint) with fixed shapes.

Policies:
    * ``"reservoir"`` (Vitter's algorithm R): after ``n`` offered draws every one of them is
      kept with the same probability ``capacity / n``; the kept set is a uniform subsample of
      the whole post-burn-in run. The random slot of draw ``n`` comes from a generator
      seeded with ``(seed, n)``, so the store needs no RNG state to resume exactly.
    * ``"last"``: a ring buffer of the ``capacity`` most recent draws (a sliding window).

The same slot is used for all chains (their draws are offered together).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

STORE_POLICIES = ("reservoir", "last")


class SampleStore(nn.Module):
    """Bounded store of stacked chain states.

    Args:
        shapes: ``{name: per-chain shape}`` of what is stored.
        num_chains: ``K`` > 0.
        capacity: samples kept per chain ``M`` > 0.
        policy: ``"reservoir"`` or ``"last"`` (see module doc).
        seed: seed of the reservoir's slot choices.
        dtype: storage dtype.
    """

    def __init__(
        self,
        shapes: dict[str, tuple[int, ...]],
        num_chains: int,
        capacity: int,
        policy: str = "reservoir",
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if policy not in STORE_POLICIES:
            raise ValueError(f"policy must be one of {STORE_POLICIES}, got {policy!r}")
        if not isinstance(capacity, int) or capacity <= 0:
            raise ValueError(f"capacity must be a positive integer, got {capacity!r}")
        if not isinstance(num_chains, int) or num_chains <= 0:
            raise ValueError(f"num_chains must be a positive integer, got {num_chains!r}")
        self.names = list(shapes)
        self.policy, self.capacity, self.num_chains, self.seed = policy, capacity, num_chains, seed
        for i, name in enumerate(self.names):
            self.register_buffer(f"value_{i}", torch.zeros(num_chains, capacity, *shapes[name], dtype=dtype))
        # index of the offered draw held in each slot (-1: empty) and the training step it came from
        self.register_buffer("draw", torch.full((capacity,), -1, dtype=torch.long))
        self.register_buffer("step", torch.full((capacity,), -1, dtype=torch.long))
        self.register_buffer("num_offered", torch.zeros((), dtype=torch.long))

    def __len__(self) -> int:
        """Number of samples held per chain."""
        return int((self.draw >= 0).sum())

    def _slot(self, n: int) -> int | None:
        if n < self.capacity:
            return n
        if self.policy == "last":
            return n % self.capacity
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + n)
        j = int(torch.randint(0, n + 1, (1,), generator=g))
        return j if j < self.capacity else None

    @torch.no_grad()
    def add(self, values: dict[str, Tensor], step: int = -1) -> None:
        """Offer one draw of every chain.

        Args:
            values: ``{name: (K, *shape)}`` for every name in ``shapes``.
            step: the training step of the draw (kept for ordering and diagnostics).
        """
        missing = set(self.names) - set(values)
        if missing:
            raise ValueError(f"values lacks {sorted(missing)}; the store holds {self.names}")
        n = int(self.num_offered)
        slot = self._slot(n)
        if slot is not None:
            for i, name in enumerate(self.names):
                getattr(self, f"value_{i}")[:, slot].copy_(values[name])
            self.draw[slot] = n
            self.step[slot] = step
        self.num_offered += 1

    def samples(self) -> dict[str, Tensor]:
        """Held samples in the order they were drawn: ``{name: (K, m, *shape)}``, ``m = len(self)``."""
        held = torch.nonzero(self.draw >= 0).squeeze(1)
        order = held[self.draw[held].argsort()]
        return {name: getattr(self, f"value_{i}")[:, order] for i, name in enumerate(self.names)}

    def steps(self) -> Tensor:
        """Training steps of the held samples, in drawn order: ``(m,)``."""
        held = self.draw[self.draw >= 0]
        return self.step[self.draw >= 0][held.argsort()]

    def flat_samples(self) -> dict[str, Tensor]:
        """All held samples of all chains as one stack ``{name: (K * m, *shape)}`` (chain-major)."""
        return {k: v.reshape(-1, *v.shape[2:]) for k, v in self.samples().items()}
