"""The pipelined path behind ``effnet predict``, ``effnet eval`` (folders) and ``effnet cam``: options,
file lists, CSV output and the summary line (:mod:`effnet.deploy.pipeline` does the work).

Results go to stdout (text, ``--json``) or a file (``--csv``); notes, the progress bar and the summary
line (images, seconds, images/s, skipped files) go to stderr, so that piped output stays clean.
"""

from __future__ import annotations

import argparse
import csv
import glob
import os
import sys
from pathlib import Path
from typing import Any

from effnet.cli.preflight import IMAGEFOLDER_SUFFIXES
from effnet.errors import EffnetError

__all__ = ["AUTO_ORT_MIN_FILES", "AUTO_ORT_MIN_FILES_CACHED", "add_pipeline_args", "all_skipped_error", "engine_for",
           "expand_images", "pipeline_options", "print_run_notes", "write_csv"]

# "--engine auto" runs ONNX Runtime instead of the folded eager model for at least this many files,
# 300 without a cached engine file, 50 with one (effnet.deploy.engine_cache): the smallest round counts
# at which the whole command finished sooner in every measure of two runs of benchmarks/engine_cache.py
# (docs/inference.md, "The engine cache": Lite0, fresh `effnet predict` processes on 20 and 100
# ImageNet photos, 2 cores at load 4.5-6.1). With each command's wall and CPU time fitted as
# a + b·files, ONNX Runtime broke even with eager at 18-48 files with the file cached and at 135-296
# without it (the export). A cold run also fills the cache for the next one.
AUTO_ORT_MIN_FILES = 300
AUTO_ORT_MIN_FILES_CACHED = 50
_IMAGE_SUFFIXES = (*IMAGEFOLDER_SUFFIXES, ".gif")  # what ImageFolder reads, plus GIF for predict and cam


def add_pipeline_args(p: argparse.ArgumentParser, *, default_progress: bool = True) -> None:
    """The pipeline's options, shared by predict, eval and cam."""
    g = p.add_argument_group("pipelined inference (docs/inference.md)")
    g.add_argument("--batch-size", type=int, help="images per engine call (16; the reference path: 4 on CPU)")
    g.add_argument("--workers", type=int, help="decode processes (default: half the cores, 1 on 2 cores; 0: none)")
    g.add_argument("--engine", default="auto", choices=("auto", "onnxruntime", "eager", "compile"),
                   help=f"auto: ONNX Runtime for >= {AUTO_ORT_MIN_FILES} files ({AUTO_ORT_MIN_FILES_CACHED} when "
                   "its file is in the engine cache), the folded eager model below")
    g.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "int8"),
                   help="int8 (ONNX Runtime, calibrated on the first 100 images) or bf16 (eager)")
    g.add_argument("--no-draft", dest="draft", action="store_false",
                   help="decode JPEGs at full size (default: libjpeg's reduced scale when it covers the resize)")
    g.add_argument("--no-pipeline", action="store_true",
                   help="the reference path instead: eager model, images decoded in this process (debugging)")
    g.add_argument("--csv", metavar="FILE", help="write file, top-k class indices, names and probabilities")
    g.set_defaults(progress=default_progress)


def expand_images(items: list[str]) -> list[str]:
    """Files as given, folders as the image files under them (sorted, hidden files left out), and
    quoted glob patterns expanded. A path that does not exist stays, so that it is reported as skipped."""
    out: list[str] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(str(f) for f in path.rglob("*") if f.suffix.lower() in _IMAGE_SUFFIXES and f.is_file()
                           and not any(part.startswith(".") for part in f.relative_to(path).parts))
            if not found:
                raise EffnetError(f"{item}: no image files ({', '.join(_IMAGE_SUFFIXES)}) in this folder")
            out += found
        elif not path.exists() and glob.has_magic(item):
            matches = sorted(glob.glob(os.path.expanduser(item), recursive=True))
            if not matches:
                raise EffnetError(f"{item}: the pattern matches no file")
            out += matches
        else:
            out.append(str(path))
    return out


def engine_for(args: argparse.Namespace, files: int, *, cached: bool = False) -> str:
    """``--engine auto`` resolved for ``files`` images (int8 runs in ONNX Runtime, bf16 eagerly);
    ``cached``: the engine cache holds this model's fp32 file, so ONNX Runtime pays off sooner."""
    if args.engine != "auto":
        return str(args.engine)
    if args.dtype == "int8":
        return "onnxruntime"
    if args.dtype == "bf16":
        return "eager"
    return "onnxruntime" if files >= (AUTO_ORT_MIN_FILES_CACHED if cached else AUTO_ORT_MIN_FILES) else "eager"


def _engine_cached(args: argparse.Namespace, files: int, model: Any) -> bool:
    """Whether ``auto`` should look in the engine cache: only when its answer changes the engine."""
    if model is None or args.engine != "auto" or args.dtype != "fp32" \
            or not AUTO_ORT_MIN_FILES_CACHED <= files < AUTO_ORT_MIN_FILES:
        return False
    from effnet.deploy.engine_cache import is_cached
    from effnet.weights import default_preprocessing

    r = default_preprocessing(model).resolution
    return is_cached(model, (1, 3, r, r), "fp32")


def pipeline_options(args: argparse.Namespace, files: int, model: Any = None) -> dict[str, Any]:
    """Keyword arguments for :func:`effnet.deploy.pipeline.classify` from the parsed options
    (``model``: to let ``--engine auto`` take a cached ONNX Runtime engine for fewer files)."""
    if args.batch_size is not None and args.batch_size < 1:
        raise EffnetError(f"--batch-size {args.batch_size} must be >= 1")
    if args.workers is not None and args.workers < 0:
        raise EffnetError(f"--workers {args.workers} must be >= 0")
    batch = args.batch_size or 16
    engine = engine_for(args, files, cached=_engine_cached(args, files, model))
    return {"batch_size": batch, "workers": args.workers, "engine": engine, "dtype": args.dtype,
            "draft": args.draft, "progress": bool(args.progress) and files > batch}


def print_run_notes(result: Any) -> None:
    """Stderr: one note per converted image, one per skipped file, then the summary line."""
    for p in result.predictions:
        if p.conversions:
            print(f"effnet: note: {p.path} -> RGB ({'; '.join(p.conversions)})", file=sys.stderr)
    for path, reason in result.skipped:
        print(f"effnet: skipped {path}: {reason}", file=sys.stderr)
    print(result.summary(), file=sys.stderr)


def all_skipped_error(skipped: list[tuple[str, str]] | tuple[tuple[str, str], ...]) -> EffnetError:
    """Nothing readable: one line naming the file(s) and why."""
    if len(skipped) == 1:
        return EffnetError(f"{skipped[0][0]}: {skipped[0][1]}")
    named = "; ".join(f"{p} ({r})" for p, r in skipped[:3])
    more = " ..." if len(skipped) > 3 else ""
    return EffnetError(f"none of the {len(skipped)} files could be read: {named}{more}")


def write_csv(path: str, predictions: Any) -> None:
    """One row per file: ``file``, then ``index_k``, ``name_k``, ``probability_k`` for k = 1..top."""
    preds = list(predictions)
    k = max((len(p.top) for p in preds), default=0)
    header = ["file"] + [f"{c}_{i}" for i in range(1, k + 1) for c in ("index", "name", "probability")]
    try:
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            for p in preds:
                w.writerow([p.path] + [v for i, n, q in p.top for v in (i, n, f"{q:.6f}")])
    except OSError as e:
        raise EffnetError(f"--csv {path}: cannot write ({e.strerror}); pick a writable path") from None
