"""Decode an image file straight into a model's input, doing only the work the input needs.

The reference eval pipeline (:func:`effnet.data.build_transform`: resize the shorter side to
``int(r / crop_pct)`` with PIL, center-crop ``r``, normalise) decodes the whole file and resizes the
whole picture, then throws the border away. :func:`decode_for_model` computes the same pixels with
less work, in two steps:

* **Only the crop's columns are resized.** ``PIL.Image.resize(size, box=...)`` samples output
  column ``i`` of the box at source position ``box0 + (i + 0.5) · scale`` with the filter widened by
  ``scale``, the same position and filter as column ``left + i`` of the full resize (Pillow
  ``src/libImaging/Resample.c``, ``precompute_coeffs``), so the columns come out equal to
  resize-then-crop (tested on real photos) while the resampling of the cropped-away columns is
  skipped. Rows are resized in full and cropped after: a box that also cuts rows changes some
  pixels by up to 15 levels in Pillow 13 (the vertical pass of a boxed resize is not the same
  computation), so it is not used.
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
from pathlib import Path

import numpy as np
from PIL import Image

from effnet.data.images import ImageReport, _open_rgb
from effnet.preprocessing import Preprocessing

__all__ = ["DRAFT_MARGIN", "crop_box", "crop_for_model", "decode_for_model", "draft_request", "normalize_batch",
           "open_for_model", "resized_size"]

# The draft leaves at least this many times the resized size (measured in docs/inference.md).
DRAFT_MARGIN = 2.0
_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


def resized_size(size: tuple[int, int], shorter: int) -> tuple[int, int]:
    """(width, height) after resizing the shorter side of ``size`` to ``shorter`` with the aspect kept,
    truncated as torchvision's ``Resize(int)`` does (``torchvision/transforms/v2/functional/_geometry.py``,
    ``_compute_resized_output_size``)."""
    w, h = size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(shorter * long / short)
    return (shorter, new_long) if w <= h else (new_long, shorter)


def crop_box(size: tuple[int, int], pre: Preprocessing) -> tuple[tuple[int, int], tuple[float, float, float, float]]:
    """The eval pipeline's geometry for a picture of ``size``: the resized size and the center crop's
    box mapped back into the picture's own pixel coordinates (floats; PIL accepts them)."""
    w, h = size
    rw, rh = resized_size(size, int(pre.resolution / pre.crop_pct))
    r = pre.resolution
    # torchvision's CenterCrop anchor (_center_crop_compute_crop_anchor); a picture smaller than the
    # crop is padded there, which the resize to >= r never leaves to happen.
    top, left = round((rh - r) / 2.0), round((rw - r) / 2.0)
    sx, sy = w / rw, h / rh
    return (rw, rh), (left * sx, top * sy, (left + r) * sx, (top + r) * sy)


def draft_request(size: tuple[int, int], pre: Preprocessing, *, margin: float = DRAFT_MARGIN) -> tuple[int, int]:
    """The (width, height) to ask ``Image.draft`` for: ``margin`` times the resize target, so that
    PIL's bicubic filter still does the last ≥ ``margin``× of the downscale (libjpeg's DCT scaling
    alone, ``margin=1``, flipped 2 of 100 top-1 predictions on camera-sized photos; see
    docs/inference.md)."""
    (rw, rh), _ = crop_box(size, pre)
    return max(1, math.ceil(rw * margin)), max(1, math.ceil(rh * margin))


def decode_for_model(path: str | os.PathLike[str], pre: Preprocessing, *,
                     draft: bool = False) -> tuple[np.ndarray, ImageReport]:
    """One file → the ``(r, r, 3)`` uint8 center crop the model sees, and the load report.

    With ``draft=False`` the pixels equal ``build_transform(pre, train=False)``'s before its
    normalisation (to ±1 level: Pillow rounds the boxed resize's fixed-point weights from float32
    box coordinates); with ``draft=True`` large JPEGs are decoded at a reduced scale first.

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
    applied to ``img`` (``full`` itself, or a libjpeg draft of it)."""
    (rw, rh), box = crop_box(full, pre)
    r = pre.resolution
    if (rw, rh) == full:  # no resize in the reference path: a plain crop
        left, top = round(box[0]), round(box[1])
        return np.asarray(img.crop((left, top, left + r, top + r)), dtype=np.uint8)
    # libjpeg's scale s maps full-size x to x / s (its last block may be partial, so the ratio of
    # the sizes is not exactly s)
    f = 2.0 ** -round(math.log2(full[0] / img.width)) if img.size != full else 1.0
    columns = (box[0] * f, 0.0, min(box[2] * f, img.width), float(img.height))
    out = img.resize((r, rh), _FILTERS[pre.interpolation], box=columns)
    top = round((rh - r) / 2.0)
    return np.asarray(out, dtype=np.uint8)[top:top + r]


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
