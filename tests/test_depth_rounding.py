"""Depth rounding (ceil, the official code's, or round) end to end: scaling, the catalogue, the spec
and its checkpoint header, the CLI, and the study settings that a reused study name must match."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from effnet import SpecError, get_spec
from effnet.cli.app import main
from effnet.errors import EffnetError
from effnet.scaling import Multipliers, scale_spec
from effnet.spec import NetworkSpec

B0_REPEATS = (1, 2, 2, 3, 3, 4, 1)
# d = 1.2 on B0: ceil(1.2, 2.4, 2.4, 3.6, 3.6, 4.8, 1.2) and round(...) per stage
CEIL_12 = (2, 3, 3, 4, 4, 5, 2)
ROUND_12 = (1, 2, 2, 4, 4, 5, 1)
PRESET_REPEATS = {  # TPU efficientnet_builder.py, built with ceil (tests/test_scaling.py holds the whole table)
    "b1": (2, 3, 3, 4, 4, 5, 2), "b2": (2, 3, 3, 4, 4, 5, 2), "b3": (2, 3, 3, 5, 5, 6, 2),
    "b4": (2, 4, 4, 6, 6, 8, 2), "b5": (3, 5, 5, 7, 7, 9, 3), "b6": (3, 6, 6, 8, 8, 11, 3),
    "b7": (4, 7, 7, 10, 10, 13, 4),
}


def _repeats(spec: NetworkSpec) -> tuple[int, ...]:
    return tuple(s.repeats for s in spec.stages)


@pytest.mark.parametrize(("rounding", "repeats"), [("ceil", CEIL_12), ("round", ROUND_12)])
def test_b0_at_alpha_1_2_exact_repeats(rounding: str, repeats: tuple[int, ...]) -> None:
    spec = get_spec("efficientnet_b0", multipliers=Multipliers(depth=1.2), depth_rounding=rounding)  # type: ignore[arg-type]
    assert _repeats(spec) == repeats and spec.depth_rounding == rounding
    assert spec.num_blocks == {"ceil": 23, "round": 19}[rounding]  # 16 x 1.2 = 19.2


def test_demo_baseline_alpha_1_2_is_17_blocks_by_ceil_and_10_by_round() -> None:
    from effnet.search.trials import resolve_baseline

    base = resolve_baseline("efficientnet_b0", depth=0.5, width=0.5, total_stride=16, resolution=20)
    assert _repeats(base) == (1, 1, 1, 2, 2, 2, 1) and base.depth_rounding == "ceil"
    assert scale_spec(base, Multipliers(depth=1.2)).num_blocks == 17  # ceil turns each 1-block stage into 2
    rounded = scale_spec(base, Multipliers(depth=1.2), depth_rounding="round")
    assert rounded.num_blocks == 10 and rounded.depth_rounding == "round"
    # the rule travels with the spec: scaling a round-built spec again rounds by round
    assert scale_spec(rounded, Multipliers(depth=1.4)).num_blocks == _sum_round((1, 1, 1, 2, 2, 2, 1), 1.4)


def _sum_round(repeats: tuple[int, ...], d: float) -> int:
    return sum(int(r * d + 0.5) for r in repeats)


@pytest.mark.parametrize("preset", list(PRESET_REPEATS))
def test_presets_are_unchanged_by_default(preset: str) -> None:
    spec = get_spec(f"efficientnet_{preset}")
    assert _repeats(spec) == PRESET_REPEATS[preset] and spec.depth_rounding == "ceil"
    assert get_spec(f"efficientnet_{preset}", depth_rounding="ceil") == spec


def test_round_changes_the_presets_it_is_asked_for() -> None:
    assert _repeats(get_spec("efficientnet_b1", depth_rounding="round")) == B0_REPEATS  # d = 1.1 rounds back


def test_unknown_rounding_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="unknown depth rounding 'floor'; use ceil"):
        get_spec("efficientnet_b0").replace(depth_rounding="floor")
    with pytest.raises(SpecError, match="depth rounding 'floor' is unknown"):
        scale_spec(get_spec("efficientnet_b0"), Multipliers(depth=1.2), depth_rounding="floor")  # type: ignore[arg-type]


def test_the_rule_round_trips_through_a_dict_and_a_checkpoint(tmp_path: Path) -> None:
    from effnet.checkpoint import load_model, read_metadata, save_checkpoint
    from effnet.model import ConvNet
    from effnet.search.trials import resolve_baseline

    base = resolve_baseline("efficientnet_b0", depth=0.5, width=0.5, total_stride=16, resolution=20)
    spec = scale_spec(base, Multipliers(depth=1.6), depth_rounding="round")
    assert NetworkSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    path = save_checkpoint(tmp_path / "net.safetensors", ConvNet(spec, num_classes=10, in_chans=1))
    assert read_metadata(path)["spec"]["depth_rounding"] == "round"
    loaded = load_model(path)
    assert loaded.spec == spec and loaded.spec.depth_rounding == "round"
    # a header written before the field existed reads as ceil, the rule it was built with
    old = spec.to_dict()
    del old["depth_rounding"]
    assert NetworkSpec.from_dict(old).depth_rounding == "ceil"


def test_describe_and_scale_take_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["describe", "efficientnet_b0", "--depth", "1.2", "--depth-rounding", "round", "--json"]) == 0
    spec = json.loads(capsys.readouterr().out)["spec"]
    assert tuple(s["repeats"] for s in spec["stages"]) == ROUND_12 and spec["depth_rounding"] == "round"
    assert main(["describe", "efficientnet_b0", "--depth", "1.2"]) == 0
    assert "23 blocks (repeats by ceil)" in capsys.readouterr().out
    assert main(["scale", "efficientnet_b0", "--phi", "0,1", "--depth-rounding", "round", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert tuple(rows[1]["repeats"]) == ROUND_12 and tuple(rows[0]["repeats"]) == B0_REPEATS
    assert main(["scale", "efficientnet_b0", "--phi", "1", "--json"]) == 0
    assert tuple(json.loads(capsys.readouterr().out)[0]["repeats"]) == CEIL_12


@pytest.mark.parametrize("argv", [
    ["describe", "efficientnet_b0", "--depth-rounding", "floor"],
    ["scale", "efficientnet_b0", "--depth-rounding", "floor"],
    ["compare", "--depth-rounding", "floor"],
    ["search", "efficientnet_b0", "--depth-rounding", "floor"],
    ["demo", "--depth-rounding", "floor"],
])
def test_unknown_rounding_on_the_command_line_is_one_line_exit_2(argv: list[str],
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("effnet: error:") and "'floor'" in err and "ceil" in err and err.count("\n") == 1


def test_a_study_reused_with_another_rounding_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("optuna")
    from effnet.search.grid import GridSettings, grid_candidates
    from effnet.search.storage import open_storage
    from effnet.search.study import open_study
    from effnet.search.trials import Experiment, resolve_baseline
    from effnet.train.budget import Budget

    grid = GridSettings(step=0.1, target=2.0, tol=0.05)
    storage = open_storage(str(tmp_path / "s.log"))

    def context(rounding: str) -> dict:
        base = resolve_baseline("efficientnet_b0", depth=0.5, width=0.5, total_stride=16, resolution=20,
                                depth_rounding=rounding)  # type: ignore[arg-type]
        return Experiment(base, "fashion-mnist", Budget()).to_dict()

    open_study(storage, "s", grid, grid_candidates(grid), context("ceil"))
    open_study(storage, "s", grid, grid_candidates(grid), context("ceil"))  # same settings: joins
    with pytest.raises(EffnetError, match=r"already exists with a different grid.*baseline"):
        open_study(storage, "s", grid, grid_candidates(grid), context("round"))
