"""Data: safe image loading, class maps, data sets and preprocessing transforms.

Re-exports only; see the modules for the reasons behind each choice.
"""

from __future__ import annotations

from effnet.data.classmap import IMAGENET_SYNSETS_ENV, ClassMap, find_imagenet_synsets
from effnet.data.datasets import (
    BUILTIN_DATASETS,
    FASHION_MNIST_CLASSES,
    MNIST_DIR_ENV,
    ArrayImageDataset,
    ImageFolderDataset,
    fashion_mnist,
    get_dataset,
    mnist10k,
    sklearn_digits,
    stratified_split,
)
from effnet.data.images import (
    ImageConversionWarning,
    ImageReport,
    check_image,
    load_image,
    load_image_with_report,
)
from effnet.data.transforms import (
    IMAGENET_PREPROCESSING,
    INCEPTION_PREPROCESSING,
    SMALL_IMAGE_CROP_SCALE,
    Preprocessing,
    build_transform,
)

__all__ = [
    "BUILTIN_DATASETS",
    "FASHION_MNIST_CLASSES",
    "IMAGENET_PREPROCESSING",
    "IMAGENET_SYNSETS_ENV",
    "INCEPTION_PREPROCESSING",
    "MNIST_DIR_ENV",
    "SMALL_IMAGE_CROP_SCALE",
    "ArrayImageDataset",
    "ClassMap",
    "ImageConversionWarning",
    "ImageFolderDataset",
    "ImageReport",
    "Preprocessing",
    "build_transform",
    "check_image",
    "fashion_mnist",
    "find_imagenet_synsets",
    "get_dataset",
    "load_image",
    "load_image_with_report",
    "mnist10k",
    "sklearn_digits",
    "stratified_split",
]
