"""Parity with torchvision: its state dicts load through the explicit key table and give the same
logits (max abs difference ≤ 1e-4) with non-trivial BN statistics."""

from __future__ import annotations

import pytest
import torch

from effnet import EffnetError, create_model
from effnet.convert import from_torchvision, torchvision_overrides
from helpers import randomize_bn

torchvision = pytest.importorskip("torchvision")

CASES = [(f"efficientnet_b{i}", f"efficientnet_b{i}") for i in range(8)] + [
    ("mobilenet_v2", "mobilenetv2"), ("resnet18", "resnet18"), ("resnet50", "resnet50")]



@pytest.mark.parametrize(("tv_name", "name"), CASES)
def test_same_logits_as_torchvision(tv_name: str, name: str) -> None:
    tv = getattr(torchvision.models, tv_name)().eval()
    randomize_bn(tv)
    ours = create_model(name, **torchvision_overrides(name)).eval()
    ours.load_state_dict(from_torchvision(tv_name, tv.state_dict()), strict=True)
    size = 64 if name.startswith("efficientnet_b") and int(name[-1]) >= 5 else 96
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected, got = tv(x), ours(x)
    assert expected.abs().max() > 1e-2  # logits are not trivially zero
    assert (expected - got).abs().max().item() <= 1e-4


def test_eps_matters_for_b0() -> None:
    """With effnet's TF default eps (1e-3) instead of torchvision's 1e-5 the logits differ: the
    override is needed, and the test above would catch a wrong table."""
    tv = torchvision.models.efficientnet_b0().eval()
    randomize_bn(tv)
    ours = create_model("efficientnet_b0").eval()
    ours.load_state_dict(from_torchvision("efficientnet_b0", tv.state_dict()))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (tv(x) - ours(x)).abs().max() > 1e-4


def test_unmatched_key_names_the_key() -> None:
    sd = torchvision.models.resnet18().state_dict()
    sd["layer9.0.weird.weight"] = torch.zeros(1)
    with pytest.raises(EffnetError, match=r"layer9\.0\.weird\.weight"):
        from_torchvision("resnet18", sd)
    with pytest.raises(EffnetError, match="no torchvision key table"):
        from_torchvision("vgg16", {})
