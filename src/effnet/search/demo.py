"""``effnet demo``: the paper in miniature on Fashion-MNIST, on a CPU, in minutes.

STEP 1 (§3.3): a grid search of (α, β, γ) under α·β²·γ² ≈ 2 at φ = 1, run by two search workers
that share a journal storage. STEP 2: the found coefficients scale the baseline to φ = 0, 1, 2.
Then Table 3 / Fig. 8: depth-, width-, resolution-only and compound scaling at matched MACs over
three seeds, with class activation maps of each on the same test images (Fig. 7). Everything lands
in one folder as Markdown and HTML with PNG plots. The baseline is EfficientNet-B0's stage table
at depth 0.5 and width 0.5, stride 16, 20 px images: small enough that one training of the budget
takes seconds, big enough that the three dimensions still mean something.
"""

from __future__ import annotations

import html
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from effnet.scaling import PAPER_COEFFICIENTS
from effnet.search.grid import GridSettings
from effnet.textfmt import table
from effnet.train.budget import Budget

__all__ = ["SWEEP_FINDING", "DemoPlan", "demo_plan", "read_first", "run_demo"]


@dataclass(frozen=True)
class DemoPlan:
    """Everything the demo does, so tests can run the same pipeline on a tiny plan."""

    data: str = "fashion-mnist"
    baseline: str = "efficientnet_b0"
    depth: float = 0.5
    width: float = 0.5
    total_stride: int = 16
    resolution: int = 20
    grid: GridSettings = field(default_factory=lambda: GridSettings(step=0.1, target=2.0, tol=0.05))
    budget: Budget = field(default_factory=lambda: Budget(epochs=2, train_images=4000, eval_images=2000, batch_size=128,
                                                          lr=1.5e-2))
    phis: tuple[float, ...] = (0.0, 1.0, 2.0)
    compare_phi: float = 1.0
    seeds: int = 3
    workers: int = 2
    cam_images: int = 4
    reference_paper: bool = True  # also compare the paper's (1.2, 1.1, 1.15) at the same MACs
    depth_rounding: str = "ceil"  # repeats = ceil(d · L) as the official code, or round (docs/sweep.md)


def demo_plan(quick: bool = False, workers: int = 2, depth_rounding: str = "ceil") -> DemoPlan:
    """The full plan (≈ 10–20 min on 2 cores) or ``quick`` (≈ 3 min: a 0.2-step grid of 6 candidates,
    2000 training images, φ ≤ 1, 2 seeds: a check of the pipeline more than an experiment)."""
    plan = DemoPlan(workers=workers, depth_rounding=depth_rounding)
    if quick:
        plan = replace(plan, grid=GridSettings(step=0.2, target=2.0, tol=0.1), phis=(0.0, 1.0), seeds=2,
                       budget=Budget(epochs=2, train_images=2000, eval_images=1000, batch_size=64, lr=1e-2))
    return plan


def _bar(total: int, desc: str) -> Any:
    from effnet.progress import progress_bar

    return progress_bar(total, desc, unit="run")


def run_demo(out: str | Path, plan: DemoPlan | None = None) -> dict[str, Any]:
    """Run search → scale → compare into ``out``; returns the report's data (also ``report.json``)."""
    from effnet.search.experiments import run_compare, run_family, run_search_step
    from effnet.search.trials import Experiment, resolve_baseline

    plan = plan or DemoPlan()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    base = resolve_baseline(plan.baseline, depth=plan.depth, width=plan.width, total_stride=plan.total_stride,
                            resolution=plan.resolution, depth_rounding=plan.depth_rounding)  # type: ignore[arg-type]
    (out / "baseline.json").write_text(json.dumps({"spec": base.to_dict()}, indent=2))
    timings: dict[str, float] = {}
    exp = Experiment(base, plan.data, plan.budget)
    search = run_search_step(exp, plan.grid, out / "search", workers=plan.workers,
                             bar=_bar)
    timings["search"] = time.time() - t0
    coeffs = search.best.candidate.coefficients
    reference = PAPER_COEFFICIENTS if plan.reference_paper and coeffs != PAPER_COEFFICIENTS else None
    test_exp = exp.replace(budget=replace(plan.budget, eval_split="test"))
    t = time.time()
    family = run_family(test_exp, coeffs, plan.phis, out / "scale", workers=plan.workers,
                        cache=out / "models", bar=_bar)
    timings["scale"] = time.time() - t
    t = time.time()
    compare = run_compare(test_exp, coeffs, plan.compare_phi, out / "compare", seeds=plan.seeds,
                          workers=plan.workers, cache=out / "models", cam_images=plan.cam_images, bar=_bar,
                          family=family, reference=reference)
    timings["compare"] = time.time() - t
    timings["total"] = time.time() - t0
    report = {"plan": _plan_dict(plan), "baseline": base.to_dict(), "search": search.to_dict(), "family": family,
              "compare": compare, "timings": timings}
    write_report(out, report)
    return report


def _plan_dict(plan: DemoPlan) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(plan)


def _baseline_words(plan: dict[str, Any]) -> str:
    """What the demo started from: B0's table shrunk, or the architecture step 0 found (``--nas``)."""
    shrink = f"depth {plan['depth']:g}, width {plan['width']:g}, total stride {plan['total_stride']}"
    if plan["baseline"] == "efficientnet_b0":
        return f"EfficientNet-B0 stage table at {shrink}"
    return f"the architecture found by step 0 (`{plan['baseline']}`, searched at {shrink}; nas/nas.md)"


def report_markdown(r: dict[str, Any]) -> str:
    """The report as Markdown: what was run, the three tables, the plots, and the honest verdict."""
    from effnet.search.grid import load_result_dict
    from effnet.search.report import HEADERS, search_rows

    plan, search, cmp = r["plan"], load_result_dict(r["search"]), r["compare"]
    b, best = plan["budget"], search.best
    tm = r["timings"]
    md = [f"# effnet demo: compound scaling on {plan['data']}", "", *read_first(b), "",
          f"Baseline: {_baseline_words(plan)}, {plan['resolution']} px ({cmp['rows'][0]['macs'] / 1e6:.2f} M MACs). "
          "Every network "
          f"is trained identically: {b['train_images']} training images, {b['epochs']:g} epochs, batch "
          f"{b['batch_size']}, AdamW lr {b['lr']:g} with cosine decay. Wall time: search {tm['search']:.0f} s, scale "
          f"{tm['scale']:.0f} s, compare {tm['compare']:.0f} s, total {tm['total'] / 60:.1f} min.", "",
          "## STEP 1: grid search of (α, β, γ) at φ = 1", "",
          f"Grid step {search.grid.step:g}, constraint |α·β²·γ² − {search.grid.target:g}| ≤ {search.grid.tol:g}: "
          f"{len(search.records)} candidates, {len(search.completed)} completed. Accuracy on {b['eval_images']} "
          f"images held out from the training set. Best: **α = {best.candidate.alpha:g}, β = "
          f"{best.candidate.beta:g}, γ = {best.candidate.gamma:g}** ({best.accuracy:.2f} %).", "",
          table(HEADERS, search_rows(search), markdown=True), "", "![search](search/search.png)", "",
          "## STEP 2: the scaled family with the found coefficients", "",
          table(["φ", "d", "w", "r", "res", "MACs (M)", "MACs x", "top-1 (test)"],
                    [[f"{f['phi']:g}", f"{f['depth']:.3f}", f"{f['width']:.3f}", f"{f['resolution_mult']:.3f}",
                      f["resolution"], f"{f['macs'] / 1e6:.2f}", f"{f['macs_ratio']:.2f}", f"{f['accuracy']:.2f}"]
                     for f in r["family"]], markdown=True), "",
          *_compare_md(cmp, plan),
          "![compare](compare/compare.png)", "", "Class activation maps (seed 0 of each method, same images):", "",
          "![cams](compare/cams.png)", ""]
    return "\n".join(md)


SWEEP_FINDING = (
    "No budget this machine can afford reproduces the paper's ordering on this data. The training-budget sweep "
    "(docs/sweep.md: 3 seeds, 10,000 test images, ≈ 2.35× the baseline's MACs) ranks resolution-only first, stably, "
    "at the full demo's budget (4,000 images × 2 epochs: 76.53 % against the baseline's 74.54 %), at 5× that "
    "budget (20,000 × 2: 86.62 % against 85.26 %) and on the whole training set (60,000 × 3.33: 92.01 % against "
    "89.74 %). The paper's compound (1.2, 1.1, 1.15) trails it by 14.5 points with depth rounded by ceil and 2.9 by "
    "round at the demo's budget, and by 2.4 and 2.3 on the whole training set, level with the unscaled baseline: "
    "longer training closes most of the gap that ceil's extra blocks open, but not the last 2 points. A second "
    "scaling step on the whole training set (≈ 3.4× the MACs, as the paper's Fig. 8) says the same: resolution "
    "92.53 %, the paper's compound second at 89.87 %. Read the tables below as a statement about this budget and "
    "this data.")
"""What the training-budget sweep measured (docs/sweep.md): the demo's report and output lead with it."""


def read_first(budget: dict[str, Any]) -> list[str]:
    """The report's first lines: the budget its comparison is about, and what the sweep found about
    that budget and the larger ones, before any table that could be read as "scaling hurts"."""
    from effnet.search.compare import budget_statement

    return [f"**Read this first.** {budget_statement(budget)} {SWEEP_FINDING}"]


def _compare_md(cmp: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    """The comparison's table and an honest reading of it (ties, degenerate coefficients, budget)."""
    b, win, rows = plan["budget"], cmp["winner"], {x["method"]: x for x in cmp["rows"]}
    notes = []
    if cmp["phi"] != cmp["phi_asked"]:
        notes.append(f"φ moved from {cmp['phi_asked']:g} to {cmp['phi']:g}: the nearest budget that depth, width and "
                     "resolution alone can each reach within 8 % of compound's MACs (rounding makes each cost a step "
                     "function).")
    def net(x: dict[str, Any]) -> tuple[Any, ...]:
        return x["resolution"], x["blocks"], tuple(x["widths"])

    same = [m for m in ("depth", "width", "resolution") if net(rows[m]) == net(rows["compound"])]
    if same:
        notes.append(f"The compound network here is the same network as the {same[0]}-only one (the search's best "
                     f"coefficients scale {same[0]} alone, or rounding erases the rest), so their numbers are equal.")
    far = [m for m, x in rows.items() if x["match_error"] > 0.10]
    if far:
        notes.append(f"Not matched within 10 %: {', '.join(far)} (the closest reachable cost is shown; read those "
                     "rows as a different budget).")
    if cmp.get("reference"):
        a, b_, g = cmp["reference"]
        notes.append(f"compound-ref: the paper's coefficients (α = {a:g}, β = {b_:g}, γ = {g:g}) at the φ = "
                     f"{rows['compound-ref']['phi']:g} that matches the same MACs.")
    verdict = (f"**Result: {win['method']}** has the highest mean accuracy, {win['lead']:.2f} points above "
               f"{win['runner_up']}; " + ("the lead is larger than either standard deviation." if win["separated"]
                                          else "the lead is within one standard deviation: at this budget the "
                                          "experiment does not separate them."))
    if rows["baseline"]["mean"] >= max(x["mean"] for m, x in rows.items() if m != "baseline"):
        verdict += (" No scaled network beats the unscaled baseline: with a fixed budget of "
                    f"{b['train_images']} images × {b['epochs']:g} epochs the larger networks are undertrained (the "
                    "paper trains every model for 350 epochs).")
    table_rows = [[x["method"], f"{x['multipliers']['depth']:.3g}", f"{x['multipliers']['width']:.3g}",
                   f"{x['multipliers']['resolution']:.3g}", x["resolution"], f"{x['macs'] / 1e6:.2f}",
                   f"{x['macs_ratio']:.2f}", "" if x["method"] == "baseline" else f"{100 * x['match_error']:.1f} %",
                   f"{x['mean']:.2f} ± {x['std']:.2f}"] for x in cmp["rows"]]
    return [f"## Single-dimension vs compound scaling at matched MACs (φ = {cmp['phi']:g}, {cmp['seeds']} seeds)", "",
            *(n for note in notes for n in (note, "")),
            table(["method", "d", "w", "r", "res", "MACs (M)", "MACs x", "vs compound", "top-1 mean ± std"],
                      table_rows, markdown=True), "",
            verdict + f" Accuracies on the first {b['eval_images']} Fashion-MNIST test images.", ""]


def write_report(out: Path, report: dict[str, Any]) -> None:
    """``report.json``, ``report.md`` and ``report.html`` (the Markdown's tables and images as HTML)."""
    (out / "report.json").write_text(json.dumps(report, indent=2))
    md = report_markdown(report)
    (out / "report.md").write_text(md)
    (out / "report.html").write_text(markdown_to_html(md, title="effnet demo"))


def markdown_to_html(md: str, *, title: str) -> str:
    """The small Markdown subset the report uses (headings, pipe tables, images, bold) as HTML."""
    import re

    body, rows = [], []

    def inline(s: str) -> str:
        return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(s))

    def flush() -> None:
        if rows:
            head, *rest = rows
            body.append("<table><tr>" + "".join(f"<th>{inline(c)}</th>" for c in head) + "</tr>" +
                        "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in rest) +
                        "</table>")
            rows.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not all(set(c) <= {"-"} for c in cells):
                rows.append(cells)
            continue
        flush()
        if m := re.match(r"!\[(.*)\]\((.*)\)", line):
            body.append(f'<p><img src="{html.escape(m[2])}" alt="{html.escape(m[1])}" style="max-width:100%"></p>')
        elif m := re.match(r"(#+) (.*)", line):
            body.append(f"<h{len(m[1])}>{inline(m[2])}</h{len(m[1])}>")
        elif line.strip():
            body.append(f"<p>{inline(line)}</p>")
    flush()
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
