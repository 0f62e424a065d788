"""Preprocessing: how pixels become a model's input, stored as data so checkpoints can carry it.

Pretrained weights are only right with the preprocessing they were trained with: EfficientNet-Lite
expects ``(x - 127) / 128``, torchvision's models ImageNet mean/std. A :class:`Preprocessing` value
records that choice (timm's ``PretrainedCfg`` idea), so that a checkpoint or ``WeightsInfo`` can
carry it and :func:`build_transform` can rebuild the exact pipeline.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import torch
from torchvision.transforms import v2

from effnet.errors import DataError

__all__ = [
    "IMAGENET_PREPROCESSING",
    "INCEPTION_PREPROCESSING",
    "SMALL_IMAGE_CROP_SCALE",
    "Preprocessing",
    "build_transform",
]

Interpolation = Literal["bicubic", "bilinear"]
Augment = Literal["randaugment", "autoaugment"]
_INTERPOLATIONS = {"bicubic": v2.InterpolationMode.BICUBIC, "bilinear": v2.InterpolationMode.BILINEAR}

# RandomResizedCrop's lower area bound for 28 px sets such as MNIST. The ImageNet default (0.08) can
# keep a 8x8 px corner of a 28x28 digit, i.e. a crop with no digit in it but still labelled "7".
# 0.35 keeps at least ~60 % of the side, so that the object stays (mostly) in view.
SMALL_IMAGE_CROP_SCALE = (0.35, 1.0)


@dataclass(frozen=True)
class Preprocessing:
    """The deterministic part of a model's input pipeline.

    Attributes:
        resolution: side of the square input in pixels.
        crop_pct: fraction of the resized image kept by the eval center crop; the shorter side is
            resized to ``int(resolution / crop_pct)`` first (0.875: 224 -> resize 256, crop 224).
        interpolation: resampling filter for every resize.
        mean: per-channel mean, RGB, in 0..1 units (pixel / 255).
        std: per-channel std, RGB, in 0..1 units.
    """

    resolution: int
    crop_pct: float = 0.875
    interpolation: Interpolation = "bicubic"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        # from_dict hands in lists from JSON; keep the value hashable and comparable.
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if isinstance(self.resolution, bool) or not isinstance(self.resolution, int) or self.resolution < 1:
            raise DataError(f"resolution={self.resolution!r} must be a positive integer number of pixels")
        if not 0.0 < self.crop_pct <= 1.0:
            raise DataError(f"crop_pct={self.crop_pct!r} must be in (0, 1]; 0.875 is the usual ImageNet one")
        if self.interpolation not in _INTERPOLATIONS:
            raise DataError(f"interpolation={self.interpolation!r}; use one of {sorted(_INTERPOLATIONS)}")
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) != 3:
                raise DataError(f"{name}={values!r} must have 3 values, one per RGB channel")
            if any(v > 1.0 for v in values):
                raise DataError(f"{name}={values!r} looks like 0..255 units; divide it by 255")
        if min(self.mean) < 0.0 or min(self.std) <= 0.0:
            raise DataError(f"mean={self.mean!r}, std={self.std!r}: mean must be >= 0 and std > 0")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists), for checkpoints and weight metadata."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessing:
        """Inverse of :meth:`to_dict`; unknown keys are an error, so that typos are not ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DataError(f"unknown preprocessing keys {unknown}; expected some of {sorted(known)}")
        return cls(**data)


# torchvision / timm ImageNet statistics (Krizhevsky-style per-channel mean and std of ImageNet).
IMAGENET_PREPROCESSING = Preprocessing(resolution=224)
# (x - 127) / 128 on 0..255 pixels: the official EfficientNet-Lite (and Inception) input scaling.
INCEPTION_PREPROCESSING = Preprocessing(resolution=224, mean=(127 / 255,) * 3, std=(128 / 255,) * 3)


def build_transform(
    pre: Preprocessing,
    *,
    train: bool,
    augment: Augment | None = "randaugment",
    randaugment_n: int = 2,
    randaugment_m: int = 9,
    crop_scale: tuple[float, float] = (0.08, 1.0),
    hflip: bool = True,
) -> Callable[[Any], torch.Tensor]:
    """Build the torchvision ``v2`` pipeline from a PIL RGB image to a normalized ``(3, r, r)`` float tensor.

    Eval: resize the shorter side to ``int(r / crop_pct)`` (aspect kept), center crop ``r``, as in the
    TF reference and timm. Train: RandomResizedCrop(r, scale=crop_scale) + horizontal flip + AutoAugment
    or RandAugment (the paper trains B0-B7 with AutoAugment; RandAugment is its cheaper successor),
    all with antialiased resizing.

    Args:
        pre: the preprocessing to reproduce.
        train: random training augmentation if True, deterministic eval pipeline if False.
        augment: "randaugment", "autoaugment" (ImageNet policy) or None; train only.
        randaugment_n: RandAugment's number of ops per image.
        randaugment_m: RandAugment's magnitude on the papers' 0..10 scale (torchvision's
            ``num_magnitude_bins=11``; its default of 31 bins would make m=9 a third as strong).
        crop_scale: RandomResizedCrop's area range; use :data:`SMALL_IMAGE_CROP_SCALE` for 28 px sets.
        hflip: random horizontal flip; turn it off where mirror images change the label (digits).

    Returns:
        A callable taking a PIL image (or uint8 tensor image) and returning a float32 tensor.
    """
    normalize = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(pre.mean, pre.std)]
    interpolation = _INTERPOLATIONS[pre.interpolation]
    if not train:
        resize = int(pre.resolution / pre.crop_pct)
        return v2.Compose([v2.Resize(resize, interpolation=interpolation, antialias=True),
                           v2.CenterCrop(pre.resolution), *normalize])
    if not 0.0 < crop_scale[0] <= crop_scale[1] <= 1.0:
        raise DataError(f"crop_scale={crop_scale!r} must satisfy 0 < low <= high <= 1 (area fractions)")
    steps: list[Callable[[Any], Any]] = [
        v2.RandomResizedCrop(pre.resolution, scale=crop_scale, interpolation=interpolation, antialias=True)
    ]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    if augment == "randaugment":
        if not 0 <= randaugment_m <= 10 or randaugment_n < 0:
            raise DataError(f"randaugment_n={randaugment_n}, randaugment_m={randaugment_m}: "
                            "need n >= 0 and m in 0..10 (the RandAugment paper's scale)")
        steps.append(v2.RandAugment(num_ops=randaugment_n, magnitude=randaugment_m, num_magnitude_bins=11,
                                    interpolation=v2.InterpolationMode.BILINEAR))
    elif augment == "autoaugment":
        policy = v2.AutoAugmentPolicy.IMAGENET
        steps.append(v2.AutoAugment(policy, interpolation=v2.InterpolationMode.BILINEAR))
    elif augment is not None:
        raise DataError(f"augment={augment!r}; use 'randaugment', 'autoaugment' or None")
    return v2.Compose([*steps, *normalize])
