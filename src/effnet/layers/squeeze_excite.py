"""Squeeze-and-excitation (Hu et al. 2018) as in the EfficientNet TF reference."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class SqueezeExcite(nn.Module):
    """Global mean → 1×1 conv (bias) → activation → 1×1 conv (bias) → sigmoid gate.

    Args:
        channels: channels gated (the MBConv expanded width).
        se_channels: bottleneck width; EfficientNet derives it from the block *input*, not from
            ``channels`` (that is the caller's job).
        activation: factory of the inner activation (swish in EfficientNet).
    """

    def __init__(self, channels: int, se_channels: int, activation: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, se_channels, 1, bias=True)
        self.act = activation()
        self.expand = nn.Conv2d(se_channels, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(self.act(self.reduce(s))))
