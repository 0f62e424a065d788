"""Shared fixtures: a tiny spec for fast structural tests, fixed seeds, CPU only."""

from __future__ import annotations

import pytest
import torch

from effnet.spec import HeadSpec, NetworkSpec, StageSpec, StemSpec


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def tiny_spec() -> NetworkSpec:
    """Three MBConv stages, 8–16 channels, 32 px: everything that needs a real net but not a real size."""
    return NetworkSpec(
        name="tiny",
        stem=StemSpec(out_channels=8),
        stages=(
            StageSpec(block="mbconv", repeats=1, out_channels=8, stride=1, expand_ratio=1, se_ratio=0.25),
            StageSpec(block="mbconv", repeats=2, out_channels=16, stride=2, expand_ratio=4, se_ratio=0.25,
                      kernel_size=5),
            StageSpec(block="mbconv", repeats=1, out_channels=16, stride=2, expand_ratio=4, se_ratio=0.25),
        ),
        head=HeadSpec(channels=32),
        resolution=32,
    )
