"""Compound scaling as pure functions (paper §3.3, eq. 3; no torch).

depth ``d = α^φ``, width ``w = β^φ``, resolution ``r = γ^φ`` with ``α·β²·γ² ≈ 2`` and
``α, β, γ ≥ 1``. FLOPs then grow by about ``(α·β²·γ²)^φ`` — 1.92^φ for the paper's coefficients,
not 2^φ — and rounding moves the real figure off that line (footnote 3); :mod:`effnet.scaling_law`
measures by how much.

The rounding follows the official TF code (``efficientnet_model.py``): channels to a multiple of 8
with the 10 % rule (:func:`round_channels`), repeats by ceil (:func:`round_repeats`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from effnet.errors import SpecError
from effnet.spec import DEPTH_ROUNDINGS, DepthRounding, NetworkSpec, StageSpec

__all__ = ["DEPTH_ROUNDINGS", "IDENTITY", "PAPER_COEFFICIENTS", "Coefficients", "DepthRounding", "Multipliers",
           "compound_multipliers", "implied_phi", "limit_stride", "min_phi", "round_channels", "round_repeats",
           "round_resolution", "scale_spec"]


def _positive(name: str, value: float, hint: str) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise SpecError(f"{name}={value!r} must be a finite number > 0; {hint}")


@dataclass(frozen=True)
class Coefficients:
    """The per-dimension bases (α, β, γ) of compound scaling.

    The paper requires α, β, γ ≥ 1 (eq. 3): a base below 1 shrinks that dimension as φ grows.
    That is rejected unless ``allow_below_one=True`` says it is meant.
    """

    alpha: float
    beta: float
    gamma: float
    allow_below_one: bool = False

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "gamma"):
            value = getattr(self, name)
            _positive(name, value, "the paper uses alpha=1.2, beta=1.1, gamma=1.15")
            if value < 1 and not self.allow_below_one:
                raise SpecError(
                    f"{name}={value:g} is below 1, which the paper's constraint (eq. 3: alpha, beta, "
                    f"gamma >= 1) forbids; pass allow_below_one=True (CLI: --allow-below-one) if meant")

    @property
    def flops_base(self) -> float:
        """α·β²·γ²: the FLOPs growth per unit of φ (1.92 for the paper's coefficients)."""
        return self.alpha * self.beta**2 * self.gamma**2

    def check_target(self, target: float = 2.0, tol: float = 0.1) -> None:
        """Raise if α·β²·γ² is further than ``tol`` from ``target`` (the paper's constraint ≈ 2)."""
        if abs(self.flops_base - target) > tol:
            raise SpecError(
                f"alpha*beta^2*gamma^2 = {self.flops_base:.3f} is not within {tol:g} of the target "
                f"{target:g} (eq. 3); pick coefficients closer to it, or change the target/tolerance")


PAPER_COEFFICIENTS = Coefficients(alpha=1.2, beta=1.1, gamma=1.15)
"""The paper's grid-search result (§4, STEP 1): α = 1.2, β = 1.1, γ = 1.15."""


@dataclass(frozen=True)
class Multipliers:
    """(depth, width, resolution) multipliers: (α^φ, β^φ, γ^φ) or a published preset row."""

    depth: float = 1.0
    width: float = 1.0
    resolution: float = 1.0

    def __post_init__(self) -> None:
        for name in ("depth", "width", "resolution"):
            _positive(f"{name} multiplier", getattr(self, name),
                      "multipliers scale the baseline and must be positive (1 = unchanged)")

    def __mul__(self, other: Multipliers) -> Multipliers:
        return Multipliers(self.depth * other.depth, self.width * other.width,
                           self.resolution * other.resolution)

    @property
    def macs_factor(self) -> float:
        """Theoretical MACs growth d·w²·r² (before rounding)."""
        return self.depth * self.width**2 * self.resolution**2


IDENTITY = Multipliers()


def compound_multipliers(phi: float, coeffs: Coefficients = PAPER_COEFFICIENTS) -> Multipliers:
    """Eq. 3: (α^φ, β^φ, γ^φ) for any real φ (fractional, above 7, negative).

    Raises:
        SpecError: if φ is not finite or the multipliers under/overflow.
    """
    if not (isinstance(phi, int | float) and math.isfinite(phi)):
        raise SpecError(f"phi={phi!r} must be a finite real number, e.g. 1 or 0.5 or -1")
    try:
        d, w, r = coeffs.alpha**phi, coeffs.beta**phi, coeffs.gamma**phi
    except OverflowError as e:
        raise SpecError(f"phi={phi:g} overflows the multipliers; use a smaller |phi|") from e
    for name, value in (("depth", d), ("width", w), ("resolution", r)):
        if value == 0.0 or not math.isfinite(value):
            raise SpecError(f"phi={phi:g} gives a {name} multiplier of {value:g}; use a smaller |phi|")
    return Multipliers(d, w, r)


def implied_phi(m: Multipliers, coeffs: Coefficients = PAPER_COEFFICIENTS) -> tuple[float, float, float]:
    """The φ each multiplier implies, log(m)/log(base), per dimension (docs/paper.md).

    Published presets are not α^φ, β^φ, γ^φ for one φ: B3's (w 1.2, d 1.4, r 300) implies
    φ = 1.85 / 1.91 / 2.09. A base of exactly 1 gives NaN (φ is undefined there).
    """

    def one(mult: float, base: float) -> float:
        return math.log(mult) / math.log(base) if base != 1 else math.nan

    return (one(m.depth, coeffs.alpha), one(m.width, coeffs.beta), one(m.resolution, coeffs.gamma))


def round_channels(channels: int, width_mult: float, divisor: int = 8, round_limit: float = 0.9) -> int:
    """Official ``round_filters``: scale, round to a multiple of ``divisor``, never below it.

    If rounding down lost more than 10 % (``new < round_limit · scaled``) the result goes up by one
    divisor. Identity when ``width_mult == 1`` and ``channels`` is already a multiple.
    """
    scaled = channels * width_mult
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < round_limit * scaled:
        new += divisor
    return int(new)


def round_repeats(repeats: int, depth_mult: float, mode: DepthRounding = "ceil") -> int:
    """Official ``round_repeats``: ``ceil(d · L)``. ``round`` is offered for experiments; it can
    give 0 (the caller rejects that). Ceil inflates shallow nets: B1's d = 1.1 makes B0's 16 blocks
    23 (1.44×, docs/paper.md)."""
    if mode == "ceil":
        return math.ceil(repeats * depth_mult)
    if mode == "round":
        return math.floor(repeats * depth_mult + 0.5)
    raise SpecError(f"depth rounding {mode!r} is unknown; use ceil (the official code's) or round")


def round_resolution(resolution: int, resolution_mult: float) -> int:
    """Nearest integer pixel count (half up): B1 by formula, 224·1.15^0.5 = 240.2 → 240."""
    return math.floor(resolution * resolution_mult + 0.5)


def _scale_stage(i: int, stage: StageSpec, m: Multipliers, spec: NetworkSpec, mode: DepthRounding) -> StageSpec:
    repeats = round_repeats(stage.repeats, m.depth, mode) if stage.scale_depth else stage.repeats
    if repeats < 1:  # only reachable with depth_rounding="round"
        raise SpecError(f"{spec.name}: depth multiplier {m.depth:.4g} leaves stage {i + 1} with no block "
                        f"({stage.repeats} x {m.depth:.4g} rounds to 0); use depth_rounding='ceil' or a larger "
                        f"depth multiplier")
    return dataclasses.replace(
        stage,
        repeats=repeats,
        out_channels=round_channels(stage.out_channels, m.width, spec.divisor, spec.round_limit),
    )


def _scale_head(spec: NetworkSpec, width: float) -> int | None:
    head = spec.head
    if head.channels is None or head.policy == "fixed":
        return head.channels
    w = max(1.0, width) if head.policy == "at_least_base" else width
    return round_channels(head.channels, w, spec.divisor, spec.round_limit)


def scale_spec(
    spec: NetworkSpec,
    m: Multipliers,
    *,
    depth_rounding: DepthRounding | None = None,
    name: str | None = None,
) -> NetworkSpec:
    """Scale any baseline by (depth, width, resolution) multipliers; returns a new spec.

    ``depth_rounding`` (``ceil`` or ``round``, see :func:`round_repeats`) defaults to the rule the
    baseline carries (``spec.depth_rounding``, ``ceil`` unless set) and is recorded in the result, so a
    network scaled with ``round`` keeps scaling with ``round`` and its checkpoint says so.

    Works for every stage-based spec (EfficientNet, MobileNetV1/V2, ResNet): it only rewrites
    repeats, stage widths, stem/head widths and resolution; derived widths follow by ratio.
    ``scale_spec(spec, Multipliers(1, 1, 1)) == spec`` for any spec whose widths are multiples of
    the divisor.

    Raises:
        SpecError: if the result has a stage with no block, or an input smaller than the network's
            total stride (the feature map would be empty), naming the value and the limit.
    """
    mode = spec.depth_rounding if depth_rounding is None else depth_rounding
    if mode not in DEPTH_ROUNDINGS:
        raise SpecError(f"depth rounding {mode!r} is unknown; use ceil (the official code's) or round")
    stages = tuple(_scale_stage(i, s, m, spec, mode) for i, s in enumerate(spec.stages))
    resolution = round_resolution(spec.resolution, m.resolution)
    if resolution < spec.total_stride:
        raise SpecError(f"{spec.name}: resolution multiplier {m.resolution:.4g} gives a {resolution} px "
                        f"input, below the network's total stride {spec.total_stride}; use a larger "
                        f"resolution multiplier (phi)")
    stem = spec.stem
    if stem.scale_width:
        stem = dataclasses.replace(
            stem, out_channels=round_channels(stem.out_channels, m.width, spec.divisor, spec.round_limit))
    head = dataclasses.replace(spec.head, channels=_scale_head(spec, m.width))
    return dataclasses.replace(spec, name=name or spec.name, stem=stem, stages=stages, head=head,
                               resolution=resolution, depth_rounding=mode)


def min_phi(spec: NetworkSpec, coeffs: Coefficients = PAPER_COEFFICIENTS) -> float:
    """The smallest φ whose scaled network is valid: the input must keep at least one pixel per
    total stride. Channels and repeats never reach zero (rounding floors them at 8 and 1), so the
    resolution is the binding limit. Returns ``-inf`` when γ = 1 (resolution never shrinks)."""
    if coeffs.gamma <= 1:
        return -math.inf
    phi = math.log(spec.total_stride / spec.resolution) / math.log(coeffs.gamma)
    # step up to the first φ that rounds to a valid resolution
    while round_resolution(spec.resolution, coeffs.gamma**phi) < spec.total_stride:
        phi += 1e-3
    return phi


def limit_stride(spec: NetworkSpec, total_stride: int) -> NetworkSpec:
    """Adapt a spec to small inputs (28–32 px) by removing stride-2 steps, stem first, then the
    earliest stages, until the network's total stride is at most ``total_stride``.

    ImageNet nets reduce by 32, which leaves a 1×1 map from a 32 px image; CIFAR-style adaptations
    keep the late, wide stages at 4×4 instead. The stage table is otherwise unchanged.
    """
    if total_stride < 1 or total_stride & (total_stride - 1):
        raise SpecError(f"total_stride={total_stride} must be a power of two >= 1, e.g. 8")
    stem, stages = spec.stem, list(spec.stages)
    current = spec.total_stride
    if current > total_stride and stem.stride == 2:
        stem, current = dataclasses.replace(stem, stride=1), current // 2
    if current > total_stride and stem.pool:
        stem, current = dataclasses.replace(stem, pool=False), current // 2
    for i, s in enumerate(stages):
        if current <= total_stride:
            break
        if s.stride == 2:
            stages[i], current = dataclasses.replace(s, stride=1), current // 2
    return dataclasses.replace(spec, stem=stem, stages=tuple(stages))
