"""The matched-MACs comparison across training budgets: does compound scaling win once every network
is trained long enough (docs/sweep.md)?

The paper's comparison (Table 3, Fig. 8) trains every network to convergence with one recipe; the
miniature (:mod:`effnet.search.compare`) trains each for a few thousand image-epochs, where deeper
networks are the most under-trained. This sweep repeats the comparison at several budgets, over
several seeds, with depth rounded by ``ceil`` (the official code) and by ``round`` for the arms that
scale depth, and at the largest budget at two MACs levels (≈ 2× and ≈ 4× the baseline, like Fig. 8).

Every arm at a MACs level is matched to the same target cost: a single dimension by solving its
multiplier (:func:`effnet.search.compare.match_single`), a compound arm by solving φ for its
coefficients (:func:`effnet.search.compare.match_compound`). Each (budget, level) is one study on the
search's storage (:mod:`effnet.search.study`): one queued trial per (network, seed), so a killed sweep
resumes with its unfinished networks only, and workers on other machines join through PostgreSQL.
A network that two arms share (a compound arm with α = 1 is the same under both roundings) is one trial.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from effnet.errors import EffnetError
from effnet.macs import estimate_cost
from effnet.scaling import (
    DEPTH_ROUNDINGS,
    PAPER_COEFFICIENTS,
    Coefficients,
    Multipliers,
    compound_multipliers,
    scale_spec,
)
from effnet.search.compare import MIN_PHI_PCT
from effnet.search.compare import candidates_of as _candidates
from effnet.search.grid import Candidate
from effnet.spec import NetworkSpec
from effnet.textfmt import parse_count
from effnet.train.budget import Budget

__all__ = ["SweepArm", "SweepSettings", "budget_label", "parse_budgets", "parse_levels", "plan_level", "study_plans",
           "sweep_evaluator"]


def budget_label(b: Budget) -> str:
    """``4000x2`` (training images × epochs): the name of a budget in studies, tables and plots."""
    return f"{b.train_images}x{b.epochs:g}"


def parse_budgets(text: str, template: Budget, *, max_images: int, test_images: int) -> list[Budget]:
    """``8k,40k,200k`` (image-epochs: ``template.epochs`` epochs over as many images as that takes, at
    most the whole training set, then more epochs) or ``4000x2,20000x2`` (images × epochs) → budgets that
    evaluate on the whole test set, sorted by image-epochs.

    Raises:
        EffnetError: an empty list, a budget ≤ 0, fewer images than a batch or more than the set holds.
    """
    hint = "write image-epochs such as 8k,40k,200k or IMAGESxEPOCHS pairs such as 4000x2,20000x2"
    items = [t.strip() for t in text.split(",")]
    if not text.strip() or not all(items):
        raise EffnetError(f"--budgets {text!r} is empty or has an empty item; {hint}")
    out = {}
    for item in items:
        try:
            if "x" in item.lower():
                n_img, n_ep = item.lower().split("x", 1)
                images, epochs = int(parse_count(n_img, "images")), float(n_ep)
            else:
                total = parse_count(item, "budget")
                images = min(round(total / template.epochs), max_images)
                epochs = total / images if images > 0 else 0.0
        except (EffnetError, ValueError):
            raise EffnetError(f"--budgets item {item!r} is not a positive budget; {hint}") from None
        if not (images > 0 and epochs > 0 and math.isfinite(epochs)):
            raise EffnetError(f"--budgets item {item!r} must be > 0; {hint}")
        if not template.batch_size <= images <= max_images:
            raise EffnetError(f"--budgets item {item!r} trains on {images} images; use between the batch size "
                              f"({template.batch_size}) and the {max_images} training images the data set holds")
        b = replace(template, epochs=round(epochs, 4), train_images=images, eval_split="test",
                    eval_images=test_images)
        out[budget_label(b)] = b
    return sorted(out.values(), key=lambda b: b.train_images * b.epochs)


def parse_levels(text: str) -> tuple[float, ...]:
    """``2,4`` → (2.0, 4.0): MACs targets as multiples of the baseline's, each > 1."""
    try:
        levels = tuple(float(t) for t in text.split(","))
    except ValueError:
        levels = ()
    if not levels or not all(math.isfinite(v) and v > 1 for v in levels):
        raise EffnetError(f"--macs-levels {text!r}: give MACs multiples of the baseline above 1, e.g. 2,4")
    return levels


@dataclass(frozen=True)
class SweepSettings:
    """What the sweep trains: the baseline and data, the budgets, seeds, roundings and MACs levels.

    ``levels[0]`` is compared at every budget, every level at the largest budget (Fig. 8's curves).
    ``coefficients``: the search's (α, β, γ) for a "compound" arm (None: only the paper's).
    """

    baseline: NetworkSpec
    data: str
    budgets: tuple[Budget, ...]
    seeds: int = 3
    roundings: tuple[str, ...] = DEPTH_ROUNDINGS
    levels: tuple[float, ...] = (2.0, 4.0)
    coefficients: Coefficients | None = None
    reference: Coefficients = field(default=PAPER_COEFFICIENTS)

    def __post_init__(self) -> None:
        if not self.budgets:
            raise EffnetError("the sweep needs at least one budget, e.g. --budgets 8k,40k")
        if self.seeds < 2:
            raise EffnetError(f"--seeds {self.seeds}: mean ± std needs at least 2 seeds (3 recommended)")
        if not self.roundings or any(r not in DEPTH_ROUNDINGS for r in self.roundings):
            raise EffnetError(f"depth roundings {self.roundings!r}: use ceil and/or round")

    def to_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline.to_dict(), "data": self.data, "budgets": [b.to_dict() for b in self.budgets],
                "seeds": self.seeds, "roundings": list(self.roundings), "levels": list(self.levels),
                "coefficients": None if self.coefficients is None else asdict(self.coefficients),
                "reference": asdict(self.reference)}

    def levels_at(self, budget: Budget) -> tuple[float, ...]:
        return self.levels if budget == self.budgets[-1] else self.levels[:1]


@dataclass(frozen=True)
class SweepArm:
    """One network of a MACs level: its method, the depth rounding it was built with (None where no
    depth is scaled, so the rule does not apply), multipliers, φ for compound arms, spec and cost."""

    method: str
    rounding: str | None
    level: float
    multipliers: Multipliers
    phi: float | None
    spec: NetworkSpec
    macs: int
    match_error: float  # |MACs / the level's target − 1|

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "rounding": self.rounding, "level": self.level,
                "multipliers": asdict(self.multipliers), "phi": self.phi, "macs": self.macs,
                "match_error": round(self.match_error, 6),
                "blocks": self.spec.num_blocks, "resolution": self.spec.resolution}


def _macs(spec: NetworkSpec) -> int:
    return estimate_cost(spec, num_classes=10, in_chans=1).macs


def _arm(method: str, rounding: str | None, level: float, m: Multipliers, phi: float | None,
         base: NetworkSpec, target: float) -> SweepArm:
    spec = scale_spec(base, m, name=f"{base.name}:{method}@x{level:g}" + (f"/{rounding}" if rounding else ""))
    macs = _macs(spec)
    return SweepArm(method, rounding, level, m, phi, spec, macs, abs(macs / target - 1))


MATCH_TOL = 0.08


def _options(base: NetworkSpec, method: str, c: Coefficients | None, level: float) -> list[tuple[float, int]]:
    """(multiplier or φ, MACs) of every network ``method`` can reach up to about 2 × ``level``."""
    if c is None:
        top = {"width": math.sqrt(2 * level), "resolution": math.sqrt(2 * level), "depth": 2 * level}[method]
        return [(m, _macs(scale_spec(base, Multipliers(**{method: m})))) for m in _candidates(base, method, top)]
    phis = [k / 100 for k in range(MIN_PHI_PCT, 401)]
    return [(phi, _macs(scale_spec(base, compound_multipliers(phi, c)))) for phi in phis]


def _closest(options: Sequence[tuple[float, int]], target: float) -> tuple[float, int]:
    return min(options, key=lambda o: (abs(o[1] / target - 1), o[0]))


def plan_level(s: SweepSettings, level: float) -> list[SweepArm]:
    """Width, resolution, then per rounding depth and the compound arms, all matched to one MACs target
    near ``level`` × the baseline's: among the costs the arms can reach (rounding makes each a step
    function), the closest to ``level`` that every arm matches within 8 % (else the smallest worst mismatch).
    A compound arm with α = 1 scales no depth and appears once (rounding None)."""
    base = s.baseline.replace(depth_rounding="ceil")
    compounds = [(name, c) for name, c in (("compound", s.coefficients), ("paper", s.reference))
                 if c is not None and not (name == "compound" and c == s.reference)]
    kinds: list[tuple[str, str | None, Coefficients | None, NetworkSpec]] = [
        ("width", None, None, base), ("resolution", None, None, base)]
    for r in s.roundings:
        b = base.replace(depth_rounding=r)
        kinds.append(("depth", r, None, b))
        kinds += [(name, r if c.alpha != 1 else None, c, b) for name, c in compounds
                  if c.alpha != 1 or r == s.roundings[0]]
    options = [_options(b, method, c, level) for method, _r, c, b in kinds]
    want = level * _macs(base)
    targets = sorted({m for opts in options for _p, m in opts if 0.8 * want <= m <= 1.25 * want})
    if not targets:
        raise EffnetError(f"no network reaches {level:g}x the baseline's MACs; use another --macs-levels value")

    def score(t: int) -> tuple[float, float]:  # within 8 % for every arm is good enough: then closest to level
        return max(MATCH_TOL, max(abs(_closest(o, t)[1] / t - 1) for o in options)), abs(t / want - 1)

    target = min(targets, key=score)
    arms = []
    for (method, rule, c, b), opts in zip(kinds, options, strict=True):
        p, _m = _closest(opts, target)
        if c is None:
            arms.append(_arm(method, rule, level, Multipliers(**{method: p}), None, b, target))
        else:
            arms.append(_arm(method, rule, level, compound_multipliers(p, c), p, b, target))
    return arms


def _network(spec: NetworkSpec) -> str:
    """What is trained: the spec without its name and rounding rule (two arms may share a network)."""
    return json.dumps({k: v for k, v in spec.to_dict().items() if k not in ("name", "depth_rounding")}, sort_keys=True)


@dataclass(frozen=True)
class StudyPlan:
    """One (budget, MACs level) study: its name, arms, and the queued (network, seed) jobs."""

    name: str
    budget: Budget
    level: float
    arms: tuple[SweepArm, ...]
    jobs: tuple[tuple[NetworkSpec, int], ...]
    job_of: tuple[tuple[int, ...], ...]  # per arm, the job index of each seed

    def grid_doc(self) -> dict[str, Any]:
        return {"kind": "budget-sweep", "budget": self.budget.to_dict(), "level": self.level,
                "arms": [a.to_dict() | {"jobs": list(j)} for a, j in zip(self.arms, self.job_of, strict=True)]}

    def candidates(self, base_macs: int) -> list[Candidate]:
        """Each job as a numbered candidate (its d, w, r multipliers where a search has α, β, γ)."""
        by_job = {j: a for a, js in zip(self.arms, self.job_of, strict=True) for j in js}
        return [Candidate(i, by_job[i].multipliers.depth, by_job[i].multipliers.width,
                          by_job[i].multipliers.resolution, _macs(spec) / base_macs)
                for i, (spec, _seed) in enumerate(self.jobs)]


def study_plans(s: SweepSettings, prefix: str = "sweep") -> list[StudyPlan]:
    """The studies of the sweep, smallest budget first; the first level's study also holds the baseline.
    Jobs are seed-major, so a sweep stopped early has whole seeds."""
    plans = []
    base = s.baseline.replace(depth_rounding="ceil")
    for budget in s.budgets:
        for k, level in enumerate(s.levels_at(budget)):
            first = [_arm("baseline", None, 1.0, Multipliers(), None, base, _macs(base))] if k == 0 else []
            arms = first + plan_level(s, level)
            keys: dict[tuple[str, int], int] = {}
            jobs: list[tuple[NetworkSpec, int]] = []
            for seed in range(s.seeds):
                for a in arms:
                    if (_network(a.spec), seed) not in keys:
                        keys[(_network(a.spec), seed)] = len(jobs)
                        jobs.append((a.spec, seed))
            job_of = tuple(tuple(keys[(_network(a.spec), seed)] for seed in range(s.seeds)) for a in arms)
            plans.append(StudyPlan(f"{prefix}-{budget_label(budget)}-x{level:g}", budget, level, tuple(arms),
                                   tuple(jobs), job_of))
    return plans


def study_context(s: SweepSettings, plan: StudyPlan) -> dict[str, Any]:
    """The JSON every worker trains from (baseline, data, budget, each job's spec and seed)."""
    return {"baseline": s.baseline.to_dict(), "data": s.data, "budget": plan.budget.to_dict(), "seeds": s.seeds,
            "roundings": list(s.roundings),
            "coefficients": None if s.coefficients is None else asdict(s.coefficients),
            "reference": asdict(s.reference),
            "jobs": [{"spec": spec.to_dict(), "seed": seed} for spec, seed in plan.jobs]}


def sweep_evaluator(storage: Any, study: str, device: str = "cpu") -> Callable[[Candidate], dict[str, Any]]:
    """The evaluator of a sweep study: trains job ``candidate.index`` from the stored context on
    ``device`` and evaluates it on the budget's test images; adds the block count and the device to
    the outcome. The device is not part of the study's settings: CPU and GPU workers can share one."""
    from effnet.search.trials import Experiment, train_one

    ctx = storage.get_study_user_attrs(storage.get_study_id_from_name(study))["effnet.grid"]["context"]
    exp = Experiment(NetworkSpec.from_dict(ctx["baseline"]), ctx["data"], Budget(**ctx["budget"]))

    def evaluate(c: Candidate) -> dict[str, Any]:
        job = ctx["jobs"][c.index]
        spec = NetworkSpec.from_dict(job["spec"])
        return train_one(spec, exp, int(job["seed"]), device=device) | {"blocks": spec.num_blocks, "device": device}

    return evaluate


def sweep_rows(plans: Sequence[StudyPlan], metrics: Sequence[dict[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per (arm, seed) with a finished training: budget, arm, rounding, seed, accuracy, cost, time."""
    rows = []
    for plan, done in zip(plans, metrics, strict=True):
        b = plan.budget
        for arm, jobs in zip(plan.arms, plan.job_of, strict=True):
            for seed, j in enumerate(jobs):
                if j not in done:
                    continue
                m = done[j]
                rows.append({"budget": budget_label(b), "image_epochs": b.train_images * b.epochs,
                             "images": b.train_images, "epochs": b.epochs, "level": plan.level,
                             "method": arm.method, "rounding": arm.rounding or "-", "seed": seed,
                             "accuracy": m["accuracy"], "macs": arm.macs, "blocks": arm.spec.num_blocks,
                             "resolution": arm.spec.resolution, "depth": arm.multipliers.depth,
                             "width": arm.multipliers.width, "res_mult": arm.multipliers.resolution,
                             "phi": arm.phi, "seconds": m.get("seconds"), "device": m.get("device", "cpu"),
                             "study": plan.name, "job": j})
    return rows
