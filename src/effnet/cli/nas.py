"""``effnet nas``: step 0 of the paper, the search for the baseline itself (EfficientNet §4, MnasNet).

The CLI may import both ``effnet.search`` and ``effnet.deploy``: it is where the latency objective's
timing function (effnet's fastest verified inference engine, ``effnet.deploy``) is handed to the
search, which never imports the engines itself.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from effnet.errors import EffnetError

__all__ = ["SpecLatency", "add_commands", "cmd_nas"]


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def _space(args: argparse.Namespace) -> Any:
    from effnet.search.nas_space import SearchSpace

    try:
        return SearchSpace(blocks=tuple(b.strip() for b in args.blocks.split(",") if b.strip()),
                           kernels=_ints(args.kernels), se_ratios=_floats(args.se), repeat_deltas=_ints(args.repeats),
                           width_mults=_floats(args.widths))
    except ValueError as e:  # int("x"), float("y")
        raise EffnetError(f"search space: {e}; give comma-separated numbers, e.g. --kernels 3,5") from None


def _describe(space: Any, base: Any) -> int:
    from effnet.search.nas_space import encode

    for key, values in space.options().items():
        print(f"{key:<8} {', '.join(str(v) for v in values)}")
    n = len(base.stages)
    print(f"{space.stage_size()} choices per stage, {n} stages of {base.name}: {space.stage_size()}^{n} = "
          f"{space.size(n):.3g} networks")
    try:
        encode(base, space)
        print(f"{base.name} itself is a point of this space")
    except EffnetError as e:
        print(f"note: {e}")
    return 0


@dataclass(frozen=True)
class SpecLatency:
    """Measured milliseconds of one forward pass of a spec on ``engine`` at ``batch`` (gray input,
    ``classes`` outputs): the latency objective's timer. A value rather than a closure, because
    ``--workers`` ≥ 2 pickles it to the worker processes (effnet.search.trials.worker_context)."""

    engine: str
    batch: int
    classes: int

    def __call__(self, spec: Any) -> float:
        from effnet.deploy.fit import measure_spec_latency

        return 1e3 * measure_spec_latency(spec, engine=self.engine, batch=self.batch, rounds=5,
                                          num_classes=self.classes, in_chans=1)


def _stored(url: str, study: str) -> dict[str, Any] | None:
    from effnet.search.nas import NAS_ATTR
    from effnet.search.storage import open_storage

    storage = open_storage(url)
    try:
        return storage.get_study_user_attrs(storage.get_study_id_from_name(study)).get(NAS_ATTR)
    except KeyError:
        return None


def _settings(args: argparse.Namespace, exp: Any, url: str, latency: Any) -> tuple[Any, dict[str, float]]:
    """The search's settings; T defaults to the proxy baseline's cost (a resumed study keeps its own T,
    since a measured latency differs from run to run)."""
    from effnet.search.nas import NasSettings, base_cost
    from effnet.search.nas_objective import parse_objective

    cost = base_cost(exp, latency)
    stored = _stored(url, args.study)
    target = args.target
    if target is None:
        cost_kind = "latency" if "latency" in args.objective else "macs"
        target = stored["objective"]["target"] if stored and stored["objective"]["cost"] == cost_kind else cost[
            cost_kind]
    obj = parse_objective(args.objective, target, args.w)
    strategy = args.strategy if args.strategy != "auto" else ("nsga2" if obj.form == "pareto" else "tpe")
    return NasSettings(_space(args), obj, strategy, args.trials, args.seed), cost


def _bar(total: int, desc: str) -> Any:
    from effnet.progress import progress_bar

    bar = progress_bar(total, desc, unit="trial")

    def update(c: dict[str, Any]) -> None:
        n = c["counts"]["COMPLETE"] + c["counts"]["FAIL"]
        best = max((r["reward"] for r in c["trials"] if r["reward"] is not None), default=None)
        if n != bar.n:
            if best is not None:
                bar.set_postfix_str(f"best reward {best:.2f}", refresh=False)
            bar.update(n - bar.n)

    return bar, update


def _run(args: argparse.Namespace, url: str, study: str, settings: Any, exp: Any, latency: Any) -> dict[str, Any]:
    from effnet.search.nas import collect_nas, open_nas, run_nas_workers
    from effnet.search.storage import open_storage

    open_nas(open_storage(url), study, settings, exp)
    bar, update = _bar(settings.trials, f"nas {settings.strategy}")
    try:
        run_nas_workers(url, study, workers=args.workers, latency=latency, heartbeat=args.heartbeat,
                        stale_after=args.stale_after, on_progress=update)
    finally:
        bar.close()
    return collect_nas(open_storage(url), study)


def _write(out: Path, main: dict[str, Any], rand: dict[str, Any] | None, full_base: Any, exp: Any,
           cost: dict[str, float], proxy: dict[str, Any]) -> None:
    from effnet.search.demo import markdown_to_html
    from effnet.search.nas_report import nas_markdown, plot_pareto
    from effnet.search.nas_space import decode

    (out / "results.json").write_text(json.dumps({"search": main, "random": rand, "base_cost": cost,
                                                  "base": exp.baseline.to_dict()}, indent=2))
    md = nas_markdown(main, rand, exp.baseline, cost)
    (out / "nas.md").write_text(md)
    (out / "nas.html").write_text(markdown_to_html(md, title=f"effnet nas {main['study']}"))
    plot_pareto(main, rand, cost, out / "pareto.png")
    done = [r for r in main["trials"] if r["state"] == "COMPLETE"]
    if done:
        best = done[0]
        spec = decode(best["genome"], full_base)
        (out / "baseline.json").write_text(json.dumps({
            "spec": spec.to_dict(), "genome": best["genome"], "proxy_spec": best["spec"], "proxy": proxy,
            "search": {k: best[k] for k in ("reward", "accuracy", "macs", "latency_ms", "params")}}, indent=2))


def cmd_nas(args: argparse.Namespace) -> int:
    from effnet.cli.search import _baseline_and_budget
    from effnet.search.trials import Experiment, proxy_settings, resolve_baseline

    name = args.baseline or "efficientnet_b0"
    args.baseline = name
    base, budget = _baseline_and_budget(args)
    if args.describe_space:
        return _describe(_space(args), base)
    if args.trials < 1:
        raise EffnetError(f"--trials {args.trials}: a search needs at least 1 trial (e.g. 20)")
    from effnet.search.nas_objective import parse_objective

    _space(args)  # bad choices, T or w fail before any data is loaded
    parse_objective(args.objective, 1.0 if args.target is None else args.target, args.w)
    full_base = resolve_baseline(name)
    exp = Experiment(base, args.data, budget, seed=0)
    out = Path(args.out or f"runs/nas-{args.study}")
    out.mkdir(parents=True, exist_ok=True)
    url = args.storage or str(out / "nas.log")
    measure = "latency" in args.objective or args.measure_latency
    latency = SpecLatency(args.engine, args.latency_batch, len(exp.arrays().classes)) if measure else None
    settings, cost = _settings(args, exp, url, latency)
    t, load = time.time(), os.getloadavg()
    main = _run(args, url, args.study, settings, exp, latency)
    rand = None
    if args.random_baseline and settings.strategy != "random":
        from dataclasses import replace

        rand = _run(args, url, f"{args.study}-random", replace(settings, strategy="random"), exp, latency)
    _write(out, main, rand, full_base, exp, cost,
           proxy_settings(args.base_depth, args.base_width, args.total_stride, args.image_size))
    from effnet.search.nas_report import summary

    for c in (main, rand):
        if c is not None:
            s = summary(c, cost["macs"])
            at_base = s["best_accuracy_at_base_macs"]
            best = "none" if s["best_reward"] is None else f"{s['best_reward']:.2f}"
            print(f"{s['strategy']:<7} best reward {best}, best accuracy {s['best_accuracy']} %, "
                  "best at <= base MACs " + ("none (every trial costs more)" if at_base is None else f"{at_base} %")
                  + f"; {s['completed']} completed, {s['failed']} failed")
    print(f"{time.time() - t:.0f} s wall, load {load[0]:.1f} -> {os.getloadavg()[0]:.1f}; wrote {out}/results.json, "
          "nas.md, nas.html, pareto.png" + (", baseline.json" if (out / "baseline.json").exists() else ""),
          file=sys.stderr)
    return 0


def add_commands(sub: Any) -> None:
    from effnet.cli.search import _add_baseline
    from effnet.search.nas_objective import OBJECTIVES

    p = sub.add_parser("nas", help="step 0: search the baseline itself (MnasNet space, FLOPs- or latency-aware)")
    _add_baseline(p, optional=True)
    g = p.add_argument_group("search (docs/nas.md)")
    g.add_argument("--trials", type=int, default=20, help="trials per strategy (20)")
    g.add_argument("--objective", default="macs", metavar="NAME",
                   help=f"one of {', '.join(OBJECTIVES)} (macs). macs: ACC*(MACs/T)^w (paper §4); latency: "
                        "ACC*(LAT/T)^w with LAT measured here (MnasNet); -hard: w=0 below T, -1 above; pareto: "
                        "accuracy and cost as two objectives")
    g.add_argument("--target", type=float, default=None,
                   help="T in MACs or ms; default: the proxy baseline's own cost (the paper's 400M is an "
                        "ImageNet-224 target, ~100x the proxy network at 20 px)")
    g.add_argument("-w", "--w", type=float, default=-0.07, help="soft reward exponent, <= 0 (-0.07, paper §4)")
    g.add_argument("--strategy", default="auto", choices=("auto", "tpe", "nsga2", "random"),
                   help="Optuna sampler; auto: TPE, NSGA-II for pareto")
    g.add_argument("--no-random-baseline", dest="random_baseline", action="store_false",
                   help="skip the random-search study run beside the chosen strategy at the same trial count")
    g.add_argument("--seed", type=int, default=0, help="sampler seed (0)")
    g.add_argument("--blocks", default="mbconv1,mbconv3,mbconv6,fused1,fused4")
    g.add_argument("--kernels", default="3,5")
    g.add_argument("--se", default="0,0.25")
    g.add_argument("--repeats", default="-1,0,1", help="repeat deltas relative to the base stage")
    g.add_argument("--widths", default="0.75,1,1.25", help="width multipliers of the base stage")
    g.add_argument("--describe-space", action="store_true", help="print the space and its size, then exit")
    g.add_argument("--measure-latency", action="store_true", help="record latency for every trial even with macs")
    g.add_argument("--engine", default="onnxruntime", choices=("eager", "onnxruntime", "compile"),
                   help="inference engine latency is measured on (onnxruntime: effnet's fastest fp32 path)")
    g.add_argument("--latency-batch", type=int, default=1, help="batch size of the latency measurement (1)")
    g.add_argument("--storage", help="journal file or postgresql://... (default OUT/nas.log)")
    g.add_argument("--study", default="nas", help="study name; the random baseline is STUDY-random (nas)")
    g.add_argument("--out", help="folder for results.json, nas.md, nas.html, pareto.png, baseline.json "
                                 "(runs/nas-STUDY)")
    g.add_argument("--heartbeat", type=float, default=10.0)
    g.add_argument("--stale-after", type=float, default=60.0, help="seconds without heartbeat before a retry (60)")
    p.set_defaults(func=cmd_nas)
