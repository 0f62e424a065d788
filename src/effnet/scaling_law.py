"""Scaling-law reports, budget → φ, and the paper's Table 3 (no torch).

The paper claims FLOPs grow by (α·β²·γ²)^φ (eq. 3) but notes that rounding moves real models off
that line (footnote 3). :func:`scaling_report` measures the drift for any baseline and φ range;
:func:`fit_phi` turns eq. 2's budget constraint into a φ; :func:`table3_report` sets our counts
beside the paper's Table 3.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from effnet.catalog import get_spec, smallest_phi
from effnet.errors import SpecError
from effnet.macs import estimate_cost
from effnet.paper import TABLE3
from effnet.scaling import PAPER_COEFFICIENTS, Coefficients, DepthRounding, Multipliers, compound_multipliers
from effnet.spec import NetworkSpec


@dataclass(frozen=True)
class ScalingRow:
    """One scaled model of a family, with its measured growth against the theory."""

    name: str
    phi: float | None
    depth_mult: float
    width_mult: float
    resolution_mult: float
    resolution: int
    stem_channels: int
    head_channels: int | None
    widths: tuple[int, ...]
    repeats: tuple[int, ...]
    params: int
    macs: int
    macs_ratio: float  # MACs / baseline MACs
    theory_ratio: float  # d·w²·r² = (α·β²·γ²)^φ before rounding
    drift: float  # macs_ratio / theory_ratio - 1: what rounding did

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _row(name: str, phi: float | None, m: Multipliers, spec: NetworkSpec, base_macs: int) -> ScalingRow:
    cost = estimate_cost(spec)
    ratio = cost.macs / base_macs
    return ScalingRow(
        name=spec.name, phi=phi, depth_mult=m.depth, width_mult=m.width, resolution_mult=m.resolution,
        resolution=spec.resolution, stem_channels=spec.stem.out_channels, head_channels=spec.head.channels,
        widths=tuple(s.out_channels for s in spec.stages), repeats=tuple(s.repeats for s in spec.stages),
        params=cost.params, macs=cost.macs, macs_ratio=ratio, theory_ratio=m.macs_factor,
        drift=ratio / m.macs_factor - 1,
    )


def scaling_report(name: str, phis: Iterable[float] | None = None, *,
                   multipliers: Sequence[Multipliers] | None = None,
                   coeffs: Coefficients = PAPER_COEFFICIENTS, depth_rounding: DepthRounding = "ceil"
                   ) -> list[ScalingRow]:
    """Rows for φ in ``phis`` (or for explicit ``multipliers``) applied to model ``name``.

    Ratios are against ``name`` itself (φ = 0), so the theory line is (α·β²·γ²)^φ; ``depth_rounding``
    rounds every row's repeats (and the baseline's), ``ceil`` as the official code does.
    """
    base_macs = estimate_cost(get_spec(name, depth_rounding=depth_rounding)).macs
    rows = []
    if multipliers is not None:
        for m in multipliers:
            rows.append(_row(name, None, m, get_spec(name, multipliers=m, depth_rounding=depth_rounding), base_macs))
        return rows
    for phi in phis if phis is not None else range(8):
        m = compound_multipliers(phi, coeffs)
        rows.append(_row(name, phi, m, get_spec(name, phi=phi, coeffs=coeffs, depth_rounding=depth_rounding),
                         base_macs))
    return rows


class OutOfRange(Exception):
    """Raised by :func:`largest_fitting` when the grid's floor does not fit or its ceiling still does."""

    def __init__(self, at_ceiling: bool) -> None:
        self.at_ceiling = at_ceiling


def largest_fitting(fits: Callable[[int], bool], start: int, floor: int, ceiling: int, jump: int) -> int:
    """The largest grid index k in [floor, ceiling) with ``fits(k)``, assuming cost grows with k.

    Brackets from ``start`` by doubling steps (up if ``start`` fits, else down), then bisects, so a
    latency fit times O(log n) networks instead of every grid point. Every budget → φ fit in effnet
    (MACs and parameters here, measured latency and training memory in :mod:`effnet.deploy.fit`) uses
    it. Raises :class:`OutOfRange` when even ``floor`` does not fit or ``ceiling`` still does.
    """
    if fits(start):  # bracket upwards: lo fits, hi does not
        lo, hi = start, min(start + jump, ceiling)
        while fits(hi):
            if hi >= ceiling:
                raise OutOfRange(at_ceiling=True)
            lo, jump = hi, jump * 2
            hi = min(hi + jump, ceiling)
    else:  # bracket downwards
        hi = start
        while True:
            lo = max(hi - jump, floor)
            if fits(lo):
                break
            if lo == floor:
                raise OutOfRange(at_ceiling=False)
            hi, jump = lo, jump * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


@dataclass(frozen=True)
class FitResult:
    """The largest φ (on a 0.01 grid) whose scaled model fits every budget given."""

    name: str
    phi: float
    spec: NetworkSpec
    params: int
    macs: int
    next_params: int  # at φ + 0.01, which does not fit
    next_macs: int


def _fits(name: str, phi: float, coeffs: Coefficients, max_macs: float | None,
          max_params: float | None) -> tuple[bool, NetworkSpec, int, int]:
    spec = get_spec(name, phi=phi, coeffs=coeffs)
    cost = estimate_cost(spec)
    ok = (max_macs is None or cost.macs <= max_macs) and (max_params is None or cost.params <= max_params)
    return ok, spec, cost.params, cost.macs


def fit_phi(name: str, *, max_macs: float | None = None, max_params: float | None = None,
            coeffs: Coefficients = PAPER_COEFFICIENTS, max_phi: float = 40.0) -> FitResult:
    """Budget → φ: the largest φ (multiple of 0.01) whose model fits the MACs and/or params budget.

    This is eq. 2's ``FLOPS(N) ≤ target_flops`` (and a parameter budget) solved for φ with the
    official rounding. Cost is monotone in φ (ceil and channel rounding are monotone), so a
    bracketing bisection over the 0.01 grid (:func:`largest_fitting`) finds the boundary; the result is
    checked on both sides.

    Raises:
        SpecError: no budget given, or even the smallest valid network exceeds it.
    """
    if max_macs is None and max_params is None:
        raise SpecError("give a budget: max_macs and/or max_params (CLI: --max-macs 1.5G, --max-params 10M)")
    for label, value in (("max_macs", max_macs), ("max_params", max_params)):
        if value is not None and not value > 0:
            raise SpecError(f"{label}={value!r} must be > 0")
    floor, ceiling = math.ceil(smallest_phi(name, coeffs) * 100), int(max_phi * 100)
    try:  # the grid index k is φ = k / 100
        lo = largest_fitting(lambda k: _fits(name, k / 100, coeffs, max_macs, max_params)[0], floor, floor,
                             ceiling, 64)
    except OutOfRange as e:
        if e.at_ceiling:
            raise SpecError(f"phi={max_phi:g} still fits the budget; the budget is too large to be "
                            "meaningful") from None
        _, _, params, macs = _fits(name, floor / 100, coeffs, max_macs, max_params)
        raise SpecError(f"even the smallest valid {name} (phi={floor / 100:g}: {macs / 1e6:.1f}M MACs, "
                        f"{params / 1e6:.2f}M params) exceeds the budget; raise the budget or pick a "
                        f"smaller baseline") from None
    hi = lo + 1
    _, spec, params, macs = _fits(name, lo / 100, coeffs, max_macs, max_params)
    _, _, next_params, next_macs = _fits(name, hi / 100, coeffs, max_macs, max_params)
    return FitResult(name, lo / 100, spec, params, macs, next_params, next_macs)


@dataclass(frozen=True)
class Table3Result:
    baseline: str
    label: str
    depth: float
    width: float
    resolution: float
    macs: int
    paper_flops: float
    paper_top1: float
    ratio: float  # ours / paper
    note: str


def table3_report() -> list[Table3Result]:
    """Every row of the paper's Table 3 scaled with :func:`effnet.scaling.scale_spec`, our MACs
    beside the paper's FLOPs (multiply-adds)."""
    out = []
    for row in TABLE3:
        m = Multipliers(row.depth, row.width, row.resolution)
        macs = estimate_cost(get_spec(row.baseline, multipliers=m)).macs
        out.append(Table3Result(row.baseline, row.label, row.depth, row.width, row.resolution, macs, row.flops,
                                row.top1, macs / row.flops, row.note))
    return out
