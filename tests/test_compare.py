"""Single-dimension vs compound scaling at matched MACs, and the demo's wiring end to end on a tiny budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from effnet.errors import EffnetError
from effnet.macs import estimate_cost
from effnet.scaling import Coefficients, Multipliers, scale_spec
from effnet.search.compare import choose_phi, match_single, plan_arms, summarize, winner
from effnet.search.trials import resolve_baseline

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def demo_base():
    return resolve_baseline("efficientnet_b0", depth=0.5, width=0.5, total_stride=16, resolution=20)


def _macs(spec) -> int:
    return estimate_cost(spec, num_classes=10, in_chans=1).macs


@pytest.mark.parametrize("coeffs", [(1.2, 1.1, 1.15), (1.2, 1.0, 1.3), (1.4, 1.1, 1.1)])
def test_single_dimension_arms_match_compound_macs_within_10_percent(demo_base, coeffs) -> None:
    c = Coefficients(*coeffs)
    phi = choose_phi(demo_base, c, 1.0)
    assert 0.5 <= phi <= 1.5
    arms = {a.method: a for a in plan_arms(demo_base, c, phi)}
    target = arms["compound"].macs
    for dim in ("depth", "width", "resolution"):
        arm = arms[dim]
        assert abs(arm.macs / target - 1) <= 0.10, (dim, arm.macs, target)
        assert arm.match_error == pytest.approx(abs(arm.macs / target - 1))
        others = {"depth", "width", "resolution"} - {dim}
        assert all(getattr(arm.multipliers, o) == 1.0 for o in others)  # one dimension only
    assert arms["baseline"].macs == _macs(demo_base) and arms["baseline"].macs_ratio == 1.0
    assert arms["depth"].spec.resolution == demo_base.resolution and arms["depth"].spec.num_blocks > 10
    assert arms["resolution"].spec.num_blocks == demo_base.num_blocks and arms["resolution"].spec.resolution > 20


def test_reference_compound_arm_uses_other_coefficients_at_the_same_macs(demo_base) -> None:
    from effnet.scaling import PAPER_COEFFICIENTS, compound_multipliers

    arms = {a.method: a for a in plan_arms(demo_base, Coefficients(1.0, 1.4, 1.0), 1.0, PAPER_COEFFICIENTS)}
    ref = arms["compound-ref"]
    assert ref.multipliers == compound_multipliers(ref.phi, PAPER_COEFFICIENTS) and ref.phi > 0
    assert abs(ref.macs / arms["compound"].macs - 1) <= 0.10
    assert ref.spec.resolution > demo_base.resolution and ref.spec.num_blocks > demo_base.num_blocks


def test_match_single_picks_the_closest_reachable_cost(demo_base) -> None:
    target = _macs(scale_spec(demo_base, Multipliers(resolution=1.5)))
    m = match_single(demo_base, target, "resolution")
    assert round(demo_base.resolution * m.resolution) == 30  # the exact pixel count is found back
    with pytest.raises(EffnetError, match="dimension 'phi'"):
        match_single(demo_base, target, "phi")


def test_summary_statistics_and_the_winner_are_computed_not_assumed(demo_base) -> None:
    arms = plan_arms(demo_base, Coefficients(1.2, 1.1, 1.15), 1.2)
    acc = {"baseline": [70, 72, 74], "depth": [80, 80, 80], "width": [81, 83, 85], "resolution": [79, 80, 81],
           "compound": [82, 82.5, 83]}
    rows = summarize(arms, acc)
    by = {r["method"]: r for r in rows}
    assert by["baseline"]["mean"] == 72 and by["baseline"]["std"] == pytest.approx(2.0)
    assert by["width"]["std"] == pytest.approx(2.0) and by["depth"]["std"] == 0
    w = winner(rows)
    assert w["method"] == "width" and w["runner_up"] == "compound" and w["lead"] == pytest.approx(0.5)
    assert w["separated"] is False  # a 0.5 lead inside a 2.0 std does not separate them


@pytest.fixture
def one_thread():
    """Tiny CPU models train several times faster on one thread than on two (less synchronisation)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_demo_pipeline_writes_a_report_with_real_pngs(tmp_path: Path, one_thread) -> None:
    pytest.importorskip("optuna")
    if not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    from effnet.cli.app import main
    from effnet.search.demo import DemoPlan, run_demo
    from effnet.search.grid import GridSettings
    from effnet.train.budget import Budget

    plan = DemoPlan(depth=0.25, width=0.25, resolution=16, grid=GridSettings(step=0.2, target=2.0, tol=0.1),
                    budget=Budget(epochs=1, train_images=64, eval_images=32, batch_size=32), phis=(0.0, 1.0),
                    seeds=2, workers=1, cam_images=2)
    report = run_demo(tmp_path / "demo", plan)
    out = tmp_path / "demo"
    for png in ("search/search.png", "compare/compare.png", "compare/cams.png"):
        assert (out / png).read_bytes()[:8] == PNG, png
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert "STEP 1" in md and "matched MACs" in md and "<table>" in page and 'src="compare/cams.png"' in page
    first = md.split("## STEP 1")[0]  # before any table: the budget and what the sweep found (docs/sweep.md)
    assert "64 training images × 1 epochs" in first and "not about training to convergence" in first
    assert "docs/sweep.md" in first
    search = report["search"]
    assert search["counts"]["COMPLETE"] == len(search["records"]) >= 4
    assert all(r["metrics"]["macs_ratio"] > 1 for r in search["records"])  # every φ = 1 network costs more
    rows = report["compare"]["rows"]
    assert [r["method"] for r in rows] == ["baseline", "depth", "width", "resolution", "compound", "compound-ref"]
    assert all(r["seeds"] == 2 and len(r["accuracies"]) == 2 for r in rows)
    assert json.loads((out / "report.json").read_text())["compare"]["winner"]["method"] in {
        "depth", "width", "resolution", "compound"}
    # STEP 2 from the CLI with the search's coefficients: its phi = 1 network is the one just trained (cached)
    assert main(["scale", "-", "--coefficients", str(out / "search" / "results.json"), "--phi", "0:1", "--train",
                 "--out", str(tmp_path / "family")]) == 0
    fam = json.loads((tmp_path / "family" / "family.json").read_text())
    best = search["best"]
    assert [f["phi"] for f in fam] == [0, 1] and fam[0]["coefficients"] == [best["alpha"], best["beta"], best["gamma"]]
    assert fam[1]["macs"] > fam[0]["macs"]


def test_cli_errors_are_one_line_exit_2(tmp_path: Path, capsys) -> None:
    from effnet.cli.app import main

    assert main(["search", "efficientnet_b0", "--step", "0.3", "--tol", "0.01", "--out", str(tmp_path)]) == 2
    assert "no (alpha, beta, gamma) on a 0.3-step grid" in capsys.readouterr().err
    assert main(["search", "--storage", "postgresql://u@127.0.0.1:1/db", "--study", "x", "--out", str(tmp_path)]) == 2
    assert "cannot open search storage" in capsys.readouterr().err
    assert main(["scale", "efficientnet_b0", "--coefficients", str(tmp_path / "none.json"), "--train"]) == 2
    assert "not found" in capsys.readouterr().err
