"""The model catalogue: one literal dict from name to (baseline, preset multipliers), no torch.

No decorators fill it at import (timm/torchvision do); ``list_models`` sorts its keys; a test
builds every entry. ``get_spec`` applies the preset and then, if asked, compound scaling by φ or
explicit multipliers, so every model name works as a baseline (``resnet50`` at φ = 1).
"""

from __future__ import annotations

import difflib
import fnmatch
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from effnet.arch.efficientnet import EFFICIENTNET_PRESETS, LITE_PRESETS, Preset, efficientnet_b0, efficientnet_lite0
from effnet.arch.mobilenet import mobilenetv1, mobilenetv2
from effnet.arch.resnet import resnet18, resnet34, resnet50
from effnet.errors import SpecError
from effnet.limits import check_network, check_spec_types
from effnet.scaling import (
    IDENTITY,
    PAPER_COEFFICIENTS,
    Coefficients,
    DepthRounding,
    Multipliers,
    compound_multipliers,
    min_phi,
    round_resolution,
    scale_spec,
)
from effnet.spec import NetworkSpec


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its family baseline and the published multipliers applied to it."""

    baseline: Callable[[], NetworkSpec]
    multipliers: Multipliers = IDENTITY
    dropout: float | None = None
    crop_pct: float = 0.875
    description: str = ""


def _preset(baseline: Callable[[], NetworkSpec], p: Preset, crop_pct: float, what: str) -> ModelEntry:
    base = baseline().resolution
    return ModelEntry(baseline, Multipliers(p.depth, p.width, p.resolution / base), p.dropout, crop_pct,
                      f"{what} (w={p.width:g}, d={p.depth:g}, r={p.resolution})")


# crop_pct: the official eval crop r/(r+32) for B0–B7 (TPU, 2019-05 to 2021-11, what timm's tf_
# weights use); timm's Lite configs for Lite0–4.
_B_CROP = {k: p.resolution / (p.resolution + 32) for k, p in EFFICIENTNET_PRESETS.items()}
_LITE_CROP = {"lite0": 0.875, "lite1": 0.882, "lite2": 0.89, "lite3": 0.904, "lite4": 0.92}

MODELS: dict[str, ModelEntry] = {
    **{f"efficientnet_{k}": _preset(efficientnet_b0, p, _B_CROP[k], f"EfficientNet-{k.upper()}")
       for k, p in EFFICIENTNET_PRESETS.items()},
    **{f"efficientnet_{k}": _preset(efficientnet_lite0, p, _LITE_CROP[k], f"EfficientNet-{k.capitalize()}")
       for k, p in LITE_PRESETS.items()},
    "mobilenetv1": ModelEntry(mobilenetv1, description="MobileNetV1 1.0-224 (Howard et al. 2017)"),
    "mobilenetv2": ModelEntry(mobilenetv2, description="MobileNetV2 1.0-224 (Sandler et al. 2018)"),
    "resnet18": ModelEntry(resnet18, description="ResNet-18 (He et al. 2016)"),
    "resnet34": ModelEntry(resnet34, description="ResNet-34 (He et al. 2016)"),
    "resnet50": ModelEntry(resnet50, description="ResNet-50 (He et al. 2016, torchvision v1.5)"),
}


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style ``pattern`` (``efficientnet_b*``), sorted."""
    return sorted(n for n in MODELS if fnmatch.fnmatch(n, pattern))


def get_entry(name: str) -> ModelEntry:
    """The catalogue entry for ``name``; an unknown name suggests the closest ones."""
    try:
        return MODELS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(MODELS), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "run `effnet models` to list them"
        raise SpecError(f"unknown model {name!r}; {hint}") from None


def load_spec_file(path: str) -> NetworkSpec:
    """A spec from a JSON file: ``NetworkSpec.to_dict()``, or any object with a ``"spec"`` key (what
    ``effnet describe --json`` prints and the ``baseline.json`` that ``effnet nas`` writes).

    Raises:
        SpecError: the file is missing, not JSON, or not a spec, naming it and the fix.
    """
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"{path!r} is neither a registered model (`effnet models`) nor a spec file")
    try:
        d = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise SpecError(f"spec file {path!r} is not JSON ({e}); write one with `effnet describe --json`") from None
    if not isinstance(d, dict):
        raise SpecError(f"spec file {path!r} holds a {type(d).__name__}, not a spec object")
    raw = d.get("spec", d)
    check_spec_types(raw, f"spec file {path}")  # outside data: types and size limits before anything is built
    spec = NetworkSpec.from_dict(raw)
    check_network(spec, num_classes=1000, in_chans=1, where=f"spec file {path}")
    return spec


def searched_proxy(path: str, settings: dict[str, Any]) -> NetworkSpec | None:
    """The proxy network an ``effnet nas`` ``baseline.json`` was searched at, when ``settings`` (depth,
    width, total stride, resolution) are the ones it was searched with; else None.

    Why: the file's ``spec`` is the genome decoded on the full-size stage table, and shrinking it by
    the same depth and width does not give back the proxy that was trained and chosen: widths are
    rounded to multiples of 8 and depths up at each step, and the two orders differ (a stage of 32
    channels × 0.75 × 0.5 is 16 one way, 24 the other). The grid search and the demo must start from
    the network the search actually measured.
    """
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None  # load_spec_file names the problem
    if not isinstance(d, dict) or "proxy_spec" not in d or d.get("proxy") != settings:
        return None
    check_spec_types(d["proxy_spec"], f"proxy spec of {path}")
    spec = NetworkSpec.from_dict(d["proxy_spec"])
    check_network(spec, num_classes=1000, in_chans=1, where=f"proxy spec of {path}")
    return spec


def _is_spec_file(name: str) -> bool:
    return name not in MODELS and (name.endswith(".json") or Path(name).is_file())


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def smallest_phi(name: str, coeffs: Coefficients = PAPER_COEFFICIENTS) -> float:
    """The smallest φ at which ``name`` scaled by ``coeffs`` is still a valid network (its input
    keeps at least one pixel per total stride; channels and repeats never round to zero)."""
    entry = get_entry(name)
    base = entry.baseline()
    return min_phi(base.replace(resolution=round_resolution(base.resolution, entry.multipliers.resolution)),
                   coeffs)


def get_spec(name: str, *, phi: float | None = None, multipliers: Multipliers | None = None,
             coeffs: Coefficients = PAPER_COEFFICIENTS, depth_rounding: DepthRounding = "ceil") -> NetworkSpec:
    """The spec of a registered model, optionally scaled further.

    Args:
        name: a registered name (``efficientnet_b3``, ``resnet50``).
        phi: compound coefficient (eq. 3) applied on top of the model's preset multipliers:
            ``efficientnet_b0`` at φ = 1 is B0 × (α, β, γ); ``resnet50`` at φ = 1 scales ResNet-50.
        multipliers: explicit (depth, width, resolution) multipliers instead of φ.
        coeffs: (α, β, γ) for ``phi``; the paper's by default.
        depth_rounding: ``ceil`` (the official code's, which the B1–B7 presets were built with) or
            ``round``; it rounds the preset and the extra scaling together and is stored in the spec.

    The preset and the extra scaling are multiplied and the baseline is rounded once, as the
    official code does, rather than rounding twice. ``name`` may also be a spec JSON file (see
    :func:`load_spec_file`), e.g. the ``baseline.json`` of an architecture search: that spec is the
    baseline the scaling starts from.
    """
    if phi is not None and multipliers is not None:
        raise SpecError("give phi or multipliers, not both")
    if _is_spec_file(name):
        base = load_spec_file(name)
        if phi is None and multipliers is None:
            return base
        m = compound_multipliers(phi, coeffs) if phi is not None else multipliers
        assert m is not None
        return scale_spec(base, m, name=f"{base.name}@phi={_fmt(phi)}" if phi is not None else None)
    entry = get_entry(name)
    m = entry.multipliers
    suffix = ""
    if phi is not None:
        m = m * compound_multipliers(phi, coeffs)
        suffix = f"@phi={_fmt(phi)}"
    elif multipliers is not None:
        m = m * multipliers
        suffix = f"@d={_fmt(multipliers.depth)},w={_fmt(multipliers.width)},r={_fmt(multipliers.resolution)}"
    try:
        spec = scale_spec(entry.baseline(), m, name=name + suffix, depth_rounding=depth_rounding)
    except SpecError as e:
        if phi is None:
            raise
        raise SpecError(f"phi={phi:g} is out of range for {name}: {e}; the smallest valid phi is "
                        f"{smallest_phi(name, coeffs):.3f}") from None
    return spec if entry.dropout is None else spec.replace(dropout=entry.dropout)
