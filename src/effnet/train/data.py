"""Deterministic, resumable, shardable data loading for training.

Two things make a killed run resume to *exactly* the same weights:

* the order of samples is a pure function of (seed, epoch), sharded by rank, and a resumed epoch
  skips the batches already done (:class:`EpochSampler`);
* the augmentation of a sample is a pure function of (seed, epoch, index): each sample's transform
  runs under its own forked RNG (:class:`SeededTransformDataset`), so it does not depend on which
  worker process draws it, on how many batches were skipped, or on the model's RNG use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler


class SeededTransformDataset(Dataset[tuple[Any, int]]):
    """Applies ``transform`` to ``base[i]`` with the torch RNG seeded from (seed, epoch, i)."""

    def __init__(self, base: Dataset[tuple[Any, int]], transform: Callable[[Any], torch.Tensor], seed: int,
                 indices: list[int] | None = None) -> None:
        self.base, self.transform, self.seed = base, transform, seed
        self.indices = indices
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image, target = self.base[self.indices[i] if self.indices is not None else i]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + self.epoch) * 10_000_019 + i)
            return self.transform(image), int(target)


class EpochSampler(Sampler[list[int]]):
    """Batches of a (seed + epoch)-seeded permutation, rank ``rank`` of ``world`` taking every
    ``world``-th batch; ``start_batch`` skips batches of a resumed epoch. Incomplete last batches
    are dropped so every rank runs the same number of steps (DDP needs that)."""

    def __init__(self, n: int, batch_size: int, *, seed: int, rank: int = 0, world: int = 1,
                 shuffle: bool = True) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world, self.shuffle = rank, world, shuffle
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    @property
    def batches_per_epoch(self) -> int:
        return self.n // (self.batch_size * self.world)

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start_batch

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        global_batch = self.batch_size * self.world
        for b in range(self.start_batch, self.batches_per_epoch):
            chunk = order[b * global_batch:(b + 1) * global_batch]
            yield chunk[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
