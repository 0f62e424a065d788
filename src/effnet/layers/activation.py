"""Activation by name. A tiny literal table: no global toggles (timm's ``set_layer_config``)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "swish": nn.SiLU,  # swish with β = 1 is SiLU; nn.SiLU exports to ONNX, unlike a custom autograd fn
    "silu": nn.SiLU,
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
}


def get_activation(name: str) -> Callable[[], nn.Module]:
    """Factory for the activation called ``name`` (``swish``/``silu``, ``relu``, ``relu6``)."""
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; use one of {', '.join(_ACTIVATIONS)}") from None
