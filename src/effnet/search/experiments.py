"""The three experiments of the paper, each writing its tables, JSON and plots into a folder:
STEP 1 (grid search of α, β, γ), STEP 2 (the compound-scaled family) and the single-dimension vs
compound comparison at matched MACs. The CLI (``search``, ``scale --train``, ``compare``) and
``effnet demo`` all call these, so what the demo reports is what the commands do."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from effnet.macs import estimate_cost
from effnet.scaling import Coefficients, Multipliers, compound_multipliers, scale_spec
from effnet.search.compare import (
    budget_statement,
    cam_grid,
    choose_phi,
    plan_arms,
    plot_compare,
    summarize,
    summary_table,
    winner,
)
from effnet.search.grid import Candidate, GridSettings, SearchResult, grid_candidates
from effnet.search.report import plot_search, search_table
from effnet.search.trials import Experiment, Job, job_key, run_jobs

if TYPE_CHECKING:
    from effnet.search.sweep import SweepSettings
from effnet.textfmt import table

__all__ = ["prepare_search", "run_compare", "run_family", "run_search_step", "run_sweep"]

Bar = Callable[[int, str], Any] | None


def prepare_search(exp: Experiment, grid: GridSettings) -> tuple[list[Candidate], Experiment]:
    """The grid's candidates (with the measured MACs ratio of each φ = 1 network) and the experiment
    every worker trains them with (evaluated on images held out from the training set)."""
    exp = exp.replace(budget=replace(exp.budget, eval_split="val"))

    def ratio(c: Coefficients) -> float:
        return exp.macs_ratio(scale_spec(exp.baseline, Multipliers(c.alpha, c.beta, c.gamma)))

    return grid_candidates(grid, macs_ratio=ratio), exp


def write_search(result: SearchResult, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    result.save(out / "results.json")
    (out / "search.md").write_text(search_table(result) + "\n")
    plot_search(result, out / "search.png")


def run_search_step(exp: Experiment, grid: GridSettings, out: Path, *, workers: int = 1,
                    storage: str | None = None, study: str = "search", bar: Bar = None, heartbeat: float = 10.0,
                    stale_after: float = 60.0) -> SearchResult:
    """STEP 1 into ``out`` (``results.json``, ``search.md``, ``search.png``); the study lives in
    ``storage`` (default ``out/search.log``), so rerunning the same call resumes it."""
    from effnet.search.storage import open_storage
    from effnet.search.study import collect, open_study
    from effnet.search.trials import run_search_workers

    out.mkdir(parents=True, exist_ok=True)
    url = storage or str(out / "search.log")
    candidates, exp = prepare_search(exp, grid)
    store = open_storage(url)
    open_study(store, study, grid, candidates, exp.to_dict())
    progress = bar(len(candidates), "STEP 1 search") if bar else None

    def update(result: SearchResult) -> None:
        if progress is not None:
            progress.n = sum(r.state in ("COMPLETE", "FAIL") for r in result.records)
            best = result.best if result.completed else None
            if best is not None:
                progress.set_postfix_str(f"best a={best.candidate.alpha:g} b={best.candidate.beta:g} "
                                         f"g={best.candidate.gamma:g} {best.accuracy:.1f}%")
            progress.refresh()

    try:
        run_search_workers(url, study, workers=workers, heartbeat=heartbeat, stale_after=stale_after,
                           on_progress=update)
    finally:
        if progress is not None:
            progress.close()
    result = collect(store, study)
    write_search(result, out)
    return result


def _run(jobs: list[Job], workers: int, cache: Path | None, bar: Bar, desc: str) -> list[dict[str, Any]]:
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    progress = bar(len(jobs), desc) if bar else None
    try:
        return run_jobs(jobs, workers=workers, cache=cache,
                        on_done=(lambda _i, r: progress.update(1)) if progress is not None else None)
    finally:
        if progress is not None:
            progress.close()


def run_family(exp: Experiment, coeffs: Coefficients, phis: Sequence[float], out: Path, *,
               seeds: int = 1, workers: int = 1, cache: Path | None = None, bar: Bar = None) -> list[dict[str, Any]]:
    """STEP 2: the baseline scaled by (α^φ, β^φ, γ^φ) for each φ, trained with the experiment's budget;
    writes ``family.json`` and ``family.md`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    base = exp.baseline
    specs = [(phi, compound_multipliers(phi, coeffs)) for phi in phis]
    jobs: list[Job] = [(scale_spec(base, m, name=f"{base.name}@phi={phi:g}"), exp, s)
            for phi, m in specs for s in range(seeds)]
    results = _run(jobs, workers, cache, bar, "STEP 2 scale")
    rows = []
    for i, (phi, m) in enumerate(specs):
        rs = results[i * seeds:(i + 1) * seeds]
        rows.append({"phi": phi, "depth": m.depth, "width": m.width, "resolution_mult": m.resolution,
                     "resolution": rs[0]["resolution"], "params": rs[0]["params"], "macs": rs[0]["macs"],
                     "macs_ratio": rs[0]["macs_ratio"], "accuracy": sum(r["accuracy"] for r in rs) / seeds,
                     "accuracies": [r["accuracy"] for r in rs],
                     "coefficients": [coeffs.alpha, coeffs.beta, coeffs.gamma]})
    (out / "family.json").write_text(json.dumps(rows, indent=2))
    (out / "family.md").write_text(family_table(rows) + "\n")
    return rows


def family_table(rows: Sequence[dict[str, Any]]) -> str:
    return table(["phi", "d", "w", "r", "res", "params", "MACs (M)", "MACs x", "top-1"],
                 [[f"{r['phi']:g}", f"{r['depth']:.3f}", f"{r['width']:.3f}", f"{r['resolution_mult']:.3f}",
                   r["resolution"], f"{r['params']:,}", f"{r['macs'] / 1e6:.2f}", f"{r['macs_ratio']:.2f}",
                   f"{r['accuracy']:.2f}"] for r in rows])


def run_compare(exp: Experiment, coeffs: Coefficients, phi: float, out: Path, *,
                seeds: int = 3, workers: int = 1, cache: Path | None = None, cam_images: int = 4, bar: Bar = None,
                family: Sequence[dict[str, Any]] = (), adjust_phi: bool = True,
                reference: Coefficients | None = None) -> dict[str, Any]:
    """Baseline, depth-, width-, resolution-only and compound scaling at matched MACs, ``seeds`` runs
    each; writes ``compare.json``, ``compare.md``, ``compare.png`` and ``cams.png`` into ``out``.
    ``adjust_phi`` moves φ (by at most 0.5) to a budget every single dimension can match (see
    :func:`effnet.search.compare.choose_phi`); ``reference`` adds a compound arm with those coefficients at
    the same MACs (see :func:`effnet.search.compare.plan_arms`)."""
    out.mkdir(parents=True, exist_ok=True)
    cache = cache or out / "models"
    base = exp.baseline
    asked, phi = phi, choose_phi(base, coeffs, phi, reference=reference) if adjust_phi else phi
    arms = plan_arms(base, coeffs, phi, reference)
    jobs: list[Job] = [(a.spec, exp, s) for a in arms for s in range(seeds)]
    results = _run(jobs, workers, cache, bar, "compare")
    acc = {a.method: [results[i * seeds + s]["accuracy"] for s in range(seeds)] for i, a in enumerate(arms)}
    rows = summarize(arms, acc)
    report = {"phi": phi, "phi_asked": asked, "coefficients": [coeffs.alpha, coeffs.beta, coeffs.gamma], "seeds": seeds,
              "reference": None if reference is None else [reference.alpha, reference.beta, reference.gamma],
              "budget": exp.budget.to_dict(), "depth_rounding": base.depth_rounding, "rows": rows,
              "winner": winner(rows)}
    (out / "compare.json").write_text(json.dumps(report, indent=2))
    (out / "compare.md").write_text(budget_statement(exp.budget.to_dict()) + f" Depth rounding: "
                                    f"{base.depth_rounding}.\n\n" + summary_table(rows) + "\n")
    b = exp.budget
    plot_compare(rows, out / "compare.png", family=family,
                 title=f"matched MACs at φ = {phi:g} (compound α={coeffs.alpha:g}, β={coeffs.beta:g}, "
                       f"γ={coeffs.gamma:g}), {seeds} seeds\nbudget {b.train_images:,} images × {b.epochs:g} epochs, "
                       f"repeats by {base.depth_rounding}")
    if cam_images > 0:
        _cams(arms, jobs, seeds, exp, cache, cam_images, out / "cams.png")
    return report


def _cams(arms: Sequence[Any], jobs: Sequence[Job], seeds: int, exp: Experiment, cache: Path, n: int,
          path: Path) -> None:
    import torch

    from effnet.model import ConvNet

    arrays = exp.arrays()
    models = {}
    for i, arm in enumerate(arms):
        model = ConvNet(arm.spec.replace(bn_momentum=0.1), num_classes=len(arrays.classes), in_chans=1)
        model.load_state_dict(torch.load(cache / f"{job_key(jobs[i * seeds])}.pt", weights_only=True))
        models[arm.method] = model.eval()
    cam_grid(models, arrays.eval_x[:n], [int(y) for y in arrays.eval_y[:n]], arrays.classes, path)


def run_sweep(s: SweepSettings, out: Path, *, storage: str | None = None, prefix: str = "sweep", workers: int = 1,
              heartbeat: float = 10.0, stale_after: float = 60.0, bar: Bar = None,
              train: bool = True, device: str = "cpu") -> dict[str, Any]:
    """The matched-MACs comparison at every budget of ``s`` (:mod:`effnet.search.sweep`) into ``out``:
    ``sweep.csv``/``sweep.json`` (one row per trained network), ``sweep.md``, ``budget_sweep.png``,
    ``gap.png`` and ``fig8.png``. Each (budget, MACs level) is a study in ``storage`` (default
    ``out/sweep.log``); every study is opened (or its settings checked) before any training, and
    rerunning the same call resumes: finished networks are not trained again. ``train=False`` only
    writes what the storage holds so far (another machine may still be training). ``device``: where
    this machine's workers train (``cuda`` on a GPU machine; each row records its device)."""
    import functools
    import os

    from effnet.search.storage import open_storage, redact
    from effnet.search.study import completed_metrics, open_study
    from effnet.search.sweep import study_context, study_plans, sweep_evaluator, sweep_rows
    from effnet.search.sweep_report import (
        plot_budget_sweep,
        plot_fig8,
        plot_gap,
        summarize_sweep,
        sweep_document,
        write_csv,
    )
    from effnet.search.trials import run_studies_workers

    out.mkdir(parents=True, exist_ok=True)
    url = storage or str(out / "sweep.log")
    store = open_storage(url)
    plans = study_plans(s, prefix)
    base_macs = estimate_cost(s.baseline, num_classes=10, in_chans=1).macs
    for p in plans:
        open_study(store, p.name, p.grid_doc(), p.candidates(base_macs), study_context(s, p))
    load = [os.getloadavg()]
    if train:
        total = sum(len(p.jobs) for p in plans)
        progress = bar(total, f"sweep ({len(plans)} stud{'y' if len(plans) == 1 else 'ies'})") if bar else None

        def update() -> None:
            if progress is not None:
                progress.n = sum(len(completed_metrics(store, p.name)) for p in plans)
                progress.refresh()

        try:  # one pool over every study: a worker whose study has nothing queued takes the next one's
            run_studies_workers(url, [p.name for p in plans], functools.partial(sweep_evaluator, device=device),
                                workers=workers, heartbeat=heartbeat, stale_after=stale_after, on_progress=update)
        finally:
            if progress is not None:
                progress.close()
    load.append(os.getloadavg())
    rows = sweep_rows(plans, [completed_metrics(store, p.name) for p in plans])
    summary = summarize_sweep(rows)
    import torch

    report = {"settings": s.to_dict(), "studies": [p.name for p in plans], "storage": redact(url),
              "load_average": load, "cpu": f"{os.cpu_count()} cores, {torch.backends.cpu.get_cpu_capability()}",
              "workers": workers if train else None, "rows": rows, "summary": summary}
    (out / "sweep.json").write_text(json.dumps(report, indent=2))
    write_csv(rows, out / "sweep.csv")
    (out / "sweep.md").write_text(sweep_document(report))
    if summary:
        plot_budget_sweep(summary, s.levels[0], out / "budget_sweep.png")
        plot_gap(summary, s.levels[0], s.roundings, out / "gap.png")
        top = max(summary, key=lambda r: r["image_epochs"])["budget"]
        plot_fig8(summary, top, out / "fig8.png")
    return report
