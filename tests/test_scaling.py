"""Compound scaling and the official rounding rules (paper eq. 3; TPU round_filters/round_repeats)."""

from __future__ import annotations

import itertools
import math

import pytest

from effnet import SpecError, compound_multipliers, get_spec, scale_spec
from effnet.arch.efficientnet import EFFICIENTNET_PRESETS
from effnet.catalog import smallest_phi
from effnet.scaling import (
    PAPER_COEFFICIENTS,
    Coefficients,
    Multipliers,
    implied_phi,
    round_channels,
    round_repeats,
    round_resolution,
)
from effnet.spec import NetworkSpec

# docs/paper.md and TPU efficientnet_builder.py: stem, stage channels, repeats, head of every official preset.
OFFICIAL = {
    "b0": (32, (16, 24, 40, 80, 112, 192, 320), (1, 2, 2, 3, 3, 4, 1), 1280),
    "b1": (32, (16, 24, 40, 80, 112, 192, 320), (2, 3, 3, 4, 4, 5, 2), 1280),
    "b2": (32, (16, 24, 48, 88, 120, 208, 352), (2, 3, 3, 4, 4, 5, 2), 1408),
    "b3": (40, (24, 32, 48, 96, 136, 232, 384), (2, 3, 3, 5, 5, 6, 2), 1536),
    "b4": (48, (24, 32, 56, 112, 160, 272, 448), (2, 4, 4, 6, 6, 8, 2), 1792),
    "b5": (48, (24, 40, 64, 128, 176, 304, 512), (3, 5, 5, 7, 7, 9, 3), 2048),
    "b6": (56, (32, 40, 72, 144, 200, 344, 576), (3, 6, 6, 8, 8, 11, 3), 2304),
    "b7": (64, (32, 48, 80, 160, 224, 384, 640), (4, 7, 7, 10, 10, 13, 4), 2560),
    "b8": (72, (32, 56, 88, 176, 248, 424, 704), (4, 8, 8, 11, 11, 15, 4), 2816),
    "l2": (136, (72, 104, 176, 344, 480, 824, 1376), (6, 11, 11, 16, 16, 22, 6), 5504),
}


@pytest.mark.parametrize("preset", list(OFFICIAL))
def test_preset_tables_equal_paper_md(preset: str) -> None:
    spec = get_spec(f"efficientnet_{preset}")
    stem, widths, repeats, head = OFFICIAL[preset]
    assert spec.stem.out_channels == stem
    assert tuple(s.out_channels for s in spec.stages) == widths
    assert tuple(s.repeats for s in spec.stages) == repeats
    assert spec.head.channels == head
    assert spec.resolution == EFFICIENTNET_PRESETS[preset].resolution
    assert spec.dropout == EFFICIENTNET_PRESETS[preset].dropout


def test_compound_multipliers_identity_monotone_and_flops_base() -> None:
    assert compound_multipliers(0) == Multipliers(1.0, 1.0, 1.0)
    ms = [compound_multipliers(p) for p in (-1, 0, 0.5, 1, 2, 7.5, 12)]
    for a, b in itertools.pairwise(ms):
        assert a.depth < b.depth and a.width < b.width and a.resolution < b.resolution
    assert PAPER_COEFFICIENTS.flops_base == pytest.approx(1.92027, abs=1e-5)
    assert compound_multipliers(1).macs_factor == pytest.approx(PAPER_COEFFICIENTS.flops_base)
    assert compound_multipliers(2.5).depth == pytest.approx(1.2**2.5)


@pytest.mark.parametrize("channels", [16, 24, 32, 40, 80, 112, 192, 320, 1280])
@pytest.mark.parametrize("w", [0.1, 0.25, 0.5, 0.75, 1.0, 1.1, 1.37, 2.0, 4.3])
def test_round_channels_rules(channels: int, w: float) -> None:
    c = round_channels(channels, w)
    assert c % 8 == 0 and c >= 8
    assert c >= 0.9 * channels * w  # the 10 % rule
    assert abs(c - channels * w) <= 8  # never more than one divisor away


def test_round_channels_known_values() -> None:
    assert round_channels(32, 1.1) == 32 and round_channels(40, 1.1) == 48 and round_channels(1280, 1.1) == 1408
    assert round_channels(9, 1.0) == 16  # 10 % rule: 8 would lose 11 %
    assert round_channels(4, 1.0) == 8  # never below the divisor


def test_round_repeats_ceil_inflates_b1() -> None:
    assert round_repeats(1, 1.1) == 2 and round_repeats(3, 1.1) == 4 and round_repeats(4, 1.0) == 4
    assert round_repeats(1, 0.4, "round") == 0
    b0, b1 = get_spec("efficientnet_b0"), get_spec("efficientnet_b1")
    assert b1.num_blocks / b0.num_blocks == pytest.approx(1.4375)  # docs/paper.md: ceil inflates depth
    assert round_resolution(224, 1.15**0.5) == 240


def test_scale_spec_identity_and_purity() -> None:
    for name in ("efficientnet_b0", "mobilenetv2", "resnet50", "efficientnet_lite0", "mobilenetv1"):
        spec = get_spec(name)
        before = spec.to_dict()
        assert scale_spec(spec, Multipliers(1, 1, 1)) == spec
        scale_spec(spec, Multipliers(2, 2, 2))
        assert spec.to_dict() == before


def test_lite_keeps_stem_head_and_end_stage_repeats() -> None:
    lite4 = get_spec("efficientnet_lite4")
    assert lite4.stem.out_channels == 32 and lite4.head.channels == 1280
    assert lite4.stages[0].repeats == 1 and lite4.stages[-1].repeats == 1
    assert [s.repeats for s in lite4.stages[1:-1]] == [4, 4, 6, 6, 8]


def test_mobilenetv2_head_never_shrinks() -> None:
    assert get_spec("mobilenetv2", multipliers=Multipliers(width=0.5)).head.channels == 1280
    assert get_spec("mobilenetv2", multipliers=Multipliers(width=1.4)).head.channels == 1792


@pytest.mark.parametrize(("phi", "preset"), [(0.5, "b1"), (1.0, "b2"), (2.0, "b3")])
def test_formula_lands_near_published_presets(phi: float, preset: str) -> None:
    """docs/paper.md: B1 ≈ φ 0.5, B2 ≈ φ 1, B3 ≈ φ 2 (d and w within ±0.05, r within 5 %)."""
    m, p = compound_multipliers(phi), EFFICIENTNET_PRESETS[preset]
    assert m.width == pytest.approx(p.width, abs=0.05)
    assert m.depth == pytest.approx(p.depth, abs=0.05)
    assert m.resolution * 224 == pytest.approx(p.resolution, rel=0.05)


def test_large_presets_diverge_from_the_formula() -> None:
    """Documented divergence: B4–B7 imply different φ per dimension (tensorflow/tpu#390)."""
    d, w, r = implied_phi(Multipliers(3.1, 2.0, 600 / 224))
    assert (round(d, 2), round(w, 2), round(r, 2)) == (6.21, 7.27, 7.05)
    assert max(d, w, r) - min(d, w, r) > 1.0


def test_any_real_phi_works() -> None:
    for phi in (-3.5, -1, 0.25, 7.0, 8.5, 10):
        spec = get_spec("efficientnet_b0", phi=phi)
        assert spec.resolution == round_resolution(224, 1.15**phi)
    assert get_spec("efficientnet_b0", phi=10).stages[-1].out_channels > 640


def test_smallest_valid_network_and_below() -> None:
    low = smallest_phi("efficientnet_b0")
    assert low == pytest.approx(math.log(32 / 224) / math.log(1.15), abs=0.01)
    spec = get_spec("efficientnet_b0", phi=low)
    assert spec.resolution == 32 and all(s.repeats == 1 for s in spec.stages)
    assert all(s.out_channels >= 8 for s in spec.stages)
    with pytest.raises(SpecError, match=r"phi=-20 .*smallest valid phi is -13\.9"):
        get_spec("efficientnet_b0", phi=-20)


def test_round_depth_rounding_can_empty_a_stage(tiny_spec: NetworkSpec) -> None:
    with pytest.raises(SpecError, match="stage 1 with no block"):
        scale_spec(tiny_spec, Multipliers(depth=0.3), depth_rounding="round")


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf")])
def test_bad_multipliers_and_coefficients(bad: float) -> None:
    with pytest.raises(SpecError, match="depth multiplier"):
        Multipliers(depth=bad)
    with pytest.raises(SpecError, match="alpha"):
        Coefficients(bad, 1.1, 1.15)


def test_coefficient_below_one_needs_explicit_flag() -> None:
    with pytest.raises(SpecError, match=r"beta=0\.9 is below 1.*--allow-below-one"):
        Coefficients(1.2, 0.9, 1.15)
    assert Coefficients(1.2, 0.9, 1.15, allow_below_one=True).beta == 0.9


def test_constraint_check() -> None:
    PAPER_COEFFICIENTS.check_target(2.0, 0.1)
    with pytest.raises(SpecError, match=r"10\.580"):
        Coefficients(2, 2, 1.15).check_target()
    with pytest.raises(SpecError, match="phi=nan"):
        compound_multipliers(float("nan"))
