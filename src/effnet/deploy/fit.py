"""Hardware-aware budgets → φ: measured latency on this machine, and estimated training memory.

Why measure: MACs do not predict latency for depthwise-heavy networks (docs/performance-notes.md:
B0's depthwise convs run at 5–27 GFLOP/s while its 1×1 convs reach 100+), so a MACs budget is a
poor proxy for a latency budget. EfficientNet-X (Li et al. 2021) searched with measured latency but
the official code only ships the resulting fixed tables; here any baseline is scaled and timed on
the machine that will run it, with the engine it will run on.

Latency is measured on a 0.25 grid of φ (each point is an export and a timing, seconds each); memory
uses :func:`effnet.deploy.memory.estimate_train_memory` on the 0.01 grid of :func:`effnet.scaling_law.fit_phi`.
Both assume cost grows with φ, which rounding keeps true for memory and noise can break for latency:
the result reports the measured latency of φ and of φ + 0.25 so the margin is visible.
"""

from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import dataclass

import torch

from effnet.catalog import get_spec, smallest_phi
from effnet.errors import SpecError
from effnet.scaling_law import OutOfRange, largest_fitting
from effnet.spec import NetworkSpec

__all__ = ["LatencyFit", "MemoryFit", "fit_latency", "fit_train_memory", "measure_latency"]

STEP = 0.25


@dataclass(frozen=True)
class LatencyFit:
    name: str
    engine: str
    batch: int
    budget_ms: float
    phi: float
    ms: float  # measured at phi
    next_ms: float  # measured at phi + STEP (over budget)
    resolution: int
    measured: dict[float, float]  # every φ timed, ms


@dataclass(frozen=True)
class MemoryFit:
    name: str
    batch: int
    budget_bytes: float
    phi: float
    bytes: int
    next_bytes: int


def measure_latency(name: str, phi: float, *, engine: str = "eager", batch: int = 1, rounds: int = 7) -> float:
    """Median seconds per forward pass of ``name`` at ``phi`` on ``engine`` (random weights: latency
    does not depend on their values), after the path is verified against eager."""
    return measure_spec_latency(get_spec(name, phi=phi), engine=engine, batch=batch, rounds=rounds)


def measure_spec_latency(spec: NetworkSpec, *, engine: str = "eager", batch: int = 1, rounds: int = 7,
                         num_classes: int = 1000, in_chans: int = 3) -> float:
    """Median seconds per forward pass of the network ``spec`` describes (at its resolution) on
    ``engine``, verified against eager first: what a latency-aware architecture search (MnasNet §3)
    measures for each candidate."""
    from effnet.deploy.bench import run_side_by_side
    from effnet.deploy.inference import optimize_for_inference
    from effnet.registry import create_model

    model = create_model(spec, num_classes=num_classes, in_chans=in_chans)
    res = spec.resolution
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast = optimize_for_inference(model, example=torch.randn(2, in_chans, res, res), engine=engine)
    # Several calls per sample and a longer warm-up: single ~10 ms calls right after an export vary by
    # 30 % here (allocator and thread wake-up), enough to make φ + 0.25 look faster than φ.
    times = run_side_by_side({"m": fast}, torch.randn(batch, in_chans, res, res), rounds=rounds, inner=5,
                             warmup=5)["m"]
    return statistics.median(times)


def fit_latency(name: str, max_latency_s: float, *, engine: str = "eager", batch: int = 1, rounds: int = 7,
                max_phi: float = 8.0) -> LatencyFit:
    """The largest φ on the 0.25 grid whose measured latency meets ``max_latency_s``.

    Grows φ by doubling steps from 0 (or shrinks it) to bracket the budget, then bisects the grid.
    """
    if not max_latency_s > 0:
        raise SpecError(f"max latency {max_latency_s!r} s must be > 0")
    cache: dict[float, float] = {}

    def ms(k: int) -> float:
        phi = k * STEP
        if phi not in cache:
            cache[phi] = 1000 * measure_latency(name, phi, engine=engine, batch=batch, rounds=rounds)
        return cache[phi]

    budget = 1000 * max_latency_s
    lo_limit = math.ceil(smallest_phi(name) / STEP)
    hi_limit = int(max_phi / STEP)
    try:
        lo = largest_fitting(lambda k: ms(k) <= budget, 0, lo_limit, hi_limit, 1)
    except OutOfRange as e:
        if e.at_ceiling:
            raise SpecError(f"phi={max_phi:g} still meets {budget:g} ms; the budget is too loose to fit") from None
        raise SpecError(f"even the smallest {name} (phi={lo_limit * STEP:g}) takes {ms(lo_limit):.1f} ms > "
                        f"{budget:g} ms on {engine}; raise the budget or pick a smaller baseline") from None
    return LatencyFit(name, engine, batch, budget, lo * STEP, ms(lo), ms(lo + 1),
                      get_spec(name, phi=lo * STEP).resolution, dict(sorted(cache.items())))


def fit_train_memory(name: str, max_bytes: float, batch: int, *, amp: str = "none", channels_last: bool = False,
                     grad_checkpointing: bool = False, optimizer: str = "sgd", max_phi: float = 12.0) -> MemoryFit:
    """The largest φ (0.01 grid) whose estimated training peak at ``batch`` fits ``max_bytes``."""
    from effnet.deploy.memory import estimate_train_memory

    if not max_bytes > 0 or batch < 1:
        raise SpecError(f"max memory {max_bytes!r} must be > 0 and batch {batch} >= 1")

    def cost(k: int) -> int:
        return estimate_train_memory(get_spec(name, phi=k / 100), batch, amp=amp, channels_last=channels_last,
                                     grad_checkpointing=grad_checkpointing, optimizer=optimizer).total

    floor, ceiling = math.ceil(smallest_phi(name) * 100), int(max_phi * 100)
    try:
        lo = largest_fitting(lambda k: cost(k) <= max_bytes, max(0, floor), floor, ceiling, 25)
    except OutOfRange as e:
        if e.at_ceiling:
            raise SpecError(f"phi={max_phi:g} still fits; the budget is too large to be meaningful") from None
        raise SpecError(f"even the smallest {name} (phi={floor / 100:g}) needs {cost(floor) / 2**30:.2f} GiB "
                        f"at batch {batch}; lower the batch, add --grad-checkpointing, or raise the budget") from None
    return MemoryFit(name, batch, max_bytes, lo / 100, cost(lo), cost(lo + 1))
