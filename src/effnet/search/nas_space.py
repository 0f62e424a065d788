"""MnasNet's factorized hierarchical search space as data: a genome in, a ``NetworkSpec`` out (no torch).

MnasNet (Tan et al. 2019, §4.1 and Fig. 4) keeps a fixed sequence of stages (strides, stem and
head as in the base network) and lets *each stage* choose its own block, kernel, squeeze-excitation
ratio, number of layers relative to the base and width relative to the base; every block of a stage
is the same. EfficientNet-B0 was found in this space with the FLOPs-aware reward of
:mod:`effnet.search.nas_objective` (EfficientNet §4). The choices here:

* block: MBConv with expand ratio 1, 3 or 6 (``mbconv1`` is MnasNet's "SepConv": depthwise k×k →
  linear 1×1 projection, so depthwise-separable is this choice) and EfficientNetV2's fused MBConv
  with expand ratio 1 or 4 (Tan & Le 2021, §3.2; google/automl ``efficientnetv2/effnetv2_model.py``);
* kernel 3 or 5 (7 optional), SE ratio 0 or 0.25, repeats delta −1/0/+1 (at least 1), width
  multiplier 0.75/1/1.25 rounded to a multiple of 8 with the official ``round_filters``
  (:func:`effnet.scaling.round_channels`).

A genome is a list with one gene per base stage, each a plain dict (``block``, ``kernel``, ``se``,
``repeats`` delta, ``width`` multiplier): it is JSON as it is, and :func:`decode` is pure.
:func:`encode` finds the genome of a network already in the space, so that B0's own table is a point
of its own space (``decode(encode(b0), b0) == b0``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from effnet.errors import EffnetError
from effnet.scaling import round_channels
from effnet.spec import NetworkSpec, StageSpec

__all__ = ["BLOCK_CHOICES", "GENE_KEYS", "Gene", "Genome", "SearchSpace", "decode", "encode", "genome_code",
           "genome_from_params", "params_of_genome"]

BLOCK_CHOICES: dict[str, tuple[str, float]] = {
    "mbconv1": ("mbconv", 1.0), "mbconv3": ("mbconv", 3.0), "mbconv6": ("mbconv", 6.0),
    "fused1": ("fused_mbconv", 1.0), "fused4": ("fused_mbconv", 4.0),
}
"""Block choice name → (``StageSpec.block``, expand ratio)."""

GENE_KEYS = ("block", "kernel", "se", "repeats", "width")
Gene = dict[str, Any]
Genome = list[Gene]


def _choices(name: str, values: Sequence[Any], hint: str) -> None:
    if not values:
        raise EffnetError(f"search space: {name} has no choice; give at least one ({hint})")
    if len(set(values)) != len(values):
        raise EffnetError(f"search space: {name} {list(values)} repeats a choice; list each once")


@dataclass(frozen=True)
class SearchSpace:
    """The per-stage choices (MnasNet §4.1). Every stage chooses from the same lists.

    Attributes:
        blocks: names from :data:`BLOCK_CHOICES`.
        kernels: odd kernel sizes of the depthwise (or fused) conv.
        se_ratios: squeeze-excitation ratios relative to the block input, 0 = none.
        repeat_deltas: layers added to the base stage's repeats (the result is at least 1).
        width_mults: multipliers of the base stage's width, rounded to the spec's divisor.
    """

    blocks: tuple[str, ...] = ("mbconv1", "mbconv3", "mbconv6", "fused1", "fused4")
    kernels: tuple[int, ...] = (3, 5)
    se_ratios: tuple[float, ...] = (0.0, 0.25)
    repeat_deltas: tuple[int, ...] = (-1, 0, 1)
    width_mults: tuple[float, ...] = (0.75, 1.0, 1.25)

    def __post_init__(self) -> None:
        _choices("blocks", self.blocks, ", ".join(BLOCK_CHOICES))
        _choices("kernels", self.kernels, "e.g. 3,5")
        _choices("se_ratios", self.se_ratios, "e.g. 0,0.25")
        _choices("repeat_deltas", self.repeat_deltas, "e.g. -1,0,1")
        _choices("width_mults", self.width_mults, "e.g. 0.75,1,1.25")
        bad = [b for b in self.blocks if b not in BLOCK_CHOICES]
        if bad:
            raise EffnetError(f"search space: unknown block {bad[0]!r}; use some of {', '.join(BLOCK_CHOICES)}")
        if any(not isinstance(k, int) or k < 1 or k % 2 == 0 for k in self.kernels):
            raise EffnetError(f"search space: kernels {list(self.kernels)} must be positive odd integers, e.g. 3,5,7")
        if any(not 0 <= s <= 1 for s in self.se_ratios):
            raise EffnetError(f"search space: SE ratios {list(self.se_ratios)} must be in [0, 1], e.g. 0,0.25")
        if any(not isinstance(d, int) for d in self.repeat_deltas):
            raise EffnetError(f"search space: repeat deltas {list(self.repeat_deltas)} must be integers")
        if any(not (math.isfinite(w) and w > 0) for w in self.width_mults):
            raise EffnetError(f"search space: width multipliers {list(self.width_mults)} must be > 0")

    def options(self) -> dict[str, tuple[Any, ...]]:
        """Each gene key's choices, in :data:`GENE_KEYS` order."""
        return {"block": self.blocks, "kernel": self.kernels, "se": self.se_ratios,
                "repeats": self.repeat_deltas, "width": self.width_mults}

    def stage_size(self) -> int:
        """Choices per stage (the product of the list lengths)."""
        return math.prod(len(v) for v in self.options().values())

    def size(self, num_stages: int) -> int:
        """Networks in the space over a base of ``num_stages`` stages: ``stage_size ** num_stages``
        (MnasNet §4.1: about 10^13 for its 7 blocks × 5 choices)."""
        return int(self.stage_size() ** num_stages)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SearchSpace:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise EffnetError(f"search space: unknown keys {unknown}; expected some of {sorted(known)}")
        return cls(**{k: tuple(v) for k, v in d.items()})

    def contains(self, genome: Sequence[Mapping[str, Any]]) -> bool:
        """Whether every gene picks from this space's choices."""
        opts = self.options()
        return all(set(g) == set(GENE_KEYS) and all(g[k] in opts[k] for k in GENE_KEYS) for g in genome)


def _check_genome(genome: Sequence[Mapping[str, Any]], base: NetworkSpec) -> None:
    if len(genome) != len(base.stages):
        raise EffnetError(f"genome has {len(genome)} genes but the base {base.name!r} has {len(base.stages)} "
                          "stages; one gene per stage")
    for i, g in enumerate(genome):
        if set(g) != set(GENE_KEYS):
            raise EffnetError(f"gene {i} has keys {sorted(g)}; expected {list(GENE_KEYS)}")
        if g["block"] not in BLOCK_CHOICES:
            raise EffnetError(f"gene {i}: unknown block {g['block']!r}; use one of {', '.join(BLOCK_CHOICES)}")


def _decode_stage(gene: Mapping[str, Any], stage: StageSpec, base: NetworkSpec) -> StageSpec:
    block, expand = BLOCK_CHOICES[gene["block"]]
    width = round_channels(stage.out_channels, float(gene["width"]), base.divisor, base.round_limit)
    return StageSpec(block=block, repeats=max(1, stage.repeats + int(gene["repeats"])), out_channels=width,
                     stride=stage.stride, kernel_size=int(gene["kernel"]), expand_ratio=expand,
                     se_ratio=float(gene["se"]), activation=stage.activation, scale_depth=stage.scale_depth)


def genome_code(genome: Sequence[Mapping[str, Any]]) -> str:
    """A short stable name of a genome (8 hex digits of its canonical JSON)."""
    return hashlib.sha256(json.dumps(list(genome), sort_keys=True).encode()).hexdigest()[:8]


def decode(genome: Sequence[Mapping[str, Any]], base: NetworkSpec) -> NetworkSpec:
    """The network a genome describes: ``base`` with each stage rebuilt from its gene.

    Strides, activations, stem, head and resolution stay the base's (MnasNet §4.1: the search
    changes what is inside each stage, not the stage sequence). The name is the base's for the
    base's own genome, else ``<base>-nas-<code>``.

    Raises:
        EffnetError: a gene count other than the base's stage count, or a malformed gene.
    """
    _check_genome(genome, base)
    stages = tuple(_decode_stage(g, s, base) for g, s in zip(genome, base.stages, strict=True))
    spec = base.replace(stages=stages)
    return spec if spec == base else spec.replace(name=f"{base.name}-nas-{genome_code(genome)}")


def _gene_of(stage: StageSpec) -> Gene:
    names = [n for n, (b, e) in BLOCK_CHOICES.items() if b == stage.block and e == stage.expand_ratio]
    if not names:
        raise EffnetError(f"stage {stage}: a {stage.block} block with expand ratio {stage.expand_ratio:g} is not "
                          f"one of the searchable blocks ({', '.join(BLOCK_CHOICES)})")
    return {"block": names[0], "kernel": stage.kernel_size, "se": stage.se_ratio, "repeats": 0, "width": 1.0}


def encode(spec: NetworkSpec, space: SearchSpace | None = None) -> Genome:
    """The genome of ``spec`` over itself as the base (every delta 0, every width 1).

    Raises:
        EffnetError: a stage whose block is not searchable, or (with ``space``) a choice the space
            lacks, naming the stage and the flag to widen.
    """
    genome = [_gene_of(s) for s in spec.stages]
    if space is not None and not space.contains(genome):
        opts = space.options()
        i, k = next((i, k) for i, g in enumerate(genome) for k in GENE_KEYS if g[k] not in opts[k])
        raise EffnetError(f"{spec.name} is not in the search space: stage {i + 1} has {k}={genome[i][k]!r}, "
                          f"not among {list(opts[k])}; add it to the space")
    return genome


def params_of_genome(genome: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Flat Optuna parameters ``s<i>_<key>`` of a genome (the sampler sees one categorical per choice)."""
    return {f"s{i}_{k}": g[k] for i, g in enumerate(genome) for k in GENE_KEYS}


def genome_from_params(params: Mapping[str, Any], num_stages: int) -> Genome:
    """Inverse of :func:`params_of_genome`."""
    return [{k: params[f"s{i}_{k}"] for k in GENE_KEYS} for i in range(num_stages)]
