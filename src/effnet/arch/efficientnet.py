"""EfficientNet-B0 (paper Table 1), EfficientNet-Lite, and the published presets B0–B8, L2, Lite0–4.

The presets are data copied from the official code, kept apart from the formula: B1–B7 are *not*
α^φ, β^φ, γ^φ for integer φ (docs/paper.md; tensorflow/tpu issues 390 and 738), so
:func:`effnet.scaling.implied_phi` reports the φ each one implies instead of pretending.
"""

from __future__ import annotations

from dataclasses import dataclass

from effnet.spec import HeadSpec, NetworkSpec, StageSpec, StemSpec


@dataclass(frozen=True)
class Preset:
    """A published (width, depth, resolution, dropout) row of ``efficientnet_params()``."""

    width: float
    depth: float
    resolution: int
    dropout: float


def _b0_stages(activation: str, se_ratio: float, lite: bool) -> tuple[StageSpec, ...]:
    # Table 1 / TPU _DEFAULT_BLOCKS_ARGS, with the official code's strides (stage 6 stride 1,
    # stage 7 stride 2; the first paper version's Table 1 had this wrong, tensorflow/tpu#383).
    # Lite keeps the first and last stage's repeats fixed under depth scaling.
    rows = (  # repeats, kernel, stride, expand, out
        (1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
        (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320),
    )
    last = len(rows) - 1
    return tuple(
        StageSpec(block="mbconv", repeats=r, kernel_size=k, stride=s, expand_ratio=e, out_channels=o,
                  se_ratio=se_ratio, activation=activation, scale_depth=not (lite and i in (0, last)))
        for i, (r, k, s, e, o) in enumerate(rows)
    )


def efficientnet_b0() -> NetworkSpec:
    """EfficientNet-B0, the NAS baseline of Table 1: MBConv + SE 0.25, swish, 224 px.

    BN eps 1e-3 and momentum 0.01 (TF's 0.99) as in the official code, whose checkpoints are the
    source of every published EfficientNet weight; torchvision uses eps 1e-5 for B0–B4 (pass
    ``bn_eps=1e-5`` to load its weights, :mod:`effnet.convert` says so).
    """
    return NetworkSpec(
        name="efficientnet_b0",
        stem=StemSpec(out_channels=32, kernel_size=3, stride=2, activation="swish"),
        stages=_b0_stages("swish", 0.25, lite=False),
        head=HeadSpec(channels=1280, policy="scale", activation="swish"),
        resolution=224, dropout=0.2, drop_path_rate=0.2, bn_eps=1e-3, bn_momentum=0.01,
    )


def efficientnet_lite0() -> NetworkSpec:
    """EfficientNet-Lite0 (TPU ``lite/efficientnet_lite_builder.py``): B0 without SE, ReLU6, stem 32
    and head 1280 fixed under width scaling, first/last stage repeats fixed under depth scaling,
    TF SAME padding and BN eps 1e-3 because the only Lite weights are TF ports."""
    return NetworkSpec(
        name="efficientnet_lite0",
        stem=StemSpec(out_channels=32, kernel_size=3, stride=2, activation="relu6", scale_width=False),
        stages=_b0_stages("relu6", 0.0, lite=True),
        head=HeadSpec(channels=1280, policy="fixed", activation="relu6"),
        resolution=224, dropout=0.2, drop_path_rate=0.2, bn_eps=1e-3, bn_momentum=0.01, padding="same",
    )


# TPU efficientnet_builder.py::efficientnet_params: (width, depth, resolution, dropout).
EFFICIENTNET_PRESETS: dict[str, Preset] = {
    "b0": Preset(1.0, 1.0, 224, 0.2),
    "b1": Preset(1.0, 1.1, 240, 0.2),
    "b2": Preset(1.1, 1.2, 260, 0.3),
    "b3": Preset(1.2, 1.4, 300, 0.3),
    "b4": Preset(1.4, 1.8, 380, 0.4),
    "b5": Preset(1.6, 2.2, 456, 0.4),
    "b6": Preset(1.8, 2.6, 528, 0.5),
    "b7": Preset(2.0, 3.1, 600, 0.5),
    "b8": Preset(2.2, 3.6, 672, 0.5),
    "l2": Preset(4.3, 5.3, 800, 0.5),
}

# TPU lite/efficientnet_lite_builder.py::efficientnet_lite_params.
LITE_PRESETS: dict[str, Preset] = {
    "lite0": Preset(1.0, 1.0, 224, 0.2),
    "lite1": Preset(1.0, 1.1, 240, 0.2),
    "lite2": Preset(1.1, 1.2, 260, 0.3),
    "lite3": Preset(1.2, 1.4, 280, 0.3),
    "lite4": Preset(1.4, 1.8, 300, 0.3),
}
