"""Exponential moving average of the weights, evaluated instead of the raw weights (official code:
``moving_average_decay=0.9999``, ``num_updates=global_step``)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEma(nn.Module):
    """TF ``ExponentialMovingAverage`` with ``num_updates``: the effective decay is
    ``min(decay, (1 + n) / (10 + n))``, so early averages follow the weights closely instead of
    being dominated by the random init. Parameters are averaged; BN running statistics too, as the
    official code averages its ``moving_vars`` collection."""

    def __init__(self, model: nn.Module, decay: float = 0.9999) -> None:
        super().__init__()
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay {decay} must be in (0, 1)")
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        n = int(self.num_updates)
        d = min(self.decay, (1 + n) / (10 + n))
        src = model.state_dict()
        for k, v in self.module.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(src[k].detach(), alpha=1 - d)
            else:
                v.copy_(src[k])
        self.num_updates += 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)
