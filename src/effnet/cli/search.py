"""``effnet search`` (STEP 1), ``effnet scale ... --coefficients R --train`` (STEP 2), ``effnet compare``
(Table 3 / Fig. 8 in miniature) and ``effnet demo`` (all three on Fashion-MNIST)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from effnet.errors import EffnetError
from effnet.paths import output_dir

__all__ = ["add_commands", "add_rounding_option", "add_scale_options", "cmd_scale_train"]


def _bar(total: int, desc: str) -> Any:
    from effnet.progress import progress_bar

    return progress_bar(total, desc, unit="run")


def add_rounding_option(p: Any, *, default: str | None, sweep: bool = False) -> None:
    """``--depth-rounding``: how d · L_i becomes whole blocks (docs/sweep.md)."""
    extra = (" (default: ceil; with --budgets both, ceil and round, for the depth-bearing arms)" if sweep else
             f" ({default or 'ceil, or the rule a spec file carries'})")
    p.add_argument("--depth-rounding", choices=("ceil", "round"), default=default,
                   help="repeats = ceil(d * L), the official code's, or round(d * L)" + extra)


def _add_baseline(p: argparse.ArgumentParser, *, optional: bool, sweep: bool = False) -> None:
    p.add_argument("baseline", nargs="?" if optional else None, default=None,
                   help="registered model or spec JSON file (`effnet describe --json`)")
    g = p.add_argument_group("baseline and training budget (defaults: the demo's CPU-sized baseline)")
    g.add_argument("--base-depth", type=float, default=0.5, help="depth multiplier that defines the baseline (0.5)")
    g.add_argument("--base-width", type=float, default=0.5, help="width multiplier that defines the baseline (0.5)")
    g.add_argument("--total-stride", type=int, default=16, help="cap the baseline's total stride (16; 0 = keep)")
    g.add_argument("--image-size", type=int, default=20, help="baseline input size in px (20; 0 = the model's)")
    g.add_argument("--data", default="fashion-mnist", help="fashion-mnist | mnist | digits")
    g.add_argument("--epochs", type=float, default=2.0)
    g.add_argument("--train-images", type=int, default=4000)
    g.add_argument("--eval-images", type=int, default=None,
                   help="evaluation images (2000; with --budgets the whole test set)")
    g.add_argument("--batch-size", type=int, default=128)
    g.add_argument("--lr", type=float, default=1.5e-2, help="AdamW learning rate, cosine decay (0.015)")
    g.add_argument("--workers", type=int, default=1, help="training processes, one torch thread each (1)")
    add_rounding_option(g, default=None, sweep=sweep)


def _baseline_and_budget(args: argparse.Namespace) -> tuple[Any, Any]:
    from effnet.search.trials import resolve_baseline
    from effnet.train.budget import Budget

    base = resolve_baseline(args.baseline, depth=args.base_depth, width=args.base_width,
                            total_stride=args.total_stride or None, resolution=args.image_size or None,
                            depth_rounding=args.depth_rounding)
    budget = Budget(epochs=args.epochs, train_images=args.train_images, eval_images=args.eval_images or 2000,
                    batch_size=args.batch_size, lr=args.lr)
    return base, budget


def cmd_search(args: argparse.Namespace) -> int:
    from effnet.search.experiments import prepare_search, write_search
    from effnet.search.grid import GridSettings
    from effnet.search.report import search_table
    from effnet.search.storage import open_storage
    from effnet.search.study import collect, open_study
    from effnet.search.trials import Experiment, run_search_workers

    out = output_dir(args.out or f"runs/search-{args.study}")
    url = args.storage or str(out / "search.log")
    store = open_storage(url)
    if args.baseline is None:  # join: the study defines grid, baseline, data and budget
        doc = open_study(store, args.study)
    else:
        base, budget = _baseline_and_budget(args)
        grid = GridSettings(step=args.step, target=args.target, tol=args.tol, on=args.on)
        candidates, exp = prepare_search(Experiment(base, args.data, budget), grid)
        doc = open_study(store, args.study, grid, candidates, exp.to_dict())
    print(f"study {args.study!r}: {len(doc['candidates'])} candidates on {url}", file=sys.stderr)
    if not args.report_only:
        run_search_workers(url, args.study, workers=args.workers, heartbeat=args.heartbeat,
                           stale_after=args.stale_after, on_progress=_progress_printer(len(doc["candidates"])))
    result = collect(store, args.study)
    write_search(result, out)
    if args.json:
        import json

        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(search_table(result))
        print(f"\nwrote {out}/results.json, search.md, search.png", file=sys.stderr)
    return 0


def _progress_printer(total: int) -> Any:
    bar = _bar(total, "search")

    def update(result: Any) -> None:
        bar.n = sum(r.state in ("COMPLETE", "FAIL") for r in result.records)
        bar.refresh()
        if bar.n >= total:
            bar.close()

    return update


def add_scale_options(p: argparse.ArgumentParser) -> None:
    """STEP 2 flags on ``effnet scale``: train the family with a search's coefficients."""
    g = p.add_argument_group("STEP 2: train the scaled family (paper §3.3)")
    g.add_argument("--coefficients", metavar="RESULTS.json", help="alpha, beta, gamma from `effnet search` (best)")
    g.add_argument("--train", action="store_true", help="train each phi with the search's data and budget")
    g.add_argument("--seeds", type=int, default=1, help="training seeds per phi (1)")
    g.add_argument("--out", help="folder for family.json/family.md (default runs/scale-<time>)")
    g.add_argument("--workers", type=int, default=1, help="training processes (1)")


def cmd_scale_train(args: argparse.Namespace) -> int:
    """``effnet scale BASELINE --coefficients R --phi 1:N [--train]``: the scaled family of BASELINE
    (a registered model or the search's ``baseline.json``) with the search's best (α, β, γ)."""
    from dataclasses import replace

    from effnet.search.experiments import family_table, run_family
    from effnet.search.grid import load_result
    from effnet.search.trials import Experiment, resolve_baseline
    from effnet.textfmt import parse_phi_range

    result = load_result(args.coefficients)
    best = result.best.candidate
    stored = Experiment.from_dict(result.context)
    base = stored.baseline if args.name == "-" else resolve_baseline(args.name, depth_rounding=args.depth_rounding)
    if args.depth_rounding:
        base = base.replace(depth_rounding=args.depth_rounding)
    print(f"{base.name}: alpha={best.alpha:g} beta={best.beta:g} gamma={best.gamma:g} from {args.coefficients} "
          f"(rank 1 of {len(result.completed)} completed)", file=sys.stderr)
    if not args.train:
        raise EffnetError("--coefficients without --train only reads the coefficients; add --train to train the "
                          "family, or pass --alpha/--beta/--gamma for the report")
    exp = Experiment(base, stored.data, replace(stored.budget, eval_split="test"))
    out = output_dir(args.out or time.strftime("runs/scale-%Y%m%d-%H%M%S"))
    rows = run_family(exp, best.coefficients, parse_phi_range(args.phi), out,
                      seeds=args.seeds, workers=args.workers, cache=out / "models", bar=_bar)
    print(family_table(rows))
    print(f"\nwrote {out}/family.json, family.md", file=sys.stderr)
    return 0


def _coefficients(args: argparse.Namespace) -> Any:
    from effnet.scaling import PAPER_COEFFICIENTS, Coefficients
    from effnet.search.grid import load_result

    if args.coefficients:
        return load_result(args.coefficients).best.candidate.coefficients
    if args.alpha is None:
        return PAPER_COEFFICIENTS
    return Coefficients(args.alpha, args.beta, args.gamma)


def _paper() -> Any:
    from effnet.scaling import PAPER_COEFFICIENTS

    return PAPER_COEFFICIENTS


def cmd_compare(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from effnet.search.compare import budget_statement, summary_table
    from effnet.search.experiments import run_compare
    from effnet.search.trials import Experiment

    if args.baseline is None:
        args.baseline = "efficientnet_b0"
    if args.budgets is not None:
        return cmd_sweep(args)
    if args.device != "cpu":
        raise EffnetError(f"--device {args.device} is the sweep's (with --budgets); one comparison trains on the CPU")
    base, budget = _baseline_and_budget(args)
    if args.seeds < 2:
        raise EffnetError(f"--seeds {args.seeds}: mean ± std needs at least 2 seeds (3 recommended)")
    out = output_dir(args.out or time.strftime("runs/compare-%Y%m%d-%H%M%S"))
    exp = Experiment(base, args.data, replace(budget, eval_split="test"))
    print(budget_statement(exp.budget.to_dict()), file=sys.stderr)
    report = run_compare(exp, _coefficients(args), args.phi, out,
                         seeds=args.seeds, workers=args.workers, cam_images=args.cam_images, bar=_bar,
                         adjust_phi=not args.exact_phi, reference=_paper() if args.reference else None)
    print(summary_table(report["rows"]))
    w = report["winner"]
    print(f"\nbest: {w['method']} (+{w['lead']:.2f} over {w['runner_up']}"
          f"{'' if w['separated'] else ', within one std'}) at {budget.train_images:,} images x {budget.epochs:g} "
          f"epochs; wrote {out}/compare.md, compare.png, cams.png")
    return 0


def _sweep_device(text: str) -> str:
    """``--device`` of the sweep, checked before any study is opened: a torch device of type cpu or
    cuda, and cuda only where torch sees a GPU (a CPU-only build or machine would fail in every worker)."""
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise EffnetError(f"--device {text!r} is not a device; use cpu or cuda (cuda:1 for the second GPU)") from None
    if dev.type not in ("cpu", "cuda"):
        raise EffnetError(f"--device {text}: the sweep trains on cpu or cuda only")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EffnetError(f"--device {text}: torch sees no CUDA device on this machine; use --device cpu")
    return str(dev)


def cmd_sweep(args: argparse.Namespace) -> int:
    """``effnet compare --budgets 8k,40k,200k``: the matched-MACs comparison at each budget (docs/sweep.md)."""
    from effnet.data.datasets import get_dataset
    from effnet.search.compare import budget_statement
    from effnet.search.experiments import run_sweep
    from effnet.search.sweep import SweepSettings, parse_budgets, parse_levels

    device = _sweep_device(args.device)
    base, budget = _baseline_and_budget(args)
    sizes = [len(get_dataset(args.data, split, seed=0).images) for split in ("train", "test")]  # type: ignore[attr-defined]
    budgets = parse_budgets(args.budgets, budget, max_images=sizes[0], test_images=args.eval_images or sizes[1])
    coeffs = _coefficients(args)
    settings = SweepSettings(base, args.data, tuple(budgets), seeds=args.seeds,
                             roundings=(args.depth_rounding,) if args.depth_rounding else ("ceil", "round"),
                             levels=parse_levels(args.macs_levels), coefficients=coeffs if args.coefficients or
                             args.alpha is not None else None)
    out = Path(args.out or time.strftime("runs/sweep-%Y%m%d-%H%M%S"))
    for b in budgets:
        print(budget_statement(b.to_dict()), file=sys.stderr)
    report = run_sweep(settings, out, storage=args.storage, prefix=args.study, workers=args.workers,
                       heartbeat=args.heartbeat, stale_after=args.stale_after, bar=_bar, train=not args.report_only,
                       device=device)
    print((out / "sweep.md").read_text())
    print(f"wrote {out}/sweep.md, sweep.csv, sweep.json, budget_sweep.png, gap.png, fig8.png "
          f"({len(report['rows'])} arm results from {len({(r['study'], r['job']) for r in report['rows']})} "
          "trained networks)", file=sys.stderr)
    return 0


def _demo_nas(out: Path, plan: Any, trials: int) -> str:
    """Step 0 before the demo: ``effnet nas`` on the demo's baseline, data and budget; the found
    ``baseline.json`` then goes through the grid, STEP 2 and the comparison (docs/nas.md)."""
    from effnet.cli.app import build_parser

    b = plan.budget
    argv = ["nas", plan.baseline, "--data", plan.data, "--trials", str(trials), "--workers", str(plan.workers),
            "--base-depth", str(plan.depth), "--base-width", str(plan.width), "--total-stride",
            str(plan.total_stride), "--image-size", str(plan.resolution), "--epochs", str(b.epochs),
            "--train-images", str(b.train_images), "--eval-images", str(b.eval_images), "--batch-size",
            str(b.batch_size), "--lr", str(b.lr), "--out", str(out)]
    args = build_parser().parse_args(argv)
    args.func(args)
    found = out / "baseline.json"
    if not found.exists():
        raise EffnetError(f"the architecture search in {out} completed no trial; see {out}/nas.md")
    return str(found)


def cmd_demo(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from effnet.search.demo import demo_plan, read_first, run_demo

    out = output_dir(args.out or time.strftime("runs/demo-%Y%m%d-%H%M%S"))
    t = time.time()
    plan = demo_plan(quick=args.quick, workers=args.workers, depth_rounding=args.depth_rounding)
    if args.nas:
        plan = replace(plan, baseline=_demo_nas(out / "nas", plan, args.nas_trials))
    report = run_demo(out, plan)
    search, cmp = report["search"], report["compare"]
    print(read_first(report["plan"]["budget"])[0].replace("**", ""))
    best = search["best"]
    print(f"STEP 1: {search['counts']['COMPLETE']} of {len(search['records'])} candidates completed; best alpha="
          f"{best['alpha']:g} beta={best['beta']:g} gamma={best['gamma']:g} ({best['accuracy']:.2f} %)")
    for r in cmp["rows"]:
        print(f"  {r['method']:<10} MACs x{r['macs_ratio']:.2f}  top-1 {r['mean']:.2f} ± {r['std']:.2f}")
    print(f"compare winner: {cmp['winner']['method']}; {time.time() - t:.0f} s; report: {out}/report.html "
          f"({out}/report.md)")
    return 0


def add_commands(sub: Any) -> None:
    s = sub.add_parser("search", help="STEP 1: grid search of alpha, beta, gamma (distributed, resumable)")
    _add_baseline(s, optional=True)
    g = s.add_argument_group("grid and coordination")
    g.add_argument("--step", type=float, default=0.05, help="grid step from 1 (0.05)")
    g.add_argument("--target", type=float, default=2.0, help="alpha*beta^2*gamma^2 target (2)")
    g.add_argument("--tol", type=float, default=0.1, help="allowed distance from the target (0.1)")
    g.add_argument("--on", choices=("formula", "macs"), default="formula",
                   help="constrain alpha*beta^2*gamma^2 or the measured MACs ratio (formula)")
    g.add_argument("--storage", help="journal file, or postgresql://user@host/db to share across machines "
                                     "(default OUT/search.log)")
    g.add_argument("--study", default="search", help="study name; join an existing one by naming it (search)")
    g.add_argument("--out", help="folder for results.json, search.md, search.png (default runs/search-STUDY)")
    g.add_argument("--heartbeat", type=float, default=10.0, help="seconds between a worker's heartbeats (10)")
    g.add_argument("--stale-after", type=float, default=60.0,
                   help="seconds without heartbeat before a trial is retried elsewhere (60)")
    g.add_argument("--report-only", action="store_true", help="only collect and write the current results")
    g.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_search)

    c = sub.add_parser("compare", help="depth/width/resolution-only vs compound scaling at matched MACs")
    _add_baseline(c, optional=True, sweep=True)
    g = c.add_argument_group("training-budget sweep (docs/sweep.md)")
    g.add_argument("--budgets", help="run the comparison at each budget: image-epochs (8k,40k,200k: --epochs epochs "
                                     "over as many images as that takes, up to the whole training set) or "
                                     "IMAGESxEPOCHS pairs (4000x2,60000x4); every network on the whole test set")
    g.add_argument("--macs-levels", default="2,4",
                   help="MACs targets as multiples of the baseline's: the first at every budget, all at the "
                        "largest (2,4)")
    g.add_argument("--storage", help="journal file or postgresql://user@host/db shared by machines "
                                     "(default OUT/sweep.log)")
    g.add_argument("--study", default="sweep", help="prefix of the sweep's study names (sweep)")
    g.add_argument("--heartbeat", type=float, default=10.0, help="seconds between a worker's heartbeats (10)")
    g.add_argument("--stale-after", type=float, default=60.0,
                   help="seconds without heartbeat before a training is retried elsewhere (60)")
    g.add_argument("--report-only", action="store_true", help="only write the tables and plots of what is finished")
    g.add_argument("--device", default="cpu",
                   help="where this machine's workers train: cpu (default) or cuda on a GPU machine; rows record it")
    c.add_argument("--coefficients", metavar="RESULTS.json", help="compound alpha, beta, gamma from a search")
    c.add_argument("--alpha", type=float)
    c.add_argument("--beta", type=float, default=1.0)
    c.add_argument("--gamma", type=float, default=1.0)
    c.add_argument("--phi", type=float, default=1.0, help="compound budget: MACs of (alpha^phi, beta^phi, gamma^phi)")
    c.add_argument("--exact-phi", action="store_true",
                   help="keep --phi even if a single dimension cannot match its MACs within 8%% (default: move "
                        "phi by up to 0.5 to a budget all three can match)")
    c.add_argument("--reference", action="store_true",
                   help="also compare the paper's (1.2, 1.1, 1.15) as compound-ref at the same MACs")
    c.add_argument("--seeds", type=int, default=3)
    c.add_argument("--cam-images", type=int, default=4, help="test images in the CAM figure (0: none)")
    c.add_argument("--out", help="folder (default runs/compare-<time>)")
    c.set_defaults(func=cmd_compare)

    d = sub.add_parser("demo", help="search -> scale -> compare on Fashion-MNIST with a report (main job)")
    d.add_argument("--quick", action="store_true", help="a smaller budget: about 3 minutes on 2 cores")
    d.add_argument("--out", help="report folder (default runs/demo-<time>)")
    d.add_argument("--workers", type=int, default=2, help="training processes (2)")
    d.add_argument("--nas", action="store_true",
                   help="step 0 first: search the baseline (`effnet nas`, TPE beside random search), then run the "
                        "demo from the found baseline.json (docs/nas.md)")
    d.add_argument("--nas-trials", type=int, default=8, help="trials per strategy of the --nas step (8)")
    add_rounding_option(d, default="ceil")
    d.set_defaults(func=cmd_demo)
