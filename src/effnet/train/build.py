"""The network a training run starts from: the (scaled, stride-adapted) spec of its settings, or
pretrained or checkpoint weights with a new head, BN momentum and frozen stages applied."""

from __future__ import annotations

import warnings

from torch import nn

from effnet.catalog import get_spec
from effnet.checkpoint import load_model
from effnet.errors import EffnetError
from effnet.model import ConvNet
from effnet.scaling import limit_stride
from effnet.train.config import TrainConfig

__all__ = ["build_model"]


def build_model(cfg: TrainConfig, num_classes: int) -> ConvNet:
    """The (scaled, stride-adapted) network of ``cfg``, optionally from pretrained/initial weights."""
    spec = get_spec(cfg.model, phi=cfg.phi)
    if cfg.total_stride:
        spec = limit_stride(spec, cfg.total_stride)
    if cfg.resolution:
        spec = spec.replace(resolution=cfg.resolution)
    if cfg.bn_momentum is not None:
        spec = spec.replace(bn_momentum=cfg.bn_momentum)
    if cfg.init_checkpoint or cfg.pretrained:
        _warn_ignored(cfg)
    if cfg.init_checkpoint:  # the checkpoint's own architecture, rebuilt from its embedded spec
        model = load_model(cfg.init_checkpoint)
    elif cfg.pretrained:
        from effnet.registry import create_model

        model = create_model(cfg.model, pretrained=True)  # type: ignore[assignment]
    else:
        model = ConvNet(spec, num_classes=num_classes, dropout=cfg.dropout, drop_path_rate=cfg.drop_path_rate)
    if model.num_classes != num_classes:
        model.reset_classifier(num_classes)  # a new head for the new task
    if cfg.bn_momentum is not None and model.spec.bn_momentum != cfg.bn_momentum:
        _set_bn_momentum(model, cfg.bn_momentum)
    _freeze(model, cfg.freeze_stages)
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    return model


def _warn_ignored(cfg: TrainConfig) -> None:
    """Weights fix the architecture: say which architecture settings of ``cfg`` they override."""
    given = {name: getattr(cfg, name) for name in ("phi", "total_stride") if getattr(cfg, name) is not None}
    if given:
        source = cfg.init_checkpoint or f"{cfg.model}'s pretrained weights"
        settings = ", ".join(f"{k}={v}" for k, v in given.items())
        warnings.warn(f"{settings} ignored: the network comes from {source} as it was trained "
                      "(resolution still sets the input size)", stacklevel=3)


def _set_bn_momentum(model: ConvNet, momentum: float) -> None:
    """A training setting, not architecture, so it applies to loaded weights too: ImageNet BN statistics
    with TF's 0.01 would still be 40 % ImageNet after 90 fine-tuning steps, and evaluation would see them."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = momentum
    model.spec = model.spec.replace(bn_momentum=momentum)  # the checkpoint records what was used


def _freeze(model: ConvNet, k: int) -> None:
    """Freeze the stem and stages 1..k (weights and BN statistics) for fine-tuning."""
    if k <= 0:
        return
    if k > len(model.stages):
        raise EffnetError(f"freeze_stages={k} but {model.spec.name} has {len(model.stages)} stages")
    for module in [model.stem, *list(model.stages)[:k]]:
        for p in module.parameters():
            p.requires_grad_(False)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
                m.momentum = 0.0  # running statistics stay fixed even when .train() is called
