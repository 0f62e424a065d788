"""The architecture search's space and objectives (no training): genomes, B0 as a point of its own
space, analytic cost == measured cost over sampled genomes, MnasNet's reward by hand."""

from __future__ import annotations

import json
import random

import pytest
import torch

from effnet import estimate_cost, get_spec
from effnet.errors import EffnetError
from effnet.flops import count_macs, count_params, measure_spec
from effnet.model import ConvNet
from effnet.search.nas_objective import Objective, parse_objective, reward
from effnet.search.nas_space import (
    GENE_KEYS,
    SearchSpace,
    decode,
    encode,
    genome_from_params,
    params_of_genome,
)

B0 = get_spec("efficientnet_b0")


def _random_genome(space: SearchSpace, n: int, rng: random.Random) -> list[dict]:
    opts = space.options()
    return [{k: rng.choice(opts[k]) for k in GENE_KEYS} for _ in range(n)]


def test_b0_is_a_point_of_its_own_space() -> None:
    genome = encode(B0, SearchSpace())
    assert genome[1] == {"block": "mbconv6", "kernel": 3, "se": 0.25, "repeats": 0, "width": 1.0}
    assert genome[0]["block"] == "mbconv1" and genome[2]["kernel"] == 5
    spec = decode(json.loads(json.dumps(genome)), B0)  # a genome is plain JSON
    assert spec == B0
    assert estimate_cost(spec).params == 5_288_548


def test_decode_changes_each_stage_as_its_gene_says() -> None:
    genome = encode(B0)
    genome[3] = {"block": "fused4", "kernel": 5, "se": 0.0, "repeats": -1, "width": 1.25}
    genome[0] = {"block": "mbconv3", "kernel": 3, "se": 0.25, "repeats": -1, "width": 0.75}
    spec = decode(genome, B0)
    s = spec.stages[3]
    assert (s.block, s.expand_ratio, s.kernel_size, s.se_ratio, s.repeats, s.out_channels) == (
        "fused_mbconv", 4.0, 5, 0.0, 2, 104)  # round_filters(80 · 1.25) = 104 (official rounding to 8)
    assert s.stride == B0.stages[3].stride and s.activation == "swish"
    assert spec.stages[0].repeats == 1 and spec.stages[0].out_channels == 16  # 12 → 16: >10 % lost, round up
    assert spec.stages[1:3] == B0.stages[1:3] and spec.name.startswith("efficientnet_b0-nas-")
    assert decode(genome, B0) == spec  # pure


def test_params_round_trip_and_space_size() -> None:
    space = SearchSpace()
    g = _random_genome(space, 7, random.Random(0))
    assert genome_from_params(params_of_genome(g), 7) == g
    assert space.stage_size() == 5 * 2 * 2 * 3 * 3
    assert space.size(7) == 180**7


def test_macs_equal_measured_for_sampled_genomes() -> None:
    """Property over 50 genomes of a small base: analytic (params, MACs) == torch's count on meta."""
    base = get_spec("efficientnet_b0").replace(resolution=64)
    space = SearchSpace(kernels=(3, 5, 7))
    rng = random.Random(12)
    for _ in range(50):
        spec = decode(_random_genome(space, len(base.stages), rng), base)
        cost = estimate_cost(spec, num_classes=10, in_chans=1)
        with torch.device("meta"):
            model = ConvNet(spec, num_classes=10, in_chans=1)
        assert (count_params(model), count_macs(model, 64, in_chans=1)) == (cost.params, cost.macs), spec
    assert measure_spec(base)[0] == estimate_cost(base).params


@pytest.mark.parametrize(("field", "value", "words"), [
    ("blocks", (), "blocks has no choice"), ("kernels", (), "kernels has no choice"),
    ("se_ratios", (), "se_ratios has no choice"), ("width_mults", (), "width_mults has no choice"),
    ("repeat_deltas", (), "repeat_deltas has no choice"), ("blocks", ("mbconv9",), "unknown block 'mbconv9'"),
    ("kernels", (4,), "odd"), ("width_mults", (0.0,), "> 0")])
def test_bad_space_is_one_line_error(field: str, value: tuple, words: str) -> None:
    with pytest.raises(EffnetError, match=words):
        SearchSpace(**{field: value})


def test_encode_names_what_the_space_lacks() -> None:
    with pytest.raises(EffnetError, match=r"stage 3 has kernel=5, not among \[3\]"):
        encode(B0, SearchSpace(kernels=(3,)))
    with pytest.raises(EffnetError, match="not one of the searchable blocks"):
        encode(get_spec("resnet50"))
    with pytest.raises(EffnetError, match="genome has 2 genes"):
        decode(encode(B0)[:2], B0)


def test_soft_reward_by_hand() -> None:
    # 80 % at twice the target: 80 · 2^-0.07 = 76.20 (MnasNet: ~5 % accuracy per 2x cost).
    assert reward(80.0, 800e6, 400e6, -0.07) == pytest.approx(80 * 0.952638, rel=1e-6)
    assert reward(80.0, 200e6, 400e6, -0.07) == pytest.approx(80 * 1.049717, rel=1e-6)
    assert reward(80.0, 400e6, 400e6, -0.07) == 80.0
    obj = parse_objective("macs", 400e6, -0.07)
    assert obj.values(80.0, 800e6) == [pytest.approx(76.21104)]
    lat = parse_objective("latency", 10.0, -0.15)
    assert lat.cost == "latency" and lat.values(90.0, 5.0) == [pytest.approx(90 * 2**0.15)]


def test_hard_constraint_by_hand() -> None:
    hard = parse_objective("macs-hard", 100.0, -0.07)
    assert hard.values(70.0, 60.0) == [70.0]  # w = 0 below T: cost is free
    assert hard.values(70.0, 100.0) == [70.0]
    assert hard.values(70.0, 140.0) == [pytest.approx(50.0)]  # w = -1 above: 70 / 1.4


def test_pareto_keeps_two_objectives() -> None:
    p = parse_objective("pareto", 1e6, -0.07)
    assert p.directions == ("maximize", "minimize") and p.values(88.0, 3e6) == [88.0, 3e6]
    assert parse_objective("pareto-latency", 2.0, -0.07).cost == "latency"
    assert Objective.from_dict(p.to_dict()) == p


@pytest.mark.parametrize(("name", "t", "w", "words"), [
    ("flops", 1.0, -0.07, "unknown objective 'flops'"), ("macs", 0.0, -0.07, "must be > 0"),
    ("macs", -5.0, -0.07, "must be > 0"), ("latency", 1.0, 0.5, "must be <= 0")])
def test_bad_objective_is_one_line_error(name: str, t: float, w: float, words: str) -> None:
    with pytest.raises(EffnetError, match=words):
        parse_objective(name, t, w)
