"""Evaluation: loss, top-1/top-5, per-class accuracy, confusion matrix (and its PNG)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from effnet.plots import pyplot, save_figure


@dataclass
class EvalMetrics:
    """Accumulated over a data set; percentages in 0..100."""

    loss: float = 0.0
    top1: float = 0.0
    top5: float = 0.0
    count: int = 0
    per_class: list[float] = field(default_factory=list)
    confusion: list[list[int]] = field(default_factory=list)  # rows: true class, columns: predicted

    def summary(self) -> dict[str, float]:
        return {"loss": self.loss, "top1": self.top1, "top5": self.top5, "count": self.count}


class MetricAccumulator:
    """Running loss, top-1/top-5 hits and confusion counts over batches of logits.

    One place for the arithmetic that training's validation, ``effnet eval`` on built-in sets and
    :func:`effnet.evaluate.evaluate_folder` all report, so their numbers cannot drift apart.
    Top-5 is top-k with k = min(5, classes).
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
        self.totals = torch.zeros(num_classes, dtype=torch.long)  # images per true class
        self.loss_sum, self.top5_hits, self.count = 0.0, 0, 0

    def update(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Add a batch; returns the top-k class indices (best first) for callers that list errors."""
        logits, y = logits.float().cpu(), y.cpu()
        k = self.num_classes
        self.loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        self.top5_hits += (top == y[:, None]).any(1).sum().item()
        pred = top[:, 0]
        inside = pred < k  # a 1000-class model on 10 classes: a prediction outside them is wrong, not in the matrix
        self.confusion += torch.bincount(y[inside] * k + pred[inside], minlength=k * k).view(k, k)
        self.totals += torch.bincount(y, minlength=k)
        self.count += len(y)
        return top

    def result(self) -> EvalMetrics:
        n = max(self.count, 1)
        correct = self.confusion.diag()
        totals = self.totals
        return EvalMetrics(loss=self.loss_sum / n, top1=100.0 * correct.sum().item() / n,
                           top5=100.0 * self.top5_hits / n, count=self.count,
                           per_class=(100.0 * correct / totals.clamp(min=1)).tolist(),
                           confusion=self.confusion.tolist())


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], num_classes: int, *,
             channels_last: bool = False, amp_dtype: torch.dtype | None = None) -> EvalMetrics:
    """Run ``model`` in eval mode over ``batches``; returns the metrics (the model's mode is restored)."""
    was_training = model.training
    model.eval()
    acc = MetricAccumulator(num_classes)
    device = next(model.parameters()).device
    try:
        for x, y in batches:
            x = x.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(x)
            acc.update(logits, y)
    finally:
        model.train(was_training)
    return acc.result()


def plot_confusion(metrics: EvalMetrics, classes: Sequence[str], path: str | Path, *, title: str = "") -> Path:
    """Row-normalised confusion matrix as a PNG (true class down, predicted across)."""
    plt = pyplot()

    cm = torch.tensor(metrics.confusion, dtype=torch.float)
    norm = cm / cm.sum(1, keepdim=True).clamp(min=1)
    k = len(classes)
    fig, ax = plt.subplots(figsize=(max(5, 0.5 * k + 2), max(4, 0.5 * k + 1.5)))
    im = ax.imshow(norm.numpy(), cmap="Blues", vmin=0, vmax=1)
    if k <= 30:
        ax.set_xticks(range(k), classes, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(k), classes, fontsize=8)
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=6,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"top-1 {metrics.top1:.2f} % on {metrics.count} images")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return save_figure(fig, path)
