"""Architecture as data: frozen, validated specs of a stage-based ConvNet (no torch).

A :class:`NetworkSpec` is the whole architecture as a value: stem, stages, head and input
resolution. It can be printed, compared, serialised into a checkpoint, costed without torch
(:mod:`effnet.macs`) and scaled by a pure function (:func:`effnet.scaling.scale_spec`).

The one rule that makes scaling generic (ARCHITECTURE.md, "Read in this order"): **each stage
stores exactly one width**, its ``out_channels``. Every other channel count is derived from it by a
fixed ratio inside the block: the MBConv expansion is ``in_channels · expand_ratio``, the
squeeze-excitation width is ``max(1, int(in_channels · se_ratio))`` (from the block *input*, as in
the TF reference), and the ResNet bottleneck width is ``out_channels / 4``. So scaling only rewrites
repeats, stage widths, stem/head widths and the resolution.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from effnet.errors import SpecError

BLOCK_TYPES = ("mbconv", "fused_mbconv", "dwsep", "basic", "bottleneck")
"""Block kinds a stage can use: MBConv (EfficientNet, MobileNetV2 when ``se_ratio=0``), fused MBConv
(EfficientNetV2: a regular k×k conv in place of expand 1×1 + depthwise), depthwise-separable
(MobileNetV1), ResNet basic and bottleneck blocks."""

ACTIVATIONS = ("swish", "silu", "relu", "relu6")

HeadPolicy = Literal["scale", "at_least_base", "fixed"]
"""How the head width follows the width multiplier: ``scale`` (EfficientNet: round(1280·w)),
``at_least_base`` (MobileNetV2: round(1280·max(1, w))), ``fixed`` (EfficientNet-Lite: 1280)."""

DepthRounding = Literal["ceil", "round"]
"""How a depth multiplier's ``d · L_i`` becomes a whole number of blocks: ``ceil`` (the official TF
code's ``round_repeats``) or ``round`` (to nearest, half up). See :func:`effnet.scaling.round_repeats`."""

DEPTH_ROUNDINGS: tuple[str, ...] = ("ceil", "round")

Padding = Literal["symmetric", "same"]
"""``symmetric``: PyTorch's ``(k-1)//2``. ``same``: TensorFlow's SAME, asymmetric for stride 2, needed
to reproduce weights ported from TF exactly (both give ``ceil(H / stride)`` outputs)."""


def _check(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise SpecError(f"{where}: {msg}")


def _check_activation(where: str, name: str) -> None:
    _check(name in ACTIVATIONS, where, f"unknown activation {name!r}; use one of {', '.join(ACTIVATIONS)}")


# Derived widths: the only place they are computed, so the analytic count (macs.py) and the
# torch model (model.py) cannot disagree.
def expanded_channels(in_channels: int, expand_ratio: float) -> int:
    """MBConv expansion width: block input × expand ratio (TF: ``input_filters * expand_ratio``)."""
    return round(in_channels * expand_ratio)


def se_channels(in_channels: int, se_ratio: float) -> int:
    """SE width from the block *input* (TF: ``max(1, int(input_filters * se_ratio))``); 0 = no SE."""
    return max(1, int(in_channels * se_ratio)) if se_ratio > 0 else 0


def bottleneck_channels(out_channels: int) -> int:
    """ResNet bottleneck width: a quarter of the stage output (expansion 4)."""
    return max(1, out_channels // 4)


@dataclass(frozen=True)
class StemSpec:
    """The first convolution (paper Table 1, stage 1).

    Attributes:
        out_channels: stem width before scaling (32 for EfficientNet-B0).
        kernel_size: 3 for EfficientNet/MobileNet, 7 for ResNet.
        stride: 2 in every baseline here.
        pool: follow the conv with a 3x3 stride-2 max-pool (ResNet).
        activation: activation after the stem's batch norm.
        scale_width: False keeps the stem fixed under width scaling (EfficientNet-Lite's
            ``fix_head_stem``).
    """

    out_channels: int
    kernel_size: int = 3
    stride: int = 2
    pool: bool = False
    activation: str = "swish"
    scale_width: bool = True

    def __post_init__(self) -> None:
        _check(self.out_channels >= 1, "stem.out_channels", f"must be >= 1, got {self.out_channels}")
        _check(self.kernel_size >= 1 and self.kernel_size % 2 == 1, "stem.kernel_size",
               f"must be a positive odd integer, got {self.kernel_size}")
        _check(self.stride in (1, 2), "stem.stride", f"must be 1 or 2, got {self.stride}")
        _check_activation("stem.activation", self.activation)


@dataclass(frozen=True)
class StageSpec:
    """One row of the paper's Table 1: ``repeats`` blocks sharing ``out_channels``.

    The first block takes the stride and the channel change; the other ``repeats - 1`` blocks are
    stride 1 with ``in == out`` (TF reference ``efficientnet_model.py``).

    Attributes:
        block: one of :data:`BLOCK_TYPES`.
        repeats: number of blocks, L_i in the paper (before depth scaling).
        out_channels: C_i, the stage width (before width scaling).
        stride: stride of the first block.
        kernel_size: depthwise kernel (MBConv, dwsep), the fused conv's kernel (fused MBConv);
            ResNet blocks use 3.
        expand_ratio: (fused) MBConv expansion of the block input (MBConv1 = 1, MBConv6 = 6).
        se_ratio: squeeze-excitation width relative to the block *input* channels; 0 = no SE.
        activation: activation inside the block.
        scale_depth: False keeps ``repeats`` fixed under depth scaling (EfficientNet-Lite's first
            and last stage).
    """

    block: str
    repeats: int
    out_channels: int
    stride: int
    kernel_size: int = 3
    expand_ratio: float = 1.0
    se_ratio: float = 0.0
    activation: str = "swish"
    scale_depth: bool = True

    def __post_init__(self) -> None:
        _check(self.block in BLOCK_TYPES, "stage.block",
               f"unknown block {self.block!r}; use one of {', '.join(BLOCK_TYPES)}")
        _check(isinstance(self.repeats, int) and self.repeats >= 1, "stage.repeats",
               f"must be an integer >= 1, got {self.repeats!r}")
        _check(self.out_channels >= 1, "stage.out_channels", f"must be >= 1, got {self.out_channels}")
        _check(self.stride in (1, 2), "stage.stride", f"must be 1 or 2, got {self.stride}")
        _check(self.kernel_size >= 1 and self.kernel_size % 2 == 1, "stage.kernel_size",
               f"must be a positive odd integer, got {self.kernel_size}")
        _check(math.isfinite(self.expand_ratio) and self.expand_ratio > 0, "stage.expand_ratio",
               f"must be > 0, got {self.expand_ratio}")
        _check(0.0 <= self.se_ratio <= 1.0, "stage.se_ratio", f"must be in [0, 1], got {self.se_ratio}")
        _check_activation("stage.activation", self.activation)

    def __str__(self) -> str:
        """Compact form in the spirit of the TF block strings (display only, never parsed)."""
        se = f"_se{self.se_ratio:g}" if self.se_ratio else ""
        return (f"{self.block}_r{self.repeats}_k{self.kernel_size}_s{self.stride}"
                f"_e{self.expand_ratio:g}_o{self.out_channels}{se}")


@dataclass(frozen=True)
class HeadSpec:
    """The final 1x1 conv (if any), global pooling and classifier.

    Attributes:
        channels: head conv width before scaling (1280 for B0); None = no head conv (ResNet,
            MobileNetV1: the classifier reads the last stage).
        policy: how the width follows the width multiplier, see :data:`HeadPolicy`.
        activation: activation after the head conv's batch norm.
    """

    channels: int | None = 1280
    policy: HeadPolicy = "scale"
    activation: str = "swish"

    def __post_init__(self) -> None:
        _check(self.channels is None or self.channels >= 1, "head.channels",
               f"must be >= 1 or None, got {self.channels}")
        _check(self.policy in ("scale", "at_least_base", "fixed"), "head.policy",
               f"unknown policy {self.policy!r}; use scale, at_least_base or fixed")
        _check_activation("head.activation", self.activation)


@dataclass(frozen=True)
class NetworkSpec:
    """A whole stage-based ConvNet.

    Attributes:
        name: display name (``efficientnet_b0``, ``resnet50@phi=1``).
        stem, stages, head: the architecture.
        resolution: input side r in pixels; part of the architecture because compound scaling
            scales it (paper eq. 3).
        dropout: head dropout before the classifier (0.2 for B0 … 0.5 for B7, §5.2).
        drop_path_rate: maximum stochastic-depth rate, ramped linearly over blocks (0.2 in the
            official code; the first version of the paper said 0.3, tensorflow/tpu#381).
        divisor: channel rounding unit (8).
        round_limit: the "10 % rule" of ``round_filters``: round up by one divisor if rounding
            lost more than ``1 - round_limit`` of the width.
        depth_rounding: the rule that turns ``d · L_i`` into whole blocks when this spec is scaled
            (:data:`DepthRounding`); a scaled spec records the rule its repeats were rounded with, so a
            checkpoint says how its depth came about. Like ``divisor`` and ``round_limit`` it is a
            rounding rule, not a layer: two specs that differ only here build the same network.
        bn_eps, bn_momentum: batch norm settings (PyTorch momentum convention: TF's 0.99 is 0.01).
        padding: see :data:`Padding`.
    """

    name: str
    stem: StemSpec
    stages: tuple[StageSpec, ...]
    head: HeadSpec = field(default_factory=HeadSpec)
    resolution: int = 224
    dropout: float = 0.2
    drop_path_rate: float = 0.2
    divisor: int = 8
    round_limit: float = 0.9
    depth_rounding: DepthRounding = "ceil"
    bn_eps: float = 1e-3
    bn_momentum: float = 0.01
    padding: Padding = "symmetric"

    def __post_init__(self) -> None:
        _check(len(self.stages) >= 1, f"{self.name}.stages", "need at least one stage")
        _check(self.resolution >= 1, f"{self.name}.resolution", f"must be >= 1 pixel, got {self.resolution}")
        _check(0.0 <= self.dropout < 1.0, f"{self.name}.dropout", f"must be in [0, 1), got {self.dropout}")
        _check(0.0 <= self.drop_path_rate < 1.0, f"{self.name}.drop_path_rate",
               f"must be in [0, 1), got {self.drop_path_rate}")
        _check(self.divisor >= 1, f"{self.name}.divisor", f"must be >= 1, got {self.divisor}")
        _check(0.0 < self.round_limit <= 1.0, f"{self.name}.round_limit",
               f"must be in (0, 1], got {self.round_limit}")
        _check(self.depth_rounding in DEPTH_ROUNDINGS, f"{self.name}.depth_rounding",
               f"unknown depth rounding {self.depth_rounding!r}; use ceil (the official code's) or round")
        _check(self.bn_eps > 0, f"{self.name}.bn_eps", f"must be > 0, got {self.bn_eps}")
        _check(0.0 <= self.bn_momentum <= 1.0, f"{self.name}.bn_momentum",
               f"must be in [0, 1], got {self.bn_momentum}")
        _check(self.padding in ("symmetric", "same"), f"{self.name}.padding",
               f"unknown padding {self.padding!r}; use symmetric or same")

    @property
    def num_blocks(self) -> int:
        """Total blocks; the stochastic-depth ramp divides by this (rounded) count."""
        return sum(s.repeats for s in self.stages)

    @property
    def total_stride(self) -> int:
        """Input pixels per output pixel of the last stage (32 for every baseline here)."""
        stride = self.stem.stride * (2 if self.stem.pool else 1)
        for s in self.stages:
            stride *= s.stride
        return stride

    @property
    def num_features(self) -> int:
        """Channels entering the classifier."""
        return self.head.channels if self.head.channels is not None else self.stages[-1].out_channels

    def replace(self, **changes: Any) -> NetworkSpec:
        """A copy with fields changed (validated again), as TF's namedtuple ``_replace``."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict; :meth:`from_dict` inverts it exactly."""
        d = dataclasses.asdict(self)
        d["stages"] = [dataclasses.asdict(s) for s in self.stages]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetworkSpec:
        """Rebuild a spec from :meth:`to_dict` output (e.g. a checkpoint's metadata).

        Raises:
            SpecError: on unknown or missing keys, naming them.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SpecError(f"network spec: unknown keys {unknown}; expected a subset of {sorted(known)}")
        try:
            body = dict(d)
            body["stem"] = StemSpec(**d["stem"])
            body["head"] = HeadSpec(**d.get("head", {}))
            body["stages"] = tuple(StageSpec(**s) for s in d["stages"])
            return cls(**body)
        except (KeyError, TypeError) as e:
            raise SpecError(f"network spec: malformed dict ({e}); write it with NetworkSpec.to_dict()") from e
