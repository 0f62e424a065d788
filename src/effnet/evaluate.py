"""Evaluate a classifier on an image folder, and predict the classes of single images.

Both use the preprocessing the weights expect (``model.preprocessing``, set by pretrained weights and
checkpoints; see :func:`effnet.weights.default_preprocessing`), because a model fed the wrong input
scaling still answers, only worse: EfficientNet-Lite with ImageNet mean/std instead of (x − 127)/128
keeps its top-1 on easy photos but loses confidence (measured on shared/data/imagenet-sample-100 with
the Lite weights), so a silent mismatch would go unnoticed.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from effnet.data import (
    ClassMap,
    ImageFolderDataset,
    ImageReport,
    Preprocessing,
    build_transform,
    load_image_with_report,
)
from effnet.errors import DataError
from effnet.model import ConvNet
from effnet.train.metrics import EvalMetrics, MetricAccumulator
from effnet.weights import default_preprocessing

__all__ = ["ClassAccuracy", "EvalResult", "Misclassified", "Prediction", "class_names", "default_batch_size",
           "evaluate_dataset", "evaluate_folder", "folder_result", "predict"]

ImageInput = str | os.PathLike[str] | Image.Image | np.ndarray


@dataclass(frozen=True)
class Misclassified:
    """One image whose top-1 prediction is wrong."""

    path: str
    true_index: int
    true_name: str
    predicted_index: int
    predicted_name: str
    confidence: float


@dataclass(frozen=True)
class ClassAccuracy:
    """Top-1 accuracy on the images of one class folder."""

    folder: str
    index: int
    name: str
    correct: int
    total: int

    @property
    def accuracy(self) -> float:
        return 100.0 * self.correct / self.total


@dataclass(frozen=True)
class EvalResult:
    """Accuracy of a model on a folder.

    Attributes:
        top1, top5: accuracy in percent (top-5 is top-k with k = min(5, classes)).
        loss: mean cross-entropy of the logits (no label smoothing).
        num_images: images evaluated (unreadable files are in ``skipped`` and not counted).
        per_class: accuracy per class folder, in folder order.
        misclassified: every top-1 error, in file order.
        skipped: (path, reason) for files left out.
        metrics: the same figures with the confusion matrix over the model's classes.
    """

    top1: float
    top5: float
    num_images: int
    per_class: tuple[ClassAccuracy, ...]
    misclassified: tuple[Misclassified, ...]
    skipped: tuple[tuple[str, str], ...] = ()
    loss: float = float("nan")
    metrics: EvalMetrics | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        # Without ``metrics``: asdict would deep-copy its confusion matrix (1M cells for an ImageNet
        # model) only for it to be dropped; the JSON reports per-class accuracy instead.
        d = asdict(replace(self, metrics=None))
        d.pop("metrics")
        d["per_class"] = [{**asdict(c), "accuracy": c.accuracy} for c in self.per_class]
        return d


@dataclass(frozen=True)
class Prediction:
    """Top classes of one image: ``top`` holds (class index, class name, probability), best first."""

    source: str
    top: tuple[tuple[int, str, float], ...]
    report: ImageReport | None = None


def class_names(model: ConvNet) -> list[str]:
    """Names of the model's output classes: a checkpoint's own ``classes`` list when it stores one,
    the label set its pretrained weights declare (``WeightsInfo.classes``), ImageNet's for other
    1000-class models, else the indices as strings."""
    stored = getattr(model, "checkpoint_metadata", None) or {}
    names = stored.get("classes")
    if isinstance(names, list) and len(names) == model.num_classes:
        return [str(n) for n in names]
    info = getattr(model, "weights_info", None)
    if model.num_classes == 1000 and (info is None or info.classes == "imagenet"):
        return list(ClassMap.imagenet().names)
    return [str(i) for i in range(model.num_classes)]


def default_batch_size(device: torch.device) -> int:
    """4 images on a CPU, 64 on an accelerator.

    On CPU small batches are fastest: the activations of a few images stay in cache, and Lite2 on
    imagenet-sample-100 ran about twice as fast with 4 images per batch as with 16 on 2 cores.
    """
    return 4 if device.type == "cpu" else 64


def _to_input(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    # channels_last input lets oneDNN run the (depthwise) convolutions in NHWC, about 1.5x faster on
    # CPU here; the logits agree with NCHW to ~1e-5. The model itself is left untouched.
    return x.to(device, memory_format=torch.channels_last)


def _check_classes(model: ConvNet, class_map: ClassMap | None, folders: int | None = None) -> None:
    if model.num_classes < 1:
        raise DataError(f"{model.spec.name} has no classifier (num_classes=0); evaluate a model with a head")
    if class_map is not None and len(class_map) != model.num_classes:
        raise DataError(f"class map {class_map.source} has {len(class_map)} classes but the model predicts "
                        f"{model.num_classes}; use the class map the weights were trained with")
    if class_map is None and folders is not None and folders > model.num_classes:
        raise DataError(f"{folders} class folders but the model predicts {model.num_classes} classes; "
                        "pass the weights' class map (e.g. --class-map imagenet) or a matching folder")
    if class_map is None and folders is not None and folders != model.num_classes:
        warnings.warn(f"{folders} class folders numbered 0..{folders - 1} in sorted order, but the model predicts "
                      f"{model.num_classes} classes; if the folders are the weights' class ids (e.g. ImageNet "
                      "wnids) pass their class map (--class-map imagenet), or the accuracy is meaningless",
                      stacklevel=3)


@torch.inference_mode()
def evaluate_folder(model: ConvNet, root: str | os.PathLike[str], *, class_map: ClassMap | None = None,
                    preprocessing: Preprocessing | None = None, batch_size: int | None = None,
                    workers: int = 0) -> EvalResult:
    """Top-1/top-5 accuracy of ``model`` on ``root/<class>/<image>`` folders.

    Args:
        model: a classifier; put in eval mode here (and left so).
        root: folder of class folders.
        class_map: pins each folder's label (ImageNet wnids → the model's indices); without one,
            folders are numbered in sorted order (right for a model trained on the same layout).
        preprocessing: the eval pipeline; default :func:`effnet.weights.default_preprocessing`.
        batch_size: images per forward pass; default :func:`default_batch_size`.
        workers: DataLoader worker processes (0: load in this process).

    Raises:
        DataError: a missing or empty folder, a folder not in the class map, or a class map whose
            size differs from the model's class count.
    """
    _check_classes(model, class_map)  # before reading the folder, which can take long
    pre = preprocessing or default_preprocessing(model)
    dataset = ImageFolderDataset(root, class_map, transform=build_transform(pre, train=False))
    _check_classes(model, class_map, len(dataset.folders))
    device = next(model.parameters()).device
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size or default_batch_size(device), num_workers=workers,
                        shuffle=False)
    logits = torch.cat([model(_to_input(x, device)).float().cpu() for x, _ in loader])
    return folder_result(dataset, logits, class_names(model), skipped=dataset.skipped)


def folder_result(dataset: ImageFolderDataset, logits: torch.Tensor, model_names: Sequence[str], *,
                  skipped: Sequence[tuple[str, str]] = ()) -> EvalResult:
    """The :class:`EvalResult` of ``logits`` (one row per ``dataset.samples`` entry, in order): shared by
    this module's loader and the pipelined one (``effnet.deploy.pipeline.evaluate_folder_fast``)."""
    names = list(dataset.class_map.names) if dataset.class_map is not None else dataset.classes
    # Predictions can name classes no folder has (a 1000-class model on 100 folders): use the model's names.
    pred_names = names + list(model_names)[len(names):]
    acc = MetricAccumulator(logits.shape[1])
    target = torch.as_tensor(dataset.targets, dtype=torch.long)
    pred = acc.update(logits, target)[:, 0] if len(target) else torch.empty(0, dtype=torch.long)
    confidences = logits.softmax(-1).amax(-1) if len(target) else torch.empty(0)
    metrics = acc.result()
    correct = pred == target
    wrong = [Misclassified(path, int(t), names[t], int(p), pred_names[p], float(c))
             for (path, t), p, c, ok in zip(dataset.samples, pred.tolist(), confidences.tolist(),
                                            correct.tolist(), strict=True) if not ok]
    per_class = []
    for folder in dataset.folders:
        index = dataset.class_to_idx[folder]
        mask = target == index
        if mask.any():
            per_class.append(ClassAccuracy(folder, index, names[index], int(correct[mask].sum()), int(mask.sum())))
    return EvalResult(top1=metrics.top1, top5=metrics.top5, num_images=metrics.count, per_class=tuple(per_class),
                      misclassified=tuple(wrong), skipped=tuple(skipped), loss=metrics.loss, metrics=metrics)


@torch.inference_mode()
def evaluate_dataset(model: ConvNet, name: str, *, split: str = "test", root: str | os.PathLike[str] | None = None,
                     seed: int = 0, preprocessing: Preprocessing | None = None, batch_size: int | None = None,
                     workers: int = 0) -> tuple[EvalMetrics, list[str]]:
    """Loss, top-1/top-5, per-class accuracy and confusion matrix on a built-in data set.

    Args:
        model: a classifier with as many classes as the data set.
        name: "fashion-mnist", "mnist" (10k) or "digits" (:func:`effnet.data.get_dataset`).
        split: "test" (default) or "train".
        root: the data set's directory, if not the default.
        seed: split seed of "mnist" and "digits". It must be the training run's seed, or test images
            of this split were training images there; ``effnet eval`` reads it from the checkpoint.
        preprocessing: default :func:`effnet.weights.default_preprocessing` (a checkpoint's own record).
        batch_size, workers: as in :func:`evaluate_folder`.

    Returns:
        The metrics and the data set's class names.
    """
    from effnet.data import get_dataset

    _check_classes(model, None)
    pre = preprocessing or default_preprocessing(model)
    dataset = get_dataset(name, split, root=root, seed=seed, transform=build_transform(pre, train=False))
    classes = list(dataset.classes)  # type: ignore[attr-defined]
    if len(classes) != model.num_classes:
        raise DataError(f"{name} has {len(classes)} classes but {model.spec.name} predicts {model.num_classes}; "
                        f"evaluate a checkpoint trained on {name} (effnet train --data {name})")
    device = next(model.parameters()).device
    model.eval()
    acc = MetricAccumulator(model.num_classes)
    loader = DataLoader(dataset, batch_size=batch_size or 256, num_workers=workers, shuffle=False)
    for x, y in loader:
        acc.update(model(_to_input(x, device)), y)
    return acc.result(), classes


def _as_image(item: ImageInput) -> tuple[Image.Image, str, ImageReport | None]:
    if isinstance(item, Image.Image):
        return item.convert("RGB"), "<image>", None
    if isinstance(item, np.ndarray):
        if item.dtype != np.uint8 or item.ndim not in (2, 3):
            raise DataError(f"array of shape {item.shape} and dtype {item.dtype}: pass uint8 HxW or HxWx3 pixels")
        return Image.fromarray(item).convert("RGB"), f"<array {'x'.join(map(str, item.shape))}>", None
    image, report = load_image_with_report(item)
    return image, str(Path(item)), report


@torch.inference_mode()
def predict(model: ConvNet, images: Sequence[ImageInput], *, preprocessing: Preprocessing | None = None,
            top: int = 5, names: Sequence[str] | None = None, batch_size: int | None = None) -> list[Prediction]:
    """Top-``top`` classes of each image, with softmax probabilities.

    Args:
        model: a classifier; put in eval mode here.
        images: file paths (loaded safely with :func:`effnet.data.load_image_with_report`, whose
            report of conversions is returned), PIL images or uint8 arrays.
        preprocessing: default :func:`effnet.weights.default_preprocessing`.
        top: classes per image.
        names: class names; default :func:`class_names`.
        batch_size: images per forward pass; default :func:`default_batch_size`.
    """
    if top < 1:
        raise DataError(f"top={top} must be >= 1")
    transform = build_transform(preprocessing or default_preprocessing(model), train=False)
    names = list(names) if names is not None else class_names(model)
    loaded = [_as_image(item) for item in images]
    model.eval()
    device = next(model.parameters()).device
    out: list[Prediction] = []
    step = batch_size or default_batch_size(device)
    for start in range(0, len(loaded), step):
        chunk = loaded[start:start + step]
        x = _to_input(torch.stack([transform(img) for img, _, _ in chunk]), device)
        probs, idx = model(x).softmax(-1).topk(min(top, model.num_classes), dim=-1)
        for (_, source, report), p, i in zip(chunk, probs.tolist(), idx.tolist(), strict=True):
            out.append(Prediction(source, tuple((c, names[c], q) for c, q in zip(i, p, strict=True)), report))
    return out
