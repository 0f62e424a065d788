"""MACs: analytic vs measured, vs torchvision's models, vs the paper's FLOPs column."""

from __future__ import annotations

import pytest
import torch

from effnet import estimate_cost, get_spec, list_models
from effnet.flops import count_macs, measure_spec
from effnet.paper import PAPER_TABLE2

torchvision = pytest.importorskip("torchvision")


@pytest.mark.parametrize("name", list_models())
def test_analytic_equals_measured(name: str) -> None:
    spec = get_spec(name)
    params, macs = measure_spec(spec)
    cost = estimate_cost(spec)
    assert params == cost.params
    assert macs == pytest.approx(cost.macs, rel=0.01)
    assert macs == cost.macs  # in fact exact: both count conv and linear multiply-adds only


@pytest.mark.parametrize("phi", [-2.0, 0.5, 1.7])
def test_analytic_equals_measured_when_scaled(phi: float) -> None:
    for name in ("efficientnet_b0", "resnet50", "mobilenetv2", "mobilenetv1"):
        spec = get_spec(name, phi=phi)
        assert measure_spec(spec) == (estimate_cost(spec).params, estimate_cost(spec).macs)


TV = {f"efficientnet_b{i}": f"efficientnet_b{i}" for i in range(8)} | {
    "mobilenetv2": "mobilenet_v2", "resnet50": "resnet50"}


@pytest.mark.parametrize("name", sorted(TV))
def test_macs_match_torchvision_within_one_percent(name: str) -> None:
    with torch.device("meta"):
        tv = getattr(torchvision.models, TV[name])()
    spec = get_spec(name)
    assert estimate_cost(spec).macs == pytest.approx(count_macs(tv, spec.resolution), rel=0.01)


def test_headline_figures() -> None:
    assert estimate_cost(get_spec("efficientnet_b0")).macs / 1e9 == pytest.approx(0.386, abs=0.001)
    assert estimate_cost(get_spec("efficientnet_b7")).macs / 1e9 == pytest.approx(37.75, abs=0.01)
    assert estimate_cost(get_spec("mobilenetv2")).macs / 1e9 == pytest.approx(0.301, abs=0.001)
    assert estimate_cost(get_spec("resnet50")).macs / 1e9 == pytest.approx(4.09, abs=0.01)


@pytest.mark.parametrize("i", range(8))
def test_macs_within_five_percent_of_paper_table2(i: int) -> None:
    name = f"efficientnet_b{i}"
    assert estimate_cost(get_spec(name)).macs == pytest.approx(PAPER_TABLE2[name].flops, rel=0.05)


@pytest.mark.parametrize("phi", [1, 2, 3])
def test_compound_growth_tracks_1_92_power_phi_within_rounding(phi: int) -> None:
    """Eq. 3: MACs grow ≈ 1.92^φ; the official ceil/8-rounding adds up to +35 % (paper footnote 3)."""
    base = estimate_cost(get_spec("efficientnet_b0")).macs
    ratio = estimate_cost(get_spec("efficientnet_b0", phi=phi)).macs / base
    assert 1.92**phi <= ratio <= 1.35 * 1.92**phi


def _fused_spec(expand: float, se: float) -> object:
    from effnet.spec import NetworkSpec, StageSpec, StemSpec

    stages = (StageSpec("fused_mbconv", 2, 24, 1, kernel_size=3, expand_ratio=expand, se_ratio=se),
              StageSpec("fused_mbconv", 2, 40, 2, kernel_size=5, expand_ratio=expand, se_ratio=se),
              StageSpec("mbconv", 1, 40, 1, kernel_size=3, expand_ratio=6, se_ratio=0.25))
    return NetworkSpec("fused", StemSpec(24), stages, resolution=64)


@pytest.mark.parametrize(("expand", "se"), [(1.0, 0.0), (1.0, 0.25), (4.0, 0.0), (4.0, 0.25)])
def test_fused_mbconv_analytic_equals_measured(expand: float, se: float) -> None:
    spec = _fused_spec(expand, se)
    assert measure_spec(spec, num_classes=10) == (estimate_cost(spec, num_classes=10).params,
                                                  estimate_cost(spec, num_classes=10).macs)


def test_fused_mbconv_layout_follows_effnetv2() -> None:
    """google/automl effnetv2_model.py FusedMBConvBlock: e = 1 is one k×k conv with an activation
    (no projection); e > 1 is a strided k×k expansion and a linear 1×1 projection; residual on
    stride-1 same-width blocks."""
    from effnet.blocks import FusedMBConv
    from effnet.model import ConvNet

    e1 = ConvNet(_fused_spec(1.0, 0.0), num_classes=10)  # type: ignore[arg-type]
    first, second = e1.stages[0][0], e1.stages[1][0]
    assert isinstance(first, FusedMBConv) and isinstance(first.expand, torch.nn.Identity)
    assert first.project.conv.kernel_size == (3, 3) and not isinstance(first.project.act, torch.nn.Identity)
    assert second.project.conv.stride == (2, 2) and second.project.conv.kernel_size == (5, 5)
    assert first.has_residual and e1.stages[1][1].has_residual and not second.has_residual  # stem 24 → 24
    e4 = ConvNet(_fused_spec(4.0, 0.25), num_classes=10)  # type: ignore[arg-type]
    block = e4.stages[1][0]
    assert block.expand.conv.kernel_size == (5, 5) and block.expand.conv.stride == (2, 2)
    assert block.expand.conv.out_channels == 96 and block.project.conv.kernel_size == (1, 1)
    assert isinstance(block.project.act, torch.nn.Identity)
    assert e4(torch.randn(2, 3, 64, 64)).shape == (2, 10)
