"""The architecture search's objectives: MnasNet's reward on MACs or measured latency (no torch).

MnasNet (Tan et al. 2019, §3, eq. 2) rewards a model m with ``ACC(m)·[LAT(m)/T]^w`` where
``w = α`` if ``LAT(m) ≤ T`` else ``β``. The *soft* form (α = β = −0.07) trades about 5 % relative
accuracy for a 2× cost; the *hard* form (α = 0, β = −1) ignores cost below the target and divides
the accuracy by the overshoot above it. EfficientNet (§4) replaced latency by FLOPs with T = 400M
and w = −0.07, since it targets no particular device. ``pareto`` keeps accuracy and cost as two
objectives (NSGA-II, Deb et al. 2002) instead of folding them into one number.

The cost is ``macs`` (analytic, :func:`effnet.macs.estimate_cost`) or ``latency`` (milliseconds,
measured by a timing function that the caller injects: ``effnet.search`` never imports the
inference engines of ``effnet.deploy``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from effnet.errors import EffnetError

__all__ = ["COSTS", "FORMS", "OBJECTIVES", "Objective", "parse_objective", "reward"]

COSTS = ("macs", "latency")
FORMS = ("soft", "hard", "pareto")
OBJECTIVES = ("macs", "latency", "macs-hard", "latency-hard", "pareto", "pareto-latency")
"""The ``--objective`` names: the cost, and the form when not soft."""


def reward(accuracy: float, cost: float, target: float, w: float, *, hard: bool = False) -> float:
    """MnasNet eq. 2: ``accuracy · (cost / target) ** w``; with ``hard`` the exponent is 0 at or
    below the target and −1 above it (MnasNet §3, the hard-constraint setting)."""
    if hard:
        w = 0.0 if cost <= target else -1.0
    return float(accuracy * (cost / target) ** w)


@dataclass(frozen=True)
class Objective:
    """What a trial is scored by.

    Attributes:
        cost: ``macs`` or ``latency``.
        form: ``soft`` (one reward, exponent ``w``), ``hard`` (MnasNet's α = 0, β = −1) or
            ``pareto`` (accuracy maximised and cost minimised as two objectives).
        target: T, in MACs or milliseconds; must be > 0.
        w: the soft exponent, ≤ 0 (a positive w would reward cost); ignored by ``hard`` and ``pareto``.
    """

    cost: str = "macs"
    form: str = "soft"
    target: float = 1.0
    w: float = -0.07

    def __post_init__(self) -> None:
        if self.cost not in COSTS:
            raise EffnetError(f"objective cost {self.cost!r}: use one of {', '.join(COSTS)}")
        if self.form not in FORMS:
            raise EffnetError(f"objective form {self.form!r}: use one of {', '.join(FORMS)}")
        if not (math.isfinite(self.target) and self.target > 0):
            raise EffnetError(f"target T={self.target!r} must be > 0 ({'MACs' if self.cost == 'macs' else 'ms'})")
        if not math.isfinite(self.w) or self.w > 0:
            raise EffnetError(f"w={self.w!r} must be <= 0: a positive exponent rewards a larger network; the "
                              "paper's is -0.07")

    @property
    def name(self) -> str:
        if self.form == "pareto":
            return "pareto" if self.cost == "macs" else "pareto-latency"
        return self.cost if self.form == "soft" else f"{self.cost}-hard"

    @property
    def directions(self) -> tuple[str, ...]:
        """Optuna study directions: one reward to maximise, or (accuracy, cost) for Pareto."""
        return ("maximize", "minimize") if self.form == "pareto" else ("maximize",)

    def values(self, accuracy: float, cost: float) -> list[float]:
        """The trial's objective values in :attr:`directions` order."""
        if self.form == "pareto":
            return [accuracy, cost]
        return [reward(accuracy, cost, self.target, self.w, hard=self.form == "hard")]

    def scalar(self, accuracy: float, cost: float) -> float:
        """The soft reward of a trial, the one number reports rank by in every form."""
        return reward(accuracy, cost, self.target, self.w if self.form == "soft" else -0.07)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Objective:
        return cls(str(d["cost"]), str(d["form"]), float(d["target"]), float(d["w"]))


def parse_objective(name: str, target: float, w: float) -> Objective:
    """An :class:`Objective` from an ``--objective`` name (:data:`OBJECTIVES`).

    Raises:
        EffnetError: an unknown name (listing the known ones), T ≤ 0 or w > 0.
    """
    if name not in OBJECTIVES:
        raise EffnetError(f"unknown objective {name!r}; use one of {', '.join(OBJECTIVES)}")
    if name.startswith("pareto"):
        return Objective("latency" if name.endswith("latency") else "macs", "pareto", target, w)
    cost, _, form = name.partition("-")
    return Objective(cost, form or "soft", target, w)
