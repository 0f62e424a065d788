"""CLI commands for speed and deployment: ``bench``, ``export`` and ``cache``.

Wired into :mod:`effnet.cli.app` by :func:`add_commands`; torch, ONNX and the peers are imported inside
the commands so ``effnet models`` stays fast. Timings are medians of interleaved rounds in one
process (see :mod:`effnet.deploy.bench`); they never gate anything, ratios are the output to read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from effnet.cli.preflight import export_prefix
from effnet.errors import EffnetError
from effnet.paths import output_file
from effnet.textfmt import human, parse_phi_range, table

__all__ = ["add_commands"]


def _batches(text: str) -> tuple[int, ...]:
    try:
        out = tuple(int(b) for b in text.split(","))
    except ValueError:
        raise EffnetError(f"--batch {text!r}: give comma-separated positive integers, e.g. 1,16") from None
    if not out or min(out) < 1:
        raise EffnetError(f"--batch {text!r}: batch sizes must be >= 1")
    return out


def _engines(text: str) -> tuple[str, ...]:
    from effnet.deploy.inference import ENGINES

    out = tuple(e.strip() for e in text.split(",") if e.strip())
    bad = [e for e in out if e not in ENGINES]
    if bad or not out:
        raise EffnetError(f"--engine {text!r}: use a comma list of {', '.join(ENGINES)}")
    return out


def _threads(n: int | None) -> None:
    import torch

    if n is not None:
        if n < 1:
            raise EffnetError(f"--threads {n}: must be >= 1")
        torch.set_num_threads(n)


def _model(args: argparse.Namespace) -> Any:
    from effnet.registry import create_model

    if args.checkpoint:
        from effnet.checkpoint import load_model

        return load_model(args.checkpoint)
    return create_model(args.model, phi=args.phi, pretrained=args.pretrained)


def _print_rows(rows: list[Any], baseline: str) -> None:
    print(table(["path", "batch", "ms/batch", "img/s", "GFLOP/s", "% matmul peak", f"x {baseline}", "max |Δ|"],
                [[r.label, r.batch, f"{r.ms_per_batch:.1f}", f"{r.images_per_s:.1f}", f"{r.gflops:.0f}",
                  f"{100 * r.peak_fraction:.0f}%", f"{r.ratio:.2f}",
                  "-" if r.max_error is None else f"{r.max_error:.1e}"] for r in rows]))


def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from effnet.deploy.bench import bench_family, bench_model, peak_rss_mb, plot_family
    from effnet.deploy.machine import busy_warning, cpu_features, describe, load_average

    _threads(args.threads)
    if args.plot:
        output_file(args.plot, "--plot")
    if args.end_to_end:
        return _bench_end_to_end(args)
    if args.train:
        from effnet.deploy.trainbench import run_train_bench

        return run_train_bench(args)
    model = _model(args)
    calibration = None
    if args.dtype == "int8":
        if not args.calibration:
            raise EffnetError("--dtype int8 needs --calibration FOLDER of real images (ImageNet-style folders)")
        from effnet.deploy.quantize import folder_images

        calibration = folder_images(args.calibration, model)[0]
    engines = _engines(args.engine)
    if args.dtype == "int8":
        engines = ("onnxruntime",)
    batches = _batches(args.batch)
    print(describe(), file=sys.stderr, flush=True)  # before timing starts, in case it is the load that hangs
    rows = bench_model(model, args.model, batches=batches, dtype=args.dtype, engines=engines,
                       peers=args.peers, rounds=args.rounds, calibration=calibration)
    busy = busy_warning(max(r.extra["spread"] for r in rows))
    family = None
    if args.plot:
        phis = parse_phi_range(args.family)
        family = bench_family(args.model, phis, engine=engines[-1], rounds=args.rounds)
        plot_family(family, args.plot, title=f"{args.model}: latency vs MACs ({engines[-1]}, batch 1, "
                                             f"{torch.get_num_threads()} threads)")
    if args.json:
        print(json.dumps({"rows": [r.to_dict() for r in rows], "family": family, "threads": torch.get_num_threads(),
                          "peak_rss_mb": peak_rss_mb(), "cpu_features": list(cpu_features()),
                          "load_average": list(load_average()), "busy": busy}, indent=2))
    else:
        print(f"{args.model}{'' if args.phi is None else f' phi={args.phi:g}'}: {torch.get_num_threads()} threads, "
              f"fp32 matmul peak {rows[0].extra['matmul_peak_gflops']:.0f} GFLOP/s, medians of {args.rounds} "
              "interleaved rounds")
        print(describe())
        _print_rows(rows, rows[0].label)
        print(f"peak RSS {peak_rss_mb():.0f} MB; max |Δ|: against effnet eager fp32 on the check input")
        if args.verbose:
            for r in rows:
                if "choice" in r.extra:
                    print(r.extra["choice"])
        if busy:
            print(busy)
        if family:
            print(table(["phi", "res", "MACs", "ms (b1)", "GFLOP/s"],
                        [[f"{p['phi']:g}", p["resolution"], human(p["macs"]), f"{p['ms']:.1f}",
                          f"{p['gflops']:.0f}"] for p in family]))
    if args.plot:
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def _bench_end_to_end(args: argparse.Namespace) -> int:
    """``effnet bench MODEL --pretrained --end-to-end DIR``: folder → predictions, side by side."""
    from effnet.deploy.e2e import end_to_end
    from effnet.deploy.machine import describe

    batches = _batches(args.batch if args.batch != "1,16" else "16")
    if len(batches) != 1:
        raise EffnetError(f"--batch {args.batch}: --end-to-end takes one batch size, e.g. --batch 16")
    print(describe(), file=sys.stderr)
    rows = end_to_end(_model(args), args.model, args.end_to_end, batch=batches[0], workers=args.workers,
                      rounds=args.rounds if args.rounds != 5 else 3, int8=not args.no_int8,
                      peer_images=args.peer_images)
    after = describe()
    if args.json:
        print(json.dumps({"rows": [vars(r) for r in rows], "machine": after}, indent=2))
        return 0
    print(f"{args.model} end to end on {args.end_to_end}: batch {batches[0]}, medians of interleaved rounds; {after}")
    print(table(["contender", "images", "s/pass", "img/s", "x engine only", "x timm", "time split (s/pass)"],
                [[r.label, r.images, f"{r.seconds:.1f}", f"{r.images_per_s:.1f}", f"{r.ratio_to_engine:.2f}",
                  f"{r.ratio_to_timm:.2f}", ", ".join(f"{k} {v:.1f}" for k, v in r.split.items())] for r in rows]))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    formats = [f.strip() for f in args.format.split(",")]
    bad = [f for f in formats if f not in ("onnx", "pt2", "int8")]
    if bad or not formats:
        raise EffnetError(f"--format {args.format!r}: use a comma list of onnx, pt2, int8")
    if "int8" in formats and not args.calibration:
        raise EffnetError("--format int8 needs --calibration FOLDER of real images")
    phi = "" if args.phi is None else f"-phi{args.phi:g}"
    # the folder is created and probed for writing here, before the model is built or anything exported
    out = export_prefix(args.out, Path(args.checkpoint).stem if args.checkpoint else args.model + phi)

    import torch

    from effnet.deploy.export import export_onnx, export_pt2

    model = _model(args).eval()
    spec = model.spec
    x = torch.randn(2, model.stem.conv.in_channels, spec.resolution, spec.resolution)
    for fmt in formats:
        if fmt == "onnx":
            path = export_onnx(model, out.with_name(out.name + ".onnx"), example=x)
        elif fmt == "pt2":
            path = export_pt2(model, out.with_name(out.name + ".pt2"), example=x)
        else:
            from effnet.deploy.quantize import folder_images, quantize_model

            path = out.with_name(out.name + ".int8.onnx")
            quantize_model(model, path, folder_images(args.calibration, model)[0])
        print(f"wrote {path} (dynamic batch; parity with eager fp32 checked)" if fmt != "int8"
              else f"wrote {path} (int8 QDQ, calibrated on {args.calibration})")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    """``effnet cache list|clear``: the engine files kept by :mod:`effnet.deploy.engine_cache`."""
    from effnet.deploy import engine_cache

    folder = engine_cache.engines_dir()
    if folder is None:
        print("the engine cache is off (EFFNET_CACHE=off)")
        return 0
    if args.action == "clear":
        files, size = engine_cache.clear()
        print(f"removed {files} engine files ({size / 2**20:.1f} MB) from {folder}")
        return 0
    items = engine_cache.entries()
    if args.json:
        print(json.dumps({"folder": str(folder), "files": [{"file": e.path.name, "bytes": e.size, "used": e.used}
                                                           for e in items]}, indent=2))
        return 0
    import time

    rows = [[e.path.name, f"{e.size / 2**20:.1f}", time.strftime("%Y-%m-%d %H:%M", time.localtime(e.used))]
            for e in items]
    print(f"{folder}: {len(items)} engine files, {sum(e.size for e in items) / 2**20:.1f} MB "
          f"(bound: ${engine_cache.SIZE_ENV}, default {engine_cache.DEFAULT_MB} MB)")
    if rows:
        print(table(["file", "MB", "last used"], rows))
    return 0


def _parse_latency(text: str) -> float:
    """``20ms``, ``0.02s`` or a bare number of milliseconds → seconds."""
    t = text.strip().lower()
    scale = 1e-3
    if t.endswith("ms"):
        t = t[:-2]
    elif t.endswith("s"):
        t, scale = t[:-1], 1.0
    try:
        value = float(t) * scale
    except ValueError:
        raise EffnetError(f"--max-latency {text!r}: give a time such as 20ms or 0.02s") from None
    if not value > 0:
        raise EffnetError(f"--max-latency {text!r} must be > 0")
    return value


def _parse_bytes(text: str) -> float:
    """``8G``, ``512M``, ``8GiB`` (binary units, as memory is sold) → bytes."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    scale = units.get(t[-1:], 1)
    try:
        value = float(t[:-1] if t[-1:] in units else t) * scale
    except ValueError:
        raise EffnetError(f"--max-train-memory {text!r}: give a size such as 8G or 512M") from None
    if not value > 0:
        raise EffnetError(f"--max-train-memory {text!r} must be > 0")
    return value


def cmd_fit_hardware(args: argparse.Namespace) -> int:
    """``effnet fit --max-latency`` / ``--max-train-memory``: measured or estimated budgets → φ."""
    from effnet.deploy.fit import fit_latency, fit_train_memory

    if args.max_latency and args.max_train_memory:
        raise EffnetError("give --max-latency or --max-train-memory, not both (they fit different things)")
    if args.max_latency:
        from effnet.deploy.inference import ENGINES

        if args.engine not in ENGINES[1:]:
            raise EffnetError(f"--engine {args.engine!r}: use one of {', '.join(ENGINES[1:])}")
        r = fit_latency(args.name, _parse_latency(args.max_latency), engine=args.engine, batch=args.batch or 1)
        if args.json:
            print(json.dumps({**r.__dict__, "measured": {str(k): v for k, v in r.measured.items()}}, indent=2))
            return 0
        print(table(["phi", "ms"], [[f"{k:g}", f"{v:.1f}"] for k, v in r.measured.items()]))
        print(f"{args.name}: largest phi = {r.phi:g} -> {r.resolution}px, {r.ms:.1f} ms at batch {r.batch} on "
              f"{r.engine} (budget {r.budget_ms:g} ms; phi = {r.phi + 0.25:g} measured {r.next_ms:.1f} ms)")
        return 0
    if not args.batch:
        raise EffnetError("--max-train-memory needs --batch N (memory grows with the batch)")
    r2 = fit_train_memory(args.name, _parse_bytes(args.max_train_memory), args.batch, amp=args.amp,
                          channels_last=args.amp == "bf16", grad_checkpointing=args.grad_checkpointing)
    if args.json:
        print(json.dumps(r2.__dict__, indent=2))
        return 0
    print(f"{args.name}: largest phi = {r2.phi:.2f} trains at batch {r2.batch} in an estimated "
          f"{r2.bytes / 2**30:.2f} GiB (budget {r2.budget_bytes / 2**30:.2f} GiB; phi = {r2.phi + 0.01:.2f} needs "
          f"{r2.next_bytes / 2**30:.2f} GiB); amp={args.amp}, grad checkpointing "
          f"{'on' if args.grad_checkpointing else 'off'}")
    return 0


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model name, e.g. efficientnet_b0")
    p.add_argument("--phi", type=float, help="compound coefficient on top of the preset")
    w = p.add_mutually_exclusive_group()
    w.add_argument("--pretrained", action="store_true", help="offline ImageNet weights (efficientnet_lite0/1/2)")
    w.add_argument("--checkpoint", metavar="FILE", help="an effnet .safetensors checkpoint")
    p.add_argument("--calibration", metavar="FOLDER", help="real images (ImageNet-style folders) for int8")


def add_commands(sub: Any) -> None:
    """Register ``bench``, ``export`` and ``cache`` on the main parser's subcommands."""
    b = sub.add_parser("bench", help="latency/throughput of effnet's inference paths (and the peers), side by side")
    _add_model(b)
    b.add_argument("--batch", default="1,16", help="comma list of batch sizes (1,16)")
    b.add_argument("--threads", type=int, default=argparse.SUPPRESS,
                   help="torch/ORT intra-op threads; the same as `effnet --threads N bench` (default: one per core)")
    b.add_argument("--engine", default="auto", help="comma list: auto (optimize_for_inference's choice at each "
                   "batch size), eager, compile, onnxruntime, openvino (auto)")
    b.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "int8"])
    b.add_argument("--peers", action="store_true",
                   help="timm, torchvision, ONNX Runtime and OpenVINO on timm's export, same run")
    b.add_argument("--verbose", action="store_true", help="print what auto measured for each batch size")
    b.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (median reported)")
    b.add_argument("--plot", metavar="FILE.png", help="latency vs MACs across the family (--family)")
    b.add_argument("--family", default="0:3", help="phi range for --plot (0:3)")
    b.add_argument("--train", action="store_true", help="training step time and memory instead (see --help)")
    b.add_argument("--grad-checkpointing", action="store_true", help="with --train: also checkpoint stages")
    b.add_argument("--end-to-end", metavar="DIR", help="classify a folder (class/image layout) file to prediction: "
                   "timm + DataLoader, effnet's engine + PIL DataLoader, effnet's pipeline fp32/int8, engine only")
    b.add_argument("--workers", type=int, help="--end-to-end: decode processes per loader (default: half the cores)")
    b.add_argument("--no-int8", action="store_true", help="--end-to-end: leave out the int8 contenders")
    b.add_argument("--peer-images", type=int, metavar="N",
                   help="--end-to-end: the DataLoader contenders classify N of the files (evenly spread)")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench)

    e = sub.add_parser("export", help="write ONNX / .pt2 / int8 ONNX files, parity-checked against eager")
    _add_model(e)
    e.add_argument("--out", required=True, metavar="DIR",
                   help="folder for MODEL.onnx, MODEL.pt2, MODEL.int8.onnx (created), e.g. runs/export")
    e.add_argument("--format", default="onnx,pt2", help="comma list: onnx, pt2, int8 (onnx,pt2)")
    e.set_defaults(func=cmd_export)

    c = sub.add_parser("cache", help="list or clear the built engine files kept between calls (docs/inference.md)")
    c.add_argument("action", choices=("list", "clear"), help="list: files, sizes, last use; clear: delete them all")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_cache)
