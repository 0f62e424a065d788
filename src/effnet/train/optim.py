"""Optimizers and the learning-rate schedule of the official EfficientNet recipe.

RMSProp with TensorFlow semantics differs from ``torch.optim.RMSprop`` in three ways that matter at
the paper's settings (timm#11): eps sits *inside* the square root, the squared-gradient average
starts at 1 rather than 0, and the learning rate multiplies the momentum *input*, so a schedule step
does not rescale the momentum already accumulated.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn


class RMSpropTF(torch.optim.Optimizer):
    """TF1 ``RMSPropOptimizer``: ``ms = ρ·ms + (1−ρ)·g²; mom = μ·mom + lr·g/√(ms+ε); θ −= mom``.

    Weight decay is an L2 term added to the gradient, as the official code adds ``1e-5·‖θ‖²/2``
    to the loss (``weight_decay`` here is that coefficient).
    """

    def __init__(self, params: Iterable[nn.Parameter] | Iterable[dict], lr: float = 0.016, decay: float = 0.9,
                 momentum: float = 0.9, eps: float = 1e-3, weight_decay: float = 0.0) -> None:
        if lr < 0 or not 0 <= decay < 1 or momentum < 0 or eps <= 0 or weight_decay < 0:
            raise ValueError(f"invalid RMSpropTF settings lr={lr} decay={decay} momentum={momentum} eps={eps} "
                             f"weight_decay={weight_decay}")
        super().__init__(params, {"lr": lr, "decay": decay, "momentum": momentum, "eps": eps,
                                  "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[no-untyped-def,override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if group["weight_decay"]:
                    grad = grad.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if not state:
                    state["square_avg"] = torch.ones_like(p)  # TF initialises the rms slot to 1
                    state["momentum_buffer"] = torch.zeros_like(p)
                ms, buf = state["square_avg"], state["momentum_buffer"]
                ms.mul_(group["decay"]).addcmul_(grad, grad, value=1 - group["decay"])
                update = grad / (ms + group["eps"]).sqrt()
                buf.mul_(group["momentum"]).add_(update, alpha=group["lr"])
                p.sub_(buf)
        return loss


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weights with decay, and BN parameters and biases without (official code:
    "L2 on all trainable variables except batch norm")."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, name: str, lr: float, *, weight_decay: float, momentum: float = 0.9,
                    param_lrs: dict[str, float] | None = None) -> torch.optim.Optimizer:
    """``rmsproptf`` (paper), ``sgd`` (Nesterov) or ``adamw``. ``param_lrs`` maps a parameter-name
    prefix to an lr multiplier (fine-tuning: a lower lr for the body)."""
    groups = param_groups(model, weight_decay)
    if param_lrs:
        groups = _split_by_prefix(model, groups, param_lrs)
    if name == "rmsproptf":
        return RMSpropTF(groups, lr=lr, decay=0.9, momentum=momentum, eps=1e-3)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}; use rmsproptf, sgd or adamw")


def _split_by_prefix(model: nn.Module, groups: list[dict], param_lrs: dict[str, float]) -> list[dict]:
    names = {id(p): n for n, p in model.named_parameters()}
    out = []
    for g in groups:
        buckets: dict[float, list[nn.Parameter]] = {}
        for p in g["params"]:
            mult = next((m for pre, m in param_lrs.items() if names[id(p)].startswith(pre)), 1.0)
            buckets.setdefault(mult, []).append(p)
        out += [{"params": ps, "weight_decay": g["weight_decay"], "lr_mult": m} for m, ps in buckets.items()]
    return out


@dataclass(frozen=True)
class Schedule:
    """Linear warmup, then exponential *staircase* decay (×``decay_rate`` every ``decay_epochs``,
    the official 0.97 / 2.4) or cosine to zero, evaluated per step."""

    base_lr: float
    steps_per_epoch: int
    epochs: float
    warmup_epochs: float = 5.0
    kind: str = "step"
    decay_epochs: float = 2.4
    decay_rate: float = 0.97

    def __post_init__(self) -> None:
        if self.kind not in ("step", "cosine", "constant"):
            raise ValueError(f"unknown schedule {self.kind!r}; use step, cosine or constant")

    def __call__(self, step: int) -> float:
        epoch = step / self.steps_per_epoch
        if epoch < self.warmup_epochs:
            return self.base_lr * epoch / self.warmup_epochs
        if self.kind == "step":
            return self.base_lr * self.decay_rate ** math.floor(epoch / self.decay_epochs)
        if self.kind == "cosine":
            span = max(self.epochs - self.warmup_epochs, 1e-9)
            return 0.5 * self.base_lr * (1 + math.cos(math.pi * min((epoch - self.warmup_epochs) / span, 1.0)))
        return self.base_lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_mult", 1.0)
