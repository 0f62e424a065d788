"""Training memory estimate from the spec: what a training step holds at its peak.

Why an estimate at all: memory, not compute, is what stops a larger φ from training at a given
batch (EfficientNet's "memory hog" reputation among timm and Keras users). The dominant term is the activations
saved for backward, which grow with batch · resolution² · width and do not show in params or MACs.

How: the network is built on PyTorch's ``meta`` device (shapes only, no memory, no arithmetic) and
one image is run through it with ``saved_tensors_hooks`` recording every tensor autograd keeps,
deduplicated by storage, parameters excluded. That is exact for the real ops, dtypes (bf16 autocast)
and layouts, and takes a fraction of a second, so ``effnet fit --max-train-memory`` can size every
candidate φ. The peak then is

    weights + gradients + optimizer state                      (per parameter, fp32)
  + batch · saved activations per image                        (per stage; see checkpointing below)
  + transient              (backward's working set: a calibrated fraction of the largest stage, see below)

With per-stage activation checkpointing a checkpointed stage keeps only its input; its activations
exist again only while its own backward runs, so only the largest of them adds to the peak.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from effnet.spec import NetworkSpec

__all__ = ["MemoryEstimate", "estimate_train_memory", "saved_bytes_per_stage"]

# Per-parameter state bytes besides the fp32 weight and its gradient: SGD momentum / RMSProp keep one
# buffer, RMSProp-TF with momentum two, AdamW two.
_OPTIMIZER_STATES = {"sgd": 1, "rmsprop": 1, "rmsproptf": 2, "adamw": 2, "none": 0}
# Backward's working set (gradient buffers, op workspace) on top of the saved activations, as a
# fraction of the largest stage's saved bytes. Calibrated against measured peaks (VmHWM added by two
# SGD steps, batch 16, B0-B2, benchmarks/acceptance.py): channels_last 0.8; NCHW 0.3 plus a fixed
# ~300 MiB that NCHW steps add whatever the model (oneDNN reorders NCHW to its blocked layouts).
TRANSIENT_FACTOR = {"channels_last": 0.8, "nchw": 0.3}
NCHW_FIXED = 300 * 2**20
_PROBE = 2  # images in the probe batch


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes at the peak of one training step, by part."""

    total: int
    parameters: int  # weights + gradients + optimizer state
    weights: int  # the fp32 weights alone: present before the step, so not part of what a step adds
    activations: int  # saved for backward, whole batch
    transient: int  # backward working set of the largest stage
    per_image: int  # saved activations per image
    parts: dict[str, int] = field(default_factory=dict)  # saved bytes per image by part

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _saved_bytes(fn: Any, x: torch.Tensor, exclude: set[int]) -> tuple[int, torch.Tensor]:
    """Bytes of the per-image tensors autograd saves while running ``fn(x)``, one count per storage.

    Only tensors with the probe's batch as their first dimension are per-image; the rest are
    parameters or, under autocast, their low-precision copies (per model, counted apart).
    """
    seen: dict[int, int] = {}
    batch = x.shape[0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = t.untyped_storage()._cdata
        if key not in exclude and t.ndim >= 2 and t.shape[0] == batch:
            seen[key] = max(seen.get(key, 0), t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = fn(x)
    return sum(seen.values()), y


@functools.lru_cache(maxsize=256)
def saved_bytes_per_stage(spec: NetworkSpec, *, resolution: int | None = None, amp: str = "none",
                          channels_last: bool = False,
                          num_classes: int = 1000) -> tuple[dict[str, int], dict[str, int], int]:
    """Per image: bytes saved for backward by stem, each stage and head; each stage's input bytes;
    and the parameter count. Cached: a φ search asks for the same spec more than once."""
    from effnet.model import ConvNet

    res = resolution or spec.resolution
    # Shapes alone decide fp32 (the meta device: no memory, no arithmetic); autocast only acts on a
    # real device, so a mixed-precision estimate runs one real image (about a forward pass of time).
    with torch.device("meta" if amp == "none" else "cpu"):
        model = ConvNet(spec, num_classes=num_classes).train()
        x = torch.randn(_PROBE, 3, res, res)  # 2, not 1: a batch of 1 cannot tell images from weights
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        x = x.contiguous(memory_format=torch.channels_last)
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    saved, inputs = {}, {}
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        saved["stem"], x = _saved_bytes(lambda t: model.stem_pool(model.stem(t)), x, params)
        for i, stage in enumerate(model.stages):
            inputs[f"stage{i + 1}"] = x.untyped_storage().nbytes() // _PROBE
            saved[f"stage{i + 1}"], x = _saved_bytes(stage, x, params)
        saved["head"], _ = _saved_bytes(lambda t: model.forward_head(model.head_conv(t)), x, params)
    return {k: v // _PROBE for k, v in saved.items()}, inputs, sum(p.numel() for p in model.parameters())


def estimate_train_memory(spec: NetworkSpec, batch: int, *, resolution: int | None = None, amp: str = "none",
                          channels_last: bool = False, grad_checkpointing: bool | tuple[int, ...] = False,
                          optimizer: str = "sgd", num_classes: int = 1000) -> MemoryEstimate:
    """Peak bytes of one training step of ``spec`` at ``batch`` (see the module doc for the model).

    Args:
        grad_checkpointing: True for every stage, or the 0-based indices of the checkpointed stages.
        optimizer: ``sgd`` (momentum), ``rmsprop``, ``rmsproptf``, ``adamw`` or ``none``.
    """
    if optimizer not in _OPTIMIZER_STATES:
        raise ValueError(f"optimizer {optimizer!r}: use one of {', '.join(_OPTIMIZER_STATES)}")
    saved, inputs, n_params = saved_bytes_per_stage(spec, resolution=resolution, amp=amp, channels_last=channels_last,
                                          num_classes=num_classes)
    n_stages = len(spec.stages)
    ckpt = set(range(n_stages)) if grad_checkpointing is True else set(grad_checkpointing or ())
    kept, recomputed = 0, [0]
    for name, nbytes in saved.items():
        index = int(name[5:]) - 1 if name.startswith("stage") else -1
        if index in ckpt:
            kept += inputs[name]
            recomputed.append(nbytes)
        else:
            kept += nbytes
    # fp32 gradient and optimizer state per weight; autocast also keeps a low-precision copy of each weight.
    param_bytes = 4 * n_params * (2 + _OPTIMIZER_STATES[optimizer]) + (2 * n_params if amp != "none" else 0)
    largest = max(max(saved[f"stage{i + 1}"] for i in range(n_stages)), max(recomputed))
    if channels_last:
        transient = int(TRANSIENT_FACTOR["channels_last"] * largest * batch)
    else:
        transient = int(TRANSIENT_FACTOR["nchw"] * largest * batch) + NCHW_FIXED
    activations = kept * batch + (max(recomputed) * batch if ckpt else 0)
    return MemoryEstimate(total=param_bytes + activations + transient, parameters=param_bytes, weights=4 * n_params,
                          activations=activations, transient=transient, per_image=kept, parts=saved)
