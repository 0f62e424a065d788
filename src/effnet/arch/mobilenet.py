"""MobileNetV1 (Howard et al. 2017, Table 1) and MobileNetV2 (Sandler et al. 2018, Table 2) as
baselines for compound scaling (paper Table 3)."""

from __future__ import annotations

from effnet.spec import HeadSpec, NetworkSpec, StageSpec, StemSpec


def mobilenetv1() -> NetworkSpec:
    """MobileNetV1 1.0-224: 4,231,976 parameters, 569 M MACs.

    Its 13 depthwise-separable layers are grouped into stages of equal width so that depth scaling
    has repeats to multiply: 64, 128×2, 256×2, 512×6, 1024×2. No head conv; ReLU; BN eps 1e-3 as
    in the TF/Keras original.
    """
    rows = ((1, 1, 64), (2, 2, 128), (2, 2, 256), (6, 2, 512), (2, 2, 1024))  # repeats, stride, out
    return NetworkSpec(
        name="mobilenetv1",
        stem=StemSpec(out_channels=32, kernel_size=3, stride=2, activation="relu"),
        stages=tuple(StageSpec(block="dwsep", repeats=r, stride=s, out_channels=o, kernel_size=3,
                               activation="relu") for r, s, o in rows),
        head=HeadSpec(channels=None, activation="relu"),
        resolution=224, dropout=0.0, drop_path_rate=0.0, bn_eps=1e-3, bn_momentum=0.01,
    )


def mobilenetv2() -> NetworkSpec:
    """MobileNetV2 1.0-224 (Table 2 of Sandler et al.): 3,504,872 parameters, 301 M MACs.

    Inverted residuals are MBConv without SE and with ReLU6; the head follows torchvision's
    ``round(1280 · max(1, w))`` (head policy ``at_least_base``). BN eps 1e-5 / momentum 0.1 as in
    torchvision, the reference PyTorch weights.
    """
    rows = ((1, 1, 1, 16), (6, 2, 2, 24), (6, 3, 2, 32), (6, 4, 2, 64), (6, 3, 1, 96), (6, 3, 2, 160),
            (6, 1, 1, 320))  # expand t, repeats n, stride s, out c
    return NetworkSpec(
        name="mobilenetv2",
        stem=StemSpec(out_channels=32, kernel_size=3, stride=2, activation="relu6"),
        stages=tuple(StageSpec(block="mbconv", repeats=n, stride=s, out_channels=c, kernel_size=3,
                               expand_ratio=t, activation="relu6") for t, n, s, c in rows),
        head=HeadSpec(channels=1280, policy="at_least_base", activation="relu6"),
        resolution=224, dropout=0.2, drop_path_rate=0.0, bn_eps=1e-5, bn_momentum=0.1,
    )
