"""Evaluation: loss, top-1/top-5, per-class accuracy, confusion matrix (and its PNG)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


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


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], num_classes: int, *,
             channels_last: bool = False, amp_dtype: torch.dtype | None = None) -> EvalMetrics:
    """Run ``model`` in eval mode over ``batches``; returns the metrics (the model's mode is restored)."""
    was_training = model.training
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    loss_sum, top5_hits, n = 0.0, 0, 0
    try:
        for x, y in batches:
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(x).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            k = min(5, num_classes)
            top5_hits += (logits.topk(k, dim=1).indices == y[:, None]).any(1).sum().item()
            confusion += torch.bincount(y * num_classes + logits.argmax(1),
                                        minlength=num_classes * num_classes).view(num_classes, num_classes)
            n += len(y)
    finally:
        model.train(was_training)
    correct = confusion.diag()
    totals = confusion.sum(1).clamp(min=1)
    return EvalMetrics(loss=loss_sum / max(n, 1), top1=100.0 * correct.sum().item() / max(n, 1),
                       top5=100.0 * top5_hits / max(n, 1), count=n,
                       per_class=(100.0 * correct / totals).tolist(), confusion=confusion.tolist())


def plot_confusion(metrics: EvalMetrics, classes: Sequence[str], path: str | Path, *, title: str = "") -> Path:
    """Row-normalised confusion matrix as a PNG (true class down, predicted across)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
