"""Safe loading of real users' image files as 8-bit RGB.

``PIL.Image.open(p).convert("RGB")``, which torchvision's and timm's default loaders use, is wrong for
several kinds of file that users really have. It *clips* 16-bit images instead of scaling them (a
16-bit PNG comes out almost white), drops an alpha channel so that transparent pixels show whatever
colour they happen to store (often black), and turns PIL's errors for empty, truncated or non-image
files into tracebacks that don't say which file of a 100k-image folder is broken.

:func:`load_image` fixes those cases. Each failure becomes one :class:`~effnet.errors.DataError` line
that names the file and what to do, and each conversion is recorded in an :class:`ImageReport`, so
that a CLI can tell the user what was done to the picture.

Truncated files are errors. PIL's global ``ImageFile.LOAD_TRUNCATED_IMAGES`` is never set here; if a
caller sets it to True, PIL silently pads truncated images with grey, and that is then their choice.
"""

from __future__ import annotations

import os
import re
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from effnet.errors import DataError
from effnet.files import require_file

__all__ = ["ImageConversionWarning", "ImageReport", "check_image", "load_image", "load_image_with_report"]

# PIL raises any of these for a damaged or unsupported file, depending on the format plugin.
_PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError)
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
# Plain descriptions of the modes converted with PIL's own formulas (all exact for these modes).
_PLAIN_CONVERSIONS = {
    "1": "1-bit black and white (1) expanded to RGB",
    "L": "grayscale (L) replicated to 3 channels",
    "P": "palette (P) expanded to RGB",
    "CMYK": "CMYK converted to RGB with PIL's formula (no ICC colour management)",
    "YCbCr": "YCbCr converted to RGB",
    "RGBX": "padding byte of RGBX dropped",
    "HSV": "HSV converted to RGB",
}
_BOMB_SIZES = re.compile(r"\((\d+) pixels\) exceeds limit of (\d+) pixels")


class ImageConversionWarning(UserWarning):
    """An image was converted in a way that changes what the model sees (e.g. transparency removed)."""


@dataclass(frozen=True)
class ImageReport:
    """What a file held and what :func:`load_image` did to make it 8-bit RGB.

    Attributes:
        path: the file, as given.
        format: PIL's format name ("JPEG", "PNG", ...), or None when PIL does not say.
        mode: the PIL mode stored in the file ("RGB", "I;16", "CMYK", ...).
        size: (width, height) stored in the file, before any EXIF rotation.
        conversions: human-readable steps taken, in order; empty for a plain RGB file.
    """

    path: str
    format: str | None
    mode: str
    size: tuple[int, int]
    conversions: tuple[str, ...] = ()

    @property
    def converted(self) -> bool:
        """True when the pixels the model sees differ from a plain RGB decode of the file."""
        return bool(self.conversions)

    def describe(self) -> str:
        """One line for a CLI, e.g. ``a.png: PNG RGBA 64x48 -> RGB (alpha composited on white)``."""
        head = f"{self.path}: {self.format or 'image'} {self.mode} {self.size[0]}x{self.size[1]}"
        return f"{head} -> RGB ({'; '.join(self.conversions)})" if self.conversions else head


def load_image(path: str | os.PathLike[str], *, exif_transpose: bool = True) -> Image.Image:
    """Load an image file as an 8-bit RGB ``PIL.Image``; see :func:`load_image_with_report`."""
    return load_image_with_report(path, exif_transpose=exif_transpose)[0]


def load_image_with_report(
    path: str | os.PathLike[str], *, exif_transpose: bool = True
) -> tuple[Image.Image, ImageReport]:
    """Load an image file as 8-bit RGB and report the conversions done.

    Conversions: grayscale, 1-bit, palette, CMYK and YCbCr go through PIL's exact formulas. 16-bit
    images (``I;16``, and ``I`` holding 0..65535) are scaled with ``round(v / 257)``, so 65535 -> 255
    rather than clipped. Float images (``F``) in 0..1 are scaled by 255 and those in 0..255 kept.
    Transparency (alpha or a ``tRNS`` colour key) is composited on white, with an
    :class:`ImageConversionWarning`, because a model sees the colour stored under transparent pixels
    otherwise; a fully opaque alpha channel is dropped silently. Animated files give their first frame.

    Args:
        path: the image file.
        exif_transpose: apply the EXIF orientation tag, so that phone photos come out upright as
            every viewer shows them. ImageNet's own files carry almost no such tags.

    Returns:
        The RGB image (fully decoded, file closed) and its :class:`ImageReport`.

    Raises:
        DataError: the path is missing, a directory, an empty or non-image file, a truncated or
            corrupt image, above PIL's decompression-bomb limit, or in a mode that has no RGB meaning.
    """
    return _open_rgb(Path(path), exif_transpose=exif_transpose, draft=False, warn=True)


def check_image(path: str | os.PathLike[str]) -> ImageReport:
    """Decode a file fully, cheaply, and report it, raising DataError exactly as loading would.

    Data sets call this once per file to skip broken files up front rather than crash mid-epoch.
    JPEGs are decoded at 1/8 scale (``Image.draft``): that is several times faster, and still reads
    the whole compressed stream, so that a truncated file is still caught. No warning is issued;
    loading the file later does that.
    """
    return _open_rgb(Path(path), exif_transpose=False, draft=True, warn=False)[1]


def _open_rgb(
    path: Path, *, exif_transpose: bool, draft: bool | Callable[[tuple[int, int]], tuple[int, int]], warn: bool
) -> tuple[Image.Image, ImageReport]:
    """Open, decode and convert one file; the shared body of the public functions.

    ``draft``: False decodes at full size; True at the smallest JPEG scale (1/8); a function of the
    stored (width, height) giving a size decodes at the smallest of libjpeg's 1/1, 1/2, 1/4, 1/8
    scales that is at least that size in both sides (``Image.draft``: the downscale happens in the
    DCT domain, so most of the decode is skipped). Other formats ignore it. ``report.size`` is
    always the size stored in the file."""
    require_file(path, DataError, what="file", if_dir="not an image file; pass a file, or use it as a data set",
                 if_empty="copy it again from its source, or delete it")
    try:
        with warnings.catch_warnings():
            # Files between MAX_IMAGE_PIXELS and twice that only warn in PIL; a data loader should
            # refuse them as well, rather than let one file eat the memory of every worker.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                report = ImageReport(str(path), img.format, img.mode, img.size)
                steps: list[str] = []
                if getattr(img, "n_frames", 1) > 1 and img.format != "MPO":  # MPO: camera JPEG + preview
                    steps.append(f"first of {img.n_frames} frames used")
                if draft:
                    img.draft(img.mode, (1, 1) if draft is True else draft(img.size))
                img.load()
                if exif_transpose:
                    orientation = img.getexif().get(0x0112, 1)
                    if orientation not in (1, None):
                        img = ImageOps.exif_transpose(img)
                        steps.append(f"rotated/flipped upright per EXIF orientation {orientation}")
                rgb = _to_rgb(img, path, steps)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise DataError(_bomb_message(path, err)) from None
    except Image.UnidentifiedImageError:
        raise DataError(
            f"{path}: not an image file PIL can read (supported: JPEG, PNG, BMP, GIF, TIFF, WebP, ...); "
            "remove it from the data or convert it to PNG/JPEG"
        ) from None
    except DataError:
        raise
    except PermissionError:
        raise DataError(f"{path}: permission denied; make the file readable (chmod a+r) or copy it") from None
    except _PIL_ERRORS as err:
        raise DataError(
            f"{path}: truncated or corrupt image ({type(err).__name__}: {err}); "
            "copy the file again from its source, or delete it"
        ) from None
    report = ImageReport(report.path, report.format, report.mode, report.size, tuple(steps))
    if warn and any("composited" in step for step in steps):
        warnings.warn(f"{report.describe()}: transparent pixels now show white", ImageConversionWarning,
                      stacklevel=3)
    return rgb, report


def _bomb_message(path: Path, err: Exception) -> str:
    """Say how big the image is and what the limit is, since raising the limit is the usual fix."""
    match = _BOMB_SIZES.search(str(err))
    pixels, limit = (int(match[1]), int(match[2])) if match else ("?", Image.MAX_IMAGE_PIXELS)
    return (
        f"{path}: {pixels} pixels exceeds PIL's decompression-bomb limit of {limit} pixels; if you trust "
        "the file, downscale it or raise PIL.Image.MAX_IMAGE_PIXELS before loading"
    )


def _to_rgb(img: Image.Image, path: Path, steps: list[str]) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB, appending a description of each step to ``steps``."""
    mode = img.mode
    if mode in _ALPHA_MODES or "transparency" in img.info:
        return _flatten_alpha(img, steps)
    if mode == "RGB":
        return img
    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        gray = _high_depth_to_l(img, path)
        steps.append(f"{'16-bit' if mode != 'F' else 'float'} grayscale ({mode}) scaled to 8-bit "
                     "and replicated to 3 channels")
        return gray.convert("RGB")
    if mode not in _PLAIN_CONVERSIONS:
        raise DataError(f"{path}: PIL image mode {mode!r} has no defined RGB conversion here; "
                        "convert the file to an RGB PNG or JPEG first")
    steps.append(_PLAIN_CONVERSIONS[mode])
    return img.convert("RGB")


def _flatten_alpha(img: Image.Image, steps: list[str]) -> Image.Image:
    """Composite on white: the usual page background, and what a viewer shows the user."""
    rgba = img.convert("RGBA")
    low, _ = rgba.getchannel("A").getextrema()
    if low == 255:
        steps.append(f"fully opaque alpha channel ({img.mode}) dropped")
        return rgba.convert("RGB")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    steps.append(f"transparency ({img.mode}) composited on white")
    return Image.alpha_composite(white, rgba).convert("RGB")


def _high_depth_to_l(img: Image.Image, path: Path) -> Image.Image:
    """Scale 16-bit or float grayscale to 8-bit ``L`` instead of clipping it as ``convert`` does."""
    values = np.asarray(img)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if img.mode == "F":
        if low < 0 or high > 255:
            raise DataError(f"{path}: float image with values in [{low:g}, {high:g}]; expected 0..1 or "
                            "0..255, rescale it and save it as 8-bit PNG")
        scale = 255.0 if high <= 1.0 else 1.0
        return Image.fromarray(np.clip(np.rint(values * scale), 0, 255).astype(np.uint8))
    if low < 0 or high > 65535:
        raise DataError(f"{path}: 32-bit integer image with values in [{low:g}, {high:g}], outside 16-bit "
                        "0..65535; rescale it and save it as 8-bit or 16-bit PNG")
    wide = values.astype(np.uint32)
    # round(v * 255 / 65535) in integers, i.e. round(v / 257): 0 -> 0, 32768 -> 128, 65535 -> 255.
    return Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8))
