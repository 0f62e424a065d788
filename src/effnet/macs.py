"""Analytic parameter and MAC counts from a spec (no torch).

Counts what the paper's "FLOPS" column counts: multiply-adds of convolutions and the classifier
(docs/paper.md: the paper's FLOPS are multiply-adds). Batch norm, activations, pooling and the SE
gating multiply are not counted, exactly as ``torch.utils.flop_counter`` does not count them, so
:func:`effnet.flops.count_macs` cross-checks this module to the last MAC.

Spatial sizes follow ``ceil(H / stride)``, which both TF SAME and PyTorch ``(k-1)//2`` padding give
for odd kernels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from effnet.spec import NetworkSpec, StageSpec, bottleneck_channels, expanded_channels, se_channels


@dataclass
class Cost:
    """Running totals: parameters, MACs, and the (params, MACs) of each named part."""

    params: int = 0
    macs: int = 0
    parts: dict[str, tuple[int, int]] = field(default_factory=dict)

    def conv(self, cin: int, cout: int, k: int, hw: int, *, groups: int = 1, bias: bool = False,
             bn: bool = True) -> None:
        """A k×k conv producing an ``hw × hw`` map, optionally followed by batch norm."""
        self.params += k * k * (cin // groups) * cout + (cout if bias else 0) + (2 * cout if bn else 0)
        self.macs += k * k * (cin // groups) * cout * hw * hw

    def linear(self, cin: int, cout: int) -> None:
        self.params += cin * cout + cout
        self.macs += cin * cout


def _down(hw: int, stride: int) -> int:
    return math.ceil(hw / stride)


def _mbconv(cost: Cost, stage: StageSpec, cin: int, hw: int, out_hw: int) -> None:
    mid = expanded_channels(cin, stage.expand_ratio)
    if mid != cin:  # MBConv1 has no expansion conv
        cost.conv(cin, mid, 1, hw)
    cost.conv(mid, mid, stage.kernel_size, out_hw, groups=mid)
    se = se_channels(cin, stage.se_ratio)
    if se:
        cost.conv(mid, se, 1, 1, bias=True, bn=False)
        cost.conv(se, mid, 1, 1, bias=True, bn=False)
    cost.conv(mid, stage.out_channels, 1, out_hw)


def _fused(cost: Cost, stage: StageSpec, cin: int, hw: int, out_hw: int) -> None:
    mid = expanded_channels(cin, stage.expand_ratio)
    if mid != cin:  # k×k expansion (stride), then a 1×1 projection
        cost.conv(cin, mid, stage.kernel_size, out_hw)
    se = se_channels(cin, stage.se_ratio)
    if se:
        cost.conv(mid, se, 1, 1, bias=True, bn=False)
        cost.conv(se, mid, 1, 1, bias=True, bn=False)
    if mid != cin:
        cost.conv(mid, stage.out_channels, 1, out_hw)
    else:  # expand ratio 1: the k×k conv itself projects
        cost.conv(cin, stage.out_channels, stage.kernel_size, out_hw)


def _dwsep(cost: Cost, stage: StageSpec, cin: int, hw: int, out_hw: int) -> None:
    cost.conv(cin, cin, stage.kernel_size, out_hw, groups=cin)
    cost.conv(cin, stage.out_channels, 1, out_hw)


def _basic(cost: Cost, stage: StageSpec, cin: int, hw: int, out_hw: int) -> None:
    cost.conv(cin, stage.out_channels, 3, out_hw)
    cost.conv(stage.out_channels, stage.out_channels, 3, out_hw)


def _bottleneck(cost: Cost, stage: StageSpec, cin: int, hw: int, out_hw: int) -> None:
    mid = bottleneck_channels(stage.out_channels)
    cost.conv(cin, mid, 1, hw)
    cost.conv(mid, mid, 3, out_hw)
    cost.conv(mid, stage.out_channels, 1, out_hw)


# One cost per kind in spec.BLOCK_TYPES, as model._BLOCKS builds them (tests/test_spec.py checks both).
_BLOCK_COSTS: dict[str, Callable[[Cost, StageSpec, int, int, int], None]] = {
    "mbconv": _mbconv, "fused_mbconv": _fused, "dwsep": _dwsep, "basic": _basic, "bottleneck": _bottleneck,
}


def _block(cost: Cost, stage: StageSpec, cin: int, stride: int, hw: int) -> int:
    """Add one block's cost; return its output size."""
    out_hw = _down(hw, stride)
    _BLOCK_COSTS[stage.block](cost, stage, cin, hw, out_hw)
    if stage.block in ("basic", "bottleneck") and (stride != 1 or cin != stage.out_channels):
        cost.conv(cin, stage.out_channels, 1, out_hw)  # projection shortcut
    return out_hw


def estimate_cost(spec: NetworkSpec, *, num_classes: int = 1000, in_chans: int = 3,
                  resolution: int | None = None) -> Cost:
    """Parameters and MACs of ``spec`` at ``resolution`` (default: the spec's own).

    ``parts`` holds (params, MACs) of ``stem``, ``stage1``…``stageN`` and ``head`` for reports.
    """
    hw = resolution or spec.resolution
    cost = Cost()
    before = (0, 0)

    def mark(name: str) -> None:
        nonlocal before
        cost.parts[name] = (cost.params - before[0], cost.macs - before[1])
        before = (cost.params, cost.macs)

    hw = _down(hw, spec.stem.stride)
    cost.conv(in_chans, spec.stem.out_channels, spec.stem.kernel_size, hw)
    if spec.stem.pool:
        hw = _down(hw, 2)
    mark("stem")
    cin = spec.stem.out_channels
    for i, stage in enumerate(spec.stages):
        for j in range(stage.repeats):
            hw = _block(cost, stage, cin, stage.stride if j == 0 else 1, hw)
            cin = stage.out_channels
        mark(f"stage{i + 1}")
    if spec.head.channels is not None:
        cost.conv(cin, spec.head.channels, 1, hw)
        cin = spec.head.channels
    if num_classes > 0:
        cost.linear(cin, num_classes)
    mark("head")
    return cost
