"""``train(cfg, out)``: the paper's recipe on one process or many (torchrun), resumable.

Files in ``out`` (only rank 0 writes): ``config.json``; ``state.pt`` (full resume state: weights,
optimizer, EMA, RNG, epoch and step; written atomically every epoch and every
``checkpoint_every`` steps, read back with ``weights_only=True``); ``last.safetensors`` and
``best.safetensors`` (effnet checkpoints, evaluated weights = EMA when on); ``metrics.csv``;
``confusion.png``. A directory that already holds a run is never overwritten without ``resume``.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from effnet.checkpoint import save_checkpoint
from effnet.data import SMALL_IMAGE_CROP_SCALE, ClassMap, Preprocessing, build_transform, get_dataset
from effnet.data.datasets import held_out_split
from effnet.errors import EffnetError
from effnet.model import ConvNet
from effnet.paths import output_dir
from effnet.train.build import build_model
from effnet.train.config import TrainConfig
from effnet.train.data import EpochSampler, SeededTransformDataset
from effnet.train.dist import DistInfo, average_buffers, barrier, finish_distributed, init_distributed
from effnet.train.ema import ModelEma
from effnet.train.guards import LossGuard, TrainingDiverged, check_val_loss, recalibrate_bn
from effnet.train.metrics import EvalMetrics, evaluate, plot_confusion
from effnet.train.optim import Schedule, build_optimizer, set_lr
from effnet.train.resume import STATE, check_state, read_state, write_state
from effnet.weights import default_preprocessing

SMALL_SETS = ("fashion-mnist", "mnist", "digits")


@dataclass
class Run:
    """Everything a training run holds between steps."""

    cfg: TrainConfig
    model: ConvNet
    ddp: nn.Module
    ema: ModelEma | None
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    sampler: EpochSampler
    train_set: SeededTransformDataset
    val_loader: DataLoader
    classes: list[str]
    preprocessing: Preprocessing
    info: DistInfo
    epoch: int = 0
    step: int = 0
    batch_in_epoch: int = 0
    best_top1: float = -1.0
    history: list[dict[str, float]] | None = None
    loss_sum: float = 0.0  # of the current epoch, so a resumed epoch reports the same mean loss
    loss_count: int = 0
    tb: Any = None  # a TensorBoard SummaryWriter on rank 0 when the package is installed
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    scaler: Any = None  # torch.amp.GradScaler, active only for fp16 on a GPU
    guard: LossGuard = field(default_factory=LossGuard)


def _preprocessing(cfg: TrainConfig, model: ConvNet) -> Preprocessing:
    """What the weights expect (pretrained Lite: (x − 127)/128), at the run's resolution; 28 px sets
    are resized whole (crop 1.0) rather than center-cropped."""
    pre = default_preprocessing(model)
    return dataclasses.replace(pre, resolution=cfg.resolution or model.spec.resolution,
                               crop_pct=1.0 if cfg.data in SMALL_SETS else pre.crop_pct)


HELD_OUT = 0.2
MIN_STEPS = 100  # below this a run warns that it will learn little (docs/limits.md, "Short runs")


def _datasets(cfg: TrainConfig) -> tuple[Any, Any, list[str]]:
    """Built-in sets: their train and test splits. A folder: its ``train/`` and ``val/`` sub-folders, or,
    when it has no ``train/``, the folder itself with a stratified 20 % held out (seed = ``cfg.seed``)."""
    cmap = ClassMap.from_arg(cfg.class_map) if cfg.class_map else None
    folder = Path(cfg.data).expanduser()
    if cfg.data not in SMALL_SETS and folder.is_dir() and not (folder / "train").is_dir():
        whole = get_dataset(cfg.data, None, class_map=cmap, strict=cfg.strict_data)
        train, val = held_out_split(whole, HELD_OUT, cfg.seed)  # type: ignore[arg-type]
        print(f"{folder} has no train/ sub-folder: training on {len(train)} images and validating on a held-out "
              f"{HELD_OUT:.0%} ({len(val)} images, stratified, seed {cfg.seed})", file=sys.stderr)
        return train, val, list(train.classes)
    train = get_dataset(cfg.data, "train", root=cfg.data_dir, class_map=cmap, seed=cfg.seed, strict=cfg.strict_data)
    val = get_dataset(cfg.data, "test" if cfg.data in SMALL_SETS else "val", root=cfg.data_dir, class_map=cmap,
                      seed=cfg.seed, strict=cfg.strict_data)
    return train, val, list(train.classes)  # type: ignore[attr-defined]


def _loader_kwargs(cfg: TrainConfig, epoch: int = 0) -> dict[str, Any]:
    # An own generator: a DataLoader otherwise draws its worker seed from the global RNG, so a
    # resumed epoch (one more loader) would shift the dropout/drop-path random stream.
    # fork, although every epoch after the first forks from a process that has run backward passes:
    # PyTorch only refuses autograd *in* such a child (torch/csrc/autograd/engine.cpp,
    # forked_autograd_child), and loader workers only decode and transform images. fork shares the
    # data set with them instead of pickling it (the search's trainers, which do run autograd, use a
    # forkserver: effnet.search.trials.worker_context).
    return {"num_workers": cfg.workers, "persistent_workers": False,
            "generator": torch.Generator().manual_seed(cfg.seed * 31 + epoch),
            "multiprocessing_context": "fork" if cfg.workers and os.name == "posix" else None,
            "pin_memory": torch.cuda.is_available()}


def setup(cfg: TrainConfig, info: DistInfo) -> Run:
    torch.manual_seed(cfg.seed)
    device = _device(info)
    train_base, val_base, classes = _datasets(cfg)
    model = build_model(cfg, len(classes)).to(device)
    pre = _preprocessing(cfg, model)
    augment = None if cfg.augment == "none" else cfg.augment
    crop_min = cfg.crop_scale_min if cfg.crop_scale_min is not None else (
        SMALL_IMAGE_CROP_SCALE[0] if cfg.data in SMALL_SETS else 0.08)
    hflip = cfg.hflip if cfg.hflip is not None else cfg.data not in ("mnist", "digits")
    train_tf = build_transform(pre, train=True, augment=augment, randaugment_n=cfg.randaugment_n,  # type: ignore[arg-type]
                               randaugment_m=cfg.randaugment_m, crop_scale=(crop_min, 1.0), hflip=hflip)
    indices = None
    if cfg.train_subset:
        g = torch.Generator().manual_seed(cfg.seed)
        indices = torch.randperm(len(train_base), generator=g)[: cfg.train_subset].tolist()
    train_set = SeededTransformDataset(train_base, train_tf, cfg.seed, indices)
    if len(train_set) < cfg.batch_size * info.world:
        raise EffnetError(f"{len(train_set)} training images are fewer than one global batch "
                          f"({cfg.batch_size} x {info.world}); lower batch_size")
    sampler = EpochSampler(len(train_set), cfg.batch_size, seed=cfg.seed, rank=info.rank, world=info.world)
    val_base.transform = build_transform(pre, train=False)
    val_loader = DataLoader(val_base, batch_size=max(cfg.batch_size, 64), shuffle=False, **_loader_kwargs(cfg))
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    ddp: nn.Module = model
    if info.enabled:
        if cfg.sync_bn and device.type != "cuda":
            raise EffnetError("sync_bn needs GPUs (NCCL); on CPU each rank keeps its BN and buffers are averaged")
        if cfg.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # type: ignore[assignment]
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    lrs = {"classifier": 1.0, "": cfg.body_lr_mult} if cfg.body_lr_mult != 1.0 else None
    optimizer = build_optimizer(model, cfg.optimizer, cfg.base_lr(info.world), weight_decay=cfg.weight_decay,
                                momentum=cfg.momentum, param_lrs=lrs)
    schedule = Schedule(cfg.base_lr(info.world), sampler.batches_per_epoch, cfg.epochs, cfg.warmup_epochs or 0.0,
                        cfg.schedule, cfg.decay_epochs, cfg.decay_rate)
    ema = ModelEma(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16" and device.type == "cuda")
    return Run(cfg, model, ddp, ema, optimizer, schedule, sampler, train_set, val_loader, classes, pre, info,
               history=[], device=device, scaler=scaler, guard=LossGuard(cfg.loss_guard_factor, enabled=cfg.loss_guard))


def _device(info: DistInfo) -> torch.device:
    """This process's GPU (torchrun's LOCAL_RANK) when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        torch.cuda.set_device(info.local_rank)
        return torch.device("cuda", info.local_rank)
    return torch.device("cpu")


def _state(run: Run) -> dict[str, Any]:
    return {"model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
            "ema": run.ema.state_dict() if run.ema else None, "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(run.device) if run.device.type == "cuda" else None,
            "epoch": run.epoch, "step": run.step, "batch_in_epoch": run.batch_in_epoch,
            "loss_sum": run.loss_sum, "loss_count": run.loss_count,
            "best_top1": run.best_top1, "history": run.history, "config": run.cfg.to_dict(),
            "guard": run.guard.state_dict()}


def save_state(run: Run, out: Path) -> None:
    if run.info.main:
        write_state(_state(run), out)


def load_state(run: Run, out: Path) -> None:
    path, state = read_state(out)
    check_state(path, state, run.cfg.to_dict(), run.model)
    run.model.load_state_dict(state["model"])
    try:  # keys and shapes of the weights are checked; the optimizer's and EMA's parts only load
        run.optimizer.load_state_dict(state["optimizer"])
        if run.ema is not None and isinstance(state.get("ema"), dict):
            run.ema.load_state_dict(state["ema"])
        run.guard.load_state_dict(state.get("guard") or {})
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise EffnetError(f"--resume: {path} has a damaged optimizer or EMA state ({type(e).__name__}); "
                          "--resume needs the run's own state.pt; start a new run with another --out") from None
    torch.set_rng_state(state["rng"])
    if state.get("cuda_rng") is not None and run.device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"], run.device)
    run.epoch, run.step, run.batch_in_epoch = state["epoch"], state["step"], state["batch_in_epoch"]
    run.best_top1, run.history = state["best_top1"], state["history"]
    run.loss_sum, run.loss_count = float(state.get("loss_sum", 0.0)), state["loss_count"]


def _loss(run: Run, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(run.cfg.amp)
    with torch.autocast(run.device.type, dtype=amp, enabled=amp is not None):
        logits = run.ddp(x)
    return F.cross_entropy(logits.float(), y, label_smoothing=run.cfg.label_smoothing)


def train_epoch(run: Run, out: Path, bar: Any) -> float:
    """One epoch from ``run.batch_in_epoch``; returns the mean training loss of the steps run."""
    run.train_set.epoch = run.epoch
    run.sampler.set_epoch(run.epoch, run.batch_in_epoch)
    loader = DataLoader(run.train_set, batch_sampler=run.sampler, **_loader_kwargs(run.cfg, run.epoch))
    run.ddp.train()
    for x, y in loader:
        x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
        if run.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        set_lr(run.optimizer, run.schedule(run.step))
        loss = _loss(run, x, y)
        run.guard.check(loss.item(), run.step, run.schedule(run.step))  # before the step: weights stay good
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()  # fp16 on a GPU: loss scaling; otherwise a plain backward and step
        run.scaler.step(run.optimizer)
        run.scaler.update()
        if run.ema is not None:
            run.ema.update(run.model)
        run.step, run.batch_in_epoch = run.step + 1, run.batch_in_epoch + 1
        run.loss_sum, run.loss_count = run.loss_sum + loss.item(), run.loss_count + 1
        if bar is not None:
            bar.update(1)
            lr = run.optimizer.param_groups[0]["lr"]
            bar.set_postfix(loss=f"{run.loss_sum / run.loss_count:.3f}", lr=f"{lr:.2e}")
        if run.cfg.checkpoint_every and run.step % run.cfg.checkpoint_every == 0:
            save_state(run, out)
    return run.loss_sum / max(run.loss_count, 1)


def _write_metrics(run: Run, out: Path) -> None:
    rows = run.history or []
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    tmp = out / ".metrics.csv.tmp"
    tmp.write_text(buf.getvalue())
    os.replace(tmp, out / "metrics.csv")


def end_epoch(run: Run, out: Path, train_loss: float, seconds: float) -> EvalMetrics | None:
    average_buffers(run.model, run.info)
    metrics = None
    if run.info.main:
        evaluated = run.ema.module if run.ema is not None else run.model
        if run.cfg.precise_bn_batches:  # on a copy: the trained model (and every DDP rank's) stays as it is
            evaluated = copy.deepcopy(evaluated)
            recalibrate_bn(evaluated, _calibration_batches(run), channels_last=bool(run.cfg.channels_last))
        metrics = evaluate(evaluated, run.val_loader, len(run.classes), channels_last=run.cfg.channels_last)
        if run.cfg.loss_guard and (text := check_val_loss(metrics.loss, train_loss, run.epoch + 1, run.step)):
            warnings.warn(text, stacklevel=2)
        row = {"epoch": run.epoch + 1, "step": run.step, "lr": run.optimizer.param_groups[0]["lr"],
               "train_loss": round(train_loss, 5), "val_loss": round(metrics.loss, 5),
               "top1": round(metrics.top1, 3), "top5": round(metrics.top5, 3), "seconds": round(seconds, 1)}
        run.history = [*(run.history or []), row]
        _write_metrics(run, out)
        if run.tb is not None:
            for key in ("lr", "train_loss", "val_loss", "top1", "top5"):
                run.tb.add_scalar(key, row[key], run.epoch + 1)
            run.tb.flush()
        meta = {"config": run.cfg.to_dict(), "metrics": metrics.summary(), "classes": run.classes,
                "epoch": run.epoch + 1}
        save_checkpoint(out / "last.safetensors", evaluated, preprocessing=run.preprocessing, metadata=meta,
                        overwrite=True)  # type: ignore[arg-type]
        if metrics.top1 > run.best_top1:
            run.best_top1 = metrics.top1
            save_checkpoint(out / "best.safetensors", evaluated, preprocessing=run.preprocessing, metadata=meta,
                            overwrite=True)  # type: ignore[arg-type]
        plot_confusion(metrics, run.classes, out / "confusion.png")
    run.epoch, run.batch_in_epoch, run.loss_sum, run.loss_count = run.epoch + 1, 0, 0.0, 0
    save_state(run, out)
    barrier(run.info)
    return metrics


def _calibration_batches(run: Run) -> Any:
    """``precise_bn_batches`` training batches of a fixed, seeded draw (class-balanced in expectation, and the
    same at every epoch end, so a resumed run recomputes the same statistics)."""
    n = min(len(run.train_set), run.cfg.precise_bn_batches * run.cfg.batch_size)
    order = torch.randperm(len(run.train_set), generator=torch.Generator().manual_seed(run.cfg.seed + 1))[:n]
    subset = torch.utils.data.Subset(run.train_set, order.tolist())
    kwargs = _loader_kwargs(run.cfg, run.epoch)
    return (x.to(run.device) for x, _ in DataLoader(subset, batch_size=run.cfg.batch_size, **kwargs))


def prepare_out(out: Path, cfg: TrainConfig, resume: bool, info: DistInfo) -> None:
    if info.main:
        if not resume and (out / STATE).exists():
            raise EffnetError(f"{str(out)!r} already holds a run; pass --resume to continue it or choose another --out")
        output_dir(out)
        if not resume:
            (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    barrier(info)


def train(cfg: TrainConfig, out: str | Path, *, resume: bool = False) -> dict[str, Any]:
    """Train (or resume) a run into ``out``; returns the final metrics and timing."""
    info = init_distributed()
    cfg = cfg.resolved()
    out = Path(out)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    prepare_out(out, cfg, resume, info)
    run = setup(cfg, info)
    if resume:
        load_state(run, out)
    run.tb = _tensorboard(cfg, info, out)
    epochs = math.ceil(cfg.epochs)
    total = epochs * run.sampler.batches_per_epoch
    if total < MIN_STEPS and info.main and not resume:
        warnings.warn(f"this run makes only {total} optimizer steps ({run.sampler.batches_per_epoch} per epoch); "
                      f"expect it to learn little (digits: 22 steps gave 11.7 % top-1, chance 10 %); raise --epochs "
                      "or lower --batch-size", stacklevel=2)
    bar = _progress(cfg, info, total, run.step)
    start, metrics = time.time(), None
    try:
        while run.epoch < epochs:
            t = time.time()
            loss = train_epoch(run, out, bar)
            metrics = end_epoch(run, out, loss, time.time() - t)
            if metrics is not None:
                _say(bar, f"epoch {run.epoch}/{epochs}: train loss {loss:.4f}, val loss {metrics.loss:.4f}, "
                          f"top-1 {metrics.top1:.2f}, top-5 {metrics.top5:.2f}")
    except TrainingDiverged as err:
        kept = (f"{out / 'last.safetensors'} (epoch {run.epoch}) is the last good checkpoint" if run.epoch
                else "no epoch finished, so no checkpoint was written")
        raise TrainingDiverged(f"{err}; {kept}") from None
    finally:
        if bar is not None:
            bar.close()
        if run.tb is not None:
            run.tb.close()
    finish_distributed(info)
    last = (run.history or [{}])[-1]
    return {"top1": last.get("top1"), "top5": last.get("top5"), "best_top1": run.best_top1,
            "epochs": run.epoch, "steps": run.step, "seconds": time.time() - start, "history": run.history,
            "metrics": metrics}


def _tensorboard(cfg: TrainConfig, info: DistInfo, out: Path) -> Any:
    """A SummaryWriter into ``out/tensorboard`` (``tensorboard --logdir OUT``), or None when the
    tensorboard package is not installed: it is optional, and metrics.csv holds the same numbers."""
    if not (cfg.tensorboard and info.main):
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _progress(cfg: TrainConfig, info: DistInfo, total: int, done: int) -> Any:
    """A bar with ETA on a terminal; in logs (CI, nohup) a plain line at most once a minute plus the
    epoch lines, instead of one redraw per step (:mod:`effnet.progress`)."""
    if not info.main:
        return None
    from effnet.progress import progress_bar

    return progress_bar(total, unit="step", initial=done, enabled=cfg.progress, min_interval=60.0)


def _say(bar: Any, text: str) -> None:
    if bar is not None and not bar.disable:
        bar.write(text, file=sys.stderr)
    else:
        print(text, file=sys.stderr, flush=True)
