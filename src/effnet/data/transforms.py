"""The torchvision pipelines that turn a :class:`~effnet.preprocessing.Preprocessing` record into
tensors: the exact eval resize/crop/normalise, and the training augmentations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torchvision.transforms import v2

from effnet.data.decode import MAX_LONG_SIDE
from effnet.errors import DataError
from effnet.preprocessing import IMAGENET_PREPROCESSING, INCEPTION_PREPROCESSING, Preprocessing

__all__ = [
    "IMAGENET_PREPROCESSING",
    "INCEPTION_PREPROCESSING",
    "SMALL_IMAGE_CROP_SCALE",
    "Preprocessing",
    "build_transform",
]

Augment = Literal["randaugment", "autoaugment"]
_INTERPOLATIONS = {"bicubic": v2.InterpolationMode.BICUBIC, "bilinear": v2.InterpolationMode.BILINEAR}

# RandomResizedCrop's lower area bound for 28 px sets such as MNIST. The ImageNet default (0.08) can
# keep a 8x8 px corner of a 28x28 digit, i.e. a crop with no digit in it but still labelled "7".
# 0.35 keeps at least ~60 % of the side, so that the object stays (mostly) in view.
SMALL_IMAGE_CROP_SCALE = (0.35, 1.0)


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
    TF reference and timm; the longer side is capped at :data:`effnet.data.decode.MAX_LONG_SIDE` times
    the shorter (aspect ratios beyond 1:64 only; the crop is then padded with black).
    Train: RandomResizedCrop(r, scale=crop_scale) + horizontal flip + AutoAugment or RandAugment
    (the paper trains B0-B7 with AutoAugment; RandAugment is its cheaper successor),
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
        # max_size: an extreme aspect ratio (a 3×30,000 strip) would otherwise resize to gigabytes
        return v2.Compose([v2.Resize(resize, interpolation=interpolation, antialias=True,
                                     max_size=MAX_LONG_SIDE * resize),
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
