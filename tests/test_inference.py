"""optimize_for_inference: every path it returns matches eager fp32; bad requests fail clearly."""

from __future__ import annotations

import pytest
import torch

import effnet
from effnet.errors import EffnetError
from effnet.model import ConvNet
from helpers import randomize_bn


@pytest.fixture
def tiny(tiny_spec):
    return randomize_bn(ConvNet(tiny_spec, num_classes=10))


@pytest.mark.parametrize("engine", ["eager", "onnxruntime", "auto"])
def test_fp32_paths_match_eager(tiny, engine, tmp_path):
    if engine != "eager":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
    x = torch.randn(4, 3, 32, 32)
    fast = effnet.optimize_for_inference(tiny, example=x, engine=engine, workdir=tmp_path)
    assert fast.dtype == "fp32" and fast.max_error <= 1e-4
    y = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fast(y), tiny(y), rtol=0, atol=1e-4)


def test_bf16_path_is_checked_and_close(tiny):
    x = torch.randn(2, 3, 32, 32)
    # engine given: auto runs fp32 instead on a CPU without native bf16 (tests/test_engines.py)
    fast = effnet.optimize_for_inference(tiny, example=x, dtype="bf16", engine="eager")
    assert fast.dtype == "bf16" and fast(x).dtype == torch.float32
    with torch.no_grad():
        ref = tiny(x)
    assert float((fast(x) - ref).abs().max()) <= 0.1 * max(1.0, float(ref.abs().max()))


def test_int8_needs_calibration_and_runs(tiny, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    with pytest.raises(EffnetError, match="calibration"):
        effnet.optimize_for_inference(tiny, dtype="int8", engine="onnxruntime")
    calib = torch.randn(8, 3, 32, 32)
    q = effnet.optimize_for_inference(tiny, example=calib[:2], dtype="int8", calibration=calib, workdir=tmp_path)
    assert q.engine == "onnxruntime" and q(calib).shape == (8, 10)
    assert (tmp_path / "model.int8.onnx").is_file()


@pytest.mark.parametrize("kwargs,match", [({"engine": "tensorrt"}, "unknown engine"),
                                         ({"dtype": "fp8"}, "unknown dtype"),
                                         ({"engine": "onnxruntime", "dtype": "bf16"}, "bf16")])
def test_bad_requests_fail_clearly(tiny, kwargs, match):
    with pytest.raises(EffnetError, match=match):
        effnet.optimize_for_inference(tiny, **kwargs)


def test_bf16_guard_reruns_near_ties_in_fp32(tiny):
    x = torch.randn(3, 3, 32, 32)
    every_row = effnet.optimize_for_inference(tiny, example=x, dtype="bf16", engine="eager", bf16_guard=10.0)
    with torch.no_grad():
        ref = tiny(x)
    torch.testing.assert_close(every_row(x), ref, rtol=0, atol=1e-4)  # all rows re-run in fp32
    assert every_row.rechecked >= 3
    none = effnet.optimize_for_inference(tiny, example=x, dtype="bf16", engine="eager", bf16_guard=0.0)
    none(x)
    assert none.rechecked == 0


def test_a_temporary_work_folder_lives_as_long_as_its_engine(tiny, tmp_path, monkeypatch):
    """Without ``workdir`` each call used to leave its ONNX files in /tmp (20 MB for B0, per call)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import gc
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where mkdtemp makes its folders
    fast = effnet.optimize_for_inference(tiny, example=torch.randn(2, 3, 32, 32), engine="onnxruntime")
    folder = fast.workdir
    assert folder is not None and folder.parent == tmp_path and any(folder.iterdir())
    assert fast(torch.randn(3, 3, 32, 32)).shape == (3, 10)  # a new batch size still finds its files
    del fast
    gc.collect()
    assert not folder.exists()
    with pytest.raises(EffnetError, match="calibration"):  # a failed build leaves nothing either
        effnet.optimize_for_inference(tiny, dtype="int8", engine="onnxruntime")
    assert not list(tmp_path.glob("effnet-*"))
    given = tmp_path / "mine"
    kept = effnet.optimize_for_inference(tiny, example=torch.randn(2, 3, 32, 32), engine="onnxruntime", workdir=given)
    assert kept.workdir is None
    del kept
    gc.collect()
    assert (given / "model.onnx").is_file()  # a folder the caller named is the caller's
