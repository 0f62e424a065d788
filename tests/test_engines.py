"""The OpenVINO engine, the automatic engine choice (report, cache, noise rule) and what the CPU lacks.
Structure only: no test asserts a speed (the clock is faked wherever a choice must come out one way)."""

from __future__ import annotations

import importlib.util
import json
import os
import warnings
from pathlib import Path

import pytest
import torch

import effnet
import effnet.deploy.choice as choice_mod
from effnet import cli
from effnet.deploy import inference, machine
from effnet.deploy.choice import PREFERENCE, Choice, choose
from effnet.errors import EffnetError
from effnet.model import ConvNet
from helpers import randomize_bn


@pytest.fixture
def tiny(tiny_spec):
    return randomize_bn(ConvNet(tiny_spec, num_classes=10))


@pytest.fixture(autouse=True)
def _two_threads():
    n = torch.get_num_threads()
    torch.set_num_threads(2)  # the engines' split paths exist only with 2 threads or more
    yield
    torch.set_num_threads(n)


def _onnx_engines():
    pytest.importorskip("onnxruntime", reason="the ONNX engines need onnxruntime (pip install 'effnet[bench]')")
    pytest.importorskip("onnxscript", reason="torch's ONNX exporter needs onnxscript (pip install 'effnet[bench]')")


def test_openvino_fp32_matches_eager(tiny, tmp_path):
    _onnx_engines()
    pytest.importorskip("openvino", reason="OpenVINO is optional: pip install 'effnet[openvino]'")
    x1 = torch.randn(1, 3, 32, 32)  # batch 1: exported with two images, run on the latency model
    fast = effnet.optimize_for_inference(tiny, example=x1, engine="openvino", workdir=tmp_path)
    assert fast.engine == "openvino" and fast.dtype == "fp32" and fast.max_error <= 1e-4
    with torch.no_grad():
        for batch in (1, 5):  # 5 ≥ threads: split across one stream per core
            y = torch.randn(batch, 3, 32, 32)
            torch.testing.assert_close(fast(y), tiny(y), rtol=0, atol=1e-4)
    assert "given, not chosen" in fast.report()


def test_openvino_bf16_keeps_top1_where_the_cpu_has_bf16(tiny, tmp_path):
    _onnx_engines()
    pytest.importorskip("openvino", reason="OpenVINO is optional: pip install 'effnet[openvino]'")
    if not machine.has_bf16():
        pytest.skip(f"this CPU ({' '.join(machine.cpu_features())}) has no native bf16")
    x = torch.randn(8, 3, 32, 32)
    fast = effnet.optimize_for_inference(tiny, example=x, engine="openvino", dtype="bf16", workdir=tmp_path)
    assert fast.dtype == "bf16" and fast.agreement >= 0.99


@pytest.fixture
def with_eager(monkeypatch):
    """auto's fp32 candidates plus eager, so that every install races at least two real engines."""
    real = inference._auto_candidates
    monkeypatch.setattr(inference, "_auto_candidates", lambda dtype: [*real(dtype), "eager"])


def test_auto_reports_every_candidate_with_its_figure(tiny, tmp_path, with_eager):
    _onnx_engines()
    fast = effnet.optimize_for_inference(tiny, example=torch.randn(2, 3, 32, 32), workdir=tmp_path)
    report = fast.report()
    names = ["eager", "onnxruntime"] + (["openvino"] if importlib.util.find_spec("openvino") else [])
    assert sorted(t.engine for t in fast.choice.timed) == sorted(names)
    for t in fast.choice.timed:
        assert t.ms > 0 and t.rounds >= 5 and f"{t.ms:9.2f} ms/call" in report
    assert f"* {fast.engine}" in report and "load average" in report and fast.choice.engine == fast.engine
    assert fast.max_error <= 1e-4


def test_a_cached_choice_is_reused_without_timing(tiny, tmp_path, monkeypatch, with_eager):
    _onnx_engines()
    x = torch.randn(2, 3, 32, 32)
    first = effnet.optimize_for_inference(tiny, example=x, workdir=tmp_path)
    entries = json.loads(Path(os.environ["EFFNET_ENGINE_CACHE"]).read_text())
    assert [e["engine"] for e in entries.values()] == [first.engine]

    def no_timing(*args, **kwargs):
        raise AssertionError("a cached choice must not be timed again")

    monkeypatch.setattr(choice_mod, "interleaved_times", no_timing)
    for _ in range(2):
        again = effnet.optimize_for_inference(tiny, example=x, workdir=tmp_path)
        assert again.engine == first.engine and again.choice.cached and again.max_error <= 1e-4
        assert "cached" in again.report()
    with pytest.raises(AssertionError, match="cached"):  # another input shape is another choice
        effnet.optimize_for_inference(tiny, example=torch.randn(3, 3, 32, 32), workdir=tmp_path)


def test_a_choice_timed_under_load_is_raced_again_when_quiet_and_a_quiet_one_stands(tiny, tmp_path, monkeypatch,
                                                                                     with_eager):
    _onnx_engines()
    x = torch.randn(2, 3, 32, 32)
    races = []
    real_choose = choice_mod.choose
    monkeypatch.setattr(choice_mod, "choose", lambda *a, **k: races.append(1) or real_choose(*a, **k))

    def call(busy):
        monkeypatch.setattr(choice_mod, "other_work", lambda: busy)
        return effnet.optimize_for_inference(tiny, example=x, workdir=tmp_path).choice

    loaded = call(1.0)  # beside a busy process: raced, stamped, saved
    assert not loaded.cached and loaded.busy == 1.0 and "other processes 1.00 cores" in loaded.report()
    assert call(1.0).cached and len(races) == 1  # still busy: nothing to learn by timing again
    quiet = call(0.0)  # quiet now: the provisional choice is timed again and replaced
    assert not quiet.cached and quiet.busy == 0.0 and len(races) == 2
    assert any("timed again" in n for n in quiet.notes)
    later = call(1.0)  # a quiet choice stands whatever the load
    assert later.cached and later.engine == quiet.engine and len(races) == 2


def test_only_a_busy_cached_choice_on_a_quiet_machine_is_provisional():
    def made(busy):
        return Choice("onnxruntime", "fastest", busy=busy)

    assert choice_mod.provisional(made(1.0), 0.0)
    assert choice_mod.provisional(made(choice_mod.BUSY_CORES), 0.1)
    assert not choice_mod.provisional(made(1.0), 1.0)  # still busy
    assert not choice_mod.provisional(made(1.0), None)  # cannot tell now
    assert not choice_mod.provisional(made(0.1), 0.0)  # quiet when timed
    assert not choice_mod.provisional(made(None), 0.0)  # an entry from before the sample existed


def test_cache_off_and_forced_engine(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("EFFNET_ENGINE_CACHE", "off")
    monkeypatch.setenv("EFFNET_ENGINE", "eager")
    fast = effnet.optimize_for_inference(tiny, example=torch.randn(2, 3, 32, 32))
    assert fast.engine == "eager" and fast.choice.reason == "EFFNET_ENGINE"
    assert choice_mod.cache_path() is None
    monkeypatch.setenv("EFFNET_ENGINE", "tensorrt")
    with pytest.raises(EffnetError, match="EFFNET_ENGINE"):
        effnet.optimize_for_inference(tiny)


def _fake_clock(monkeypatch, ms: dict[str, list[float]]):
    """interleaved_times returning the given per-round milliseconds; counts its calls."""
    sets = []

    def fake(calls, *, rounds, inner, warmup, seed):
        sets.append(seed)
        return {k: [v / 1000 for v in ms[k]] for k in calls}

    monkeypatch.setattr(choice_mod, "interleaved_times", fake)
    return sets


def test_a_clear_winner_is_taken_at_once(monkeypatch):
    sets = _fake_clock(monkeypatch, {"eager": [30, 31, 29, 30, 30], "onnxruntime": [10, 11, 10, 10, 12]})
    engine, why, timed = choose({"eager": lambda: None, "onnxruntime": lambda: None})
    assert engine == "onnxruntime" and why.startswith("fastest") and len(sets) == 1
    assert [t.engine for t in timed] == ["onnxruntime", "eager"]


def test_rounds_are_compared_in_pairs(monkeypatch):
    # load swings every round 4x (a 100 % spread each), yet openvino is 1.4x slower in every round
    sets = _fake_clock(monkeypatch, {"onnxruntime": [10, 40, 10, 40, 10], "openvino": [14, 56, 14, 56, 14]})
    engine, why, _ = choose({"openvino": lambda: None, "onnxruntime": lambda: None})
    assert engine == "onnxruntime" and why.startswith("fastest") and len(sets) == 1


def test_candidates_within_noise_are_remeasured_then_ordered(monkeypatch):
    # openvino's median is 2 % slower, inside the noise: more rounds, then the preferred order decides
    sets = _fake_clock(monkeypatch, {"onnxruntime": [10, 10, 10, 10, 10], "openvino": [10.2] * 5,
                                     "eager": [40] * 5})
    engine, why, timed = choose({"onnxruntime": lambda: None, "openvino": lambda: None, "eager": lambda: None},
                                extra=2)
    assert len(sets) == 3 and "within noise" in why
    assert engine == min(("onnxruntime", "openvino"), key=PREFERENCE.index)
    assert all(t.rounds == 15 for t in timed)


def test_choice_survives_the_cache_file_round_trip():
    c = Choice("openvino", "fastest", (choice_mod.Timed("openvino", 5.0, 0.1, 5, 50),), (1, 3, 224, 224), "fp32",
               2, ("AVX2",), (1.0, 2.0, 3.0), "now", notes=("x",), busy=0.75)
    assert Choice.from_dict(json.loads(json.dumps(c.to_dict()))) == c


def test_bf16_without_native_bf16_says_what_it_does_instead(tiny, monkeypatch):
    monkeypatch.setattr(machine, "has_bf16", lambda: False)
    with pytest.warns(UserWarning, match="no native bf16.*fp32 instead"):
        fast = effnet.optimize_for_inference(tiny, example=torch.randn(2, 3, 32, 32), dtype="bf16")
    assert fast.dtype == "fp32" and "fp32 instead" in fast.report()
    with pytest.warns(UserWarning, match="emulates"):
        asked = effnet.optimize_for_inference(tiny, example=torch.randn(2, 3, 32, 32), dtype="bf16", engine="eager")
    assert asked.dtype == "bf16"


def test_int8_without_vnni_warns(tiny, monkeypatch, tmp_path):
    monkeypatch.setattr(machine, "has_vnni", lambda: False)
    with pytest.warns(UserWarning, match="no VNNI"), pytest.raises(EffnetError, match="calibration"):
        effnet.optimize_for_inference(tiny, dtype="int8", engine="onnxruntime")


def test_bench_prints_load_and_cpu_features(capsys):
    argv = ["bench", "efficientnet_b0", "--phi", "-8", "--threads", "1", "--batch", "2", "--rounds", "1",
            "--engine", "eager"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "load average" in out and "CPU:" in out
    for feature in machine.cpu_features():
        assert feature in out
