"""What :func:`effnet.deploy.inference.optimize_for_inference` returns: an engine behind the model's
call signature, with what was verified and measured about it (kept apart so that the engine
builders and the choice read the type without the builder's module)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from effnet.deploy.choice import Choice

__all__ = ["OptimizedModel"]


class OptimizedModel:
    """A callable taking the model's NCHW fp32 input and returning fp32 logits.

    Attributes:
        engine, dtype: what runs underneath.
        max_error: max |Δlogit| against eager fp32 on the verification input.
        agreement: top-1 agreement with eager fp32 on that input (fraction).
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], *, engine: str, dtype: str,
                 channels_last: bool = False) -> None:
        self._fn, self.engine, self.dtype, self.channels_last = fn, engine, dtype, channels_last
        self.max_error = float("nan")
        self.agreement = float("nan")
        self._recheck: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.recheck_margin = 0.0
        self.rechecked = 0  # rows re-run in fp32 so far
        self.choice: Choice | None = None  # what engine="auto" measured (None: the engine was given)
        self.workdir: Path | None = None  # the temporary folder of its files, when optimize_for_inference made one

    def report(self) -> str:
        """What was measured and chosen (every candidate, its figure, the load), or why nothing was."""
        if self.choice is None:
            return f"engine {self.engine} {self.dtype}: given, not chosen (nothing timed)"
        return self.choice.report()

    def guard(self, fp32: Callable[[torch.Tensor], torch.Tensor], margin: float) -> OptimizedModel:
        """Re-run in ``fp32`` the rows whose top-2 logit margin is below ``margin`` × their largest
        |logit|: near-ties are where reduced precision flips the prediction (on Lite0, the three
        images bf16 flips have fp32 margins of 0.02–0.16 logits out of 14), and they are few."""
        self._recheck, self.recheck_margin = fp32, margin
        return self

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        xin = x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
        out = self._fn(xin).float()
        if self._recheck is not None and out.ndim == 2 and out.shape[1] > 1:
            top = out.topk(2, dim=1).values
            near = ((top[:, 0] - top[:, 1]) < self.recheck_margin * out.abs().amax(1)).nonzero().flatten()
            if len(near):
                out[near] = self._recheck(x[near]).float()
                self.rechecked += len(near)
        return out

    def __repr__(self) -> str:
        return f"OptimizedModel(engine={self.engine!r}, dtype={self.dtype!r}, max_error={self.max_error:.2g})"
