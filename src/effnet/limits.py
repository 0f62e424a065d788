"""Sane bounds on a network described by *outside* data (checkpoint headers, spec JSON), checked
before any tensor is allocated (no torch).

A ``.safetensors`` header is a few hundred bytes of JSON, but the network it describes is built
from it: a header that says 10^7 channels or 10^10 classes would make effnet allocate until the
machine runs out of memory. :func:`check_network` refuses such a description in microseconds,
with one line that names the value, the limit and how to lift it. The limits are several times
the largest network in the catalogue (EfficientNet-L2: 5,504 channels, 8,256 expanded, 22 repeats,
kernel 5, expand 6, 800 px, 480 M parameters), so every real network passes; docs/limits.md
lists them. A trusted file over a limit loads with ``EFFNET_TRUST_SPEC=1`` (or ``trusted=True``
in :func:`effnet.checkpoint.load_model`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

from effnet.errors import SpecError
from effnet.macs import estimate_cost
from effnet.spec import NetworkSpec, expanded_channels

__all__ = ["LIMITS", "TRUST_ENV", "check_network", "check_spec_types", "limits_lifted"]

TRUST_ENV = "EFFNET_TRUST_SPEC"

LIMITS: dict[str, float] = {
    "channels": 32_768,  # any stem, stage, head or expanded width
    "repeats": 64,  # blocks in one stage
    "stages": 32,
    "kernel_size": 15,
    "expand_ratio": 16,
    "resolution": 4_096,  # input side in pixels
    "num_classes": 100_000,  # ImageNet-21k has 21,841
    "in_chans": 64,
    "params": 2_000_000_000,  # analytic count (effnet.macs), L2 has 480 M
}
"""The documented limits (docs/limits.md)."""

# Raw-dict types of every spec field, so a header with a string, a list or a float where an int
# belongs is refused by name instead of failing inside torch (bool is refused where int is asked).
_INT, _NUM, _STR, _BOOL = "an integer", "a number", "a string", "true or false"
_STEM = {"out_channels": _INT, "kernel_size": _INT, "stride": _INT, "pool": _BOOL, "activation": _STR,
         "scale_width": _BOOL}
_STAGE = {"block": _STR, "repeats": _INT, "out_channels": _INT, "stride": _INT, "kernel_size": _INT,
          "expand_ratio": _NUM, "se_ratio": _NUM, "activation": _STR, "scale_depth": _BOOL}
_HEAD = {"channels": _INT, "policy": _STR, "activation": _STR}
_NET = {"name": _STR, "resolution": _INT, "dropout": _NUM, "drop_path_rate": _NUM, "divisor": _INT,
        "round_limit": _NUM, "bn_eps": _NUM, "bn_momentum": _NUM, "padding": _STR, "depth_rounding": _STR}


def limits_lifted() -> bool:
    """True when the user trusts the file (``EFFNET_TRUST_SPEC=1``)."""
    return os.environ.get(TRUST_ENV, "").strip().lower() in ("1", "true", "yes")


def _ok(value: Any, kind: str) -> bool:
    if kind == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == _NUM:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if kind == _STR:
        return isinstance(value, str) and len(value) <= 200
    return isinstance(value, bool)


def _check_fields(d: Any, schema: Mapping[str, str], where: str, *, optional: tuple[str, ...] = ()) -> None:
    if not isinstance(d, Mapping):
        raise SpecError(f"{where}: must be a mapping, got {type(d).__name__}")
    for key, value in d.items():
        kind = schema.get(key)
        if kind is None:
            raise SpecError(f"{where}: unknown key {str(key)[:40]!r}; expected a subset of {sorted(schema)}")
        if not (_ok(value, kind) or (value is None and key in optional)):
            raise SpecError(f"{where}.{key}: must be {kind}, got {_show(value)}")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"a {type(value).__name__} ({text[:30]}...)"


def check_spec_types(d: Any, where: str = "spec") -> None:
    """Refuse a raw spec dict (``NetworkSpec.to_dict()`` form) whose values have the wrong JSON type.

    Raises:
        SpecError: naming the first offending key path and value.
    """
    _check_fields({k: v for k, v in d.items() if k not in ("stem", "stages", "head")}
                  if isinstance(d, Mapping) else d, _NET, where)
    _check_fields(d.get("stem"), _STEM, f"{where}.stem")
    _check_fields(d.get("head", {}), _HEAD, f"{where}.head", optional=("channels",))
    stages = d.get("stages")
    if not isinstance(stages, list) or not stages:
        raise SpecError(f"{where}.stages: must be a non-empty list, got {_show(stages)}")
    if len(stages) > LIMITS["stages"] and not limits_lifted():
        _over(f"{where}.stages", len(stages), "stages")
    for i, s in enumerate(stages):
        _check_fields(s, _STAGE, f"{where}.stages[{i}]")


def _over(where: str, value: float, limit: str) -> None:
    raise SpecError(f"{where} = {value:,.6g} is over effnet's limit for {limit} ({LIMITS[limit]:,.6g}, "
                    f"docs/limits.md); if you trust this file, set {TRUST_ENV}=1")


def check_network(spec: NetworkSpec, *, num_classes: int = 1000, in_chans: int = 3, where: str = "spec") -> None:
    """Refuse a validated :class:`~effnet.spec.NetworkSpec` (plus head and input sizes) over :data:`LIMITS`.

    Cheap: arithmetic on the spec, then the analytic parameter count (:mod:`effnet.macs`), which is
    only reached once every width is bounded. Does nothing when :func:`limits_lifted`.

    Raises:
        SpecError: naming the value, the limit and ``EFFNET_TRUST_SPEC``.
    """
    if limits_lifted():
        return
    checks: list[tuple[str, float, str]] = [
        ("num_classes", num_classes, "num_classes"), ("in_chans", in_chans, "in_chans"),
        ("resolution", spec.resolution, "resolution"), ("stages", len(spec.stages), "stages"),
        ("stem.out_channels", spec.stem.out_channels, "channels"),
        ("stem.kernel_size", spec.stem.kernel_size, "kernel_size"),
        ("head.channels", spec.head.channels or 0, "channels")]
    cin = spec.stem.out_channels
    for i, s in enumerate(spec.stages):
        at = f"stages[{i}]"
        checks += [(f"{at}.out_channels", s.out_channels, "channels"), (f"{at}.repeats", s.repeats, "repeats"),
                   (f"{at}.kernel_size", s.kernel_size, "kernel_size"),
                   (f"{at}.expand_ratio", s.expand_ratio, "expand_ratio")]
        if s.expand_ratio <= LIMITS["expand_ratio"]:
            checks.append((f"{at} expanded width", expanded_channels(max(cin, s.out_channels), s.expand_ratio),
                           "channels"))
        cin = s.out_channels
    for name, value, limit in checks:
        if value > LIMITS[limit]:
            _over(f"{where}.{name}", value, limit)
    params = estimate_cost(spec, num_classes=num_classes, in_chans=in_chans).params
    if params > LIMITS["params"]:
        _over(f"{where} (whole network)", params, "params")
