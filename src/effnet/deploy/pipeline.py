"""Classify many image files at the engine's speed: decode in worker processes, infer in batches.

The reference path (:func:`effnet.evaluate.predict`, :func:`effnet.evaluate.evaluate_folder`) decodes
and resizes every image in the calling process and then runs the eager model, so the model waits for
the decoder and the decoder for the model. Here the two overlap (docs/inference.md has the figures):

* worker processes (a torch ``DataLoader``) decode each file through the data layer's safe loader
  and :mod:`effnet.data.decode` (JPEG draft decoding, torchvision's uint8 resize) and hand over
  whole normalised batches; a file that cannot be read is named with its reason and the rest of its
  batch goes on;
* the calling process feeds the batches to an engine from
  :func:`effnet.deploy.inference.optimize_for_inference` (ONNX Runtime fp32 by default; bf16, int8, or
  the folded eager model when asked), verified on the first real batch before it is used. For int8
  the first ~100 images also calibrate the quantiser, so nothing is decoded twice.

Worker processes are shut down when the call returns, raises, or is interrupted (Ctrl-C).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from effnet.data.decode import crop_for_model, normalize_batch, open_for_model
from effnet.errors import DataError, EffnetError
from effnet.preprocessing import Preprocessing

__all__ = ["ClassifyResult", "FilePrediction", "Timing", "classify", "decoded_batches", "default_workers",
           "evaluate_folder_fast"]

Runner = Callable[[torch.Tensor], torch.Tensor]
_CALIBRATION_IMAGES = 100


@dataclass(frozen=True)
class FilePrediction:
    """Top classes of one file: ``top`` holds (class index, class name, probability), best first;
    ``conversions`` what the loader did to make it 8-bit RGB (empty for a plain RGB file)."""

    path: str
    top: tuple[tuple[int, str, float], ...]
    conversions: tuple[str, ...] = ()


@dataclass(frozen=True)
class Timing:
    """Where the time went. ``decode_s`` and ``preprocess_s`` are CPU-seconds (thread CPU time, which
    a busy machine does not inflate) summed over the worker processes, overlapping the model;
    ``model_s`` is the engine's wall time in this process; ``wall_s`` the whole call after the
    engine was built, ``build_s`` the engine build."""

    decode_s: float
    preprocess_s: float
    model_s: float
    wall_s: float
    build_s: float = 0.0


@dataclass(frozen=True)
class ClassifyResult:
    """What :func:`classify` returns: predictions in input order (unreadable files left out and
    listed in ``skipped`` as (path, reason)), the time split and how it ran."""

    predictions: tuple[FilePrediction, ...]
    skipped: tuple[tuple[str, str], ...]
    timing: Timing
    engine: str
    dtype: str
    batch_size: int
    workers: int
    draft: bool
    logits: torch.Tensor | None = field(default=None, repr=False, compare=False)

    @property
    def images_per_s(self) -> float:
        """Images classified per second of wall time (engine build excluded)."""
        return len(self.predictions) / self.timing.wall_s if self.timing.wall_s > 0 else float("nan")

    def summary(self) -> str:
        """The one-line summary the CLI prints: images, seconds, images/s, skipped files."""
        return (f"{len(self.predictions)} images in {self.timing.wall_s:.1f} s ({self.images_per_s:.1f} images/s; "
                f"{self.engine} {self.dtype}, batch {self.batch_size}, {self.workers} workers; engine built in "
                f"{self.timing.build_s:.1f} s), {len(self.skipped)} skipped")

    def to_dict(self) -> dict[str, Any]:
        return {"predictions": [{"image": p.path, "top": [{"index": i, "name": n, "probability": q}
                                                          for i, n, q in p.top]} for p in self.predictions],
                "skipped": [{"image": p, "reason": r} for p, r in self.skipped],
                "timing": vars(self.timing), "images_per_s": self.images_per_s, "engine": self.engine,
                "dtype": self.dtype, "batch_size": self.batch_size, "workers": self.workers, "draft": self.draft}


def default_workers() -> int:
    """Decode processes: half the cores (1 on 2 cores), at most 8.

    On the 2-core machines of docs/inference.md one worker beside the 2-thread engine was as fast as
    two or three, measured side by side twice (Lite0 fp32: 25.7 vs 21.9 vs 21.7 img/s, then 20.4 vs
    19.9; int8: 31.8 vs 31.1): the cores are shared either way, and a second worker only adds its
    memory. Above 2 cores this is a rule of thumb, not a measurement.
    """
    return max(1, min(8, (os.cpu_count() or 2) // 2))


class _Files(Dataset[dict[str, Any]]):
    """Index → decoded, cropped uint8 pixels, or the reason the file cannot be read."""

    def __init__(self, paths: Sequence[str], pre: Preprocessing, draft: bool) -> None:
        self.paths, self.pre, self.draft = list(paths), pre, draft

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        t0 = time.thread_time()
        try:
            img, report, full = open_for_model(self.paths[i], self.pre, draft=self.draft)
        except DataError as e:
            return {"i": i, "error": str(e).removeprefix(f"{self.paths[i]}: "), "decode": time.thread_time() - t0}
        t1 = time.thread_time()
        pixels = crop_for_model(img, full, self.pre)
        return {"i": i, "pixels": pixels, "conversions": report.conversions, "decode": t1 - t0,
                "pre": time.thread_time() - t1}


class _Collate:
    """Runs in the worker: good files → one normalised (N, 3, r, r) tensor, bad files → reasons."""

    def __init__(self, pre: Preprocessing) -> None:
        self.pre = pre

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        t = time.thread_time()
        good = [it for it in items if "pixels" in it]
        r = self.pre.resolution
        # Written straight into shared memory: handing the batch to the main process then copies nothing.
        x = torch.empty((len(good), 3, r, r))
        if good and torch.utils.data.get_worker_info() is not None:
            x.share_memory_()
        for j, it in enumerate(good):
            normalize_batch(it["pixels"][None], self.pre, out=x[j:j + 1].numpy())
        return {"index": [it["i"] for it in good], "conversions": [it["conversions"] for it in good], "x": x,
                "errors": [(it["i"], it["error"]) for it in items if "error" in it],
                "decode": sum(it["decode"] for it in items),
                "pre": sum(it.get("pre", 0.0) for it in items) + time.thread_time() - t}


def _loader(paths: Sequence[str], pre: Preprocessing, *, batch_size: int, workers: int, draft: bool) -> DataLoader:
    return DataLoader(_Files(paths, pre, draft), batch_size=batch_size, shuffle=False, num_workers=workers,
                      collate_fn=_Collate(pre), prefetch_factor=4 if workers else None)


@contextmanager
def decoded_batches(paths: Sequence[str | os.PathLike[str]], pre: Preprocessing, *, batch_size: int = 16,
                    workers: int | None = None, draft: bool = True) -> Iterator[Iterator[dict[str, Any]]]:
    """The decoding half of :func:`classify` for other consumers (``effnet cam``): batches as dicts
    with ``x`` (normalised tensor), ``index`` (positions in ``paths``), ``conversions`` and ``errors``
    ((position, reason) of unreadable files). The workers stop when the block exits, however it exits."""
    files = [os.fspath(p) for p in paths]
    n = default_workers() if workers is None else workers
    it = iter(_loader(files, pre, batch_size=batch_size, workers=min(n, -(-len(files) // batch_size)),
                      draft=draft))
    try:
        yield it
    finally:
        _shutdown(it)


def _shutdown(it: Any) -> None:
    """Stop the DataLoader's workers now rather than when the iterator is garbage-collected."""
    stop = getattr(it, "_shutdown_workers", None)
    if stop is not None:
        stop()


def classify(paths: Sequence[str | os.PathLike[str]], model: torch.nn.Module, *, batch_size: int = 16,
             workers: int | None = None, engine: str = "onnxruntime", dtype: str = "fp32", draft: bool = True,
             top: int = 5, names: Sequence[str] | None = None, preprocessing: Preprocessing | None = None,
             runner: Runner | None = None, calibration: torch.Tensor | None = None, keep_logits: bool = False,
             progress: bool = False, workdir: str | os.PathLike[str] | None = None) -> ClassifyResult:
    """Top-``top`` classes of every file in ``paths``, decoding in worker processes while the engine runs.

    Args:
        paths: image files (any format :func:`effnet.data.load_image` reads), classified in this order.
        model: an effnet classifier (with pretrained or checkpoint preprocessing); not modified.
        batch_size: images per engine call (16: the engine's best throughput per docs/inference.md).
        workers: decode processes (default :func:`default_workers`; 0 decodes in this process).
        engine, dtype: passed to :func:`effnet.deploy.inference.optimize_for_inference` (``"onnxruntime"``
            fp32 by default; ``"eager"`` is the folded PyTorch model; int8 runs in ONNX Runtime and
            calibrates on the first 100 readable images unless ``calibration`` is given). A model on
            a GPU runs eagerly there.
        draft: decode JPEGs at the smallest libjpeg scale that still covers the resize (see
            :mod:`effnet.data.decode`; docs/inference.md gives the top-1 agreement measured).
        top: classes per file.
        names: class names (default :func:`effnet.evaluate.class_names`).
        preprocessing: default :func:`effnet.weights.default_preprocessing` (what the weights expect).
        runner: an already-built engine (skips building one; benchmarks reuse theirs across runs).
        calibration: preprocessed images for int8.
        keep_logits: also return the (N, classes) logits of the classified files, in their order.
        progress: show a progress bar (images/s and ETA) on stderr.
        workdir: where ONNX files go (default: a temporary directory).

    Raises:
        EffnetError: bad arguments, or an engine that fails verification. Unreadable files are not
            errors: they are listed in ``skipped``.
    """
    from effnet.evaluate import class_names
    from effnet.weights import default_preprocessing

    files = [os.fspath(p) for p in paths]
    if not files:
        raise DataError("no image files to classify; pass files or folders holding images")
    if batch_size < 1 or top < 1 or (workers is not None and workers < 0):
        raise EffnetError(f"batch_size={batch_size}, top={top}, workers={workers}: need batch_size >= 1, "
                          "top >= 1 and workers >= 0")
    pre = preprocessing or default_preprocessing(model)  # type: ignore[arg-type]
    n_workers = min(default_workers() if workers is None else workers, -(-len(files) // batch_size))
    with decoded_batches(files, pre, batch_size=batch_size, workers=n_workers, draft=draft) as it:
        run = _Run(files, list(names) if names is not None else class_names(model), top, keep_logits)  # type: ignore[arg-type]
        return run.drive(it, model, runner, engine=engine, dtype=dtype, calibration=calibration, workdir=workdir,
                         progress=progress, settings=(batch_size, n_workers, draft))


class _Run:
    """The consuming side of :func:`classify`: engine calls, top-k, bookkeeping."""

    def __init__(self, files: list[str], names: list[str], top: int, keep_logits: bool) -> None:
        self.files, self.names, self.top, self.keep = files, names, top, keep_logits
        self.preds: list[FilePrediction] = []
        self.skipped: list[tuple[str, str]] = []
        self.logits: list[torch.Tensor] = []
        self.decode = self.pre = self.model = 0.0

    def drive(self, it: Any, model: torch.nn.Module, runner: Runner | None, *, engine: str, dtype: str,
              calibration: torch.Tensor | None, workdir: Any, progress: bool,
              settings: tuple[int, int, bool]) -> ClassifyResult:
        from effnet.progress import progress_bar

        head: list[dict[str, Any]] = []
        build = 0.0
        if runner is None:
            # Verify the engine on real images (and calibrate int8 on them): the first batches.
            need = _CALIBRATION_IMAGES if dtype == "int8" and calibration is None else 1
            for batch in it:
                head.append(batch)
                if sum(len(b["index"]) for b in head) >= need:
                    break
            t = time.perf_counter()
            runner = _build(model, head, engine=engine, dtype=dtype, calibration=calibration, workdir=workdir)
            build = time.perf_counter() - t
        start = time.perf_counter()
        with progress_bar(len(self.files), "classify", unit="img", enabled=progress, min_interval=2.0) as bar:
            bar.update(sum(len(b["index"]) + len(b["errors"]) for b in head))
            for batch in head:
                self._consume(batch, runner)
            for batch in it:
                self._consume(batch, runner)
                bar.update(len(batch["index"]) + len(batch["errors"]))
        timing = Timing(self.decode, self.pre, self.model, time.perf_counter() - start, build)
        return ClassifyResult(tuple(self.preds), tuple(self.skipped), timing, getattr(runner, "engine", engine),
                              getattr(runner, "dtype", dtype), *settings,
                              logits=torch.cat(self.logits) if self.keep and self.logits else None)

    def _consume(self, batch: dict[str, Any], runner: Runner) -> None:
        self.decode += batch["decode"]
        self.pre += batch["pre"]
        self.skipped += [(self.files[i], reason) for i, reason in batch["errors"]]
        if not batch["index"]:
            return
        t = time.perf_counter()
        logits = runner(batch["x"]).float()
        self.model += time.perf_counter() - t
        if self.keep:
            self.logits.append(logits)
        probs, idx = _top_k(logits.numpy(), self.top)
        for i, conv, p, c in zip(batch["index"], batch["conversions"], probs.tolist(), idx.tolist(), strict=True):
            self.preds.append(FilePrediction(self.files[i], tuple((k, self.names[k], q)
                                                                  for k, q in zip(c, p, strict=True)), conv))


def _top_k(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities and indices of the ``k`` best classes per row, best first.

    In NumPy, not torch: a torch op in this process wakes torch's OpenMP threads, whose spin-wait
    then takes CPU from the decode workers (measured: 6 ms of CPU per 16x1000 softmax on 2 cores)."""
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    p = z / z.sum(axis=1, keepdims=True)
    k = min(k, p.shape[1])
    idx = np.argpartition(-p, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(p, idx, axis=1), axis=1, kind="stable")
    idx = np.take_along_axis(idx, order, axis=1)
    return np.take_along_axis(p, idx, axis=1), idx


def _build(model: torch.nn.Module, head: list[dict[str, Any]], *, engine: str, dtype: str,
           calibration: torch.Tensor | None, workdir: Any) -> Runner:
    """The engine, verified on the first real images (none readable: no engine is needed)."""
    from effnet.deploy.inference import optimize_for_inference

    good = [b["x"] for b in head if b["index"]]
    if not good:
        return lambda x: torch.empty(0)
    x = torch.cat(good)
    device = next(model.parameters()).device
    if device.type != "cpu":  # a GPU: the eager model where it is (engines here are CPU engines)
        model.eval()

        def on_device(batch: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return model(batch.to(device, memory_format=torch.channels_last)).float().cpu()
        return on_device
    if dtype == "int8" and calibration is None:
        calibration = x[:_CALIBRATION_IMAGES]
    return optimize_for_inference(model, example=x[:16] if len(x) > 1 else x.repeat(2, 1, 1, 1), dtype=dtype,
                                  engine=engine, calibration=calibration, workdir=workdir)


def evaluate_folder_fast(model: torch.nn.Module, root: str | os.PathLike[str], *, class_map: Any = None,
                         **options: Any) -> tuple[Any, ClassifyResult]:
    """:func:`effnet.evaluate.evaluate_folder` through :func:`classify`: the same
    :class:`~effnet.evaluate.EvalResult` (unreadable files skipped and named), and the run's timing.

    ``options`` go to :func:`classify` (batch_size, workers, engine, dtype, draft, progress, ...)."""
    from effnet.data import ImageFolderDataset
    from effnet.evaluate import _check_classes, class_names, folder_result

    _check_classes(model, class_map)  # type: ignore[arg-type]
    # verify=False: each file is decoded once, by the workers, and a bad one is skipped there.
    dataset = ImageFolderDataset(root, class_map, verify=False)
    _check_classes(model, class_map, len(dataset.folders))  # type: ignore[arg-type]
    result = classify([p for p, _ in dataset.samples], model, keep_logits=True, **{"top": 1, **options})
    bad = {p for p, _ in result.skipped}
    dataset.samples = dataset.imgs = [s for s in dataset.samples if s[0] not in bad]
    dataset.targets = [t for _, t in dataset.samples]
    logits = result.logits if result.logits is not None else torch.empty(0, model.num_classes)  # type: ignore[arg-type]
    return folder_result(dataset, logits, class_names(model),  # type: ignore[arg-type]
                         skipped=[*dataset.skipped, *result.skipped]), result
