"""Conv → BatchNorm → optional activation, with PyTorch or TensorFlow SAME padding."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ConvOptions:
    """Settings shared by every conv of a network: padding mode and batch-norm numerics."""

    padding: Literal["symmetric", "same"] = "symmetric"
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1


class Conv2dSame(nn.Conv2d):
    """TF SAME padding for strided convs: pad ``max((ceil(H/s)-1)·s + k - H, 0)`` pixels, the extra
    one on the bottom/right. PyTorch's symmetric padding shifts strided outputs by one pixel, which
    breaks TF-ported weights (the Lite checkpoints) subtly but measurably."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s, d in zip(x.shape[-1:-3:-1], self.kernel_size[::-1], self.stride[::-1],
                                 self.dilation[::-1], strict=True):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class ConvNormAct(nn.Module):
    """``conv`` (no bias) → ``bn`` → ``act`` (identity when ``activation`` is None).

    Output size is ``ceil(H / stride)`` for odd kernels in both padding modes. Stride-1 convs use
    symmetric padding even in SAME mode: for odd kernels the two are identical.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, *, stride: int = 1,
                 groups: int = 1, activation: Callable[[], nn.Module] | None = None,
                 options: ConvOptions | None = None) -> None:
        super().__init__()
        opts = options or ConvOptions()
        if opts.padding == "same" and stride > 1:
            self.conv: nn.Conv2d = Conv2dSame(in_channels, out_channels, kernel_size, stride, 0,
                                              groups=groups, bias=False)
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2,
                                  groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=opts.bn_eps, momentum=opts.bn_momentum)
        self.act = activation() if activation is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))
