"""`effnet bench` / `effnet export` / `fit --max-latency` smoke tests on tiny models: structure and
errors only. Speed is measured by benchmarks/, never asserted here."""

from __future__ import annotations

import json

import pytest
import torch

from effnet import cli
from effnet.deploy.bench import rows_from_times

# 56 px, a few channels: milliseconds per forward. One thread: tiny ops gain nothing from two, and on a
# busy 2-core machine every multi-threaded op can wait a scheduler tick for its second thread.
TINY = ["efficientnet_b0", "--phi", "-8", "--threads", "1"]


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_bench_json_has_a_row_per_path_and_batch(capsys):
    assert cli.main(["bench", *TINY, "--batch", "1,2", "--rounds", "1", "--engine", "eager", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = out["rows"]
    assert {(r["label"], r["batch"]) for r in rows} == {("effnet eager fp32", 1), ("effnet eager fp32", 2)}
    for r in rows:
        assert r["images_per_s"] > 0 and r["gflops"] > 0 and r["max_error"] <= 1e-4
    assert out["peak_rss_mb"] > 0


def test_bench_table_bf16(capsys):
    assert cli.main(["bench", *TINY, "--batch", "2", "--rounds", "1", "--engine", "eager", "--dtype", "bf16"]) == 0
    out = capsys.readouterr().out
    assert "effnet eager bf16" in out and "img/s" in out


def test_rows_report_ratios_to_the_baseline():
    rows = rows_from_times({"a fp32": [0.2, 0.2], "b fp32": [0.1, 0.1]}, 4, macs=10**9, peak=100.0,
                           errors={"a fp32": None, "b fp32": 0.0}, baseline="a fp32")
    assert [round(r.ratio, 6) for r in rows] == [1.0, 2.0]
    assert rows[1].images_per_s == pytest.approx(40.0) and rows[1].gflops == pytest.approx(80.0)


@pytest.mark.parametrize("argv,match", [
    (["bench", *TINY, "--engine", "tensorrt"], "--engine"),
    (["bench", *TINY, "--batch", "0"], "--batch"),
    (["bench", *TINY, "--dtype", "int8"], "--calibration"),
    (["export", *TINY[:3], "--out", "x", "--format", "tflite"], "--format"),
    (["fit", "efficientnet_b0", "--max-latency", "fast"], "--max-latency"),
    (["fit", "efficientnet_b0", "--max-latency", "20ms", "--engine", "tvm"], "--engine"),
])
def test_bad_flags_fail_with_one_line(capsys, argv, match):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("effnet: error:") and match in err


def test_export_cli_writes_checked_files(tmp_path, capsys):
    """pt2 only: the ONNX path is covered by tests/test_export.py and costs another export."""
    torch.set_num_threads(1)
    assert cli.main(["export", "resnet18", "--phi", "-4", "--out", str(tmp_path / "r"), "--format", "pt2"]) == 0
    assert (tmp_path / "r" / "resnet18-phi-4.pt2").is_file()  # --out is a folder, files named after the model
    assert "parity with eager fp32 checked" in capsys.readouterr().out


def test_fit_max_latency_meets_the_budget_and_the_next_step_does_not(capsys, monkeypatch):
    """The search logic, with a fake clock: latency grows with φ, budget between φ=0.5 and 0.75."""
    import effnet.deploy.fit as fit_hw

    monkeypatch.setattr(fit_hw, "measure_latency", lambda name, phi, **kw: 0.010 * (1 + phi))
    assert cli.main(["fit", "efficientnet_b0", "--max-latency", "16ms", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["phi"] == 0.5 and r["ms"] <= 16 < r["next_ms"]
    assert cli.main(["fit", "efficientnet_b0", "--max-latency", "7ms", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["phi"] == -0.5 and r["ms"] <= 7 < r["next_ms"]


def test_bench_train_reports_each_variant_with_its_memory_estimate(capsys):
    """`effnet bench --train` end to end on a tiny network: one row per training variant, each with a
    measured step time, measured peak memory and the spec-based estimate (no timing assertions)."""
    torch.set_num_threads(1)
    argv = ["bench", "resnet18", "--phi", "-4", "--train", "--grad-checkpointing", "--batch", "2", "--rounds", "1",
            "--json"]
    assert cli.main(argv) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["model"] == "resnet18" and r["batch"] == 2
    assert [row["variant"] for row in r["rows"]] == ["effnet NCHW fp32", "effnet CL bf16", "effnet CL bf16 grad-ckpt"]
    for row in r["rows"]:
        assert row["step_s"] > 0 and row["images_per_s"] == pytest.approx(2 / row["step_s"])
        assert row["memory_bytes"] > 0 and row["estimate_bytes"] > 0
