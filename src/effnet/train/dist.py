"""Distributed data parallel helpers (torchrun: gloo on CPU, NCCL on GPU)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Only rank 0 writes files and logs."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed() -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment (no-op when alone)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not torch_dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch_dist.init_process_group(backend=backend)
    return DistInfo(torch_dist.get_rank(), torch_dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def average_buffers(model: nn.Module, info: DistInfo) -> None:
    """Average BN running statistics across ranks (each rank saw different images), so every rank,
    and the checkpoint rank 0 writes, holds the same model."""
    if not info.enabled:
        return
    for b in model.buffers():
        if b.dtype.is_floating_point:
            torch_dist.all_reduce(b, op=torch_dist.ReduceOp.SUM)
            b.div_(info.world)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        torch_dist.barrier()



def finish_distributed(info: DistInfo) -> None:
    """Leave the process group together: a barrier, then ``destroy_process_group``.

    Without it each rank tears gloo down at interpreter exit on its own; a rank that exits while
    the other's gloo thread is still joined to it aborts with "terminate called without an active
    exception" (SIGABRT, seen in tests/test_train.py's two-rank test under load)."""
    if info.enabled and torch_dist.is_initialized():
        torch_dist.barrier()
        torch_dist.destroy_process_group()
