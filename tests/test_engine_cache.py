"""The engine cache: a second build reuses the exported file (no export), the key follows the weights,
a damaged file is rebuilt, an unwritable folder costs the cache and not the call, the size stays
bounded, and the outputs are the same with and without it. Structure only, no timings."""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import effnet
import effnet.deploy.export as export_mod
from effnet.cli.app import main
from effnet.cli.classify import AUTO_ORT_MIN_FILES, AUTO_ORT_MIN_FILES_CACHED, engine_for
from effnet.deploy import engine_cache
from effnet.model import ConvNet
from helpers import randomize_bn


@pytest.fixture
def tiny(tiny_spec) -> ConvNet:
    return randomize_bn(ConvNet(tiny_spec, num_classes=10)).eval()


class Exports:
    """Every call of the ONNX export, recorded; with ``forbid`` set, a call fails the test."""

    def __init__(self) -> None:
        self.calls: list[Path] = []
        self.forbid = False


@pytest.fixture
def exports(monkeypatch: pytest.MonkeyPatch) -> Exports:
    record = Exports()
    real = export_mod.export_onnx

    def counted(model, path, **kw):
        if record.forbid:
            raise AssertionError("exported again although the engine cache holds the file")
        record.calls.append(Path(path))
        return real(model, path, **kw)

    monkeypatch.setattr(export_mod, "export_onnx", counted)
    return record


def _onnx_engines() -> None:
    pytest.importorskip("onnxruntime", reason="the ONNX engines need onnxruntime (pip install 'effnet[bench]')")
    pytest.importorskip("onnxscript", reason="torch's ONNX exporter needs onnxscript (pip install 'effnet[bench]')")


def _ort(model: torch.nn.Module, workdir: Path, **kw) -> effnet.OptimizedModel:
    return effnet.optimize_for_inference(model, example=torch.randn(3, 3, 32, 32), engine="onnxruntime",
                                         workdir=workdir, **kw)


def _files() -> list[Path]:
    return [e.path for e in engine_cache.entries()]


# --- hits -------------------------------------------------------------------------------------------

def test_second_build_reuses_the_file_and_gives_the_same_outputs(tiny, tmp_path, exports, monkeypatch):
    _onnx_engines()
    first = _ort(tiny, tmp_path / "a")
    assert len(exports.calls) == 1 and len(_files()) == 1
    cached = _files()[0]
    assert cached.name.split(".")[1] == hashlib.sha256(cached.read_bytes()).hexdigest()[:16]

    exports.forbid = True
    second = _ort(tiny, tmp_path / "b")  # another work folder, as another process would have
    assert (tmp_path / "b" / "model.onnx").read_bytes() == cached.read_bytes()
    exports.forbid = False
    monkeypatch.setenv("EFFNET_CACHE", "off")
    uncached = _ort(tiny, tmp_path / "c")
    assert len(exports.calls) == 2 and _files() == []  # off: exported, nothing kept

    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        ref = tiny(x)
    for engine in (first, second, uncached):
        assert engine.engine == "onnxruntime" and engine.max_error <= 1e-4
        torch.testing.assert_close(engine(x), ref, rtol=0, atol=1e-4)
    torch.testing.assert_close(second(x), first(x), rtol=0, atol=0)  # the same file: the same numbers


def test_new_weights_miss_the_cache(tiny, tmp_path, exports):
    _onnx_engines()
    _ort(tiny, tmp_path / "a")
    other = copy.deepcopy(tiny)
    with torch.no_grad():
        next(other.parameters()).view(-1)[0] += 1.0  # one weight of the stem
    fast = _ort(other, tmp_path / "b")
    assert len(exports.calls) == 2 and len(_files()) == 2
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), other(x), rtol=0, atol=1e-4)


def test_the_key_follows_everything_that_changes_the_file(tiny):
    x = (2, 3, 32, 32)
    key = engine_cache.engine_key(tiny, x, "fp32")
    assert key is not None
    assert engine_cache.engine_key(copy.deepcopy(tiny), (7, 3, 32, 32), "fp32") == key  # batch is dynamic
    changed = copy.deepcopy(tiny)
    with torch.no_grad():
        next(changed.parameters()).view(-1)[0] += 1e-3
    buffers = copy.deepcopy(tiny)
    next(b for n, b in buffers.named_buffers() if n.endswith("running_var")).mul_(2)  # BN statistics too
    cal = torch.randn(4, 3, 32, 32)
    others = [engine_cache.engine_key(changed, x, "fp32"), engine_cache.engine_key(buffers, x, "fp32"),
              engine_cache.engine_key(tiny, (2, 3, 40, 40), "fp32"), engine_cache.engine_key(tiny, x, "int8"),
              engine_cache.engine_key(tiny, x, "int8", calibration=cal),
              engine_cache.engine_key(tiny, x, "int8", calibration=cal + 1e-3)]
    assert len({key, *others}) == 1 + len(others)
    assert engine_cache.engine_key(torch.nn.Conv2d(3, 4, 3), x, "fp32") is None  # no spec: never cached


def test_int8_reuses_the_quantised_file_per_calibration_set(tiny, tmp_path, monkeypatch):
    _onnx_engines()
    import effnet.deploy.quantize as quant_mod

    calls: list[int] = []
    real = quant_mod.quantize_onnx

    def counted(src, dst, cal, **kw):
        calls.append(len(cal))
        return real(src, dst, cal, **kw)

    monkeypatch.setattr(quant_mod, "quantize_onnx", counted)
    cal = torch.randn(8, 3, 32, 32)
    a = effnet.optimize_for_inference(tiny, example=cal[:4], dtype="int8", engine="onnxruntime", calibration=cal,
                                      workdir=tmp_path / "a")
    b = effnet.optimize_for_inference(tiny, example=cal[:4], dtype="int8", engine="onnxruntime", calibration=cal,
                                      workdir=tmp_path / "b")
    assert calls == [8] and a.dtype == b.dtype == "int8"
    torch.testing.assert_close(b(cal), a(cal), rtol=0, atol=0)
    effnet.optimize_for_inference(tiny, example=cal[:4], dtype="int8", engine="onnxruntime", calibration=cal[:6],
                                  workdir=tmp_path / "c")
    assert calls == [8, 6]  # other calibration images: other ranges, another file


# --- damage, unwritable folders, size -----------------------------------------------------------------

def test_a_damaged_file_is_detected_and_rebuilt(tiny, tmp_path, exports):
    _onnx_engines()
    _ort(tiny, tmp_path / "a")
    cached = _files()[0]
    data = cached.read_bytes()
    cached.write_bytes(data[: len(data) // 2])  # truncated, as by a full disk or a killed copy
    with pytest.warns(UserWarning, match="damaged"):
        fast = _ort(tiny, tmp_path / "b")
    assert len(exports.calls) == 2 and fast.max_error <= 1e-4
    intact = _files()
    assert len(intact) == 1 and intact[0].name.split(".")[1] == hashlib.sha256(intact[0].read_bytes()).hexdigest()[:16]


def test_a_cached_file_that_fails_verification_is_evicted_and_rebuilt(tiny, tmp_path, exports):
    """A file whose hash is intact but whose numbers are not this model's (a key that missed something)."""
    _onnx_engines()
    other = randomize_bn(copy.deepcopy(tiny))
    _ort(other, tmp_path / "a")
    wrong = _files()[0]
    key = engine_cache.engine_key(tiny, (2, 3, 32, 32), "fp32")
    wrong.rename(wrong.with_name(f"{key}.{wrong.name.split('.', 1)[1]}"))  # served under tiny's key
    fast = _ort(tiny, tmp_path / "b")
    assert len(exports.calls) == 2 and fast.max_error <= 1e-4
    assert [p.name.split(".")[0] for p in _files()] == [key]


def test_unwritable_cache_folder_builds_without_it(tiny, tmp_path, monkeypatch):
    _onnx_engines()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    monkeypatch.setenv("EFFNET_CACHE", str(blocker / "cache"))  # mkdir fails, even as root
    with pytest.warns(UserWarning, match="not writable.*without the cache"):
        fast = _ort(tiny, tmp_path / "w")
    assert fast.engine == "onnxruntime" and fast.max_error <= 1e-4 and _files() == []


def _fake(tag: bytes, size: int):
    def build(out: Path) -> Path:
        out.write_bytes(tag * size)
        return out
    return build


def test_size_is_bounded_least_recently_used_first(tmp_path, monkeypatch):
    monkeypatch.setenv(engine_cache.SIZE_ENV, str(2.5 / 1024))  # 2.5 KiB: two of the 1 KiB files below
    now = time.time()
    for key, used in (("k1", now - 10), ("k2", now - 20)):  # k2 the least recently used
        engine_cache.cached_file(key, tmp_path / f"{key}.onnx", _fake(key.encode(), 512))
        os.utime(_files()[0], (used, used))
    engine_cache.cached_file("k3", tmp_path / "k3.onnx", _fake(b"k3", 512))
    assert sorted(p.name.split(".")[0] for p in _files()) == ["k1", "k3"]


def test_a_reader_keeps_its_file_when_the_cache_is_cleared(tmp_path):
    engine_cache.cached_file("k", tmp_path / "first.onnx", _fake(b"x", 100))
    out = engine_cache.cached_file("k", tmp_path / "second.onnx", _fake(b"never built", 1))
    assert out.read_bytes() == b"x" * 100
    assert engine_cache.clear() == (1, 100)
    assert out.read_bytes() == b"x" * 100 and _files() == []  # its own link survives


# --- the command line ----------------------------------------------------------------------------

def test_cache_list_and_clear(tmp_path, capsys):
    engine_cache.cached_file("k", tmp_path / "m.onnx", _fake(b"y", 2048))
    assert main(["cache", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [f["bytes"] for f in listed["files"]] == [2048] and listed["files"][0]["file"].startswith("k.")
    assert main(["cache", "clear"]) == 0
    assert "removed 1 engine files" in capsys.readouterr().out and _files() == []


def test_auto_takes_the_engine_for_fewer_files_when_its_file_is_cached():
    args = argparse.Namespace(engine="auto", dtype="fp32")
    few = AUTO_ORT_MIN_FILES_CACHED
    assert AUTO_ORT_MIN_FILES_CACHED < AUTO_ORT_MIN_FILES
    assert engine_for(args, few) == "eager"
    assert engine_for(args, few, cached=True) == "onnxruntime"
    assert engine_for(args, few - 1, cached=True) == "eager"
    assert engine_for(args, AUTO_ORT_MIN_FILES) == "onnxruntime"


_BUILD = """
import torch, effnet
from effnet.deploy import engine_cache
torch.manual_seed(0)
model = effnet.create_model("efficientnet_b0", phi=-8).eval()
r = model.spec.resolution
fast = effnet.optimize_for_inference(model, example=torch.randn(2, 3, r, r), engine="onnxruntime")
print("hits", len(engine_cache._HITS), "error", fast.max_error)
"""


def test_two_processes_fill_one_cache_and_a_third_reads_it():
    _onnx_engines()
    env = {**os.environ, "PYTHONPATH": str(Path(effnet.__file__).resolve().parents[1])}
    run = [sys.executable, "-c", _BUILD]
    both = [subprocess.Popen(run, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "ab"]
    outs = [p.communicate(timeout=600) for p in both]
    assert [p.returncode for p in both] == [0, 0], [err[-2000:] for _, err in outs]
    files = _files()
    assert len(files) == 1 and files[0].name.split(".")[1] == hashlib.sha256(files[0].read_bytes()).hexdigest()[:16]
    third = subprocess.run(run, env=env, capture_output=True, text=True, timeout=600, check=True)
    assert "hits 1 " in third.stdout  # the file another process wrote, not an export of its own
