"""Training that cannot blow up silently, and a short run's recipe made to fit it.

* :class:`LossGuard`: a non-finite step loss, or one ``factor`` times its running average, stops
  the run with :class:`TrainingDiverged` naming the step and the likely cause; the files written at
  the last epoch end (``last.safetensors``, ``state.pt``) are the last good ones and stay. A
  validation loss orders of magnitude above the training loss is reported as a warning.
* :func:`recalibrate_bn`: "precise BN" (Wu & Johnson, *Rethinking "Batch" in BatchNorm*, 2021, §3;
  fvcore ``fvcore/nn/precise_bn.py``): before each evaluation, recompute the BN statistics of the
  weights actually evaluated from a few training batches. Running averages (TF momentum 0.99, or
  the EMA of running averages) lag behind weights that still change fast, which in a few-epoch run
  gives validation losses of 40–230 for a model whose freshly measured statistics give 1.6
  (docs/limits.md, "short runs").
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from effnet.errors import EffnetError

__all__ = ["LossGuard", "TrainingDiverged", "check_val_loss", "recalibrate_bn"]

VAL_RATIO = 100.0  # "orders of magnitude": validation loss over training loss


class TrainingDiverged(EffnetError):
    """The loss became non-finite or exploded; the message names the step and the likely cause."""


class LossGuard:
    """Watches each step's loss: non-finite, or above ``factor`` × its running average, is a divergence.

    The running average is an exponential one (weight 0.1) over the steps so far; the first
    ``settle`` steps only feed it, since the first losses of a fresh network swing widely.
    """

    def __init__(self, factor: float = 10.0, *, settle: int = 10, enabled: bool = True) -> None:
        self.factor, self.settle, self.enabled = factor, settle, enabled
        self.mean: float | None = None
        self.seen = 0

    def check(self, loss: float, step: int, lr: float, where: str = "training") -> None:
        """Raise :class:`TrainingDiverged` when ``loss`` (of ``step``, at ``lr``) is a divergence."""
        if not self.enabled:
            return
        hint = (f"lower the learning rate (it was {lr:.3g}; --lr) or lengthen the warmup (--warmup-epochs); "
                "--no-loss-guard turns this check off")
        if not math.isfinite(loss):
            raise TrainingDiverged(f"{where} diverged at step {step}: the loss became {loss}; {hint}")
        if self.mean is not None and self.seen >= self.settle and loss > self.factor * self.mean:
            raise TrainingDiverged(f"{where} diverged at step {step}: loss {loss:.4g} is {loss / self.mean:.0f}x "
                                   f"its running average {self.mean:.4g}; {hint}")
        self.mean = loss if self.mean is None else 0.9 * self.mean + 0.1 * loss
        self.seen += 1

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "seen": self.seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean, self.seen = state.get("mean"), int(state.get("seen", 0))


def check_val_loss(val_loss: float, train_loss: float, epoch: int, step: int) -> str | None:
    """A warning text when the validation loss is :data:`VAL_RATIO` times the training loss, else None."""
    if not math.isfinite(val_loss) or val_loss > VAL_RATIO * max(train_loss, 1e-3):
        return (f"epoch {epoch} (step {step}): validation loss {val_loss:.4g} is over {VAL_RATIO:.0f}x the training "
                f"loss {train_loss:.4g}: the evaluated weights or their BN statistics do not match the training; "
                "likely causes: a learning rate too high, BN statistics from too few steps (keep --precise-bn on), "
                "or validation images preprocessed unlike the training images")
    return None


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor], *, channels_last: bool = False) -> int:
    """Replace every BN layer's running statistics by their average over ``batches`` (precise BN).

    The model runs in eval mode (no dropout or drop path, as it will be evaluated) with only its
    BN layers in training mode and a cumulative average (``momentum=None``). The global RNG is left
    untouched, so an exactly resumed run stays exact. Returns the number of batches used.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return 0
    was_training, momenta = model.training, [m.momentum for m in bns]
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    n = 0
    with torch.random.fork_rng(devices=[]):
        for x in batches:
            model(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
            n += 1
    for m, momentum in zip(bns, momenta, strict=True):
        m.momentum = momentum
    model.train(was_training)
    if not was_training:
        for m in bns:
            m.eval()
    return n
