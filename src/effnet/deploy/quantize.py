"""int8 post-training static quantisation with ONNX Runtime, calibrated on real images.

Why static and why ONNX Runtime: dynamic quantisation only covers matmuls, while EfficientNet's
time is in convolutions; ORT's static QDQ graph runs as ``QLinearConv`` with VNNI int8 dot products
on this CPU. Weights are quantised per output channel (depthwise filters differ by orders of
magnitude from one channel to the next, per-tensor scales wreck them), activations as uint8 with
ranges from calibration images (U8S8, ORT's fast path on x86). EfficientNet-Lite was designed for
this: ReLU6 bounds every activation and there is no SE gate to quantise.

Calibration images must be real and preprocessed like evaluation (noise gives wrong ranges);
:func:`folder_images` reads them from an ImageNet-style folder.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from effnet.deploy.export import OrtModel, export_onnx, require
from effnet.errors import EffnetError

__all__ = ["folder_images", "quantize_model", "quantize_onnx"]


class _Reader:
    """ORT's CalibrationDataReader protocol over a tensor of images, ``batch`` at a time."""

    def __init__(self, input_name: str, images: torch.Tensor, batch: int) -> None:
        self._batches: Iterator[torch.Tensor] = iter(images.split(batch))
        self._name = input_name

    def get_next(self) -> dict[str, Any] | None:
        b = next(self._batches, None)
        return None if b is None else {self._name: b.float().contiguous().numpy()}

    def rewind(self) -> None:  # pragma: no cover - ORT calls it only for some calibrators
        raise NotImplementedError


def quantize_onnx(src: str | Path, dst: str | Path, calibration: torch.Tensor, *, batch: int = 10,
                  method: str = "minmax", per_channel: bool = True) -> Path:
    """Statically quantise the fp32 ONNX file ``src`` to ``dst`` (QDQ, int8 weights, uint8 activations)."""
    q = require("onnxruntime.quantization")
    if calibration.ndim != 4 or len(calibration) == 0:
        raise EffnetError(f"calibration must be a non-empty (N, C, H, W) batch of images, "
                          f"got {tuple(calibration.shape)}")
    methods = {"minmax": q.CalibrationMethod.MinMax, "percentile": q.CalibrationMethod.Percentile,
               "entropy": q.CalibrationMethod.Entropy}
    if method not in methods:
        raise EffnetError(f"unknown calibration method {method!r}; use one of {', '.join(methods)}")
    dst = Path(dst)
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        q.quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)  # shape inference + graph cleanup
        import onnx

        name = onnx.load(str(pre), load_external_data=False).graph.input[0].name
        q.quantize_static(str(pre), str(dst), _Reader(name, calibration, batch), quant_format=q.QuantFormat.QDQ,
                          activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                          per_channel=per_channel, calibrate_method=methods[method],
                          extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    return dst


def quantize_model(model: nn.Module, path: str | Path, calibration: torch.Tensor, **kwargs: Any) -> OrtModel:
    """Export ``model`` (BN folded), quantise it with ``calibration`` images, return the int8 runner."""
    path = Path(path)
    fp32 = path.with_name(path.stem.replace(".int8", "") + ".fp32.onnx")
    export_onnx(model, fp32, example=calibration[:2].float(), check=False)
    return OrtModel(quantize_onnx(fp32, path, calibration, **kwargs))


def folder_images(folder: str | Path, model: nn.Module, *, imagenet: bool = True,
                  limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of an ImageNet-style folder (``wnid/*.JPEG``), preprocessed as the model evaluates
    them, and their labels (ImageNet indices when ``imagenet``): calibration and accuracy data."""
    from effnet.data import ClassMap, ImageFolderDataset
    from effnet.data.transforms import build_transform
    from effnet.weights import default_preprocessing

    pre = default_preprocessing(model)  # type: ignore[arg-type]
    ds = ImageFolderDataset(folder, ClassMap.imagenet() if imagenet else None,
                            transform=build_transform(pre, train=False))
    n = len(ds) if limit is None else min(limit, len(ds))
    items = [ds[i] for i in range(n)]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])
