"""Export and the inference rewrites: BN folding is exact, ONNX/.pt2 files match eager within 1e-4
with a dynamic batch, and a model that cannot export says why."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from effnet.deploy.fold import fold_bn, prepare_for_export
from effnet.errors import EffnetError
from effnet.model import ConvNet
from effnet.registry import create_model
from helpers import randomize_bn

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
onnx = pytest.importorskip("onnx")

from effnet.deploy.export import ExportError, OrtModel, export_onnx, export_pt2, load_pt2  # noqa: E402


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=0, atol=1e-4 * max(1.0, float(b.abs().max())))


def test_fold_bn_is_exact_and_leaves_the_model_alone(tiny_spec):
    model = randomize_bn(ConvNet(tiny_spec, num_classes=10))
    folded = fold_bn(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(prepare_for_export(model)(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,phi,res", [("efficientnet_b0", None, 64), ("resnet18", 0.5, 64)])
def test_onnx_and_pt2_match_eager_with_a_dynamic_batch(tmp_path, name, phi, res):
    model = randomize_bn(create_model(name, phi=phi, num_classes=10))
    x2 = torch.randn(2, 3, res, res)
    path = export_onnx(model, tmp_path / "m.onnx", example=x2)  # checks parity itself (batch 2)
    assert not list(tmp_path.glob("*.data")), "the ONNX file should be self-contained"
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "BatchNormalization" not in ops
    runner = OrtModel(path)
    pt2 = load_pt2(export_pt2(model, tmp_path / "m.pt2", example=x2))
    for batch in (1, 3):
        x = torch.randn(batch, 3, res, res)
        with torch.no_grad():
            ref = model(x)
        _close(runner(x), ref)
        _close(pt2(x), ref)


def test_se_squeeze_is_exported_as_global_pool(tmp_path, tiny_spec):
    """ORT keeps GlobalAveragePool in its blocked layout; ReduceMean costs two reorders per SE."""
    path = export_onnx(randomize_bn(ConvNet(tiny_spec, num_classes=10)), tmp_path / "t.onnx")
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("GlobalAveragePool") >= 4  # one per SE block


class _DataDependent(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # Python control flow on a tensor value: not traceable
            return x * 2
        return x


def test_a_model_that_cannot_export_says_why(tmp_path):
    with pytest.raises(ExportError, match="control flow"):
        export_onnx(_DataDependent(), tmp_path / "bad.onnx", example=torch.randn(2, 3, 8, 8))
    with pytest.raises(ExportError, match="control flow"):
        export_pt2(_DataDependent(), tmp_path / "bad.pt2", example=torch.randn(2, 3, 8, 8))


def test_a_module_without_spec_needs_an_example(tmp_path):
    with pytest.raises(EffnetError, match="example="):
        export_onnx(nn.Conv2d(3, 3, 1), tmp_path / "c.onnx")
