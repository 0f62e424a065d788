"""``effnet nas`` from the command line: bad input as one line with exit 2, the space's size, and
(slow) a real search on Fashion-MNIST whose outputs the rest of effnet accepts, resumed by a rerun."""

from __future__ import annotations

import dataclasses
import json

import pytest

from effnet.cli.app import main


@pytest.mark.parametrize(("args", "words"), [
    (["--kernels", ""], "kernels has no choice"),
    (["--blocks", ""], "blocks has no choice"),
    (["--widths", "1,x"], "comma-separated numbers"),
    (["--target", "0"], "T=0.0 must be > 0"),
    (["--target", "-5"], "must be > 0"),
    (["-w", "0.2"], "w=0.2 must be <= 0"),
    (["--objective", "flops"], "unknown objective 'flops'"),
    (["--trials", "0"], "--trials 0: a search needs at least 1 trial"),
])
def test_bad_input_is_one_line_exit_2(args: list[str], words: str, capsys, tmp_path) -> None:
    assert main(["nas", *args, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("effnet: error: ") and words in err and "\n" not in err


def test_base_table_with_no_stages_is_refused(capsys, tmp_path) -> None:
    from effnet import get_spec

    d = get_spec("efficientnet_b0").to_dict() | {"stages": []}
    (tmp_path / "empty.json").write_text(json.dumps(d))
    assert main(["nas", str(tmp_path / "empty.json"), "--trials", "2", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    # refused by the spec file's type check (effnet.limits) before the search space sees it
    assert "empty.json.stages: must be a non-empty list" in err and "\n" not in err


def test_describe_space_prints_its_size(capsys) -> None:
    assert main(["nas", "--describe-space"]) == 0
    out = capsys.readouterr().out
    assert "180 choices per stage, 7 stages" in out and "180^7 = 6.12e+15 networks" in out
    assert "itself is a point of this space" in out


def _trial_count(path) -> int:
    from effnet.search.storage import open_storage

    storage = open_storage(str(path))
    return sum(len(storage.get_all_trials(s._study_id)) for s in storage.get_all_studies())


def test_real_search_writes_everything_and_a_rerun_resumes(tmp_path, capsys) -> None:
    out = tmp_path / "nas"
    args = ["nas", "--trials", "3", "--workers", "2", "--train-images", "256", "--eval-images", "128",
            "--epochs", "1", "--batch-size", "64", "--out", str(out)]
    # In this process, which may have run autograd in earlier tests: the trainers start from a
    # forkserver, not forked from here (tests/test_worker_start.py).
    assert main(args) == 0
    res = json.loads((out / "results.json").read_text())
    for key in ("search", "random"):
        trials = res[key]["trials"]
        assert len(trials) == 3 and all(t["state"] == "COMPLETE" for t in trials)
        assert all(0 <= t["accuracy"] <= 100 and t["macs"] > 0 and t["params"] > 0 for t in trials)
    assert res["search"]["settings"]["strategy"] == "tpe" and res["random"]["settings"]["strategy"] == "random"
    assert "| stage | operator | resolution | channels | layers |" in (out / "nas.md").read_text()
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "nas.html").read_text()  # the same report as a page: stage tables and the plot
    assert page.count("<table>") >= 3 and '<img src="pareto.png"' in page and "<th>operator</th>" in page
    # the found baseline: a full-size spec (the genome over B0's table) that effnet's commands accept
    from effnet import create_model, estimate_cost
    from effnet.search.trials import resolve_baseline

    base = json.loads((out / "baseline.json").read_text())
    model = create_model(str(out / "baseline.json"), num_classes=10)
    assert sum(p.numel() for p in model.parameters()) == estimate_cost(model.spec, num_classes=10).params
    assert model.spec.resolution == 224 and base["genome"] == res["search"]["trials"][0]["genome"]
    assert resolve_baseline(str(out / "baseline.json")) == model.spec
    # at the settings it was searched with (the defaults: depth 0.5, width 0.5, stride 16, 20 px), the
    # file gives back the very proxy that was trained, not the full spec shrunk again
    proxy = resolve_baseline(str(out / "baseline.json"), depth=0.5, width=0.5, total_stride=16, resolution=20)
    assert proxy.to_dict() == base["proxy_spec"]
    assert main(["describe", str(out / "baseline.json"), "--phi", "1"]) == 0
    # rerun with the same --out: every slot is done, nothing is trained again
    before = _trial_count(out / "nas.log")
    assert main(args) == 0
    assert _trial_count(out / "nas.log") == before == 6
    assert json.loads((out / "results.json").read_text())["search"]["trials"] == res["search"]["trials"]


def test_demo_nas_step_searches_with_the_demos_budget_and_hands_on_its_baseline(tmp_path, monkeypatch) -> None:
    """`effnet demo --nas`: step 0 runs `effnet nas` on the demo's own baseline, data and budget, and the
    demo continues from the baseline.json it wrote (the search itself is stubbed here: the slow test
    above runs it for real)."""
    import effnet.cli.nas as nas_cli
    from effnet import get_spec
    from effnet.cli.search import _demo_nas
    from effnet.search.demo import demo_plan

    seen = {}

    def fake(args) -> int:
        seen.update(vars(args))
        (tmp_path / "baseline.json").write_text(json.dumps({"spec": get_spec("efficientnet_b0").to_dict()}))
        return 0

    monkeypatch.setattr(nas_cli, "cmd_nas", fake)
    plan = demo_plan(quick=True)
    assert _demo_nas(tmp_path, plan, 5) == str(tmp_path / "baseline.json")
    assert (seen["trials"], seen["train_images"], seen["epochs"], seen["image_size"]) == (
        5, plan.budget.train_images, plan.budget.epochs, plan.resolution)
    assert (seen["base_depth"], seen["base_width"], seen["baseline"]) == (plan.depth, plan.width, plan.baseline)


def test_a_nas_baseline_gives_back_its_searched_proxy_only_at_its_own_settings(tmp_path) -> None:
    from effnet import get_spec
    from effnet.errors import SpecError
    from effnet.search.trials import proxy_settings, resolve_baseline

    full = get_spec("efficientnet_b0")
    searched = resolve_baseline("efficientnet_b0", depth=0.5, width=0.5, total_stride=16, resolution=20)
    # a proxy that shrinking the full spec would not give: one stage 8 channels wider
    stages = [dataclasses.replace(s, out_channels=s.out_channels + 8) if i == 2 else s
              for i, s in enumerate(searched.stages)]
    proxy = searched.replace(stages=tuple(stages))
    f = tmp_path / "baseline.json"
    f.write_text(json.dumps({"spec": full.to_dict(), "proxy_spec": proxy.to_dict(),
                             "proxy": proxy_settings(0.5, 0.5, 16, 20)}))
    assert resolve_baseline(str(f), depth=0.5, width=0.5, total_stride=16, resolution=20) == proxy
    assert resolve_baseline(str(f), depth=0.5, width=0.5, total_stride=16, resolution=20,
                            depth_rounding="round").depth_rounding == "round"
    other = resolve_baseline(str(f), depth=0.5, width=0.75, total_stride=16, resolution=20)
    assert other != proxy and other.stem.out_channels == 24 != proxy.stem.out_channels  # 32 × 0.75, shrunk again
    assert resolve_baseline(str(f)) == full
    bad = proxy.to_dict()
    bad["stages"][2]["out_channels"] = 10**7  # outside data: the proxy is checked like any spec file
    f.write_text(json.dumps({"spec": full.to_dict(), "proxy_spec": bad, "proxy": proxy_settings(0.5, 0.5, 16, 20)}))
    with pytest.raises(SpecError, match="proxy spec"):
        resolve_baseline(str(f), depth=0.5, width=0.5, total_stride=16, resolution=20)


def test_spec_files_stand_in_for_model_names(tmp_path) -> None:
    """get_spec (and so create_model, `effnet scale`, `effnet train --spec`) reads a spec file; bad ones
    are one-line errors naming the file."""
    from effnet import get_spec
    from effnet.errors import SpecError

    b0 = get_spec("efficientnet_b0")
    (tmp_path / "b.json").write_text(json.dumps({"spec": b0.to_dict(), "genome": []}))
    assert get_spec(str(tmp_path / "b.json")) == b0
    assert get_spec(str(tmp_path / "b.json"), phi=1).stages == get_spec("efficientnet_b0", phi=1).stages
    with pytest.raises(SpecError, match="neither a registered model"):
        get_spec(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SpecError, match="is not JSON"):
        get_spec(str(tmp_path / "bad.json"))
