"""Decode an image file straight into a model's input, doing only the work the input needs.

The reference eval pipeline (:func:`effnet.data.build_transform`: resize the shorter side to
``int(r / crop_pct)`` with PIL, center-crop ``r``, normalise) resizes with Pillow's resampler.
:func:`decode_for_model` computes the same pixels with less work, in two steps:

* **The resize runs in torchvision's uint8 kernel** (``torchvision.transforms.v2.functional.resize``
  on a channels-last uint8 tensor, antialiased, the same bicubic/bilinear filter and support as
  Pillow's ``precompute_coeffs``): PyTorch vectorises it for 8-bit channels-last images
  (``aten/src/ATen/native/cpu/UpSampleKernelAVXAntialias.h``), Pillow 13 does not. On the 100
  photos of ``shared/data/imagenet-sample-100`` (0.19 MP, resize to 256, crop 224, bicubic) it took
  0.52 ms of CPU per image against 1.60 ms for Pillow's resize of the crop's columns, and its pixels
  differ from Pillow's by at most 2 levels of 255 (mean 0.0035 levels; 5 pixels in 10 million differ
  by more than 1) — docs/inference.md. torch views PIL's array channels-last, without a copy.
* **JPEGs are decoded at a reduced scale** when ``draft`` is on: ``Image.draft`` asks libjpeg for the
  smallest of its 1/2, 1/4, 1/8 DCT-domain scales that still leaves the shorter side at least twice
  the resize target (:data:`DRAFT_MARGIN`), so a 12 MP photo decodes at about the cost of a
  0.75 MP one. The DCT downscale is a different low-pass filter from PIL's bicubic, so these
  pixels differ slightly from the reference; docs/inference.md gives the measured top-1
  agreement. ImageNet-sized photos (shorter side < 1024 px for a 256 px target) are never
  drafted: no scale leaves them large enough.

Files go through :func:`effnet.data.images.load_image_with_report`'s checks and conversions
(empty, truncated, corrupt, decompression bombs, CMYK, 16-bit, alpha, EXIF orientation).
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2.functional import InterpolationMode, center_crop, resize

from effnet.data.images import ImageReport, _open_rgb
from effnet.preprocessing import Preprocessing

__all__ = ["DRAFT_MARGIN", "MAX_LONG_SIDE", "crop_for_model", "decode_for_model", "draft_request", "eval_size",
           "normalize_batch", "open_for_model", "resized_size"]

# The draft leaves at least this many times the resized size (measured in docs/inference.md).
DRAFT_MARGIN = 2.0
# The eval resize caps the longer side at this many times the shorter one (torchvision's ``max_size``):
# without a cap a 3×30,000 strip resized to a 256 px shorter side is 256×2,560,000 pixels (2 GB), and
# photos (up to 1:4 panoramas) are nowhere near it.
MAX_LONG_SIDE = 64
_FILTERS = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR}


def resized_size(size: tuple[int, int], shorter: int) -> tuple[int, int]:
    """(width, height) after resizing the shorter side of ``size`` to ``shorter`` with the aspect kept,
    the longer side capped at :data:`MAX_LONG_SIDE` × ``shorter``, truncated as torchvision's
    ``Resize(int, max_size=...)`` does (``torchvision/transforms/functional.py``,
    ``_compute_resized_output_size``)."""
    w, h = size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = shorter, int(shorter * long / short)
    cap = MAX_LONG_SIDE * shorter
    if new_long > cap:  # an extreme aspect ratio: the longer side is capped, the shorter one shrinks
        new_short, new_long = max(1, int(cap * new_short / new_long)), cap
    return (new_short, new_long) if w <= h else (new_long, new_short)


def eval_size(size: tuple[int, int], pre: Preprocessing) -> tuple[int, int]:
    """The (width, height) the eval pipeline resizes a picture of ``size`` to before its center crop:
    the shorter side to ``int(resolution / crop_pct)``, as :func:`effnet.data.build_transform` does."""
    return resized_size(size, int(pre.resolution / pre.crop_pct))


def draft_request(size: tuple[int, int], pre: Preprocessing, *, margin: float = DRAFT_MARGIN) -> tuple[int, int]:
    """The (width, height) to ask ``Image.draft`` for: ``margin`` times the resize target, so that
    the resize filter still does the last ≥ ``margin``× of the downscale (libjpeg's DCT scaling
    alone, ``margin=1``, flipped 2 of 100 top-1 predictions on camera-sized photos; see
    docs/inference.md)."""
    rw, rh = eval_size(size, pre)
    return max(1, math.ceil(rw * margin)), max(1, math.ceil(rh * margin))


def decode_for_model(path: str | os.PathLike[str], pre: Preprocessing, *,
                     draft: bool = False) -> tuple[np.ndarray, ImageReport]:
    """One file → the ``(r, r, 3)`` uint8 center crop the model sees, and the load report.

    With ``draft=False`` the pixels equal ``build_transform(pre, train=False)``'s before its
    normalisation to within 2 levels of 255 (Pillow's and torchvision's 8-bit kernels round their
    fixed-point filter weights differently); with ``draft=True`` large JPEGs are decoded at a reduced scale first.

    Raises:
        DataError: the file cannot be read as an image (see :func:`effnet.data.load_image_with_report`).
    """
    img, report, full = open_for_model(path, pre, draft=draft)
    return crop_for_model(img, full, pre), report


def open_for_model(path: str | os.PathLike[str], pre: Preprocessing, *,
                   draft: bool = False) -> tuple[Image.Image, ImageReport, tuple[int, int]]:
    """The decode half of :func:`decode_for_model`: the RGB picture (upright; drafted if asked and
    possible), its report, and the upright full-resolution size the geometry is computed from."""
    img, report = _open_rgb(Path(path), exif_transpose=True, warn=False,
                            draft=(lambda size: draft_request(size, pre)) if draft else False)
    drafted = sorted(img.size) != sorted(report.size)
    return img, report, (_upright(report.size, img.size) if drafted else img.size)


def crop_for_model(img: Image.Image, full: tuple[int, int], pre: Preprocessing) -> np.ndarray:
    """The resize half of :func:`decode_for_model`: the eval geometry of a ``full``-sized picture
    applied to ``img`` (``full`` itself, or a libjpeg draft of it), as ``(r, r, 3)`` uint8.

    Geometry as in :func:`effnet.data.build_transform`'s eval pipeline, extreme aspect ratios
    included: the longer side is capped (:data:`MAX_LONG_SIDE`), and a shorter side that ends up
    below the crop is padded with black by torchvision's ``center_crop``, as the reference does."""
    rw, rh = eval_size(full, pre)
    r = pre.resolution
    with warnings.catch_warnings():
        # PIL's array is read-only and torch warns about viewing it; nothing here writes to it.
        warnings.simplefilter("ignore", UserWarning)
        x = torch.from_numpy(np.asarray(img, dtype=np.uint8)).permute(2, 0, 1)  # channels-last view
    if img.size != (rw, rh):  # a drafted picture is resized to the full picture's resized size
        x = resize(x, [rh, rw], interpolation=_FILTERS[pre.interpolation], antialias=True)
    return np.ascontiguousarray(center_crop(x, [r, r]).permute(1, 2, 0).numpy())


def _upright(stored: tuple[int, int], decoded: tuple[int, int]) -> tuple[int, int]:
    """The full-resolution size in the decoded picture's orientation (EXIF may have swapped w and h)."""
    w, h = stored
    same = abs(decoded[0] / decoded[1] - w / h) <= abs(decoded[0] / decoded[1] - h / w)
    return (w, h) if same else (h, w)


def normalize_batch(pixels: np.ndarray, pre: Preprocessing, *, out: np.ndarray | None = None) -> np.ndarray:
    """``(N, r, r, 3)`` uint8 → ``(N, 3, r, r)`` float32 ``(x / 255 − mean) / std``.

    Through a 256-entry table per channel (the values of torchvision's ``ToDtype(scale=True)`` then
    ``Normalize`` for every 8-bit level, computed in float32 as they are): one gather per channel
    instead of four passes of float arithmetic, a quarter of the decode worker's time otherwise.
    ``out``: a float32 (N, 3, r, r) array to write into (e.g. shared memory, saving a copy).
    """
    table = _normalize_table(pre.mean, pre.std)
    n, h, w, _ = pixels.shape
    out = np.empty((n, 3, h, w), np.float32) if out is None else out
    for c in range(3):
        np.take(table[c], pixels[..., c], out=out[:, c])
    return out


@functools.lru_cache(maxsize=8)
def _normalize_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    levels = np.arange(256, dtype=np.float32) * np.float32(1 / 255)
    return np.stack([(levels - np.float32(m)) / np.float32(s) for m, s in zip(mean, std, strict=True)])
