"""Checks and output locations that need no torch, run before a command loads it.

Loading torch takes seconds (7–12 s on a busy 2-core machine), so a mistyped path should fail
before that: :func:`check_inputs` looks at every path-like argument a command received. The output
rules of ``export`` and ``cam`` live here too, because they are decided from paths alone:
``--out`` names a folder for every command (as ``train --out`` always has), and ``cam`` never writes
into an ImageFolder tree it reads from (a later ``eval`` of that tree would read its PNG as an image).
"""

from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

from effnet.errors import EffnetError
from effnet.paths import output_dir, output_file

__all__ = ["BUILTIN_DATA", "IMAGEFOLDER_SUFFIXES", "cam_outputs", "check_inputs", "export_prefix"]

# effnet.data.BUILTIN_DATASETS, repeated here because effnet.data imports torch; tests/test_firstrun.py
# checks that the two lists agree.
BUILTIN_DATA = ("fashion-mnist", "mnist", "digits")

# argument → what it must name (a file, a folder or either) and how to fix a miss.
_FILES = {"checkpoint": "--checkpoint", "init_checkpoint": "--init-checkpoint", "config": "--config",
          "coefficients": "--coefficients", "image": "IMAGE", "input": "IN"}
_FOLDERS = {"data_dir": "--data-dir", "calibration": "--calibration"}


def _missing(value: str, flag: str, kind: str) -> EffnetError:
    return EffnetError(f"{flag} {value!r}: {kind} not found; check the path (relative paths start at {Path.cwd()})")


def check_inputs(args: argparse.Namespace) -> None:
    """Fail with one line naming the argument when a path the command will read does not exist."""
    for name, flag in _FILES.items():
        value = getattr(args, name, None)
        if isinstance(value, str) and not Path(value).expanduser().is_file():
            raise _missing(value, flag, "file")
    for name, flag in _FOLDERS.items():
        value = getattr(args, name, None)
        if isinstance(value, str) and not Path(value).expanduser().is_dir():
            raise _missing(value, flag, "folder")
    images = getattr(args, "images", None) or ()
    # Files, folders or glob patterns; a missing one among others is reported as skipped by the
    # pipeline, but when none can exist there is nothing to do, so fail before torch loads.
    if images and not any(Path(i).expanduser().exists() or glob.has_magic(i) for i in images):
        raise _missing(images[0], "IMAGE", "file")
    data = getattr(args, "data", None)
    if isinstance(data, str) and data.strip().lower() not in BUILTIN_DATA and not Path(data).expanduser().is_dir():
        raise EffnetError(f"--data {data!r}: no such folder; pass a folder of class folders or one of "
                          f"{', '.join(BUILTIN_DATA)}")
    class_map = getattr(args, "class_map", None)
    if isinstance(class_map, str) and class_map != "imagenet" and not Path(class_map).expanduser().is_file():
        raise EffnetError(f"--class-map {class_map!r}: use 'imagenet' or an existing 'id name' file")


def export_prefix(out: str, stem: str) -> Path:
    """Files of ``effnet export`` are ``OUT/STEM.onnx`` etc.; the folder is created.

    The older form, ``--out runs/b0.onnx`` (a path with an export suffix), still names the files
    ``runs/b0.*`` and prints a note.
    """
    path = Path(out).expanduser()
    if path.suffix in (".onnx", ".pt2"):
        print(f"effnet: note: --out {out} names a file; --out takes a folder now (files are named after the "
              f"model inside it); writing {path.with_suffix('')}.*", file=sys.stderr)
        output_dir(path.parent)
        return path.with_suffix("")
    if path.exists() and not path.is_dir():
        raise EffnetError(f"--out {out!r} is a file; give a folder for the exported files")
    return output_dir(path) / stem  # created and probed for writing before the model is built


# torchvision.datasets.folder.IMG_EXTENSIONS, the files an ImageFolder reads.
IMAGEFOLDER_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _holds_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGEFOLDER_SUFFIXES for p in folder.iterdir() if p.is_file())


def _imagefolder_root(image: Path) -> Path | None:
    """The root of the ImageFolder tree ``image`` belongs to, or None when it is not in one.

    The layout ``eval`` and ``train`` read (ROOT/CLASS/IMAGE, torchvision's ImageFolder): the image's
    folder holds no sub-folders, and its parent holds at least two folders, each with images.
    """
    cls = image.parent
    root = cls.parent
    if cls == root or any(p.is_dir() for p in cls.iterdir()):
        return None
    classes = [p for p in root.iterdir() if p.is_dir()]
    return root if len(classes) >= 2 and all(_holds_images(c) for c in classes) else None


def cam_outputs(image: str, out: str | None, method: str) -> tuple[Path, Path]:
    """Where ``effnet cam`` writes its PNG and .npy: ``--out`` (a folder, created) or the current folder,
    named ``IMAGE-STEM.METHOD.png``; never inside the ImageFolder tree the image comes from."""
    src = Path(image).expanduser().resolve()
    folder = Path(out).expanduser() if out else Path.cwd()
    png = folder if folder.suffix == ".png" else folder / f"{src.stem}.{method}.png"  # a .png is taken as given
    root = _imagefolder_root(src)
    target = png.parent.resolve()
    if root is not None and target != root and target.is_relative_to(root):
        raise EffnetError(f"{target} is inside the image folder {root} that {src.name} comes from; a PNG there "
                          "would be read as an image by `effnet eval`/`train`. Pass --out OTHER_FOLDER")
    output_file(png, "--out", create_parent=True)  # created, and probed for writing, before any work
    return png, png.with_suffix(".npy")
