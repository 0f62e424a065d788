"""CLI commands that run trained models: ``eval``, ``predict``, ``cam`` and ``convert``.

Kept apart from :mod:`effnet.cli.app` (which needs no torch for its scaling commands) and wired in by
:func:`add_commands`. Torch and the data layer are imported inside the commands, so ``effnet models``
stays fast. Every user error is an :class:`~effnet.errors.EffnetError`: one line, exit code 2.
Conversions of unusual images (grayscale, CMYK, 16-bit, transparency) are reported as one
``effnet: note:`` line each on stderr, so the user knows what the model saw.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from effnet.cli.classify import (
    add_pipeline_args,
    all_skipped_error,
    expand_images,
    pipeline_options,
    print_run_notes,
    write_csv,
)
from effnet.errors import EffnetError
from effnet.paths import output_file

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from effnet.model import ConvNet

__all__ = ["add_commands"]


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and weights")
    g.add_argument("--model", help="model name, e.g. efficientnet_lite0 (optional with --checkpoint)")
    w = g.add_mutually_exclusive_group()
    w.add_argument("--pretrained", action="store_true", help="offline ImageNet weights (efficientnet_lite0/1/2)")
    w.add_argument("--checkpoint", metavar="FILE", help="an effnet .safetensors checkpoint")


def _load_model(args: argparse.Namespace) -> ConvNet:
    """``--pretrained`` with ``--model``, or ``--checkpoint`` (into ``--model`` when given, checked strictly)."""
    from effnet.checkpoint import load_model, model_from_metadata
    from effnet.registry import create_model

    if args.pretrained:
        if not args.model:
            raise EffnetError("--pretrained needs --model NAME (e.g. --model efficientnet_lite0)")
        return create_model(args.model, pretrained=True)
    if not args.checkpoint:
        raise EffnetError("give --pretrained or --checkpoint FILE: an untrained model's predictions are noise")

    def build(meta: Mapping[str, Any]) -> ConvNet:
        if meta["in_chans"] != 3 or meta["num_classes"] < 1:
            raise EffnetError(f"{args.checkpoint}: a model with {meta['in_chans']} input channels and "
                              f"{meta['num_classes']} classes; these commands need an RGB classifier")
        if not args.model:
            return model_from_metadata(meta, what=args.checkpoint)
        # BN eps and padding belong to the weights (their source's numerics), the layers to --model.
        return create_model(args.model, num_classes=int(meta["num_classes"]), bn_eps=meta["spec"].get("bn_eps"),
                            padding=meta["spec"].get("padding"))

    return load_model(args.checkpoint, build=build)  # the file is read once


@contextmanager
def _notes() -> Iterator[None]:
    """Print library warnings (skipped files, converted images) as one ``effnet: note:`` line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            seen = set()
            for w in caught:
                text = str(w.message).splitlines()[0].removeprefix("effnet: ")  # said once, below
                if text not in seen and "transparent pixels now show white" not in text:
                    seen.add(text)
                    print(f"effnet: note: {text}", file=sys.stderr)


def _report_conversion(report: Any) -> None:
    if report is not None and report.converted:
        print(f"effnet: note: {report.describe()}", file=sys.stderr)


def cmd_eval(args: argparse.Namespace) -> int:
    from effnet.data import BUILTIN_DATASETS

    if (args.batch_size is not None and args.batch_size < 1) or (args.workers or 0) < 0:
        raise EffnetError(f"--batch-size {args.batch_size} must be >= 1 and --workers {args.workers} >= 0")
    if args.confusion:
        output_file(args.confusion, "--confusion")
    model = _load_model(args)
    if args.data.strip().lower() in BUILTIN_DATASETS:
        return _eval_builtin(args, model)
    from effnet.data import ClassMap
    from effnet.evaluate import evaluate_folder

    class_map = ClassMap.from_arg(args.class_map) if args.class_map else None
    run = None
    with _notes():
        if args.no_pipeline:
            r = evaluate_folder(model, args.data, class_map=class_map, batch_size=args.batch_size,
                                workers=args.workers or 0)
        else:
            r, run = _eval_pipelined(args, model, class_map)
    if run is not None:
        print_run_notes(run)
        if args.csv:
            write_csv(args.csv, run.predictions)
    if args.confusion:
        _plot_folder_confusion(r, args.confusion)
    if args.json:
        timing = {} if run is None else {"timing": vars(run.timing), "images_per_s": run.images_per_s,
                                         "engine": run.engine, "dtype": run.dtype}
        print(json.dumps({"model": model.spec.name, "data": args.data, **r.to_dict(), **timing}, indent=2))
        return 0
    print(f"{model.spec.name} on {args.data}: {r.num_images} images, {len(r.per_class)} classes"
          + (f", {len(r.skipped)} files skipped" if r.skipped else ""))
    _print_scores(r.loss, r.top1, r.top5)
    if args.errors:
        for m in r.misclassified:
            print(f"{m.path}: true {m.true_name} ({m.true_index}) -> predicted {m.predicted_name} "
                  f"({m.predicted_index}) p={m.confidence:.3f}")
    if args.confusion:
        print(f"wrote {args.confusion}")
    return 0


def _eval_pipelined(args: argparse.Namespace, model: ConvNet, class_map: Any) -> tuple[Any, Any]:
    """``effnet eval DIR`` through the pipeline (:func:`effnet.deploy.pipeline.evaluate_folder_fast`)."""
    from effnet.deploy.pipeline import evaluate_folder_fast

    files = sum(1 for f in Path(args.data).expanduser().rglob("*") if f.is_file())
    return evaluate_folder_fast(model, args.data, class_map=class_map, top=5, **pipeline_options(args, files, model))


def _print_scores(loss: float, top1: float, top5: float) -> None:
    """The score lines of ``effnet eval``, the same for folders and built-in sets (scripts read them)."""
    print(f"loss {loss:.4f}")
    print(f"top-1 {top1:.2f}")
    print(f"top-5 {top5:.2f}")


def _plot_folder_confusion(r: Any, path: str) -> None:
    """The confusion matrix restricted to the folder's classes (a 1000-class model on 100 folders)."""
    from dataclasses import replace

    from effnet.train.metrics import plot_confusion

    idx = [c.index for c in r.per_class]
    full = r.metrics.confusion
    sub = replace(r.metrics, confusion=[[full[i][j] for j in idx] for i in idx])
    plot_confusion(sub, [c.name for c in r.per_class], path)


def _eval_builtin(args: argparse.Namespace, model: ConvNet) -> int:
    """``effnet eval --data fashion-mnist|mnist|digits``: loss, top-k, per-class table, confusion PNG."""
    from effnet.evaluate import evaluate_dataset
    from effnet.textfmt import table
    from effnet.train.metrics import plot_confusion

    if args.class_map:
        raise EffnetError(f"--class-map applies to image folders, not the built-in data set {args.data!r}")
    stored = (getattr(model, "checkpoint_metadata", None) or {}).get("config") or {}
    seed = args.seed if args.seed is not None else int(stored.get("seed", 0))  # the split the run trained on
    with _notes():
        m, classes = evaluate_dataset(model, args.data, split=args.split, seed=seed, batch_size=args.batch_size,
                                      workers=args.workers or 0)
    if args.confusion:
        plot_confusion(m, classes, args.confusion, title=f"{model.spec.name} on {args.data} {args.split}: "
                                                          f"top-1 {m.top1:.2f} %")
    if args.json:
        print(json.dumps({"model": model.spec.name, "data": args.data, "split": args.split, "seed": seed,
                          "classes": classes, **vars(m)}, indent=2))
        return 0
    print(f"{model.spec.name} on {args.data} {args.split} (split seed {seed}): {m.count} images, "
          f"{len(classes)} classes")
    print(table(["class", "images", "top-1"], [[c, sum(row), f"{a:.2f}"] for c, row, a in
                                               zip(classes, m.confusion, m.per_class, strict=True)]))
    _print_scores(m.loss, m.top1, m.top5)
    if args.confusion:
        print(f"wrote {args.confusion}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    if args.top < 1:
        raise EffnetError(f"--top {args.top} must be >= 1")
    model = _load_model(args)
    files = expand_images(args.images)
    if args.no_pipeline:
        from effnet.evaluate import predict

        with _notes():
            preds = predict(model, files, top=args.top, batch_size=args.batch_size)
        for p in preds:
            _report_conversion(p.report)
        rows = [(p.source, p.top) for p in preds]
    else:
        from effnet.deploy.pipeline import classify

        with _notes():
            run = classify(files, model, top=args.top, **pipeline_options(args, len(files), model))
        if not run.predictions:
            raise all_skipped_error(run.skipped)
        print_run_notes(run)
        rows = [(p.path, p.top) for p in run.predictions]
        if args.csv:
            write_csv(args.csv, run.predictions)
    if args.json:
        print(json.dumps([{"image": f, "top": [{"index": i, "name": n, "probability": q} for i, n, q in top]}
                          for f, top in rows], indent=2))
        return 0
    for f, top in rows:
        print(f)
        for i, name, q in top:
            print(f"  {q:6.3f}  {name} ({i})")
    return 0


def cmd_cam(args: argparse.Namespace) -> int:
    """CAM of each image, written as NAME.METHOD.png and .npy into ``--out DIR`` or the current folder
    (never inside the ImageFolder tree an image comes from); the files are decoded by the pipeline's
    workers (:mod:`effnet.deploy.pipeline`)."""
    from effnet.cli.preflight import cam_outputs

    files = expand_images(args.images)
    outputs = [cam_outputs(f, args.out, args.method) for f in files]  # before torch: a refused folder fails fast
    from effnet.deploy.pipeline import decoded_batches
    from effnet.weights import default_preprocessing

    model = _load_model(args)
    pre = default_preprocessing(model)
    skipped: list[tuple[str, str]] = []
    with decoded_batches(files, pre, batch_size=args.batch_size or 16, workers=args.workers,
                         draft=args.draft) as batches:
        for batch in batches:
            skipped += [(files[i], reason) for i, reason in batch["errors"]]
            for j, i in enumerate(batch["index"]):
                if batch["conversions"][j]:
                    print(f"effnet: note: {files[i]} -> RGB ({'; '.join(batch['conversions'][j])})", file=sys.stderr)
                _write_cam(args, model, pre, batch["x"][j], outputs[i])
    if len(skipped) == len(files):
        raise all_skipped_error(skipped)
    for path, reason in skipped:
        print(f"effnet: skipped {path}: {reason}", file=sys.stderr)
    return 0


def _write_cam(args: argparse.Namespace, model: ConvNet, pre: Any, x: Any, outputs: tuple[Path, Path]) -> None:
    import numpy as np
    import torch
    from PIL import Image

    from effnet.cam import compute_cam, overlay
    from effnet.evaluate import class_names

    png, npy = outputs

    result = compute_cam(model, x, class_idx=args.class_idx, method=args.method, layer=args.layer)
    # Overlay on what the model saw (the resized, center-cropped input), where the map is defined.
    mean, std = torch.tensor(pre.mean)[:, None, None], torch.tensor(pre.std)[:, None, None]
    seen = ((x * std + mean).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    overlay(Image.fromarray(seen), result.heatmap).save(png)
    np.save(npy, result.raw.numpy())
    name = class_names(model)[result.class_idx]
    print(f"{model.spec.name}: class {result.class_idx} {name} (p={result.probability:.3f}), {args.method} map "
          f"{tuple(result.raw.shape)}; wrote {png} and {npy}")


def cmd_convert(args: argparse.Namespace) -> int:
    from effnet.checkpoint import read_metadata
    from effnet.weights import convert_file

    out = convert_file(args.source, args.model, args.input, args.output, overwrite=args.overwrite)
    meta = read_metadata(out)
    print(f"wrote {out}: {meta['spec']['name']} ({meta['num_classes']} classes, BN eps {meta['bn_eps']:g}, "
          f"padding {meta['padding']}) from {args.source} {args.model}")
    return 0


def add_commands(sub: Any) -> None:
    """Add ``eval``, ``predict``, ``cam`` and ``convert`` to the ``effnet`` subparsers."""
    e = sub.add_parser("eval", help="loss, top-1/top-5, per-class accuracy on a data set or a folder")
    _add_model_args(e)
    e.add_argument("--data", required=True, metavar="NAME|DIR",
                   help="fashion-mnist, mnist, digits, or a folder of class folders (ImageFolder layout)")
    e.add_argument("--split", default="test", choices=("test", "train"), help="built-in data sets: which split")
    e.add_argument("--seed", type=int, help="split seed of mnist/digits (default: the checkpoint's training seed)")
    e.add_argument("--confusion", metavar="PNG", help="write the confusion matrix as a PNG")
    e.add_argument("--class-map", metavar="imagenet|FILE",
                   help="'imagenet' (folders are wnids) or an 'id name' file; default: folders in sorted order")
    e.add_argument("--errors", action="store_true", help="list each misclassified file")
    e.add_argument("--json", action="store_true", help="everything, including per-class accuracy, as JSON")
    add_pipeline_args(e)
    e.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="top classes of images")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="files, folders or quoted glob patterns")
    _add_model_args(p)
    p.add_argument("--top", type=int, default=5, help="classes per image (5)")
    p.add_argument("--json", action="store_true")
    add_pipeline_args(p)
    p.set_defaults(func=cmd_predict)

    c = sub.add_parser("cam", help="class activation maps (CAM or Grad-CAM) of images")
    c.add_argument("images", nargs="+", metavar="IMAGE", help="files, folders or quoted glob patterns")
    _add_model_args(c)
    c.add_argument("--class", dest="class_idx", type=int, help="class index to explain (default: top-1)")
    c.add_argument("--method", choices=("cam", "gradcam"), default="cam")
    c.add_argument("--layer", help="Grad-CAM layer, e.g. stages.5 (default: the last feature map)")
    c.add_argument("--out", metavar="DIR", help="folder for IMAGE-NAME.METHOD.png and .npy (default: the current "
                   "folder; created; never inside the image folder tree the image comes from)")
    c.add_argument("--batch-size", type=int, help="images decoded per worker batch (16)")
    c.add_argument("--workers", type=int, help="decode processes (default: half the cores)")
    c.add_argument("--no-draft", dest="draft", action="store_false", help="decode JPEGs at full size")
    c.set_defaults(func=cmd_cam)

    v = sub.add_parser("convert", help="timm / torchvision / lukemelas weights -> an effnet checkpoint")
    v.add_argument("--from", dest="source", required=True, choices=("timm", "torchvision", "lukemelas"))
    v.add_argument("--model", required=True, help="the model's name in that library, e.g. tf_efficientnet_b0")
    v.add_argument("input", metavar="IN", help=".pth/.pt/.bin (read with weights_only=True) or .safetensors")
    v.add_argument("output", metavar="OUT", help="effnet checkpoint to write (.safetensors)")
    v.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    v.set_defaults(func=cmd_convert)
