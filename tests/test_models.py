"""Every registered model builds, runs forward and backward; exact parameter counts; model contract."""

from __future__ import annotations

import pytest
import torch

from effnet import create_model, list_models
from effnet.flops import count_params
from effnet.model import ConvNet, FeatureExtractor
from effnet.spec import NetworkSpec

# Exact counts with 1000 classes (torchvision meta / TF Lite checkpoint / Keras MobileNet).
EXACT_PARAMS = {
    "efficientnet_b0": 5_288_548, "efficientnet_b1": 7_794_184, "efficientnet_b2": 9_109_994,
    "efficientnet_b3": 12_233_232, "efficientnet_b4": 19_341_616, "efficientnet_b5": 30_389_784,
    "efficientnet_b6": 43_040_704, "efficientnet_b7": 66_347_960,
    "efficientnet_lite0": 4_652_008, "efficientnet_lite1": 5_416_680, "efficientnet_lite2": 6_092_072,
    "mobilenetv1": 4_231_976, "mobilenetv2": 3_504_872,
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
    # timm lists B8 at 87.41M and L2 at 480.31M; pinned to the unit from our build of the official rules.
    "efficientnet_b8": 87_413_142, "efficientnet_l2": 480_309_308,
}
BIG = {"efficientnet_b5", "efficientnet_b6", "efficientnet_b7", "efficientnet_b8", "efficientnet_l2"}


@pytest.mark.parametrize("name", sorted(EXACT_PARAMS))
def test_exact_parameter_counts(name: str) -> None:
    with torch.device("meta"):  # no memory, no init time: counting needs only shapes
        model = create_model(name)
    assert count_params(model) == EXACT_PARAMS[name]


@pytest.mark.parametrize("name", list_models())
def test_forward_backward_every_model(name: str) -> None:
    size = 32 if name in BIG else 64
    model = create_model(name, num_classes=7)
    assert isinstance(model, ConvNet)
    model.train()
    x = torch.randn(2, 3, size, size)
    out = model(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"parameters without a finite gradient: {missing[:5]}"
    feats = model.forward_features(x.detach())
    assert feats.shape[1] == model.num_features


def test_model_contract(tiny_spec: NetworkSpec) -> None:
    model = ConvNet(tiny_spec, num_classes=5).eval()
    x = torch.randn(3, 3, 32, 32)
    feats = model.forward_features(x)
    assert feats.shape == (3, 32, 4, 4)  # stem, stage 2 and stage 3 each halve 32 px
    torch.testing.assert_close(model.forward_head(feats), model(x))
    assert model.forward_head(feats, pre_logits=True).shape == (3, 32)
    model.reset_classifier(0)
    assert model(x).shape == (3, 32)
    model.reset_classifier(11)
    assert model(x).shape == (3, 11)


def test_in_chans_and_num_classes() -> None:
    model = create_model("efficientnet_b0", num_classes=3, in_chans=1).eval()
    assert model(torch.randn(1, 1, 64, 64)).shape == (1, 3)


def test_drop_path_ramps_linearly_over_rounded_blocks() -> None:
    model = create_model("efficientnet_b1", drop_path_rate=0.2)
    rates = [b.drop_path.p for stage in model.stages for b in stage if hasattr(b.drop_path, "p")]
    blocks = [b for stage in model.stages for b in stage]
    assert len(blocks) == 23
    expected = [0.2 * i / 23 for i, b in enumerate(blocks) if b.has_residual]
    assert rates == pytest.approx(expected)


def test_se_width_from_block_input() -> None:
    model = create_model("efficientnet_b0")
    block = model.stages[1][0]  # 16 → 24, expanded 96; SE from the 16 input channels: 4
    assert block.se.reduce.out_channels == 4 and block.se.reduce.in_channels == 96


def test_features_only_levels() -> None:
    fx = create_model("efficientnet_b0", features_only=True)
    assert isinstance(fx, FeatureExtractor)
    outs = fx(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == fx.channels == [16, 24, 40, 112, 320]
    assert [64 // o.shape[-1] for o in outs] == [2, 4, 8, 16, 32]
    r50 = create_model("resnet50", features_only=True, out_indices=(1, 3))
    outs = r50(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [512, 2048] and [o.shape[-1] for o in outs] == [8, 2]
    with pytest.raises(ValueError, match="out_indices"):
        create_model("resnet50", features_only=True, out_indices=(9,))


def test_same_padding_matches_tf_output_sizes() -> None:
    lite = create_model("efficientnet_lite0").eval()
    for size in (224, 225, 97):
        feats = lite.forward_features(torch.randn(1, 3, size, size))
        assert feats.shape[-1] == -(-size // 32)
