"""The blocks of every family, built from resolved integers (never specs or multipliers).

MBConv covers EfficientNet (with SE) and MobileNetV2's inverted residual (without);
FusedMBConv is EfficientNetV2's; DepthwiseSeparable is MobileNetV1's layer; BasicBlock and
Bottleneck are ResNet's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from effnet.layers import ConvNormAct, ConvOptions, DropPath, SqueezeExcite

Act = Callable[[], nn.Module]


class MBConv(nn.Module):
    """Mobile inverted bottleneck (Sandler et al. 2018) with optional SE (paper §4, TF MBConvBlock).

    expand 1×1 (skipped when ``expand_ratio == 1``) → BN → act → depthwise k×k → BN → act → SE →
    project 1×1 → BN (linear: no activation). Residual with stochastic depth only when
    ``stride == 1`` and ``in_channels == out_channels``.
    """

    def __init__(self, in_channels: int, out_channels: int, *, expanded_channels: int, se_channels: int,
                 kernel_size: int, stride: int, activation: Act, drop_path_rate: float = 0.0,
                 options: ConvOptions | None = None) -> None:
        super().__init__()
        self.expand = (ConvNormAct(in_channels, expanded_channels, 1, activation=activation, options=options)
                       if expanded_channels != in_channels else nn.Identity())
        self.depthwise = ConvNormAct(expanded_channels, expanded_channels, kernel_size, stride=stride,
                                     groups=expanded_channels, activation=activation, options=options)
        self.se = SqueezeExcite(expanded_channels, se_channels, activation) if se_channels else nn.Identity()
        self.project = ConvNormAct(expanded_channels, out_channels, 1, activation=None, options=options)
        self.has_residual = stride == 1 and in_channels == out_channels
        self.drop_path = DropPath(drop_path_rate) if self.has_residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.depthwise(self.expand(x))))
        return x + self.drop_path(y) if self.has_residual else y


class FusedMBConv(nn.Module):
    """EfficientNetV2's fused MBConv (Tan & Le 2021, §3.2 and Fig. 2; google/automl
    ``efficientnetv2/effnetv2_model.py`` ``FusedMBConvBlock``): one regular k×k conv replaces the
    expand 1×1 + depthwise k×k pair, which runs faster on accelerators that are poor at depthwise.

    ``expand_ratio > 1``: k×k (stride) → BN → act → SE → project 1×1 → BN (linear).
    ``expand_ratio == 1``: SE on the input → k×k (stride) to ``out_channels`` → BN → act (the
    official code adds the activation only in this case: "add act if no expansion").
    Residual with stochastic depth when ``stride == 1`` and ``in_channels == out_channels``.
    """

    def __init__(self, in_channels: int, out_channels: int, *, expanded_channels: int, se_channels: int,
                 kernel_size: int, stride: int, activation: Act, drop_path_rate: float = 0.0,
                 options: ConvOptions | None = None) -> None:
        super().__init__()
        fused = expanded_channels != in_channels
        self.expand = (ConvNormAct(in_channels, expanded_channels, kernel_size, stride=stride,
                                   activation=activation, options=options) if fused else nn.Identity())
        self.se = SqueezeExcite(expanded_channels, se_channels, activation) if se_channels else nn.Identity()
        self.project = (ConvNormAct(expanded_channels, out_channels, 1, activation=None, options=options) if fused
                        else ConvNormAct(in_channels, out_channels, kernel_size, stride=stride,
                                         activation=activation, options=options))
        self.has_residual = stride == 1 and in_channels == out_channels
        self.drop_path = DropPath(drop_path_rate) if self.has_residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.expand(x)))
        return x + self.drop_path(y) if self.has_residual else y


class DepthwiseSeparable(nn.Module):
    """MobileNetV1's layer: depthwise k×k → BN → act → pointwise 1×1 → BN → act; no residual."""

    def __init__(self, in_channels: int, out_channels: int, *, kernel_size: int, stride: int,
                 activation: Act, options: ConvOptions | None = None) -> None:
        super().__init__()
        self.depthwise = ConvNormAct(in_channels, in_channels, kernel_size, stride=stride, groups=in_channels,
                                     activation=activation, options=options)
        self.pointwise = ConvNormAct(in_channels, out_channels, 1, activation=activation, options=options)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class _Residual(nn.Module):
    """Shared tail of the ResNet blocks: projection shortcut when the shape changes, stochastic
    depth on the branch, activation after the add."""

    def _init_shortcut(self, in_channels: int, out_channels: int, stride: int, activation: Act,
                       drop_path_rate: float, options: ConvOptions | None) -> None:
        self.shortcut = (ConvNormAct(in_channels, out_channels, 1, stride=stride, options=options)
                         if stride != 1 or in_channels != out_channels else nn.Identity())
        self.drop_path = DropPath(drop_path_rate)
        self.act = activation()

    def _merge(self, x: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        return self.act(self.shortcut(x) + self.drop_path(branch))


class BasicBlock(_Residual):
    """ResNet-18/34 block: 3×3 (stride) → BN → act → 3×3 → BN, plus shortcut, then act."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int, activation: Act,
                 drop_path_rate: float = 0.0, options: ConvOptions | None = None) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(in_channels, out_channels, 3, stride=stride, activation=activation,
                                 options=options)
        self.conv2 = ConvNormAct(out_channels, out_channels, 3, options=options)
        self._init_shortcut(in_channels, out_channels, stride, activation, drop_path_rate, options)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._merge(x, self.conv2(self.conv1(x)))


class Bottleneck(_Residual):
    """ResNet-50 block (torchvision v1.5: stride on the 3×3): 1×1 → 3×3 (stride) → 1×1, plus shortcut."""

    def __init__(self, in_channels: int, out_channels: int, *, mid_channels: int, stride: int,
                 activation: Act, drop_path_rate: float = 0.0, options: ConvOptions | None = None) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(in_channels, mid_channels, 1, activation=activation, options=options)
        self.conv2 = ConvNormAct(mid_channels, mid_channels, 3, stride=stride, activation=activation,
                                 options=options)
        self.conv3 = ConvNormAct(mid_channels, out_channels, 1, options=options)
        self._init_shortcut(in_channels, out_channels, stride, activation, drop_path_rate, options)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._merge(x, self.conv3(self.conv2(self.conv1(x))))
