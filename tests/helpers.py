"""Plain helpers shared by several test files (pytest puts tests/ on sys.path)."""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

# The shared, read-only test data (imagenet-sample-100, imagenet-synsets.txt): $EFFNET_SHARED_DATA, else
# ../shared/data beside the checkout (README "Sample inputs"). Tests that need it skip when it is missing.
SHARED_DATA = Path(os.environ.get("EFFNET_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


def randomize_bn(model: nn.Module) -> nn.Module:
    """Random init leaves BN at mean 0 / var 1, which would hide an eps or key mix-up; returns the
    model in eval mode so the running statistics are used."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()
