"""The training-budget sweep (effnet compare --budgets): budgets, the arms of a MACs level, the verdict
per budget, bad input as one-line errors, and a killed sweep that resumes without retraining."""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from effnet.errors import EffnetError
from effnet.scaling import Coefficients
from effnet.search.sweep import SweepSettings, budget_label, parse_budgets, parse_levels, plan_level, study_plans
from effnet.search.sweep_report import gap, ordering, summarize_sweep, sweep_markdown
from effnet.search.trials import resolve_baseline
from effnet.train.budget import Budget

PNG = b"\x89PNG\r\n\x1a\n"
DEMO = Budget(epochs=2, train_images=4000, eval_images=2000, batch_size=128, lr=1.5e-2)


@pytest.fixture(scope="module")
def demo_base():
    return resolve_baseline("efficientnet_b0", depth=0.5, width=0.5, total_stride=16, resolution=20)


def test_image_epoch_budgets_fill_the_training_set_then_add_epochs() -> None:
    bs = parse_budgets("200k, 8k,40k", DEMO, max_images=60000, test_images=10000)
    assert [(b.train_images, b.epochs) for b in bs] == [(4000, 2), (20000, 2), (60000, 3.3333)]
    assert all(b.eval_split == "test" and b.eval_images == 10000 and b.lr == DEMO.lr for b in bs)
    assert [budget_label(b) for b in bs] == ["4000x2", "20000x2", "60000x3.3333"]
    pairs = parse_budgets("60000x4,4000x2,4000x2", DEMO, max_images=60000, test_images=10000)
    assert [(b.train_images, b.epochs) for b in pairs] == [(4000, 2), (60000, 4)]  # sorted, duplicates once


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty"), ("8k,,40k", "empty"), ("0", "not a positive budget"), ("-8k", "not a positive budget"),
    ("4000x0", "must be > 0"), ("abc", "not a positive budget"), ("100x2", "between the batch size"),
    ("70000x1", "between the batch size"),
])
def test_bad_budgets_are_errors_naming_the_item(text: str, message: str) -> None:
    with pytest.raises(EffnetError, match=message):
        parse_budgets(text, DEMO, max_images=60000, test_images=10000)


@pytest.mark.parametrize("argv", [["--budgets", ""], ["--budgets", "0"], ["--budgets", "8k,-1"],
                                  ["--budgets", "8k", "--depth-rounding", "floor"],
                                  ["--budgets", "8k", "--macs-levels", "1"], ["--budgets", "8k", "--seeds", "1"],
                                  ["--budgets", "8k", "--device", "xpu"], ["--budgets", "8k", "--device", "no such"],
                                  ["--device", "cuda"]])  # --device without --budgets: one comparison is CPU-only
def test_bad_sweep_input_is_one_line_exit_2(argv: list[str], tmp_path: Path, capsys) -> None:
    from effnet.cli.app import main

    if not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    assert main(["compare", *argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("effnet: error:"), err
    assert not (tmp_path / "o").exists()  # refused before anything is written


def test_cuda_on_a_machine_without_one_is_refused_before_any_study(tmp_path: Path, capsys) -> None:
    import torch

    from effnet.cli.app import main

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: --device cuda is valid here")
    assert main(["compare", "--budgets", "8k", "--device", "cuda", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == ("effnet: error: --device cuda: torch sees no CUDA device on this "
                                               "machine; use --device cpu")
    assert not (tmp_path / "o").exists()


def test_levels() -> None:
    assert parse_levels("2,4") == (2.0, 4.0)
    for bad in ("", "1", "0.5,2", "x"):
        with pytest.raises(EffnetError, match="--macs-levels"):
            parse_levels(bad)


def test_a_level_matches_every_arm_to_one_target_under_both_roundings(demo_base) -> None:
    s = SweepSettings(demo_base, "fashion-mnist", (DEMO,), coefficients=Coefficients(1.0, 1.4, 1.0))
    arms = {(a.method, a.rounding): a for a in plan_level(s, 2.0)}
    assert set(arms) == {("width", None), ("resolution", None), ("depth", "ceil"), ("depth", "round"),
                         ("compound", None), ("paper", "ceil"), ("paper", "round")}  # α = 1: no rounding twice
    assert all(a.match_error <= 0.08 for a in arms.values())
    macs = [a.macs for a in arms.values()]
    assert max(macs) / min(macs) < 1.2
    paper_ceil, paper_round = arms[("paper", "ceil")], arms[("paper", "round")]
    assert paper_ceil.spec.depth_rounding == "ceil" and paper_round.spec.depth_rounding == "round"
    # at the same MACs, ceil spends them on depth (each 1-block stage doubled), round on width and resolution
    assert paper_ceil.spec.num_blocks > paper_round.spec.num_blocks
    assert paper_round.spec.resolution > paper_ceil.spec.resolution
    assert arms[("depth", "ceil")].spec.resolution == 20 and arms[("depth", "ceil")].spec.num_blocks > 10


def test_studies_share_identical_networks_and_are_seed_major(demo_base) -> None:
    s = SweepSettings(demo_base, "fashion-mnist", (DEMO, Budget(epochs=2, train_images=20000, batch_size=128)),
                      seeds=2, levels=(2.0, 4.0), coefficients=Coefficients(1.0, 1.4, 1.0))
    plans = study_plans(s)
    assert [p.name for p in plans] == ["sweep-4000x2-x2", "sweep-20000x2-x2", "sweep-20000x2-x4"]
    first = plans[0]
    assert first.arms[0].method == "baseline" and all(a.method != "baseline" for a in plans[2].arms)
    width = next(i for i, a in enumerate(first.arms) if a.method == "width")
    compound = next(i for i, a in enumerate(first.arms) if a.method == "compound")
    assert first.job_of[width] == first.job_of[compound]  # (1, 1.4, 1) at matched MACs is the width network
    assert len(first.jobs) < len(first.arms) * 2
    assert [seed for _spec, seed in first.jobs] == sorted(seed for _spec, seed in first.jobs)


def _row(method: str, rounding: str, seed: int, acc: float, budget: str = "4000x2") -> dict:
    return {"budget": budget, "image_epochs": 8000, "images": 4000, "epochs": 2, "level": 1.0 if method == "baseline"
            else 2.0, "method": method, "rounding": rounding, "seed": seed, "accuracy": acc, "macs": 1, "blocks": 10,
            "resolution": 20, "seconds": 1.0}


def test_the_verdict_is_computed_from_the_seeds() -> None:
    acc = {("baseline", "-"): [70, 71, 72], ("width", "-"): [74, 75, 76], ("resolution", "-"): [77, 78, 79],
           ("depth", "ceil"): [60, 61, 62], ("paper", "ceil"): [65, 66, 67],
           ("depth", "round"): [60, 61, 62], ("paper", "round"): [79, 80, 81]}
    rows = [_row(m, r, s, a) for (m, r), accs in acc.items() for s, a in enumerate(accs)]
    summary = summarize_sweep(rows)
    ceil, rnd = ordering(summary, "ceil", 3), ordering(summary, "round", 3)
    assert ceil["leader"] == "resolution" and ceil["wins"] == 3 and ceil["stable"] and not ceil["paper_order"]
    assert rnd["leader"] == "paper" and rnd["runner_up"] == "resolution" and rnd["paper_order"] and rnd["stable"]
    g = gap(summary, "ceil")
    assert g["best_single"] == "resolution" and g["gap"] == pytest.approx(-12.0)
    assert g["se"] == pytest.approx((2 * (1 / 3)) ** 0.5)  # two arms with std 1 over 3 seeds
    md = sweep_markdown(summary, levels=(2.0,), roundings=("ceil", "round"), seeds=3)
    assert "the paper's ordering does not hold at this budget" in md and "the paper's ordering holds" in md
    assert "| 4000x2 |" in md and "78.00 ± 1.00" in md
    partial = ordering(summarize_sweep(rows[:-1]), "round", 3)  # a seed missing: a provisional reading
    assert partial["seeds"] == 2 and not partial["complete"] and not partial["stable"]
    assert partial["leader"] == "paper" and partial["lead"] == pytest.approx(79.5 - 77.5)
    partial_gap = gap(summarize_sweep(rows[:-1]), "round")  # read from the same 2 seeds as the verdict
    assert partial_gap["seeds"] == 2 and partial_gap["gap"] == pytest.approx(79.5 - 77.5)
    assert partial_gap["se"] == pytest.approx((2 * 0.5 ** 2) ** 0.5)  # std 0.707 over 2 seeds: se 0.5 each
    no_paper = [r for r in rows if r["method"] != "paper"]
    assert ordering(summarize_sweep(no_paper), "ceil", 3) is None  # an arm not trained at all: no reading


def test_the_second_macs_level_gets_its_own_verdict() -> None:
    """Fig. 8's second scaling step, trained at the largest budget only, is read like the first."""
    acc = {("width", "-"): 80, ("resolution", "-"): 84, ("depth", "ceil"): 78, ("paper", "ceil"): 86}
    rows = [_row(m, r, s, a + s) | {"level": 4.0} for (m, r), a in acc.items() for s in range(3)]
    rows += [_row("baseline", "-", s, 70 + s) for s in range(3)]
    md = sweep_markdown(summarize_sweep(rows), levels=(2.0, 4.0), roundings=("ceil",), seeds=3)
    fourfold = md.split("Ordering at MACs ≈ 4× the baseline:")[1]
    assert "paper leads by 2.00 over resolution, winning 3 of 3 seeds (stable)" in fourfold
    assert "Ordering at MACs ≈ 4×" not in sweep_markdown(summarize_sweep(rows[-3:]), levels=(2.0, 4.0),
                                                          roundings=("ceil",), seeds=3)  # not trained: no line


def test_the_plots_are_pngs(tmp_path: Path) -> None:
    from effnet.search.sweep_report import plot_budget_sweep, plot_fig8, plot_gap

    rows = [_row(m, r, s, 70 + s + i, budget=b) | {"image_epochs": n, "macs": 1e6 * (1 + i)}
            for b, n in (("4000x2", 8000), ("20000x2", 40000))
            for i, (m, r) in enumerate([("baseline", "-"), ("width", "-"), ("resolution", "-"), ("depth", "ceil"),
                                        ("paper", "ceil"), ("depth", "round"), ("paper", "round")])
            for s in range(3)]
    summary = summarize_sweep(rows)
    for path in (plot_budget_sweep(summary, 2.0, tmp_path / "a.png"), plot_fig8(summary, "20000x2", tmp_path / "b.png"),
                 plot_gap(summary, 2.0, ("ceil", "round"), tmp_path / "c.png")):
        assert path.read_bytes()[:8] == PNG


def test_arms_that_are_one_network_are_drawn_once_with_both_names() -> None:
    """The search's compound (1, 1.4, 1) is the width-only network at matched MACs: drawn twice, the
    second line would hide the first; one line named "width = compound" shows both arms."""
    from effnet.search.sweep_report import _curves, pyplot

    rows = [_row(m, "-", s, a + s, budget="4000x2") | {"image_epochs": 8000, "macs": 2e6}
            for m, a in (("width", 70), ("compound", 70), ("resolution", 75)) for s in range(3)]
    series = {(s["method"], s["rounding"]): [s] for s in summarize_sweep(rows)}
    fig, ax = pyplot().subplots()
    _curves(ax, series, "image_epochs")
    assert sorted(ax.get_legend_handles_labels()[1]) == ["resolution", "width = compound"]
    pyplot().close(fig)


WORKER_ARGS = ["--budgets", "96x1", "--batch-size", "32", "--base-depth", "0.25", "--base-width", "0.25",
               "--image-size", "16", "--seeds", "2", "--eval-images", "64", "--macs-levels", "2",
               "--heartbeat", "0.5", "--stale-after", "3", "--workers", "1", "--depth-rounding", "ceil"]


def _completed(out: Path) -> dict[str, dict[int, dict]]:
    from effnet.search.storage import open_storage
    from effnet.search.study import completed_metrics

    store = open_storage(str(out / "sweep.log"))
    return {n: completed_metrics(store, n) for n in {s.study_name for s in store.get_all_studies()}}


def test_killed_sweep_resumes_without_retraining_finished_networks(tmp_path: Path) -> None:
    pytest.importorskip("optuna")
    if not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "effnet", "compare", *WORKER_ARGS, "--out", str(out)]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 1800  # generous: a loaded 2-core machine runs these tiny trainings 10x slower
    while time.time() < deadline and first.poll() is None:  # kill it once 3 networks are done
        if (out / "sweep.log").exists() and sum(len(v) for v in _completed(out).values()) >= 3:
            break
        time.sleep(0.2)
    assert first.poll() is None, "the sweep finished before it could be killed; give it more work"
    first.send_signal(signal.SIGKILL)
    first.wait()
    before = _completed(out)
    assert sum(len(v) for v in before.values()) >= 3

    # --report-only writes what is finished and trains nothing, and its header says so
    subprocess.run([*cmd, "--report-only"], check=True, capture_output=True, text=True, timeout=600)
    assert _completed(out) == before
    partial = (out / "sweep.md").read_text()
    assert "Report only, nothing trained in this run" in partial and "worker(s)" not in partial
    assert json.loads((out / "sweep.json").read_text())["workers"] is None

    resumed = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=1800)
    after = _completed(out)
    for study, done in before.items():
        for job, m in done.items():  # the same trial, by the same worker: not trained again
            assert after[study][job]["trial"] == m["trial"] and after[study][job]["worker"] == m["worker"]
    report = json.loads((out / "sweep.json").read_text())
    plans = {p: len(v) for p, v in after.items()}
    networks = len({(r["study"], r["job"]) for r in report["rows"]})
    assert sum(plans.values()) == networks
    assert f"({len(report['rows'])} arm results from {networks} trained networks)" in resumed.stderr
    for png in ("budget_sweep.png", "gap.png", "fig8.png"):
        assert (out / png).read_bytes()[:8] == PNG, png
    with open(out / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["budget"] for r in rows} == {"96x1"} and {r["seed"] for r in rows} == {"0", "1"}
    assert {r["method"] for r in rows} == {"baseline", "depth", "width", "resolution", "paper"}
    assert {r["rounding"] for r in rows} == {"-", "ceil"}  # --depth-rounding ceil: one rule only
    assert {r["device"] for r in rows} == {"cpu"}  # each row says where it trained (a lab may mix CPUs and GPUs)
    md = (out / "sweep.md").read_text()
    assert "96 images × 1 epochs" in md and "Conclusions are about each budget" in md and "load average" in md
    assert "1 worker(s)" in md and "Report only" not in md
    assert re.search(r"Baseline: efficientnet_b0\S*, 16 px, \d+ blocks\.", md)  # --image-size 16


def test_the_demo_report_leads_with_its_budget_and_the_sweep() -> None:
    from effnet.search.demo import read_first

    first = read_first(DEMO.to_dict())[0]
    assert first.startswith("**Read this first.** Budget: 4,000 training images × 2 epochs = 8,000 image-epochs")
    assert "not about training to convergence" in first and "docs/sweep.md" in first
