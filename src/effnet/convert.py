"""State-dict conversion from other implementations to effnet's module names.

Each source (torchvision, timm, lukemelas ``efficientnet_pytorch``) has an explicit key table: a list
of (pattern, template) rows applied to every key, so a reader can check the mapping line by line and
a key that no row matches is an error naming that key, never a silent drop. :func:`effnet.weights.convert_file`
(``effnet convert``) reads a weight file, converts it, loads it strictly and writes an effnet
checkpoint recording the source's BN eps and padding.

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


def _block_positions(name: str) -> dict[int, str]:
    """Global block index (a flat block list, as torchvision's MobileNetV2 and lukemelas number them)
    → ``stages.s.j``, counted from the registered spec's repeats."""
    from effnet.catalog import get_spec  # level 0, no torch

    where: dict[int, str] = {}
    for s, stage in enumerate(get_spec(name).stages):
        for j in range(stage.repeats):
            where[len(where)] = f"stages.{s}.{j}"
    return where


def _mobilenetv2(sd: Mapping[str, Any]) -> dict[str, Any]:
    keys = list(sd)
    children = _count_children(keys, r"features\.(\d+)\.conv\.(\d+)\.")
    where = _block_positions("mobilenetv2")  # features.1..17 are blocks 0..16

    def resolve(m: re.Match[str], out: str) -> str:
        if "{" not in out:
            return out
        index, sub, n = int(m.group(1)), int(m.group(2)), children[(m.group(1),)]
        roles = ("expand", "depthwise") if n == 4 else ("depthwise",)
        return out.format(block=where[index - 1], role=roles[min(sub, len(roles) - 1)],
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


# lukemelas EfficientNet-PyTorch (github.com/lukemelas/EfficientNet-PyTorch, efficientnet_pytorch/
# model.py, and its Lite fork: the key naming of the PyPI Lite weight packages): a flat `_blocks.i`
# list over all stages. Top-level `_bn0`/`_bn1` are the stem and head BN; inside a block `_bn0`
# follows the expansion, `_bn1` the depthwise conv and `_bn2` the projection. Block i goes to
# stages.s.j by counting the spec's repeats per stage.
LUKEMELAS_EFFICIENTNET: KeyTable = (
    (r"_conv_stem\.(.+)", r"stem.conv.\1"),
    (r"_bn0\.(.+)", r"stem.bn.\1"),
    (r"_conv_head\.(.+)", r"head_conv.conv.\1"),
    (r"_bn1\.(.+)", r"head_conv.bn.\1"),
    (r"_fc\.(.+)", r"classifier.\1"),
    (r"_blocks\.(\d+)\._expand_conv\.(.+)", r"{block}.expand.conv.\2"),
    (r"_blocks\.(\d+)\._bn0\.(.+)", r"{block}.expand.bn.\2"),
    (r"_blocks\.(\d+)\._depthwise_conv\.(.+)", r"{block}.depthwise.conv.\2"),
    (r"_blocks\.(\d+)\._bn1\.(.+)", r"{block}.depthwise.bn.\2"),
    (r"_blocks\.(\d+)\._se_reduce\.(.+)", r"{block}.se.reduce.\2"),
    (r"_blocks\.(\d+)\._se_expand\.(.+)", r"{block}.se.expand.\2"),
    (r"_blocks\.(\d+)\._project_conv\.(.+)", r"{block}.project.conv.\2"),
    (r"_blocks\.(\d+)\._bn2\.(.+)", r"{block}.project.bn.\2"),
)

# timm EfficientNet / MobileNetV2 (`_efficientnet_blocks.py`): blocks.s.j are stages already. The
# first stage holds DepthwiseSeparableConv blocks (conv_dw, bn1, [se], conv_pw, bn2), the others
# InvertedResidual (conv_pw, bn1, conv_dw, bn2, [se], conv_pwl, bn3): the same attribute name means
# a different layer in the two kinds, so the block kind ({role}) is read from the keys present.
TIMM_EFFICIENTNET: KeyTable = (
    (r"conv_stem\.(.+)", r"stem.conv.\1"),
    (r"bn1\.(.+)", r"stem.bn.\1"),
    (r"conv_head\.(.+)", r"head_conv.conv.\1"),
    (r"bn2\.(.+)", r"head_conv.bn.\1"),
    (r"classifier\.(.+)", r"classifier.\1"),
    (r"blocks\.(\d+)\.(\d+)\.se\.conv_reduce\.(.+)", r"stages.\1.\2.se.reduce.\3"),
    (r"blocks\.(\d+)\.(\d+)\.se\.conv_expand\.(.+)", r"stages.\1.\2.se.expand.\3"),
    (r"blocks\.(\d+)\.(\d+)\.(conv_pw|conv_dw|conv_pwl|bn1|bn2|bn3)\.(.+)", r"stages.\1.\2.{role}.\4"),
)
TIMM_BLOCK_ROLES: dict[str, dict[str, str]] = {
    "depthwise_separable": {"conv_dw": "depthwise.conv", "bn1": "depthwise.bn", "conv_pw": "project.conv",
                            "bn2": "project.bn"},
    "inverted_residual": {"conv_pw": "expand.conv", "bn1": "expand.bn", "conv_dw": "depthwise.conv",
                          "bn2": "depthwise.bn", "conv_pwl": "project.conv", "bn3": "project.bn"},
}


def _lukemelas_name(name: str) -> str:
    """``efficientnet-b0`` (lukemelas' spelling) or ``efficientnet_b0`` → effnet's name."""
    effnet_name = name.replace("-", "_")
    if not re.fullmatch(r"efficientnet_(b[0-8]|l2|lite[0-4])", effnet_name):
        raise EffnetError(f"no lukemelas key table for {name!r}; supported: efficientnet-b0 … b8, l2, "
                          "efficientnet-lite0 … lite4")
    return effnet_name


def lukemelas_overrides(name: str) -> dict[str, Any]:
    """``create_model`` arguments for lukemelas weights: TF SAME padding (its static same-padding convs)
    and BN eps 1e-3, both as in the TF checkpoints the weights were converted from."""
    _lukemelas_name(name)
    return {"padding": "same", "bn_eps": 1e-3}


def from_lukemelas(name: str, state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Map a lukemelas ``efficientnet_pytorch`` state dict (B0–B8, L2; Lite0–4 from its Lite fork) to
    effnet's keys, SE layers included. Build the receiving model with
    ``create_model(effnet_name, **lukemelas_overrides(name))``.

    Raises:
        EffnetError: an unsupported name, a key no row matches, or a block index beyond the model's blocks.
    """
    effnet_name = _lukemelas_name(name)
    where = _block_positions(effnet_name)

    def resolve(m: re.Match[str], out: str) -> str:
        if "{" not in out:
            return out
        index = int(m.group(1))
        if index not in where:
            raise EffnetError(f"key {m.group(0)!r}: block {index} does not exist in {effnet_name} "
                              f"({len(where)} blocks); are these weights for another model?")
        return out.format(block=where[index])

    return {_apply(LUKEMELAS_EFFICIENTNET, k, resolve): v for k, v in state_dict.items()}


_TIMM_EFFICIENTNET = re.compile(r"(tf_)?efficientnet_(b[0-8]|lite[0-4])")
_TIMM_OTHER = {"mobilenetv2_100": "mobilenetv2", "resnet18": "resnet18", "resnet34": "resnet34",
               "resnet50": "resnet50"}


def timm_target(name: str) -> tuple[str, dict[str, Any]]:
    """The effnet model and ``create_model`` arguments that reproduce a timm model exactly.

    timm's ``tf_`` ports use TF SAME padding and BN eps 1e-3 (the TF checkpoints' numerics); its
    native models use PyTorch's symmetric padding and eps 1e-5.
    """
    m = _TIMM_EFFICIENTNET.fullmatch(name)
    if m:
        tf = m.group(1) is not None
        return f"efficientnet_{m.group(2)}", {"padding": "same" if tf else "symmetric",
                                             "bn_eps": 1e-3 if tf else 1e-5}
    if name in _TIMM_OTHER:
        return _TIMM_OTHER[name], {"padding": "symmetric", "bn_eps": 1e-5}
    raise EffnetError(f"no timm key table for {name!r}; supported: efficientnet_b0 … b8, tf_efficientnet_b0 … b8, "
                      f"efficientnet_lite0 … lite4, tf_efficientnet_lite0 … lite4, {', '.join(_TIMM_OTHER)}")


def from_timm(name: str, state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Map a timm state dict to effnet's keys; build the model with ``create_model(*timm_target(name))``
    (name, then the keyword arguments).

    Raises:
        EffnetError: an unsupported name or a key no row of the table matches.
    """
    target, _ = timm_target(name)
    if target.startswith("resnet"):
        return _resnet(state_dict)  # timm's ResNet keeps torchvision's names
    kinds = {m.groups() for k in state_dict if (m := re.match(r"blocks\.(\d+)\.(\d+)\.conv_pwl\.", k))}

    def resolve(m: re.Match[str], out: str) -> str:
        if "{" not in out:
            return out
        kind = "inverted_residual" if (m.group(1), m.group(2)) in kinds else "depthwise_separable"
        role = TIMM_BLOCK_ROLES[kind].get(m.group(3))
        if role is None:
            raise EffnetError(f"unexpected key {m.group(0)!r}: a timm {kind} block has no {m.group(3)!r}")
        return out.format(role=role)

    return {_apply(TIMM_EFFICIENTNET, k, resolve): v for k, v in state_dict.items()}


SOURCES = ("timm", "torchvision", "lukemelas")


def convert_state_dict(source: str, name: str, state_dict: Mapping[str, Any]) -> tuple[str, dict[str, Any],
                                                                                        dict[str, Any]]:
    """One entry point for ``effnet convert``: ``(effnet model name, create_model kwargs, converted state dict)``.

    Args:
        source: "timm", "torchvision" or "lukemelas".
        name: the model's name in that library (``tf_efficientnet_b0``, ``mobilenet_v2``, ``efficientnet-b3``).
        state_dict: the library's weights.
    """
    if source == "timm":
        target, overrides = timm_target(name)
        return target, overrides, from_timm(name, state_dict)
    if source == "torchvision":
        target = _TV_NAMES.get(name, name)
        overrides = {**torchvision_overrides(name), "padding": "symmetric"}
        return target, overrides, from_torchvision(name, state_dict)
    if source == "lukemelas":
        return _lukemelas_name(name), lukemelas_overrides(name), from_lukemelas(name, state_dict)
    raise EffnetError(f"unknown source {source!r}; use one of {', '.join(SOURCES)}")
