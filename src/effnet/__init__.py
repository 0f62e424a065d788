"""effnet: EfficientNet and compound model scaling (Tan & Le, ICML 2019), exact and verified.

The level-0 API (specs, scaling, MAC counts, the catalogue) imports no torch; ``create_model`` and
the torch classes load torch on first use, so ``effnet models`` and ``effnet scale`` start fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from effnet.catalog import get_spec, list_models
from effnet.errors import DataError, EffnetError, SpecError
from effnet.macs import estimate_cost
from effnet.scaling import (
    PAPER_COEFFICIENTS,
    Coefficients,
    Multipliers,
    compound_multipliers,
    implied_phi,
    round_channels,
    round_repeats,
    scale_spec,
)
from effnet.spec import HeadSpec, NetworkSpec, StageSpec, StemSpec

if TYPE_CHECKING:
    from effnet.checkpoint import load_model, save_checkpoint
    from effnet.deploy.inference import optimize_for_inference
    from effnet.deploy.pipeline import classify
    from effnet.model import ConvNet, FeatureExtractor
    from effnet.registry import create_model

__version__ = "0.1.0"

_LAZY = {
    "create_model": "effnet.registry",
    "ConvNet": "effnet.model",
    "FeatureExtractor": "effnet.model",
    "load_model": "effnet.checkpoint",
    "save_checkpoint": "effnet.checkpoint",
    "optimize_for_inference": "effnet.deploy.inference",
    "classify": "effnet.deploy.pipeline",
}


def __getattr__(name: str) -> Any:
    """Load the torch-backed names lazily (PEP 562)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'effnet' has no attribute {name!r}")


__all__ = [
    "PAPER_COEFFICIENTS", "Coefficients", "ConvNet", "DataError", "EffnetError", "FeatureExtractor",
    "HeadSpec", "Multipliers", "NetworkSpec", "SpecError", "StageSpec", "StemSpec", "classify", "compound_multipliers",
    "create_model", "estimate_cost", "get_spec", "implied_phi",
    "list_models", "load_model", "optimize_for_inference", "round_channels", "round_repeats", "save_checkpoint",
    "scale_spec",
]
