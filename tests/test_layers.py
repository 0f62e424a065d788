"""Layers: drop path, squeeze-excitation, conv padding."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from effnet.layers import Conv2dSame, ConvNormAct, ConvOptions, DropPath, SqueezeExcite


def test_drop_path_identity_in_eval_and_at_zero() -> None:
    x = torch.randn(8, 4, 3, 3)
    dp = DropPath(0.5).eval()
    assert torch.equal(dp(x), x)
    assert torch.equal(DropPath(0.0).train()(x), x)


def test_drop_path_is_per_sample_and_preserves_mean() -> None:
    dp = DropPath(0.3).train()
    x = torch.ones(20000, 2, 2, 2)
    y = dp(x)
    per_sample = y.flatten(1)
    assert ((per_sample == 0).all(1) | (per_sample == per_sample[:, :1]).all(1)).all()
    values = torch.unique(y).tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(1 / 0.7)
    assert y.mean().item() == pytest.approx(1.0, abs=0.02)
    with pytest.raises(ValueError):
        DropPath(1.0)


def test_squeeze_excite_gates_in_unit_interval() -> None:
    se = SqueezeExcite(16, 4, nn.SiLU)
    x = torch.randn(2, 16, 5, 5).abs() + 0.1
    y = se(x)
    assert y.shape == x.shape
    gate = y / x
    assert (gate > 0).all() and (gate < 1).all()
    # the gate is constant over space: one value per channel
    assert torch.allclose(gate, gate[..., :1, :1].expand_as(gate), atol=1e-6)


@pytest.mark.parametrize("padding", ["symmetric", "same"])
@pytest.mark.parametrize(("size", "k", "stride"), [(224, 3, 2), (225, 5, 2), (17, 3, 1), (15, 7, 2)])
def test_conv_output_is_ceil(padding: str, size: int, k: int, stride: int) -> None:
    conv = ConvNormAct(3, 4, k, stride=stride, options=ConvOptions(padding=padding))  # type: ignore[arg-type]
    assert conv(torch.randn(1, 3, size, size)).shape[-1] == math.ceil(size / stride)


def test_same_padding_puts_the_extra_pixel_bottom_right() -> None:
    """TF SAME for a 3x3 stride-2 conv on an even input pads 0 top/left and 1 bottom/right."""
    conv = Conv2dSame(1, 1, 3, 2, 0, bias=False)
    nn.init.ones_(conv.weight)
    x = torch.ones(1, 1, 4, 4)
    y = conv(x)
    # top-left output sees a full 3x3 window of ones (no padding there), bottom-right sees 2x2
    assert y[0, 0, 0, 0].item() == 9.0 and y[0, 0, -1, -1].item() == 4.0
