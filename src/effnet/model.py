"""One torch network for every spec: stem → stages → head (paper Table 1's layout).

``ConvNet`` follows timm's model contract (``forward_features``, ``forward_head(pre_logits)``,
``reset_classifier``, ``num_features``) so that CAM, fine-tuning and feature extraction are written
once for every family. ``FeatureExtractor`` returns multi-scale maps for detection backbones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from effnet.blocks import BasicBlock, Bottleneck, DepthwiseSeparable, FusedMBConv, MBConv
from effnet.layers import ConvNormAct, ConvOptions, get_activation
from effnet.spec import NetworkSpec, StageSpec, bottleneck_channels, expanded_channels, se_channels

Activation = Callable[[], nn.Module]


def _mbconv(stage: StageSpec, cin: int, stride: int, dpr: float, act: Activation, opts: ConvOptions) -> nn.Module:
    return MBConv(cin, stage.out_channels, expanded_channels=expanded_channels(cin, stage.expand_ratio),
                  se_channels=se_channels(cin, stage.se_ratio), kernel_size=stage.kernel_size, stride=stride,
                  activation=act, drop_path_rate=dpr, options=opts)


def _fused(stage: StageSpec, cin: int, stride: int, dpr: float, act: Activation, opts: ConvOptions) -> nn.Module:
    return FusedMBConv(cin, stage.out_channels, expanded_channels=expanded_channels(cin, stage.expand_ratio),
                       se_channels=se_channels(cin, stage.se_ratio), kernel_size=stage.kernel_size, stride=stride,
                       activation=act, drop_path_rate=dpr, options=opts)


def _dwsep(stage: StageSpec, cin: int, stride: int, dpr: float, act: Activation, opts: ConvOptions) -> nn.Module:
    return DepthwiseSeparable(cin, stage.out_channels, kernel_size=stage.kernel_size, stride=stride,
                              activation=act, options=opts)


def _basic(stage: StageSpec, cin: int, stride: int, dpr: float, act: Activation, opts: ConvOptions) -> nn.Module:
    return BasicBlock(cin, stage.out_channels, stride=stride, activation=act, drop_path_rate=dpr, options=opts)


def _bottleneck(stage: StageSpec, cin: int, stride: int, dpr: float, act: Activation,
                opts: ConvOptions) -> nn.Module:
    out = stage.out_channels
    return Bottleneck(cin, out, mid_channels=bottleneck_channels(out), stride=stride, activation=act,
                      drop_path_rate=dpr, options=opts)


# One builder per kind in spec.BLOCK_TYPES (tests/test_spec.py holds the keys to that list, and
# macs._BLOCK_COSTS to the same).
_BLOCKS: dict[str, Callable[[StageSpec, int, int, float, Activation, ConvOptions], nn.Module]] = {
    "mbconv": _mbconv, "fused_mbconv": _fused, "dwsep": _dwsep, "basic": _basic, "bottleneck": _bottleneck,
}


def _make_block(stage: StageSpec, in_channels: int, stride: int, drop_path_rate: float,
                options: ConvOptions) -> nn.Module:
    return _BLOCKS[stage.block](stage, in_channels, stride, drop_path_rate, get_activation(stage.activation),
                                options)


class ConvNet(nn.Module):
    """A stage-based ConvNet built from a :class:`~effnet.spec.NetworkSpec`.

    Args:
        spec: the (scaled) architecture.
        num_classes: classifier outputs; 0 gives pooled features from ``forward``.
        in_chans: input channels.
        dropout: head dropout; default the spec's.
        drop_path_rate: max stochastic-depth rate; default the spec's. Block ``i`` of ``N`` gets
            ``rate · i / N`` (TF reference and torchvision; ``N`` counts the *rounded* blocks, the
            Keras bug tensorflow/tensorflow#40210 used the unrounded count).
    """

    def __init__(self, spec: NetworkSpec, *, num_classes: int = 1000, in_chans: int = 3,
                 dropout: float | None = None, drop_path_rate: float | None = None) -> None:
        super().__init__()
        if num_classes < 0 or in_chans < 1:
            raise ValueError(f"num_classes={num_classes} must be >= 0 and in_chans={in_chans} >= 1")
        self.spec = spec
        self.num_classes = num_classes
        opts = ConvOptions(padding=spec.padding, bn_eps=spec.bn_eps, bn_momentum=spec.bn_momentum)
        dpr = spec.drop_path_rate if drop_path_rate is None else drop_path_rate
        self.stem = ConvNormAct(in_chans, spec.stem.out_channels, spec.stem.kernel_size, stride=spec.stem.stride,
                                activation=get_activation(spec.stem.activation), options=opts)
        self.stem_pool = nn.MaxPool2d(3, 2, 1) if spec.stem.pool else nn.Identity()
        stages, channels, index = [], spec.stem.out_channels, 0
        for stage in spec.stages:
            blocks = []
            for j in range(stage.repeats):
                blocks.append(_make_block(stage, channels, stage.stride if j == 0 else 1,
                                          dpr * index / spec.num_blocks, opts))
                channels, index = stage.out_channels, index + 1
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        if spec.head.channels is not None:
            self.head_conv: nn.Module = ConvNormAct(channels, spec.head.channels, 1,
                                                    activation=get_activation(spec.head.activation), options=opts)
            channels = spec.head.channels
        else:
            self.head_conv = nn.Identity()
        self.num_features = channels
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(spec.dropout if dropout is None else dropout)
        self.classifier: nn.Module = nn.Linear(channels, num_classes) if num_classes else nn.Identity()
        self.grad_checkpointing: tuple[int, ...] = ()  # indices of the stages recomputed in backward
        self._init_weights()

    def set_grad_checkpointing(self, enable: bool = True, *, stages: Sequence[int] | None = None) -> None:
        """Activation checkpointing per stage (timm's name): a checkpointed stage keeps only its
        input for backward and recomputes its activations, trading ~1/3 more compute for memory.

        Args:
            enable: on or off.
            stages: which stages (0-based) to checkpoint; default all. The early, high-resolution
                stages hold most of the saved activations, so checkpointing only those buys most of
                the saving for a fraction of the recompute.
        """
        chosen = range(len(self.stages)) if stages is None else stages
        bad = [i for i in chosen if not 0 <= i < len(self.stages)]
        if bad:
            raise ValueError(f"stages {bad} out of range: {self.spec.name} has {len(self.stages)} stages")
        self.grad_checkpointing = tuple(sorted(set(chosen))) if enable else ()

    def _init_weights(self) -> None:
        """TF reference init: conv normal(0, sqrt(2 / fan_out)), dense uniform(±1/sqrt(out)), BN 1/0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Input → the last feature map (N, ``num_features``, H/32, W/32), before pooling."""
        x = self.stem_pool(self.stem(x))
        if self.grad_checkpointing and torch.is_grad_enabled():
            for i, stage in enumerate(self.stages):
                x = checkpoint(stage, x, use_reentrant=False) if i in self.grad_checkpointing else stage(x)
        else:
            x = self.stages(x)
        return self.head_conv(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map → pooled features (``pre_logits``) or logits."""
        x = self.dropout(torch.flatten(self.pool(x), 1))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier (fine-tuning); 0 removes it so ``forward`` gives pooled features."""
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        if num_classes:
            bound = 1.0 / math.sqrt(num_classes)
            nn.init.uniform_(self.classifier.weight, -bound, bound)
            nn.init.zeros_(self.classifier.bias)

    def feature_info(self) -> list[dict[str, int]]:
        """One entry per feature level: the last stage at each reduction (2, 4, 8, 16, 32).

        A ResNet stem already reduces by 4 (conv + max-pool), so its first level is stage 1.
        """
        info: list[dict[str, int]] = []
        reduction = self.spec.stem.stride * (2 if self.spec.stem.pool else 1)
        if not self.spec.stem.pool:
            info.append({"stage": 0, "channels": self.spec.stem.out_channels, "reduction": reduction})
        for i, stage in enumerate(self.spec.stages, start=1):
            reduction *= stage.stride
            entry = {"stage": i, "channels": stage.out_channels, "reduction": reduction}
            if info and info[-1]["reduction"] == reduction:
                info[-1] = entry
            else:
                info.append(entry)
        return info


class FeatureExtractor(nn.Module):
    """Multi-scale features of a :class:`ConvNet` (timm's ``features_only``) for detection and
    segmentation backbones: ``forward`` returns the maps of the chosen levels, shallow to deep.

    Args:
        model: the network; its head is not run.
        out_indices: indices into :meth:`ConvNet.feature_info` (default: all levels).
    """

    def __init__(self, model: ConvNet, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        levels = model.feature_info()
        idx = tuple(range(len(levels))) if out_indices is None else tuple(out_indices)
        bad = [i for i in idx if not -len(levels) <= i < len(levels)]
        if bad:
            raise ValueError(f"out_indices {bad} out of range: {model.spec.name} has {len(levels)} feature "
                             f"levels (0..{len(levels) - 1})")
        self.out_indices = tuple(i % len(levels) for i in idx)
        self.info = [levels[i] for i in self.out_indices]
        self.stem, self.stem_pool, self.stages = model.stem, model.stem_pool, model.stages
        self._taps = {lv["stage"] for lv in self.info}
        self._last = max(self._taps)

    @property
    def channels(self) -> list[int]:
        return [lv["channels"] for lv in self.info]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        out = [x] if 0 in self._taps else []
        x = self.stem_pool(x)
        for i, stage in enumerate(self.stages, start=1):
            if i > self._last:
                break
            x = stage(x)
            if i in self._taps:
                out.append(x)
        return out
