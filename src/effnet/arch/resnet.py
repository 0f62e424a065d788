"""ResNet-18/34/50 (He et al. 2016, Table 1; torchvision's v1.5 with the stride on the 3x3 conv).

Each stage stores its *output* width; the bottleneck width is out / 4 inside the block, so width
scaling keeps the 4× expansion (ARCHITECTURE.md: each stage stores one width).
"""

from __future__ import annotations

from effnet.spec import HeadSpec, NetworkSpec, StageSpec, StemSpec


def _resnet(name: str, block: str, repeats: tuple[int, ...], widths: tuple[int, ...]) -> NetworkSpec:
    strides = (1, 2, 2, 2)
    return NetworkSpec(
        name=name,
        stem=StemSpec(out_channels=64, kernel_size=7, stride=2, pool=True, activation="relu"),
        stages=tuple(StageSpec(block=block, repeats=r, stride=s, out_channels=w, kernel_size=3,
                               activation="relu") for r, s, w in zip(repeats, strides, widths, strict=True)),
        head=HeadSpec(channels=None, activation="relu"),
        resolution=224, dropout=0.0, drop_path_rate=0.0, bn_eps=1e-5, bn_momentum=0.1,
    )


def resnet18() -> NetworkSpec:
    """ResNet-18: 11,689,512 parameters, 1.81 G MACs."""
    return _resnet("resnet18", "basic", (2, 2, 2, 2), (64, 128, 256, 512))


def resnet34() -> NetworkSpec:
    """ResNet-34: 21,797,672 parameters, 3.66 G MACs."""
    return _resnet("resnet34", "basic", (3, 4, 6, 3), (64, 128, 256, 512))


def resnet50() -> NetworkSpec:
    """ResNet-50: 25,557,032 parameters, 4.09 G MACs (paper Table 3 baseline, 4.1B)."""
    return _resnet("resnet50", "bottleneck", (3, 4, 6, 3), (256, 512, 1024, 2048))
