"""Train one spec for a fixed, small budget in-process and return its accuracy.

The grid search (STEP 1), the scaled family (STEP 2) and the single-dimension comparison (Table 3,
Fig. 8) each train many networks that must be compared *under identical training*: same images,
same steps per epoch, same optimiser and schedule, only the architecture changes. ``train.loop``
is the full, resumable recipe for one long run (file outputs, EMA, RandAugment); this is the
lightweight counterpart for tens-of-seconds trials on CPU: the data set is held in memory as
uint8 arrays and resized once per resolution (the resolution multiplier changes the input size),
training is a plain loop, nothing is written.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from effnet.errors import DataError, EffnetError
from effnet.macs import estimate_cost
from effnet.model import ConvNet
from effnet.spec import NetworkSpec
from effnet.train.guards import LossGuard
from effnet.train.metrics import evaluate
from effnet.train.optim import Schedule, build_optimizer, set_lr

__all__ = ["Budget", "ImageArrays", "TrialOutcome", "load_arrays", "resize_images", "train_spec"]

ARRAY_SETS = ("fashion-mnist", "mnist", "digits")


@dataclass(frozen=True)
class Budget:
    """A fixed training budget, the same for every network it trains.

    ``eval_split="val"`` holds out ``eval_images`` of the *training* set (for the search: selecting on
    the test set would leak it); ``"test"`` evaluates on the official test images.
    """

    epochs: float = 2.0
    train_images: int = 5000
    eval_images: int = 2000
    eval_split: str = "val"
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.02
    label_smoothing: float = 0.1
    dropout: float = 0.1
    hflip: bool = True

    def __post_init__(self) -> None:
        if self.eval_split not in ("val", "test"):
            raise EffnetError(f"eval_split={self.eval_split!r}: use 'val' (held out from train) or 'test'")
        if not (self.epochs > 0 and self.train_images >= self.batch_size > 0 and self.eval_images > 0):
            raise EffnetError(f"budget {self}: epochs > 0, eval_images > 0 and train_images >= batch_size > 0 needed")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ImageArrays:
    """Grayscale uint8 images (N, H, W) and labels for training and evaluation, held in memory."""

    train_x: np.ndarray
    train_y: np.ndarray
    eval_x: np.ndarray
    eval_y: np.ndarray
    classes: list[str]


def load_arrays(data: str, budget: Budget, *, seed: int = 0, root: str | None = None) -> ImageArrays:
    """The budget's training and evaluation images of a built-in set (fashion-mnist, mnist, digits).

    The training images are the first ``train_images`` of a seeded permutation of the training split;
    a ``val`` evaluation set is the last ``eval_images`` of that permutation (disjoint from them).
    """
    from effnet.data.datasets import get_dataset

    if data not in ARRAY_SETS:
        raise DataError(f"data {data!r}: budget training reads an in-memory set, one of {', '.join(ARRAY_SETS)}")
    train = get_dataset(data, "train", root=root, seed=0)
    order = np.random.default_rng(seed).permutation(len(train.images))  # type: ignore[attr-defined]
    n_val = budget.eval_images if budget.eval_split == "val" else 0
    if budget.train_images + n_val > len(order):
        raise DataError(f"{data} has {len(order)} training images; the budget asks for {budget.train_images} "
                        f"+ {n_val} held out; lower train_images/eval_images")
    tr = order[: budget.train_images]
    if budget.eval_split == "val":
        ev, ex, ey = order[len(order) - n_val:], train.images, train.targets  # type: ignore[attr-defined]
    else:
        test = get_dataset(data, "test", root=root, seed=0)
        ev, ex, ey = np.arange(min(budget.eval_images, len(test.images))), test.images, test.targets  # type: ignore[attr-defined]
    return ImageArrays(train.images[tr], train.targets[tr], ex[ev], ey[ev], list(train.classes))  # type: ignore[attr-defined]


def resize_images(x: np.ndarray, resolution: int) -> torch.Tensor:
    """uint8 (N, H, W) → float (N, 1, r, r), antialiased bilinear, scaled to [-1, 1]."""
    t = torch.from_numpy(x).float().div_(127.5).sub_(1.0)[:, None]
    if t.shape[-1] == resolution and t.shape[-2] == resolution:
        return t
    return F.interpolate(t, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)


@dataclass
class TrialOutcome:
    """Accuracy (top-1 %, on the budget's evaluation images) and cost of one trained network."""

    accuracy: float
    params: int
    macs: int
    resolution: int
    seconds: float
    model: ConvNet | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "params": self.params, "macs": self.macs, "resolution": self.resolution,
                "seconds": round(self.seconds, 2)}


def train_spec(spec: NetworkSpec, arrays: ImageArrays, budget: Budget, *, seed: int = 0,
               progress: Any = None, loss_guard: bool = True, device: str = "cpu") -> TrialOutcome:
    """Train ``spec`` (1-channel input, its own resolution) for ``budget`` and evaluate it.

    AdamW with a short warmup and cosine decay, BN momentum 0.1 and no stochastic depth: what a
    few-epoch run needs (the paper's RMSProp recipe is made for 350 epochs). ``seed`` fixes the
    initialisation, batch order and flips, so two architectures see the same batches.
    ``loss_guard`` stops a diverging trial (:class:`effnet.train.guards.LossGuard`) with
    :class:`~effnet.train.guards.TrainingDiverged` naming the step, instead of reporting chance
    accuracy as the architecture's result.
    ``device`` (``cuda``: a lent GPU) holds the model and each batch; the images, the batch order and
    the flips stay on the CPU, so a seed draws the same batches on either device. The returned
    model is on the CPU.
    """
    start = time.time()
    torch.manual_seed(seed)
    k = len(arrays.classes)
    dev = torch.device(device)
    model = ConvNet(spec.replace(bn_momentum=0.1), num_classes=k, in_chans=1, dropout=budget.dropout,
                    drop_path_rate=0.0).to(dev)
    x, y = resize_images(arrays.train_x, spec.resolution), torch.from_numpy(arrays.train_y).long()
    steps_per_epoch = len(x) // budget.batch_size
    total = max(1, math.ceil(budget.epochs * steps_per_epoch))
    opt = build_optimizer(model, "adamw", budget.lr, weight_decay=budget.weight_decay)
    schedule = Schedule(budget.lr, steps_per_epoch, budget.epochs, warmup_epochs=min(0.3, budget.epochs / 4),
                        kind="cosine")
    g = torch.Generator().manual_seed(seed)
    guard = LossGuard(enabled=loss_guard)
    model.train()
    for step in range(total):
        if step % steps_per_epoch == 0:
            order = torch.randperm(len(x), generator=g)
        idx = order[(step % steps_per_epoch) * budget.batch_size:][: budget.batch_size]
        xb, yb = x[idx], y[idx]
        if budget.hflip:
            flip = torch.rand(len(xb), generator=g) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
        xb, yb = xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True)
        set_lr(opt, schedule(step))
        loss = F.cross_entropy(model(xb), yb, label_smoothing=budget.label_smoothing)
        guard.check(loss.item(), step, schedule(step), where=f"{spec.name}'s budget training")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if progress is not None:
            progress(step + 1, total)
    ex, ey = resize_images(arrays.eval_x, spec.resolution), torch.from_numpy(arrays.eval_y).long()
    batches = [(ex[i:i + 500], ey[i:i + 500]) for i in range(0, len(ex), 500)]
    metrics = evaluate(model, batches, k)
    cost = estimate_cost(spec, num_classes=k, in_chans=1)
    return TrialOutcome(metrics.top1, cost.params, cost.macs, spec.resolution, time.time() - start, model.cpu())
