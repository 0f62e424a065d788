"""What the training-budget sweep says: mean ± std per (budget, arm, rounding), whether each budget's
ordering is the paper's (compound first, stably), the gap "paper's compound − best single dimension"
with its standard error, and the three figures (docs/sweep.md)."""

from __future__ import annotations

import csv
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from effnet.plots import pyplot, save_figure
from effnet.spec import NetworkSpec
from effnet.textfmt import table

__all__ = ["gap", "ordering", "plot_budget_sweep", "plot_fig8", "plot_gap", "summarize_sweep", "sweep_document",
           "sweep_markdown", "write_csv"]

SINGLE = ("depth", "width", "resolution")
COMPOUND = ("compound", "paper")
REQUIRED = {"depth", "width", "resolution", "paper"}  # the arms a verdict needs
COLORS = {"baseline": "black", "depth": "tab:orange", "width": "tab:green", "resolution": "tab:purple",
          "compound": "tab:red", "paper": "tab:brown"}
Key = tuple[str, float, str, str]  # budget, level, method, rounding


def _stats(accs: Sequence[float]) -> tuple[float, float, float]:
    """Mean, sample std (0 for one seed) and standard error of the mean."""
    std = statistics.stdev(accs) if len(accs) > 1 else 0.0
    return statistics.fmean(accs), std, std / math.sqrt(len(accs))


def summarize_sweep(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean, sample std and standard error of accuracy per (budget, level, method, rounding)."""
    groups: dict[Key, list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["budget"], r["level"], r["method"], r["rounding"])].append(r)
    out = []
    for (budget, level, method, rounding), rs in groups.items():
        acc = [r["accuracy"] for r in rs]
        mean, std, se = _stats(acc)
        out.append({"budget": budget, "image_epochs": rs[0]["image_epochs"], "images": rs[0]["images"],
                    "epochs": rs[0]["epochs"], "level": level, "method": method, "rounding": rounding,
                    "n": len(acc), "accuracies": {r["seed"]: r["accuracy"] for r in rs}, "mean": mean,
                    "std": std, "se": se, "macs": rs[0]["macs"], "blocks": rs[0]["blocks"],
                    "resolution": rs[0]["resolution"],
                    "seconds": statistics.fmean(r["seconds"] or 0.0 for r in rs)})
    order = {m: i for i, m in enumerate(("baseline", *SINGLE, *COMPOUND))}
    return sorted(out, key=lambda s: (s["image_epochs"], s["level"], order.get(s["method"], 9), s["rounding"]))


def _contenders(summary: Sequence[Mapping[str, Any]], rounding: str) -> list[Mapping[str, Any]]:
    """The scaled arms built with ``rounding`` (or scaling no depth, where the rule does not apply)."""
    return [s for s in summary if s["method"] != "baseline" and s["rounding"] in ("-", rounding)]


def _seed_winner(arms: Sequence[Mapping[str, Any]], seed: int) -> str:
    return str(max(arms, key=lambda a: a["accuracies"][seed])["method"])


def ordering(summary: Sequence[Mapping[str, Any]], rounding: str, seeds: int) -> dict[str, Any] | None:
    """At one (budget, level): the leader by mean over the seeds every arm has finished, its lead over
    the runner-up, how many of those seeds it wins, whether that is stable (all ``seeds`` finished, it
    wins ≥ 2/3 of them and leads by more than one standard error) and the paper's (a compound arm
    leads). ``complete`` is False while seeds are missing (a provisional reading); None until depth,
    width, resolution and the paper's compound each have a seed in common."""
    arms = _contenders(summary, rounding)
    common = _common(arms)
    if not {a["method"] for a in arms} >= REQUIRED or not common:
        return None
    means = {id(a): statistics.fmean(a["accuracies"][k] for k in common) for a in arms}
    ranked = sorted(arms, key=lambda a: -means[id(a)])
    first, second = ranked[0], ranked[1]
    wins = Counter(_seed_winner(arms, seed) for seed in common)
    lead = means[id(first)] - means[id(second)]
    complete = len(common) >= seeds
    stable = (complete and wins[first["method"]] >= math.ceil(2 * len(common) / 3)
              and lead > max(first["se"], second["se"]))
    return {"leader": first["method"], "runner_up": second["method"], "lead": lead,
            "wins": wins[first["method"]], "seeds": len(common), "complete": complete, "stable": stable,
            "paper_order": first["method"] in COMPOUND}


def _common(arms: Sequence[Mapping[str, Any]]) -> list[int]:
    """The seeds every one of ``arms`` has finished."""
    return sorted(set.intersection(*(set(a["accuracies"]) for a in arms))) if arms else []


def gap(summary: Sequence[Mapping[str, Any]], rounding: str) -> dict[str, Any] | None:
    """The paper's compound minus the best single dimension (by mean) under ``rounding``, with the
    standard error of the difference sqrt(se₁² + se₂²); None if either is missing. Like
    :func:`ordering`, over the seeds every contender has finished, so a partial study's gap and its
    verdict read the same seeds (once every seed is in, these are all of them)."""
    arms = _contenders(summary, rounding)
    common = _common(arms)
    paper = [a for a in arms if a["method"] == "paper"]
    singles = [a for a in arms if a["method"] in SINGLE]
    if not paper or not singles or not common:
        return None
    stats = {id(a): _stats([a["accuracies"][k] for k in common]) for a in (*paper, *singles)}
    best = max(singles, key=lambda a: stats[id(a)][0])
    (pm, _, pse), (bm, _, bse) = stats[id(paper[0])], stats[id(best)]
    return {"gap": pm - bm, "se": math.hypot(pse, bse), "best_single": best["method"], "seeds": len(common)}


def _by_budget(summary: Sequence[Mapping[str, Any]], level: float) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for s in summary:
        if s["level"] == level or s["method"] == "baseline":
            out[s["budget"]].append(s)
    return out


def _series(summary: Sequence[Mapping[str, Any]], level: float) -> dict[tuple[str, str], list[Mapping[str, Any]]]:
    series: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for s in summary:
        if s["level"] == level or s["method"] == "baseline":
            series[(s["method"], s["rounding"])].append(s)
    return series


def _curves(ax: Any, series: Mapping[tuple[str, str], Sequence[Mapping[str, Any]]], x: str, scale: float = 1.0) -> None:
    """One error-bar line per (arm, rounding): mean ± std over seeds against ``x``; round dashed.
    Arms whose points coincide (the search's compound (1, 1.4, 1) is the width-only network at matched
    MACs) are drawn once with both names, so neither hides under the other."""
    drawn: dict[tuple[tuple[float, float], ...], tuple[Any, list[str]]] = {}
    for (method, rounding), ss in series.items():
        key = tuple((float(s[x]), float(s["mean"])) for s in ss)
        name = method + ("" if rounding == "-" else f" ({rounding})")
        if key in drawn:
            drawn[key][1].append(name)
            continue
        line = ax.errorbar([s[x] / scale for s in ss], [s["mean"] for s in ss], yerr=[s["std"] for s in ss],
                           fmt="o" + ("--" if rounding == "round" else "-"), capsize=3,
                           color=COLORS.get(method, "gray"), label=name)
        drawn[key] = (line, [name])
    for line, names in drawn.values():
        line.set_label(" = ".join(names))


def _save(fig: Any, ax: Any, path: str | Path, labels: tuple[str, str, str], log_x: bool = False) -> Path:
    if log_x:
        ax.set_xscale("log")
    xlabel, ylabel, title = labels
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return save_figure(fig, path)


BUDGET_AXIS = "training budget (image-epochs per network)"
ACC_AXIS = "top-1 on the Fashion-MNIST test set (%)"


def plot_budget_sweep(summary: Sequence[Mapping[str, Any]], level: float, path: str | Path) -> Path:
    """Accuracy (mean ± std over seeds) of each arm against the training budget (image-epochs, log
    axis); round-rounded arms dashed."""
    fig, ax = pyplot().subplots(figsize=(7.5, 4.8))
    _curves(ax, _series(summary, level), "image_epochs")
    return _save(fig, ax, path, (BUDGET_AXIS, ACC_AXIS, f"matched MACs (≈ {level:g}× the baseline) across training "
                                 "budgets"), log_x=True)


def plot_gap(summary: Sequence[Mapping[str, Any]], level: float, roundings: Sequence[str], path: str | Path) -> Path:
    """The paper's compound − best single dimension (± one standard error) against the budget."""
    fig, ax = pyplot().subplots(figsize=(7, 4.2))
    groups = _by_budget(summary, level)
    for r in roundings:
        pts = [(ss[0]["image_epochs"], g) for ss in groups.values() if (g := gap(ss, r)) is not None]
        if pts:
            ax.errorbar([p[0] for p in pts], [p[1]["gap"] for p in pts], yerr=[p[1]["se"] for p in pts],
                        fmt="o-" if r == "ceil" else "s--", capsize=4, label=f"depth rounding {r}")
    ax.axhline(0, color="gray", lw=1)
    return _save(fig, ax, path, (BUDGET_AXIS, "paper's compound − best single dimension (points)",
                                 "above 0: the paper's claim holds at that budget"), log_x=True)


def plot_fig8(summary: Sequence[Mapping[str, Any]], budget: str, path: str | Path) -> Path:
    """Fig. 8 in miniature: accuracy against MACs at one budget, one curve per arm from the baseline
    through each MACs level."""
    fig, ax = pyplot().subplots(figsize=(7, 4.6))
    at = [s for s in summary if s["budget"] == budget]
    base = [s for s in at if s["method"] == "baseline"]
    series: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for s in at:
        if s["method"] != "baseline":
            series[(s["method"], s["rounding"])].append(s)
    _curves(ax, {k: base + sorted(v, key=lambda s: s["macs"]) for k, v in series.items()}, "macs", 1e6)
    return _save(fig, ax, path, ("MACs (millions)", ACC_AXIS,
                                 f"scaling one dimension vs compound at budget {budget} (paper Fig. 8)"))


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    cols = ["budget", "image_epochs", "images", "epochs", "level", "method", "rounding", "seed", "accuracy", "macs",
            "blocks", "resolution", "depth", "width", "res_mult", "phi", "seconds", "device"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return Path(path)


def _verdict(budget: str, ss: Sequence[Mapping[str, Any]], roundings: Sequence[str], seeds: int) -> str:
    s0 = ss[0]
    parts = [f"**{budget}** ({s0['images']:,} images × {s0['epochs']:g} epochs = {s0['image_epochs']:,.0f} "
             "image-epochs):"]
    for r in roundings:
        o, g = ordering(ss, r, seeds), gap(ss, r)
        if o is None:
            parts.append(f"{r}: not every arm has a finished seed yet.")
            continue
        kind = ("stable" if o["stable"] else "not stable") if o["complete"] else f"provisional: {seeds} seeds asked"
        holds = ("the paper's ordering holds" if o["paper_order"] and o["stable"] else
                 "a compound arm leads, not yet stably" if o["paper_order"] else
                 "the paper's ordering does not hold at this budget" if o["complete"] else
                 "so far the paper's ordering does not hold at this budget")
        gtxt = "" if g is None else (f" Paper's compound − best single dimension ({g['best_single']}): "
                                     f"{g['gap']:+.2f} ± {g['se']:.2f} (SE).")
        parts.append(f"{r}: {o['leader']} leads by {o['lead']:.2f} over {o['runner_up']}, winning {o['wins']} of "
                     f"{o['seeds']} seeds ({kind}): {holds}.{gtxt}")
    return " ".join(parts)


def sweep_markdown(summary: Sequence[Mapping[str, Any]], *, levels: Sequence[float], roundings: Sequence[str],
                   seeds: int, header: Sequence[str] = ()) -> str:
    """The table (every arm × budget × rounding: mean ± std, MACs, blocks, mean wall time per
    training) and a sentence per budget on whether its ordering is the paper's."""
    rows = [[s["budget"], f"{s['level']:g}" if s["method"] != "baseline" else "1", s["method"], s["rounding"],
             s["resolution"], s["blocks"], f"{s['macs'] / 1e6:.2f}", f"{s['n']}",
             f"{s['mean']:.2f} ± {s['std']:.2f}", f"{s['seconds']:.0f}"] for s in summary]
    md = [*header, "", table(["budget", "MACs level", "arm", "rounding", "px", "blocks", "MACs (M)", "seeds",
                              "top-1 mean ± std", "s / training"], rows, markdown=True), "",
          f"Ordering at MACs ≈ {levels[0]:g}× the baseline (stable: the leader wins at least 2 of 3 seeds and leads "
          "by more than one standard error; the paper's: a compound arm leads). Conclusions are about each "
          "budget, not about training to convergence.", ""]
    for budget, ss in _by_budget(summary, levels[0]).items():
        md += ["- " + _verdict(budget, ss, roundings, seeds)]
    for level in levels[1:]:  # the second scaling step (Fig. 8), trained at the largest budget only
        at = {b: ss for b, ss in _by_budget(summary, level).items()
              if any(s["level"] == level and s["method"] != "baseline" for s in ss)}
        if at:
            md += ["", f"Ordering at MACs ≈ {level:g}× the baseline:", ""]
            md += ["- " + _verdict(budget, ss, roundings, seeds) for budget, ss in at.items()]
    return "\n".join(md) + "\n"


def sweep_document(report: Mapping[str, Any]) -> str:
    """``sweep.md``: what was trained and on what machine, then :func:`sweep_markdown`."""
    st = report["settings"]
    budgets = ", ".join(f"{b['train_images']:,} images × {b['epochs']:g} epochs" for b in st["budgets"])
    c, base = st["coefficients"], NetworkSpec.from_dict(st["baseline"])
    load = " → ".join("/".join(f"{x:.1f}" for x in la) for la in report["load_average"])
    header = ["# Matched-MACs comparison across training budgets", "",
              f"Budgets: {budgets}; each network evaluated on {st['budgets'][0]['eval_images']:,} "
              f"{st['data']} test images. {st['seeds']} seeds per arm; depth rounding "
              f"{' and '.join(st['roundings'])} for the arms that scale depth; MACs levels "
              f"{', '.join(f'{v:g}×' for v in st['levels'])} the baseline's ({st['levels'][0]:g}× at every budget, "
              "all at the largest). Arms: baseline, depth, width, resolution"
              + ("" if c is None else f", compound (search: α = {c['alpha']:g}, β = {c['beta']:g}, γ = {c['gamma']:g})")
              + f", paper (α = {st['reference']['alpha']:g}, β = {st['reference']['beta']:g}, "
              f"γ = {st['reference']['gamma']:g}), each matched to the level's MACs. Baseline: "
              f"{base.name}, {base.resolution} px, {base.num_blocks} blocks.", "",
              f"Machine: {report['cpu']}, {report['workers']} worker(s); load average (1/5/15 min) {load}."
              if report["workers"] is not None else  # --report-only: the trainings ran elsewhere or earlier
              f"Report only, nothing trained in this run (written on {report['cpu']}; load average {load}); "
              "the s / training column is from the runs that trained each network."]
    return sweep_markdown(report["summary"], levels=st["levels"], roundings=st["roundings"], seeds=st["seeds"],
                          header=header)
