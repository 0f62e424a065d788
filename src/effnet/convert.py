"""State-dict conversion from other implementations to effnet's module names.

Each source has an explicit key table: a list of (pattern, template) rows applied to every key,
so a reader can check the mapping line by line and a key that no row matches is an error naming
that key, never a silent drop. ``effnet convert`` (the weights issue) builds on these functions.

torchvision's BN eps differs from effnet's defaults for some models: :data:`TORCHVISION_BN_EPS`
says which, and :func:`torchvision_overrides` gives the ``create_model`` arguments that make the
converted weights reproduce torchvision's logits.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from effnet.errors import EffnetError

KeyTable = tuple[tuple[str, str], ...]

# torchvision EfficientNet: features.0 = stem Conv2dNormActivation (0 conv, 1 bn); features.1..7 =
# stages of MBConv whose `.block` holds [expand,] depthwise, SE (fc1, fc2), project; features.8 =
# head conv; classifier.1 = Linear. `{role}` is resolved per block (with or without expansion).
TV_EFFICIENTNET: KeyTable = (
    (r"features\.0\.0\.(.+)", r"stem.conv.\1"),
    (r"features\.0\.1\.(.+)", r"stem.bn.\1"),
    (r"features\.8\.0\.(.+)", r"head_conv.conv.\1"),
    (r"features\.8\.1\.(.+)", r"head_conv.bn.\1"),
    (r"features\.(\d+)\.(\d+)\.block\.(\d+)\.fc1\.(.+)", r"stages.{s}.\2.se.reduce.\4"),
    (r"features\.(\d+)\.(\d+)\.block\.(\d+)\.fc2\.(.+)", r"stages.{s}.\2.se.expand.\4"),
    (r"features\.(\d+)\.(\d+)\.block\.(\d+)\.0\.(.+)", r"stages.{s}.\2.{role}.conv.\4"),
    (r"features\.(\d+)\.(\d+)\.block\.(\d+)\.1\.(.+)", r"stages.{s}.\2.{role}.bn.\4"),
    (r"classifier\.1\.(.+)", r"classifier.\1"),
)

# torchvision MobileNetV2: features.0 stem, features.1..17 InvertedResidual (`.conv` holds
# [expand CNA,] depthwise CNA, project Conv2d, project BN), features.18 head, classifier.1.
TV_MOBILENETV2: KeyTable = (
    (r"features\.0\.0\.(.+)", r"stem.conv.\1"),
    (r"features\.0\.1\.(.+)", r"stem.bn.\1"),
    (r"features\.18\.0\.(.+)", r"head_conv.conv.\1"),
    (r"features\.18\.1\.(.+)", r"head_conv.bn.\1"),
    (r"features\.(\d+)\.conv\.(\d+)\.0\.(.+)", r"{block}.{role}.conv.\3"),
    (r"features\.(\d+)\.conv\.(\d+)\.1\.(.+)", r"{block}.{role}.bn.\3"),
    (r"features\.(\d+)\.conv\.(\d+)\.(.+)", r"{block}.{project}.\3"),  # last two: Conv2d, BN
    (r"classifier\.1\.(.+)", r"classifier.\1"),
)

# torchvision ResNet: conv1/bn1 stem, layerL.j.{convK,bnK,downsample.{0,1}}, fc.
TV_RESNET: KeyTable = (
    (r"conv1\.(.+)", r"stem.conv.\1"),
    (r"bn1\.(.+)", r"stem.bn.\1"),
    (r"layer(\d)\.(\d+)\.conv(\d)\.(.+)", r"stages.{layer}.\2.conv\3.conv.\4"),
    (r"layer(\d)\.(\d+)\.bn(\d)\.(.+)", r"stages.{layer}.\2.conv\3.bn.\4"),
    (r"layer(\d)\.(\d+)\.downsample\.0\.(.+)", r"stages.{layer}.\2.shortcut.conv.\3"),
    (r"layer(\d)\.(\d+)\.downsample\.1\.(.+)", r"stages.{layer}.\2.shortcut.bn.\3"),
    (r"fc\.(.+)", r"classifier.\1"),
)

# torchvision's batch-norm eps per model: 1e-5 (PyTorch default) except B5–B7, which were ported
# from TF with 1e-3. effnet's EfficientNet default is the TF reference's 1e-3 throughout.
TORCHVISION_BN_EPS: dict[str, float] = {
    **{f"efficientnet_b{i}": 1e-5 for i in range(5)},
    **{f"efficientnet_b{i}": 1e-3 for i in range(5, 8)},
    "mobilenetv2": 1e-5, "resnet18": 1e-5, "resnet34": 1e-5, "resnet50": 1e-5,
}

_TV_NAMES = {"mobilenet_v2": "mobilenetv2"}  # torchvision spelling → effnet spelling


def torchvision_overrides(name: str) -> dict[str, Any]:
    """``create_model`` keyword arguments under which torchvision's weights reproduce its logits."""
    name = _TV_NAMES.get(name, name)
    if name not in TORCHVISION_BN_EPS:
        raise EffnetError(f"no torchvision counterpart for {name!r}; supported: {', '.join(TORCHVISION_BN_EPS)}")
    return {"bn_eps": TORCHVISION_BN_EPS[name]}


def _apply(table: KeyTable, key: str, resolve: Any) -> str:
    for pattern, template in table:
        m = re.fullmatch(pattern, key)
        if m:
            return resolve(m, m.expand(template))
    raise EffnetError(f"unexpected key {key!r}: no row of the key table matches it; is this state dict "
                      f"from the model family you named?")


def _count_children(keys: list[str], pattern: str) -> dict[tuple[str, ...], int]:
    """Number of numbered children per parent, e.g. sub-layers per MBConv ``block``."""
    counts: dict[tuple[str, ...], int] = {}
    for k in keys:
        m = re.match(pattern, k)
        if m:
            parent, child = m.groups()[:-1], int(m.groups()[-1])
            counts[parent] = max(counts.get(parent, 0), child + 1)
    return counts


def _efficientnet(sd: Mapping[str, Any]) -> dict[str, Any]:
    keys = list(sd)
    children = _count_children(keys, r"features\.(\d+)\.(\d+)\.block\.(\d+)\.")

    def resolve(m: re.Match[str], out: str) -> str:
        if "{" not in out:
            return out
        stage, block, sub = m.group(1), m.group(2), int(m.group(3))
        roles = ("expand", "depthwise", "se", "project") if children[(stage, block)] == 4 else (
            "depthwise", "se", "project")
        return out.format(s=int(stage) - 1, role=roles[sub])

    return {_apply(TV_EFFICIENTNET, k, resolve): v for k, v in sd.items()}


def _mobilenetv2(sd: Mapping[str, Any], repeats: tuple[int, ...] = (1, 2, 3, 4, 3, 3, 1)) -> dict[str, Any]:
    keys = list(sd)
    children = _count_children(keys, r"features\.(\d+)\.conv\.(\d+)\.")
    # global block index (features.1..17) → stages.s.j, from MobileNetV2's repeats per stage
    where = {}
    for s, n in enumerate(repeats):
        for j in range(n):
            where[len(where) + 1] = f"stages.{s}.{j}"

    def resolve(m: re.Match[str], out: str) -> str:
        if "{" not in out:
            return out
        index, sub, n = int(m.group(1)), int(m.group(2)), children[(m.group(1),)]
        roles = ("expand", "depthwise") if n == 4 else ("depthwise",)
        return out.format(block=where[index], role=roles[min(sub, len(roles) - 1)],
                          project="project.conv" if sub == n - 2 else "project.bn")

    return {_apply(TV_MOBILENETV2, k, resolve): v for k, v in sd.items()}


def _resnet(sd: Mapping[str, Any]) -> dict[str, Any]:
    def resolve(m: re.Match[str], out: str) -> str:
        return out.format(layer=int(m.group(1)) - 1) if "{" in out else out

    return {_apply(TV_RESNET, k, resolve): v for k, v in sd.items()}


def from_torchvision(name: str, state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Map a torchvision state dict (``efficientnet_b0``–``b7``, ``mobilenet_v2``, ``resnet18/34/50``)
    to effnet's keys. Values are passed through untouched (tensors stay shared).

    Build the receiving model with ``create_model(name, **torchvision_overrides(name))`` so batch
    norm uses torchvision's eps; then ``load_state_dict(..., strict=True)`` checks every key and shape.

    Raises:
        EffnetError: for an unsupported name or a key no row of the table matches.
    """
    name = _TV_NAMES.get(name, name)
    if re.fullmatch(r"efficientnet_b[0-7]", name):
        return _efficientnet(state_dict)
    if name == "mobilenetv2":
        return _mobilenetv2(state_dict)
    if name in ("resnet18", "resnet34", "resnet50"):
        return _resnet(state_dict)
    raise EffnetError(f"no torchvision key table for {name!r}; supported: {', '.join(TORCHVISION_BN_EPS)}")
