"""Preprocessing as a record (no torch): how pixels become a model's input, stored as data.

Pretrained weights are only right with the preprocessing they were trained with: EfficientNet-Lite
expects ``(x - 127) / 128``, torchvision's models ImageNet mean/std. A :class:`Preprocessing` value
records that choice (timm's ``PretrainedCfg`` idea), so that a checkpoint or a weights entry can
carry it and :func:`effnet.data.transforms.build_transform` can rebuild the exact pipeline. It lives
in the core so that checkpoints, weights and the converters read it without importing torchvision.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from effnet.errors import DataError

__all__ = ["IMAGENET_PREPROCESSING", "INCEPTION_PREPROCESSING", "INTERPOLATIONS", "Interpolation", "Preprocessing"]

Interpolation = Literal["bicubic", "bilinear"]
INTERPOLATIONS: tuple[str, ...] = ("bicubic", "bilinear")


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
        if self.interpolation not in INTERPOLATIONS:
            raise DataError(f"interpolation={self.interpolation!r}; use one of {sorted(INTERPOLATIONS)}")
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
