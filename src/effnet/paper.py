"""The paper's published figures, as cited data (no torch), for side-by-side reports and tests.

Sources (summarised in ``docs/paper.md``): Tan & Le 2019, arXiv 1905.11946 v5 (P5) Table 2 and
Table 3; exact parameter counts from torchvision's weights metadata; MobileNetV1 from Howard et
al. 2017 Table 1 / Keras; ResNet from torchvision.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperFigures:
    """What a source publishes for one model. ``flops`` are the paper's "FLOPS" (multiply-adds)."""

    params: int | None = None  # exact count where a reference implementation publishes one
    params_text: str = ""  # as printed in the paper ("5.3M")
    flops: float | None = None  # multiply-adds, as printed (0.39e9)
    top1: float | None = None
    top5: float | None = None
    source: str = ""


# P5 Table 2 (params/FLOPs/top-1/top-5) with the exact torchvision parameter counts.
PAPER_TABLE2: dict[str, PaperFigures] = {
    "efficientnet_b0": PaperFigures(5_288_548, "5.3M", 0.39e9, 77.1, 93.3, "P5 Table 2"),
    "efficientnet_b1": PaperFigures(7_794_184, "7.8M", 0.70e9, 79.1, 94.4, "P5 Table 2"),
    "efficientnet_b2": PaperFigures(9_109_994, "9.2M", 1.0e9, 80.1, 94.9, "P5 Table 2"),
    "efficientnet_b3": PaperFigures(12_233_232, "12M", 1.8e9, 81.6, 95.7, "P5 Table 2"),
    "efficientnet_b4": PaperFigures(19_341_616, "19M", 4.2e9, 82.9, 96.4, "P5 Table 2"),
    "efficientnet_b5": PaperFigures(30_389_784, "30M", 9.9e9, 83.6, 96.7, "P5 Table 2"),
    "efficientnet_b6": PaperFigures(43_040_704, "43M", 19e9, 84.0, 96.8, "P5 Table 2"),
    "efficientnet_b7": PaperFigures(66_347_960, "66M", 37e9, 84.3, 97.0, "P5 Table 2"),
    "efficientnet_lite0": PaperFigures(4_652_008, "4.7M", None, None, None, "TF Lite checkpoint"),
    "mobilenetv1": PaperFigures(4_231_976, "4.2M", 0.569e9, 70.6, None, "Howard et al. Table 1; P5 Table 3"),
    "mobilenetv2": PaperFigures(3_504_872, "3.4M", 0.3e9, 72.0, None, "torchvision; P5 Table 3"),
    "resnet18": PaperFigures(11_689_512, "11.7M", None, None, None, "torchvision"),
    "resnet34": PaperFigures(21_797_672, "21.8M", None, None, None, "torchvision"),
    "resnet50": PaperFigures(25_557_032, "26M", 4.1e9, 76.0, None, "torchvision; P5 Table 3"),
}


@dataclass(frozen=True)
class Table3Row:
    """One row of P5 Table 3: a baseline scaled along one dimension or compound."""

    baseline: str
    label: str
    depth: float
    width: float
    resolution: float
    flops: float  # as printed, multiply-adds
    top1: float
    note: str = ""


# Compound rows without published coefficients use φ with 1.92^φ = 4 (≈ 2.12): the same 4× budget
# as the single-dimension rows of the same baseline (d = 4, w = 2, r = 2 all target ≈ 4× FLOPs).
_PHI_4X = 2.1205
_D, _W, _R = 1.2**_PHI_4X, 1.1**_PHI_4X, 1.15**_PHI_4X

TABLE3: tuple[Table3Row, ...] = (
    Table3Row("mobilenetv1", "baseline", 1, 1, 1, 0.6e9, 70.6),
    Table3Row("mobilenetv1", "width w=2", 1, 2, 1, 2.2e9, 74.2),
    Table3Row("mobilenetv1", "resolution r=2", 1, 1, 2, 2.2e9, 72.7),
    Table3Row("mobilenetv1", "compound d=1.4 w=1.2 r=1.3", 1.4, 1.2, 1.3, 2.3e9, 75.6),
    Table3Row("mobilenetv2", "baseline", 1, 1, 1, 0.3e9, 72.0),
    Table3Row("mobilenetv2", "depth d=4", 4, 1, 1, 1.2e9, 76.8),
    Table3Row("mobilenetv2", "width w=2", 1, 2, 1, 1.1e9, 76.4),
    Table3Row("mobilenetv2", "resolution r=2", 1, 1, 2, 1.2e9, 74.8),
    Table3Row("mobilenetv2", "compound (phi=2.12)", _D, _W, _R, 1.3e9, 77.4,
              "coefficients not published; paper's alpha,beta,gamma at a 4x budget"),
    Table3Row("resnet50", "baseline", 1, 1, 1, 4.1e9, 76.0),
    Table3Row("resnet50", "depth d=4", 4, 1, 1, 16.2e9, 78.1),
    Table3Row("resnet50", "width w=2", 1, 2, 1, 14.7e9, 77.7),
    Table3Row("resnet50", "resolution r=2", 1, 1, 2, 16.4e9, 77.5),
    Table3Row("resnet50", "compound (phi=2.12)", _D, _W, _R, 16.7e9, 78.8,
              "coefficients not published; paper's alpha,beta,gamma at a 4x budget"),
)
