"""Measured parameters and MACs of a torch model, to cross-check :mod:`effnet.macs`.

MACs come from ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs / 2). Counting runs on the
``meta`` device, so B7 at 600 px or L2 at 800 px costs no arithmetic: a model built on meta
(:func:`measure_spec`, or ``with torch.device("meta"): ...``) is counted as is, a real one is
copied to meta first.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from effnet.model import ConvNet
from effnet.spec import NetworkSpec


def count_params(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (buffers such as BN running statistics excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_macs(model: nn.Module, resolution: int, *, in_chans: int = 3, batch_size: int = 1) -> int:
    """Multiply-adds of one forward pass at ``resolution`` (for a batch of ``batch_size``)."""
    on_meta = all(t.device.type == "meta" for t in model.parameters())
    meta = model if on_meta else copy.deepcopy(model).to("meta")
    was_training = meta.training
    meta.eval()
    x = torch.empty(batch_size, in_chans, resolution, resolution, device="meta")
    counter = FlopCounterMode(display=False)
    try:
        with counter, torch.no_grad():
            meta(x)
    finally:
        meta.train(was_training)
    return int(counter.get_total_flops()) // 2


def measure_spec(spec: NetworkSpec, *, num_classes: int = 1000, resolution: int | None = None) -> tuple[int, int]:
    """(params, MACs) of the torch model built from ``spec``, on meta: the measured side of the
    analytic-vs-measured cross-check."""
    with torch.device("meta"):
        model = ConvNet(spec, num_classes=num_classes)
    return count_params(model), count_macs(model, resolution or spec.resolution)
