"""Inference-only rewrites of a trained network, exact up to float rounding, and the parity check
every fast path must pass before effnet hands it out.

Batch norm in eval mode is an affine map per channel, so it folds into the preceding convolution:
``w' = w·γ/√(σ²+ε)``, ``b' = β − μ·γ/√(σ²+ε)``. That removes 49 elementwise passes from B0, and
only pays together with channels_last (docs/performance-notes.md: 1.6× at batch 16).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from effnet.errors import EffnetError
from effnet.layers import SqueezeExcite

__all__ = ["check_parity", "fold_bn", "prepare_for_export"]


@torch.no_grad()
def _fold_pair(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # type: ignore[operator]
    bias = bn.bias - bn.running_mean * scale  # type: ignore[operator]
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    conv.weight = nn.Parameter(conv.weight * scale.view(-1, 1, 1, 1))
    conv.bias = nn.Parameter(bias)


def fold_bn(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every ``conv → bn`` pair of a module (effnet's
    :class:`~effnet.layers.ConvNormAct`, or anything with ``.conv`` and ``.bn``) folded into the conv.

    The input model is left untouched. The copy is for inference only: its convs carry the batch
    statistics, so training it would train a different network.
    """
    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        conv, bn = getattr(module, "conv", None), getattr(module, "bn", None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            if bn.running_mean is None or bn.running_var is None or not bn.affine:
                raise EffnetError(f"{type(module).__name__}: a BatchNorm2d without running stats or affine "
                                  "parameters cannot be folded")
            _fold_pair(conv, bn)
            module.bn = nn.Identity()
    return folded


class _PooledSqueezeExcite(SqueezeExcite):
    """The same SE, with the squeeze written as a global average pool (see :mod:`effnet.deploy.export`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.expand(self.act(self.reduce(F.adaptive_avg_pool2d(x, 1)))))


def prepare_for_export(model: nn.Module) -> nn.Module:
    """BN folded and SE squeezes as global pools: the graph effnet exports and runs."""
    prepared = fold_bn(model)
    for module in prepared.modules():
        if type(module) is SqueezeExcite:
            module.__class__ = _PooledSqueezeExcite  # same parameters, same function
    return prepared


@torch.no_grad()
def check_parity(reference: nn.Module | Callable[[torch.Tensor], torch.Tensor],
                 candidate: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *,
                 atol: float = 1e-4, what: str = "candidate") -> float:
    """Max |candidate(x) − reference(x)| in fp32; raises when it exceeds ``atol`` (relative to the
    logits' scale when they exceed 1, so a tolerance means the same for any model)."""
    if isinstance(reference, nn.Module):
        was_training = reference.training
        reference.eval()
        ref = reference(x.float())
        reference.train(was_training)
    else:
        ref = reference(x.float())
    out = candidate(x).float()
    if out.shape != ref.shape:
        raise EffnetError(f"{what}: output shape {tuple(out.shape)} != eager {tuple(ref.shape)}")
    err = float((out - ref).abs().max())
    bound = atol * max(1.0, float(ref.abs().max()))
    if not err <= bound:
        raise EffnetError(f"{what}: max |Δlogit| = {err:.3g} exceeds {bound:.3g} against eager fp32")
    return err
