"""Specs are frozen, validated, serialisable; the level-0 modules never import torch."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from effnet import SpecError, get_spec, list_models
from effnet.spec import HeadSpec, NetworkSpec, StageSpec, StemSpec


@pytest.mark.parametrize(("field", "value", "fragment"), [
    ("stride", 3, "stage.stride"),
    ("repeats", 0, "stage.repeats"),
    ("repeats", -2, "stage.repeats"),
    ("block", "conv", "unknown block 'conv'"),
    ("kernel_size", 4, "stage.kernel_size"),
    ("se_ratio", 1.5, "stage.se_ratio"),
    ("activation", "gelu", "unknown activation 'gelu'"),
    ("expand_ratio", 0, "stage.expand_ratio"),
])
def test_invalid_stage_fields_raise_naming_the_field(field: str, value: object, fragment: str) -> None:
    kwargs = {"block": "mbconv", "repeats": 1, "out_channels": 16, "stride": 1, field: value}
    with pytest.raises(SpecError, match=fragment.replace("(", r"\(")):
        StageSpec(**kwargs)


def test_invalid_network_fields_raise() -> None:
    stage = StageSpec(block="mbconv", repeats=1, out_channels=16, stride=1)
    with pytest.raises(SpecError, match="resolution"):
        NetworkSpec(name="x", stem=StemSpec(32), stages=(stage,), resolution=0)
    with pytest.raises(SpecError, match="stages"):
        NetworkSpec(name="x", stem=StemSpec(32), stages=())
    with pytest.raises(SpecError, match="padding"):
        NetworkSpec(name="x", stem=StemSpec(32), stages=(stage,), padding="valid")  # type: ignore[arg-type]
    with pytest.raises(SpecError, match=r"head\.policy"):
        HeadSpec(policy="double")  # type: ignore[arg-type]


def test_specs_are_frozen(tiny_spec: NetworkSpec) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        tiny_spec.resolution = 64  # type: ignore[misc]


@pytest.mark.parametrize("name", list_models())
def test_to_dict_from_dict_round_trip_through_json(name: str) -> None:
    spec = get_spec(name, phi=0.5)
    again = NetworkSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec


def test_from_dict_rejects_unknown_keys(tiny_spec: NetworkSpec) -> None:
    d = tiny_spec.to_dict() | {"widht": 2}
    with pytest.raises(SpecError, match="widht"):
        NetworkSpec.from_dict(d)


def test_level0_modules_import_without_torch() -> None:
    code = ("import effnet, effnet.spec, effnet.scaling, effnet.macs, effnet.catalog, effnet.scaling_law, effnet.arch, "
            "effnet.cli.app, effnet.deploy.ort_plan, sys; effnet.get_spec('efficientnet_b7', phi=1); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_total_stride_and_num_blocks() -> None:
    b0 = get_spec("efficientnet_b0")
    assert b0.total_stride == 32 and b0.num_blocks == 16
    assert get_spec("resnet50").total_stride == 32


def test_block_kinds_and_activations_are_one_list() -> None:
    """spec.BLOCK_TYPES and spec.ACTIVATIONS are what a spec may name; the model builder, the MAC
    counter and the activation table must cover exactly those, so a new kind cannot be half-added."""
    from effnet import macs, model
    from effnet.layers import activation
    from effnet.spec import ACTIVATIONS, BLOCK_TYPES

    assert set(model._BLOCKS) == set(BLOCK_TYPES) == set(macs._BLOCK_COSTS)
    assert set(activation._ACTIVATIONS) == set(ACTIVATIONS)
