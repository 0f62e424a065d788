"""STEP 1 of compound scaling: a small grid search of (α, β, γ) (paper §3.3, eq. 3).

The paper fixes φ = 1, assumes twice the resources, and searches α, β, γ ≥ 1 under
``α·β²·γ² ≈ 2``; it found α = 1.2, β = 1.1, γ = 1.15 for B0 but gives no grid, step or tolerance
(docs/paper.md). Here the grid is explicit: every multiple of ``step`` from 1 that
satisfies ``|α·β²·γ² − target| ≤ tol`` (or the same bound on the *measured* MACs ratio of the
φ = 1 network, since rounding moves the real cost off the formula: +34 % for B0 at φ = 1).

This module is level 0 (no torch): candidates are plain numbers, the evaluator is injected as a
callable, and results are JSON-serialisable. Distribution over workers (Optuna storages) lives in
:mod:`effnet.search.study`; training a candidate lives in :mod:`effnet.train.budget`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from effnet.errors import EffnetError
from effnet.scaling import Coefficients

__all__ = ["Candidate", "GridSettings", "SearchResult", "TrialRecord", "grid_candidates", "load_result",
           "load_result_dict", "rank_records"]

MacsRatio = Callable[[Coefficients], float]


@dataclass(frozen=True)
class GridSettings:
    """How the (α, β, γ) grid is drawn: ``step`` from 1, constraint ``|c − target| ≤ tol`` where c is
    α·β²·γ² (``on="formula"``) or the measured φ = 1 MACs ratio (``on="macs"``)."""

    step: float = 0.05
    target: float = 2.0
    tol: float = 0.1
    on: str = "formula"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.step) and 0 < self.step <= 1):
            raise EffnetError(f"grid step {self.step!r} must be in (0, 1], e.g. 0.05")
        if not (math.isfinite(self.tol) and self.tol >= 0):
            raise EffnetError(f"tolerance {self.tol!r} must be >= 0, e.g. 0.1")
        if self.on not in ("formula", "macs"):
            raise EffnetError(f"constraint on {self.on!r}: use 'formula' (alpha*beta^2*gamma^2) or 'macs'")
        if not math.isfinite(self.target) or self.target + self.tol < 1:
            raise EffnetError(
                f"target {self.target:g} (tolerance {self.tol:g}) cannot be met: with alpha, beta, gamma >= 1 "
                f"(eq. 3) alpha*beta^2*gamma^2 is at least 1; use a target >= 1, the paper's is 2")


@dataclass(frozen=True)
class Candidate:
    """One grid point: its index in the grid, (α, β, γ), α·β²·γ², and the measured MACs ratio of its
    φ = 1 network to the baseline when known."""

    index: int
    alpha: float
    beta: float
    gamma: float
    macs_ratio: float | None = None

    @property
    def flops_base(self) -> float:
        return self.alpha * self.beta**2 * self.gamma**2

    @property
    def coefficients(self) -> Coefficients:
        return Coefficients(self.alpha, self.beta, self.gamma)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"flops_base": round(self.flops_base, 6)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Candidate:
        return cls(int(d["index"]), float(d["alpha"]), float(d["beta"]), float(d["gamma"]),
                   None if d.get("macs_ratio") is None else float(d["macs_ratio"]))


def _axis(step: float, upper: float) -> list[float]:
    # Integer multiples of the step, rounded, so 1 + 4·0.05 is 1.2 exactly and grids compare equal.
    n = math.floor((upper - 1) / step + 1e-9)
    return [round(1 + k * step, 10) for k in range(n + 1)]


def grid_candidates(settings: GridSettings = GridSettings(), macs_ratio: MacsRatio | None = None) -> list[Candidate]:
    """Every (α, β, γ) on the grid that satisfies the constraint, in (α, β, γ) order.

    α runs to ``target + tol`` and β, γ to its square root: beyond those α·β²·γ² exceeds the bound
    even with the other two at 1. With ``settings.on == "macs"``, ``macs_ratio(coeffs)`` (the
    measured MACs of the φ = 1 network over the baseline's) replaces the formula.

    Raises:
        EffnetError: if no grid point satisfies the constraint (naming step, target and tolerance).
    """
    if settings.on == "macs" and macs_ratio is None:
        raise EffnetError("a grid constrained on measured MACs needs a baseline to measure (macs_ratio)")
    hi = settings.target + settings.tol
    out: list[Candidate] = []
    for a in _axis(settings.step, hi):
        for b in _axis(settings.step, math.sqrt(hi / a)):
            for g in _axis(settings.step, math.sqrt(hi / (a * b * b))):
                ratio = macs_ratio(Coefficients(a, b, g)) if macs_ratio is not None else None
                value = ratio if settings.on == "macs" else a * b * b * g * g
                if value is not None and abs(value - settings.target) <= settings.tol + 1e-12:
                    out.append(Candidate(len(out), a, b, g, None if ratio is None else round(ratio, 6)))
    if not out:
        what = "the measured MACs ratio" if settings.on == "macs" else "alpha*beta^2*gamma^2"
        raise EffnetError(
            f"no (alpha, beta, gamma) on a {settings.step:g}-step grid has {what} within {settings.tol:g} of "
            f"{settings.target:g}; use a finer --step or a larger --tol")
    return out


@dataclass(frozen=True)
class TrialRecord:
    """What a study holds about one candidate: its state (COMPLETE, FAIL, RUNNING, WAITING), its
    accuracy and the evaluator's extra figures, the error of a failed trial, and attempts made."""

    candidate: Candidate
    state: str
    accuracy: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    attempts: int = 1
    worker: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.candidate.to_dict(), "state": self.state, "accuracy": self.accuracy,
                "metrics": self.metrics, "error": self.error, "attempts": self.attempts, "worker": self.worker}


def rank_records(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    """Completed trials by accuracy (best first; ties broken by lower MACs ratio, then grid index, so
    the order is deterministic), then the unfinished and failed ones by grid index."""
    done = [r for r in records if r.state == "COMPLETE" and r.accuracy is not None]
    rest = [r for r in records if r not in done]

    def key(r: TrialRecord) -> tuple[float, float, int]:
        ratio = r.candidate.macs_ratio if r.candidate.macs_ratio is not None else r.candidate.flops_base
        return (-float(r.accuracy or 0.0), ratio, r.candidate.index)

    return sorted(done, key=key) + sorted(rest, key=lambda r: r.candidate.index)


@dataclass(frozen=True)
class SearchResult:
    """The ranked outcome of a study: settings of the grid, what each candidate was evaluated with
    (``context``: baseline spec, data, budget), and one record per candidate."""

    study: str
    grid: GridSettings
    context: dict[str, Any]
    records: list[TrialRecord]

    @property
    def completed(self) -> list[TrialRecord]:
        return [r for r in self.records if r.state == "COMPLETE"]

    @property
    def best(self) -> TrialRecord:
        if not self.completed:
            raise EffnetError(f"study {self.study!r} has no completed candidate yet; run `effnet search` on it")
        return self.completed[0]

    def to_dict(self) -> dict[str, Any]:
        return {"study": self.study, "grid": asdict(self.grid), "context": self.context,
                "best": self.best.to_dict() if self.completed else None,
                "counts": {s: sum(r.state == s for r in self.records)
                           for s in ("COMPLETE", "FAIL", "RUNNING", "WAITING")},
                "records": [r.to_dict() for r in self.records]}

    def save(self, path: str | Path) -> Path:
        out = Path(path)
        out.write_text(json.dumps(self.to_dict(), indent=2))
        return out


def load_result_dict(d: Mapping[str, Any]) -> SearchResult:
    """Rebuild a :class:`SearchResult` from :meth:`SearchResult.to_dict` output."""
    records = [TrialRecord(Candidate.from_dict(r), r["state"], r.get("accuracy"), r.get("metrics") or {},
                           r.get("error"), int(r.get("attempts", 1)), r.get("worker")) for r in d["records"]]
    return SearchResult(d["study"], GridSettings(**d["grid"]), d.get("context") or {}, records)


def load_result(path: str | Path) -> SearchResult:
    """Read a ``results.json`` written by :meth:`SearchResult.save` (STEP 2 reads its best α, β, γ)."""
    p = Path(path)
    try:
        return load_result_dict(json.loads(p.read_text()))
    except FileNotFoundError:
        raise EffnetError(f"search result {str(p)!r} not found; `effnet search ... --out DIR` writes "
                          "DIR/results.json") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise EffnetError(f"{str(p)!r} is not an effnet search result ({type(e).__name__}: {e}); pass the "
                          "results.json that `effnet search` wrote") from None
