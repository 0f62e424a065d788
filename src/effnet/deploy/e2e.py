"""``effnet bench --end-to-end DIR``: classifying a folder, file to prediction, against the peers.

Contenders, all in this process and timed in interleaved rounds by the one timer
(:func:`effnet.deploy.timing.interleaved_times`), each classifying the same files every round:

* ``timm eager + DataLoader``: what a timm user writes: ``resolve_data_config`` /
  ``create_transform`` on timm's own model, torchvision's ``ImageFolder``, a ``DataLoader`` with
  the same number of worker processes as effnet's pipeline, the eager model under ``no_grad``;
* ``effnet ORT engine + PIL DataLoader``: effnet's fp32 ONNX Runtime engine fed by the reference
  PIL pipeline (:func:`effnet.data.build_transform`) in the same kind of ``DataLoader``;
* ``effnet pipeline fp32`` / ``int8``: :func:`effnet.deploy.pipeline.classify` with those engines;
* ``engine only fp32`` / ``int8``: the same engines on already-decoded batches of the same images
  (the ceiling the pipeline is measured against).

The engines are built once, before timing. Each row reports images/s, where the time went, and
its ratio to the engine-only speed of its dtype at the same batch size.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from effnet.deploy.timing import interleaved_times
from effnet.errors import EffnetError

__all__ = ["E2ERow", "end_to_end"]


@dataclass
class E2ERow:
    """One contender: median seconds per pass over the folder, images/s, and the time split (seconds
    per pass, medians; decode and preprocess summed over worker processes where they run there)."""

    label: str
    images: int
    seconds: float
    images_per_s: float
    split: dict[str, float] = field(default_factory=dict)
    ratio_to_engine: float = float("nan")
    ratio_to_timm: float = float("nan")


def _timm_pass(model: torch.nn.Module, loader: DataLoader, split: dict[str, list[float]]) -> Callable[[], int]:
    def run() -> int:
        n, model_s, t0 = 0, 0.0, time.perf_counter()
        with torch.no_grad():
            for x, _ in loader:
                t = time.perf_counter()
                model(x)
                model_s += time.perf_counter() - t
                n += len(x)
        split["model"].append(model_s)
        split["waiting for data"].append(time.perf_counter() - t0 - model_s)
        return n
    return run


def _pipeline_pass(paths: list[str], model: torch.nn.Module, runner: Any, batch: int, workers: int,
                   split: dict[str, list[float]]) -> Callable[[], int]:
    from effnet.deploy.pipeline import classify

    def run() -> int:
        r = classify(paths, model, runner=runner, batch_size=batch, workers=workers)
        split["decode (workers)"].append(r.timing.decode_s)
        split["preprocess (workers)"].append(r.timing.preprocess_s)
        split["model"].append(r.timing.model_s)
        return len(r.predictions)
    return run


def _engine_pass(runner: Any, batches: list[torch.Tensor], split: dict[str, list[float]]) -> Callable[[], int]:
    def run() -> int:
        t = time.perf_counter()
        for x in batches:
            runner(x)
        split["model"].append(time.perf_counter() - t)
        return sum(len(x) for x in batches)
    return run


def _folder_loader(folder: Path, transform: Any, batch: int, workers: int, limit: int | None = None) -> DataLoader:
    from torch.utils.data import Subset
    from torchvision.datasets import ImageFolder

    data: Any = ImageFolder(str(folder), transform=transform)
    if limit is not None and limit < len(data):
        # an evenly spread subset, so that it holds the same mix of pictures as the whole folder
        data = Subset(data, [round(i * len(data) / limit) for i in range(limit)])
    return DataLoader(data, batch_size=batch, num_workers=workers, shuffle=False)


def end_to_end(model: torch.nn.Module, name: str, folder: str | Path, *, batch: int = 16, workers: int | None = None,
               rounds: int = 3, int8: bool = True, timm_peer: bool = True, peer_images: int | None = None,
               workdir: str | Path | None = None) -> list[E2ERow]:
    """Time every contender on every image of ``folder`` (``class/image`` layout), side by side.

    Args:
        model: the effnet model (pretrained: its preprocessing is used); ``name`` its catalogue name,
            which picks timm's counterpart (random weights: speed only).
        batch, workers: the batch size of every contender and the decode processes of every loader.
        rounds: interleaved passes over the folder per contender (medians reported).
        int8: include the int8 engine (calibrated on the folder's first 100 images).
        peer_images: the two DataLoader contenders classify only this many of the files (evenly
            spread; their images/s is what counts): on a loaded machine timm's eager pass over a
            1000-image folder takes many minutes.
    """
    from effnet.data import build_transform
    from effnet.deploy.bench import PEERS
    from effnet.deploy.pipeline import default_workers
    from effnet.weights import default_preprocessing

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise EffnetError(f"--end-to-end {folder}: not a folder; pass a folder of class folders of images")
    workers = default_workers() if workers is None else workers
    pre = default_preprocessing(model)  # type: ignore[arg-type]
    paths = [p for p, _ in _folder_loader(folder, None, batch, 0).dataset.samples]  # type: ignore[attr-defined]
    real = _decoded(paths[:max(batch, 100)], pre)
    engines = _engines(model, real, batch, int8=int8, workdir=workdir)
    batches = [real[i % len(real):i % len(real) + batch] for i in range(0, len(paths), batch)]
    batches = [b if len(b) == batch else real[:batch] for b in batches]
    labels: dict[str, dict[str, list[float]]] = {}
    calls: dict[str, Callable[[], int]] = {}

    def add(label: str, make: Callable[[dict[str, list[float]]], Callable[[], int]]) -> None:
        labels[label] = split = _splits()
        calls[label] = make(split)

    timm_name = PEERS.get(name, (None, None))[0]
    if timm_peer and timm_name is not None:
        import timm
        from timm.data import create_transform, resolve_data_config

        peer = timm.create_model(timm_name, pretrained=False).eval()
        tf = create_transform(**resolve_data_config({}, model=peer))
        add("timm eager + DataLoader",
            lambda s: _timm_pass(peer, _folder_loader(folder, tf, batch, workers, peer_images), s))
    fp32 = engines["fp32"]
    add("effnet ORT engine + PIL DataLoader",
        lambda s: _timm_pass(fp32, _folder_loader(folder, build_transform(pre, train=False), batch, workers,
                                                  peer_images), s))
    for dtype, runner in engines.items():
        add(f"effnet pipeline {dtype}", lambda s, r=runner: _pipeline_pass(paths, model, r, batch, workers, s))
        add(f"engine only {dtype}", lambda s, r=runner: _engine_pass(r, batches, s))
    counts: dict[str, int] = {}
    times = interleaved_times({k: (lambda k=k, fn=fn: counts.__setitem__(k, fn())) for k, fn in calls.items()},
                              rounds=rounds, warmup=0)
    return _rows(times, counts, labels)


def _engines(model: torch.nn.Module, real: torch.Tensor, batch: int, *, int8: bool, workdir: Any) -> dict[str, Any]:
    """The fp32 (and int8) ONNX Runtime engines, verified (int8 calibrated) on the folder's first pictures."""
    from effnet.deploy.inference import optimize_for_inference

    out = {"fp32": optimize_for_inference(model, example=real[:batch], engine="onnxruntime", workdir=workdir)}
    if int8:
        out["int8"] = optimize_for_inference(model, example=real[:batch], dtype="int8", engine="onnxruntime",
                                             calibration=real[:100], workdir=workdir)
    return out


def _splits() -> dict[str, list[float]]:
    from collections import defaultdict

    return defaultdict(list)


def _decoded(paths: list[str], pre: Any) -> torch.Tensor:
    from effnet.data import build_transform, load_image

    tf = build_transform(pre, train=False)
    return torch.stack([tf(load_image(p)) for p in paths])


def _rows(times: dict[str, list[float]], counts: dict[str, int],
          splits: dict[str, dict[str, list[float]]]) -> list[E2ERow]:
    rows = []
    for label, ts in times.items():
        sec = statistics.median(ts)
        rows.append(E2ERow(label, counts[label], sec, counts[label] / sec,
                           {k: statistics.median(v) for k, v in splits[label].items()}))
    by = {r.label: r for r in rows}
    timm = by.get("timm eager + DataLoader")
    for r in rows:
        dtype = "int8" if r.label.endswith("int8") else "fp32"
        engine = by.get(f"engine only {dtype}")
        r.ratio_to_engine = r.images_per_s / engine.images_per_s if engine else float("nan")
        r.ratio_to_timm = r.images_per_s / timm.images_per_s if timm else float("nan")
    return rows
