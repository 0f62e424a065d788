"""``TrainConfig``: every training setting as one frozen, typed value.

Defaults are the paper's recipe as the official code runs it (paper.md §1.7): RMSProp (TF) with
decay 0.9, momentum 0.9, eps 1e-3; lr 0.016 per 256 images; 5 warmup epochs then ×0.97 every 2.4
epochs; weight decay 1e-5 off BN and biases; label smoothing 0.1; EMA 0.9999; stochastic depth
0.2; dropout from the preset. YAML files and CLI flags both map onto the fields, and an unknown key
is an error naming it, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from effnet.errors import EffnetError


@dataclass(frozen=True)
class TrainConfig:
    # model
    model: str = "efficientnet_b0"
    phi: float | None = None
    resolution: int | None = None  # input size; default: the (scaled) model's own
    total_stride: int | None = None  # e.g. 8 for 28–32 px images (effnet.scaling.limit_stride)
    drop_path_rate: float | None = None  # default: the spec's (0.2)
    dropout: float | None = None  # default: the preset's
    bn_momentum: float | None = None  # default: the spec's (TF 0.99 = 0.01 here, right for 350 epochs; short
    # runs need ~0.1 or the running statistics still remember their init at evaluation time)
    # data
    data: str = "fashion-mnist"  # fashion-mnist | mnist | digits | a folder path
    data_dir: str | None = None
    class_map: str | None = None  # "imagenet" or a synsets file
    train_subset: int | None = None  # first N of a seeded permutation of the training set
    strict_data: bool = False  # an unreadable image in a folder is an error (default: skipped, named in a warning)
    augment: str = "randaugment"  # randaugment | autoaugment | none
    randaugment_n: int = 2
    randaugment_m: int = 9
    hflip: bool | None = None  # default: on, except digit sets (a mirrored 2 is not a 2)
    crop_scale_min: float | None = None  # default: 0.08 (Inception crop), 0.35 for 28 px sets
    workers: int = 2
    # optimisation
    epochs: float = 5.0
    batch_size: int = 64
    lr: float | None = None  # default 0.016 · batch_size · world_size / 256
    optimizer: str = "rmsproptf"  # rmsproptf | sgd | adamw
    momentum: float = 0.9
    weight_decay: float = 1e-5
    schedule: str = "step"  # step (×decay_rate every decay_epochs) | cosine | constant
    warmup_epochs: float = 5.0
    decay_epochs: float = 2.4
    decay_rate: float = 0.97
    label_smoothing: float = 0.1
    ema_decay: float = 0.9999  # 0 disables the EMA
    # fine-tuning
    init_checkpoint: str | None = None  # start from these weights (new head if classes differ)
    pretrained: bool = False  # start from the model's offline pretrained weights
    freeze_stages: int = 0  # freeze stem and stages 1..k
    body_lr_mult: float = 1.0  # lr multiplier for everything but the classifier
    # engine
    amp: str = "auto"  # auto (GPU: bf16, else fp16; CPU: bf16 where native, else none) | none | bf16 | fp16
    channels_last: bool | None = None  # default: on (oneDNN runs depthwise convs NHWC ~1.5-10x faster)
    grad_checkpointing: bool = False  # recompute each stage in backward: less peak memory, more step time
    sync_bn: bool = False  # GPU only
    seed: int = 0
    deterministic: bool = False
    checkpoint_every: int = 0  # also write resume state every N steps (0: only at epoch ends)
    progress: bool = True
    tensorboard: bool = True  # also log to OUT/tensorboard when the tensorboard package is installed

    def __post_init__(self) -> None:
        choices = {"augment": ("randaugment", "autoaugment", "none"), "optimizer": ("rmsproptf", "sgd", "adamw"),
                   "schedule": ("step", "cosine", "constant"), "amp": ("auto", "none", "bf16", "fp16")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise EffnetError(f"{name}={getattr(self, name)!r} is not one of {', '.join(allowed)}")
        positive = ("epochs", "batch_size", "decay_epochs", "decay_rate")
        for name in positive:
            if not getattr(self, name) > 0:
                raise EffnetError(f"{name}={getattr(self, name)!r} must be > 0")
        if not 0 <= self.label_smoothing < 1 or not 0 <= self.ema_decay < 1:
            raise EffnetError("label_smoothing and ema_decay must be in [0, 1)")
        if self.workers < 0 or self.freeze_stages < 0 or self.checkpoint_every < 0:
            raise EffnetError("workers, freeze_stages and checkpoint_every must be >= 0")

    def base_lr(self, world_size: int = 1) -> float:
        """The official linear scaling rule: 0.016 per 256 images of global batch."""
        return self.lr if self.lr is not None else 0.016 * self.batch_size * world_size / 256

    def resolved(self) -> TrainConfig:
        """``auto`` settings made concrete for this machine, so config.json says what actually ran.

        Lean training (issue 6, reference/performance.md §4): channels_last avoids NCHW's 7-10x cliffs
        on the early high-resolution layers; bf16 autocast halves activation memory and doubles matmul
        throughput on CPUs with native bf16 (AVX512-BF16/AMX), and is emulated (slower) elsewhere.
        """
        changes: dict[str, Any] = {}
        if self.channels_last is None:
            changes["channels_last"] = True
        if self.amp == "auto":
            import torch

            if torch.cuda.is_available():  # the loop trains on the GPU then
                changes["amp"] = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
            else:
                native = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
                changes["amp"] = "bf16" if native else "none"
        return dataclasses.replace(self, **changes) if changes else self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


FIELDS = {f.name: f for f in fields(TrainConfig)}


def check_keys(keys: list[str], where: str) -> None:
    """Reject unknown keys, suggesting the closest field names."""
    for key in keys:
        if key not in FIELDS:
            close = difflib.get_close_matches(key, list(FIELDS), n=2)
            hint = f"did you mean {' or '.join(close)}?" if close else f"known keys: {', '.join(FIELDS)}"
            raise EffnetError(f"{where}: unknown key {key!r}; {hint}")


def load_config(path: str | Path, **overrides: Any) -> TrainConfig:
    """A YAML (or JSON) file of ``TrainConfig`` fields, then ``overrides`` (CLI flags) on top."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise EffnetError(f"config file {str(p)!r} not found")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise EffnetError(f"config file {str(p)!r} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise EffnetError(f"config file {str(p)!r} must hold a mapping of settings, got {type(data).__name__}")
    check_keys(list(data), str(p))
    try:
        return TrainConfig(**(data | overrides))
    except TypeError as e:
        raise EffnetError(f"config file {str(p)!r}: {e}") from None
