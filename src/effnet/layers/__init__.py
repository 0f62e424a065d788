"""Torch primitives. They take resolved integers and module factories and know nothing of specs
or scaling, which keeps them reusable (ARCHITECTURE.md)."""

from effnet.layers.activation import get_activation
from effnet.layers.conv_norm_act import Conv2dSame, ConvNormAct, ConvOptions
from effnet.layers.drop_path import DropPath, drop_path
from effnet.layers.squeeze_excite import SqueezeExcite

__all__ = ["Conv2dSame", "ConvNormAct", "ConvOptions", "DropPath", "SqueezeExcite", "drop_path",
           "get_activation"]
