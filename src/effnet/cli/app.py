"""The ``effnet`` command line: ``models``, ``describe``, ``scale``, ``fit``.

``main(argv) -> int`` so tests call it in-process. A user error prints one line,
``effnet: error: ...``, and returns 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

from effnet import __version__
from effnet.catalog import MODELS, get_entry, get_spec, list_models
from effnet.cli.deploy import add_commands as add_bench_commands
from effnet.cli.models import add_commands
from effnet.cli.nas import add_commands as add_nas_commands
from effnet.cli.preflight import check_inputs
from effnet.cli.search import add_commands as add_search_commands
from effnet.cli.search import add_rounding_option, add_scale_options, cmd_scale_train
from effnet.cli.train import add_commands as add_train_commands
from effnet.errors import EffnetError
from effnet.macs import estimate_cost
from effnet.paper import PAPER_TABLE2
from effnet.paths import output_file
from effnet.scaling import PAPER_COEFFICIENTS, Coefficients, Multipliers, implied_phi
from effnet.scaling_law import fit_phi, scaling_report, table3_report
from effnet.spec import NetworkSpec
from effnet.textfmt import human, parse_count, parse_phi_range, table
from effnet.threads import THREADS_ENV, configure, resolve_threads


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise EffnetError(f"{message} (see `{self.prog} --help`)")


def _add_coeffs(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("compound coefficients (paper eq. 3)")
    g.add_argument("--alpha", type=float, default=PAPER_COEFFICIENTS.alpha, help="depth base α (1.2)")
    g.add_argument("--beta", type=float, default=PAPER_COEFFICIENTS.beta, help="width base β (1.1)")
    g.add_argument("--gamma", type=float, default=PAPER_COEFFICIENTS.gamma, help="resolution base γ (1.15)")
    g.add_argument("--target", type=float, default=2.0, help="required α·β²·γ² (2)")
    g.add_argument("--tol", type=float, default=0.1, help="allowed |α·β²·γ² − target| (0.1)")
    g.add_argument("--allow-below-one", action="store_true", help="accept α, β or γ below 1")


def _coeffs(args: argparse.Namespace) -> Coefficients:
    c = Coefficients(args.alpha, args.beta, args.gamma, allow_below_one=args.allow_below_one)
    c.check_target(args.target, args.tol)
    return c


def _fmt_phi(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.2f}"


def cmd_models(args: argparse.Namespace) -> int:
    rows, data = [], []
    names = list_models(args.pattern)
    if not names:
        get_entry(args.pattern)  # raises with the closest names as suggestions
    for name in names:
        spec, entry = get_spec(name), MODELS[name]
        cost, paper = estimate_cost(spec), PAPER_TABLE2.get(name)
        phis = implied_phi(entry.multipliers)
        rec = {"name": name, "params": cost.params, "macs": cost.macs, "resolution": spec.resolution,
               "implied_phi": dict(zip(("depth", "width", "resolution"), phis, strict=True)),
               "paper": None if paper is None else vars(paper)}
        data.append(rec)
        rows.append([name, f"{cost.params:,}", human(cost.macs), spec.resolution,
                     "" if paper is None or paper.params is None else f"{paper.params:,}",
                     "" if paper is None or paper.flops is None else human(paper.flops),
                     "" if paper is None or paper.top1 is None else f"{paper.top1:.1f}",
                     "/".join(_fmt_phi(p) for p in phis)])
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(table(["model", "params", "MACs", "res", "ref params", "paper FLOPs", "paper top-1",
                     "implied phi d/w/r"], rows))
        print("\nparams and MACs are effnet's analytic counts (1000 classes, native resolution); 'paper "
              "FLOPs' are the paper's multiply-adds (Table 2/3); implied phi = log(mult)/log(alpha|beta|gamma).")
    return 0


def _spec_from_args(args: argparse.Namespace) -> NetworkSpec:
    dims = (args.depth, args.width, args.resolution)
    if args.phi is not None and any(d is not None for d in dims):
        raise EffnetError("give --phi or --depth/--width/--resolution, not both")
    if any(d is not None for d in dims):
        m = Multipliers(*(1.0 if d is None else d for d in dims))
        return get_spec(args.name, multipliers=m, depth_rounding=args.depth_rounding)
    return get_spec(args.name, phi=args.phi, coeffs=_coeffs(args), depth_rounding=args.depth_rounding)


def cmd_describe(args: argparse.Namespace) -> int:
    spec = _spec_from_args(args)
    cost = estimate_cost(spec)
    if args.json:
        print(json.dumps({"spec": spec.to_dict(), "params": cost.params, "macs": cost.macs,
                          "parts": {k: {"params": p, "macs": m} for k, (p, m) in cost.parts.items()}}, indent=2))
        return 0
    rows, hw = [], math.ceil(spec.resolution / spec.stem.stride)
    p, m = cost.parts["stem"]
    rows.append(["stem", f"conv{spec.stem.kernel_size}x{spec.stem.kernel_size}", spec.stem.stride, "", "",
                 1, spec.stem.out_channels, f"{hw}x{hw}", f"{p:,}", human(m)])
    if spec.stem.pool:
        hw = math.ceil(hw / 2)
    for i, s in enumerate(spec.stages, start=1):
        hw = math.ceil(hw / s.stride)
        p, m = cost.parts[f"stage{i}"]
        rows.append([f"stage{i}", f"{s.block} k{s.kernel_size}", s.stride, f"{s.expand_ratio:g}",
                     f"{s.se_ratio:g}", s.repeats, s.out_channels, f"{hw}x{hw}", f"{p:,}", human(m)])
    p, m = cost.parts["head"]
    rows.append(["head", "conv1x1+pool+fc" if spec.head.channels else "pool+fc", "", "", "", 1,
                 spec.num_features, "1x1", f"{p:,}", human(m)])
    print(f"{spec.name}: {spec.resolution}x{spec.resolution} input, {spec.num_blocks} blocks "
          f"(repeats by {spec.depth_rounding}), "
          f"{cost.params:,} params, {human(cost.macs)} MACs, dropout {spec.dropout:g}, "
          f"drop path {spec.drop_path_rate:g}, BN eps {spec.bn_eps:g}, padding {spec.padding}")
    print(table(["part", "op", "stride", "expand", "se", "repeats", "channels", "output", "params", "MACs"], rows))
    return 0


def cmd_scale(args: argparse.Namespace) -> int:
    if args.plot:
        output_file(args.plot, "--plot")
    if args.coefficients:  # STEP 2 with a search's coefficients (effnet.cli.search)
        return cmd_scale_train(args)
    if args.table3:
        return _print_table3(args.json)
    coeffs = _coeffs(args)
    rounding = args.depth_rounding or "ceil"
    rows = scaling_report(args.name, parse_phi_range(args.phi), coeffs=coeffs, depth_rounding=rounding)
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
    else:
        print(f"{args.name} scaled with alpha={coeffs.alpha:g} beta={coeffs.beta:g} gamma={coeffs.gamma:g} "
              f"(alpha*beta^2*gamma^2 = {coeffs.flops_base:.4f}), repeats by {rounding}")
        print(table(["phi", "d", "w", "r", "res", "blocks", "widths", "params", "MACs", "MACs x",
                     "theory x", "drift"],
                    [[f"{r.phi:g}", f"{r.depth_mult:.3f}", f"{r.width_mult:.3f}", f"{r.resolution_mult:.3f}",
                      r.resolution, sum(r.repeats), ",".join(map(str, r.widths)), human(r.params), human(r.macs),
                      f"{r.macs_ratio:.2f}", f"{r.theory_ratio:.2f}", f"{100 * r.drift:+.1f}%"] for r in rows]))
        print("\nMACs x: measured growth over phi=0; theory x: (alpha*beta^2*gamma^2)^phi; drift: what the "
              f"rounding (channels to 8, repeats by {rounding}) adds (paper footnote 3).")
    if args.plot:
        from effnet.plots import plot_scaling

        plot_scaling(rows, args.plot, title=f"{args.name}: compound scaling")
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def _print_table3(as_json: bool) -> int:
    rows = table3_report()
    if as_json:
        print(json.dumps([vars(r) for r in rows], indent=2))
        return 0
    print(table(["baseline", "scaling", "d", "w", "r", "effnet MACs", "paper FLOPs", "ours/paper", "paper top-1"],
                [[r.baseline, r.label, f"{r.depth:.3g}", f"{r.width:.3g}", f"{r.resolution:.3g}", human(r.macs),
                  human(r.paper_flops), f"{r.ratio:.2f}", f"{r.paper_top1:.1f}"] for r in rows]))
    print("\nPaper Table 3 (FLOPs = multiply-adds). Rows off by more than 10% are explained in docs/scaling.md.")
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    if args.max_latency or args.max_train_memory:
        from effnet.cli.deploy import cmd_fit_hardware

        return cmd_fit_hardware(args)
    max_macs = parse_count(args.max_macs, "--max-macs") if args.max_macs else None
    max_params = parse_count(args.max_params, "--max-params") if args.max_params else None
    r = fit_phi(args.name, max_macs=max_macs, max_params=max_params, coeffs=_coeffs(args))
    out: dict[str, Any] = {"name": args.name, "phi": r.phi, "resolution": r.spec.resolution, "params": r.params,
                           "macs": r.macs, "next_phi": round(r.phi + 0.01, 2), "next_params": r.next_params,
                           "next_macs": r.next_macs, "spec": r.spec.to_dict()}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{args.name}: largest phi = {r.phi:.2f} -> {r.spec.resolution}px, {r.spec.num_blocks} blocks, "
              f"{r.params:,} params, {human(r.macs)} MACs")
        print(f"(phi = {r.phi + 0.01:.2f} would need {r.next_params:,} params, {human(r.next_macs)} MACs)")
        print(f"build it: effnet.create_model({args.name!r}, phi={r.phi:.2f})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="effnet", description="EfficientNet and compound model scaling (Tan & Le, ICML 2019).")
    p.add_argument("--version", action="version", version=f"effnet {__version__}")
    p.add_argument("--threads", type=int, metavar="N",
                   help=f"torch/ONNX Runtime threads (default: ${THREADS_ENV}; else one per core when the machine "
                        "is idle at start, 1 when other processes are busy); see docs/performance.md")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    m = sub.add_parser("models", help="every registered model: params, MACs, resolution, the paper's figures")
    m.add_argument("pattern", nargs="?", default="*", help="shell pattern, e.g. 'efficientnet_b*'")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_models)

    d = sub.add_parser("describe", help="stage table of a (scaled) network")
    d.add_argument("name")
    d.add_argument("--phi", type=float, help="compound coefficient on top of the model's preset")
    d.add_argument("--depth", type=float, help="explicit depth multiplier")
    d.add_argument("--width", type=float, help="explicit width multiplier")
    d.add_argument("--resolution", type=float, help="explicit resolution multiplier")
    d.add_argument("--json", action="store_true")
    add_rounding_option(d, default="ceil")
    _add_coeffs(d)
    d.set_defaults(func=cmd_describe)

    s = sub.add_parser("scale", help="scaling-law report of a baseline over a phi range")
    s.add_argument("name", nargs="?", default="efficientnet_b0")
    s.add_argument("--phi", default="0:7", help="START:STOP[:STEP], a number or a comma list (0:7)")
    s.add_argument("--table3", action="store_true", help="the paper's Table 3: MobileNetV1/V2, ResNet-50")
    s.add_argument("--json", action="store_true")
    s.add_argument("--plot", metavar="FILE.png", help="write MACs and params against phi as a PNG")
    add_rounding_option(s, default=None)
    _add_coeffs(s)
    add_scale_options(s)
    s.set_defaults(func=cmd_scale)

    f = sub.add_parser("fit", help="largest phi whose model fits a MACs and/or params budget")
    f.add_argument("name")
    f.add_argument("--max-macs", help="MACs budget, e.g. 1.5G")
    f.add_argument("--max-params", help="parameter budget, e.g. 10M")
    f.add_argument("--max-latency", help="measured latency budget on this machine, e.g. 20ms (0.25 phi grid)")
    f.add_argument("--engine", default="eager", help="inference engine timed by --max-latency (eager)")
    f.add_argument("--max-train-memory", help="estimated training peak budget, e.g. 8G (with --batch)")
    f.add_argument("--batch", type=int, help="batch for --max-latency (default 1) or --max-train-memory (needed)")
    f.add_argument("--amp", default="none", choices=["none", "bf16"], help="with --max-train-memory")
    f.add_argument("--grad-checkpointing", action="store_true", help="with --max-train-memory")
    f.add_argument("--json", action="store_true")
    _add_coeffs(f)
    f.set_defaults(func=cmd_fit)
    add_train_commands(sub)
    add_commands(sub)  # eval, predict, cam, convert (effnet.cli.models)
    add_search_commands(sub)  # search, compare, demo (effnet.cli.search)
    add_nas_commands(sub)  # nas (effnet.cli.nas)
    add_bench_commands(sub)  # bench, export, cache (effnet.cli.deploy)
    return p


def _prepare(args: argparse.Namespace) -> None:
    """Before any command imports torch: fail fast on missing paths, then set the threading policy
    (effnet.threads), which the OpenMP runtime reads only when torch loads. Called in-process after
    torch has loaded (tests, notebooks), only an explicit --threads / $EFFNET_THREADS is applied."""
    check_inputs(args)
    if "torch" not in sys.modules:
        configure(args.threads)
        return
    threads, _ = resolve_threads(args.threads)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _format_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> str:
    """A warning is one line for the user (``effnet: warning: ...``), not a source location; library
    warnings that name effnet already (``effnet: ...``, for API users) do not say it twice."""
    return f"effnet: warning: {str(message).removeprefix('effnet: ')}\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 user error)."""
    warnings.formatwarning = _format_warning
    try:
        args = build_parser().parse_args(argv)
        _prepare(args)
        return int(args.func(args))
    except EffnetError as e:
        print(f"effnet: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `effnet models | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
