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
import functools
import typing
import warnings
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
    warmup_epochs: float | None = None  # default: the paper's 5, at most 20 % of the run (fit_warmup)
    decay_epochs: float = 2.4
    decay_rate: float = 0.97
    label_smoothing: float = 0.1
    ema_decay: float = 0.9999  # 0 disables the EMA
    precise_bn_batches: int = 20  # recompute BN statistics on this many batches before each evaluation (0: off)
    loss_guard: bool = True  # stop on a non-finite or exploding loss, warn on val loss >> train loss (train/guards.py)
    loss_guard_factor: float = 10.0  # "exploding": the step loss is this many times its running average
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
        _check_types(self)
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
        if min(self.workers, self.freeze_stages, self.checkpoint_every, self.precise_bn_batches) < 0:
            raise EffnetError("workers, freeze_stages, checkpoint_every and precise_bn_batches must be >= 0")
        for name in ("lr", "resolution", "total_stride", "train_subset"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise EffnetError(f"{name}={value!r} must be > 0")
        if not ((self.warmup_epochs or 0) >= 0 and self.loss_guard_factor > 1):
            raise EffnetError(f"warmup_epochs={self.warmup_epochs!r} must be >= 0 and loss_guard_factor="
                              f"{self.loss_guard_factor!r} > 1")

    def base_lr(self, world_size: int = 1) -> float:
        """The official linear scaling rule: 0.016 per 256 images of global batch."""
        return self.lr if self.lr is not None else 0.016 * self.batch_size * world_size / 256

    def resolved(self) -> TrainConfig:
        """``auto`` settings made concrete for this machine, so config.json says what actually ran.

        Lean training (issue 6, reference/performance.md §4): channels_last avoids NCHW's 7-10x cliffs
        on the early high-resolution layers; bf16 autocast halves activation memory and doubles matmul
        throughput on CPUs with native bf16 (AVX512-BF16/AMX), and is emulated (slower) elsewhere.
        """
        changes: dict[str, Any] = {"warmup_epochs": fit_warmup(self.warmup_epochs, self.epochs)}
        if self.channels_last is None:
            changes["channels_last"] = True
        if self.amp == "auto":
            import torch

            if torch.cuda.is_available():  # the loop trains on the GPU then
                changes["amp"] = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
            else:
                native = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
                changes["amp"] = "bf16" if native else "none"
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


FIELDS = {f.name: f for f in fields(TrainConfig)}
PAPER_WARMUP_EPOCHS = 5.0
MAX_WARMUP_FRACTION = 0.2


def fit_warmup(warmup_epochs: float | None, epochs: float) -> float:
    """The warmup a run of ``epochs`` uses: the paper's 5 epochs (official ``warmup_epochs``), but at
    most :data:`MAX_WARMUP_FRACTION` of the run when not given. A 1-epoch run with a 5-epoch warmup
    ends at a fifth of its learning rate and learns nothing (top-1 9.75 % on digits, one class), so
    the default is shortened with a warning, and an explicit warmup that long is warned about."""
    cap = MAX_WARMUP_FRACTION * epochs
    if warmup_epochs is None:
        if cap < PAPER_WARMUP_EPOCHS:
            warnings.warn(f"warmup shortened from the paper's {PAPER_WARMUP_EPOCHS:g} epochs to {cap:.3g} "
                          f"({MAX_WARMUP_FRACTION:.0%} of this {epochs:g}-epoch run); --warmup-epochs sets it",
                          stacklevel=3)
        return min(PAPER_WARMUP_EPOCHS, cap)
    if warmup_epochs > cap:
        warnings.warn(f"warmup_epochs={warmup_epochs:g} is over {MAX_WARMUP_FRACTION:.0%} of this {epochs:g}-epoch "
                      "run: the learning rate stays low for most of it and the run may learn little", stacklevel=3)
    return warmup_epochs
_NUMBER = (int, float)


@functools.cache
def _allowed(name: str) -> tuple[tuple[type, ...], bool]:
    """The Python types a field accepts (an int where a float belongs is fine) and whether None is."""
    hint = typing.get_type_hints(TrainConfig)[name]
    args = typing.get_args(hint) or (hint,)
    types = tuple(t for t in args if t is not type(None))
    return (_NUMBER if types == (float,) else types), type(None) in args


def _check_types(cfg: TrainConfig) -> None:
    """A YAML file (or a library caller) can put any value under any key: a list, a mapping, a string
    where a number belongs. Refuse it here by name, before it fails somewhere inside a training run."""
    for name in FIELDS:
        value = getattr(cfg, name)
        types, optional = _allowed(name)
        if value is None and optional:
            continue
        wrong_bool = isinstance(value, bool) and bool not in types
        if wrong_bool or not isinstance(value, types):
            shown = repr(value) if len(repr(value)) <= 40 else f"a {type(value).__name__}"
            want = " or ".join("a number" if t in _NUMBER else t.__name__ for t in dict.fromkeys(types))
            raise EffnetError(f"{name}: must be {want}{' or null' if optional else ''}, got {shown}")


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
        raise EffnetError(f"config file {str(p)!r} not found" + (" (it is a folder)" if p.is_dir() else ""))
    if p.stat().st_size > 1 << 20:
        raise EffnetError(f"config file {str(p)!r} is {p.stat().st_size:,} bytes; a settings file is a few lines")
    try:
        data = yaml.safe_load(p.read_bytes().decode("utf-8")) or {}
    except UnicodeDecodeError:
        raise EffnetError(f"config file {str(p)!r} is not UTF-8 text (a binary file?); pass a YAML file") from None
    except yaml.YAMLError as e:
        raise EffnetError(f"config file {str(p)!r} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise EffnetError(f"config file {str(p)!r} must hold a mapping of settings, got {type(data).__name__}")
    check_keys([str(k) for k in data], str(p))
    try:
        return TrainConfig(**(data | overrides))
    except (TypeError, EffnetError) as e:
        raise EffnetError(f"config file {str(p)!r}: {e}") from None
