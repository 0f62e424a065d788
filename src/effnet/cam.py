"""Class activation maps: where in the image the evidence for a class lies.

- **CAM** (Zhou et al. 2016, "Learning Deep Features for Discriminative Localization", eq. 2):
  for a network that ends in global average pooling and one linear layer, the class score is
  ``S_k = Σ_c w_kc · mean_xy f_c(x, y) + b_k``, so ``M_k(x, y) = Σ_c w_kc · f_c(x, y)`` says how much
  each location adds to it. The raw map has no ReLU, so its spatial mean plus ``b_k`` *is* the logit
  (tests pin that identity); ReLU is applied only when normalising for display.
- **Grad-CAM** (Selvaraju et al. 2017, eq. 1–2): for any layer ``A``, weight each channel by the
  spatial mean of ``∂y_k/∂A_c`` and keep the positive part, ``ReLU(Σ_c α_c A_c)``. At the last feature
  map of a GAP + linear head, α_c = w_kc / (H·W), so Grad-CAM is ReLU(CAM) / (H·W).

Everything is written against the model contract (``forward_features``, ``classifier``), so it works
for every family (timm's model contract, ARCHITECTURE.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from effnet.errors import EffnetError
from effnet.model import ConvNet

__all__ = ["CamResult", "class_activation_map", "compute_cam", "grad_cam", "normalize_cam", "overlay",
           "upsample_cam"]

Method = Literal["cam", "gradcam"]


def class_activation_map(features: torch.Tensor, classifier_weight: torch.Tensor,
                         class_idx: int | torch.Tensor) -> torch.Tensor:
    """Raw CAM ``M_k(x, y) = Σ_c w_kc f_c(x, y)`` (Zhou et al. 2016, eq. 2), no ReLU, no scaling.

    Args:
        features: last feature map, (N, C, H, W) or (C, H, W).
        classifier_weight: (K, C) weight of the linear classifier after global average pooling.
        class_idx: one class for every sample, or a (N,) tensor of classes.

    Returns:
        (N, H, W) maps, or (H, W) for an unbatched input.
    """
    if features.dim() == 3:
        return class_activation_map(features[None], classifier_weight, class_idx)[0]
    if features.dim() != 4 or classifier_weight.dim() != 2 or classifier_weight.shape[1] != features.shape[1]:
        raise EffnetError(f"features {tuple(features.shape)} and classifier weight {tuple(classifier_weight.shape)} "
                          "do not fit: need (N, C, H, W) and (K, C)")
    idx = torch.as_tensor(class_idx, device=features.device).expand(features.shape[0])
    weights = classifier_weight[idx].to(features.dtype)  # (N, C)
    return torch.einsum("nchw,nc->nhw", features, weights)


def _resolve_layer(model: nn.Module, layer: nn.Module | str | None) -> nn.Module:
    if isinstance(layer, nn.Module):
        return layer
    if layer is None:
        # The last feature map: the head conv's output, or the last stage where there is no head conv.
        head = getattr(model, "head_conv", None)
        return head if head is not None and not isinstance(head, nn.Identity) else model.stages[-1]
    try:
        return model.get_submodule(layer)
    except AttributeError:
        raise EffnetError(f"no layer {layer!r} in {type(model).__name__}; name one of its modules, e.g. "
                          "'stages.5' or 'head_conv'") from None


def grad_cam(model: nn.Module, x: torch.Tensor, class_idx: int | torch.Tensor,
             layer: nn.Module | str | None = None) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017) at ``layer``: ``ReLU(Σ_c α_c A_c)``, α_c = mean_xy ∂y_k/∂A_c.

    Args:
        model: any classifier; evaluated as it is (call ``.eval()`` first for BN/dropout statistics).
        x: (N, 3, H, W) input batch.
        class_idx: the class to explain, one for all samples or a (N,) tensor.
        layer: a module of ``model`` or its dotted name (``"stages.4"``); default the last feature map.

    Returns:
        (N, h, w) maps at the layer's resolution; use :func:`upsample_cam` for input size.
    """
    target = _resolve_layer(model, layer)
    captured: list[torch.Tensor] = []
    handle = target.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        with torch.enable_grad():
            # The input requires grad so the graph exists even when the weights are frozen.
            logits = model(x.detach().requires_grad_(True))
            idx = torch.as_tensor(class_idx, device=logits.device).expand(logits.shape[0])
            score = logits.gather(1, idx[:, None]).sum()
            (grads,) = torch.autograd.grad(score, captured[-1])
    finally:
        handle.remove()
    acts = captured[-1].detach()
    alpha = grads.mean(dim=(2, 3))  # eq. 1: global-average-pooled gradients
    return F.relu(torch.einsum("nchw,nc->nhw", acts, alpha))


def upsample_cam(cam: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, h, w) or (h, w) maps → ``size`` (H, W), bilinear as in both papers' figures."""
    batched = cam.dim() == 3
    out = F.interpolate((cam if batched else cam[None])[:, None].float(), size=size, mode="bilinear",
                        align_corners=False)[:, 0]
    return out if batched else out[0]


def normalize_cam(cam: torch.Tensor) -> torch.Tensor:
    """ReLU then scale each map to [0, 1] (a map with no positive evidence stays all zero)."""
    cam = F.relu(cam.float())
    flat = cam.flatten(-2)
    peak = flat.amax(dim=-1, keepdim=True).clamp_min(torch.finfo(cam.dtype).tiny)
    return (flat / peak).view_as(cam)


@dataclass(frozen=True)
class CamResult:
    """A map explaining one image.

    Attributes:
        raw: the map at feature resolution (h, w): raw CAM (signed) or Grad-CAM (non-negative).
        heatmap: ``raw`` upsampled to the input size and normalised to [0, 1].
        class_idx: the explained class.
        probability: the model's softmax probability of that class.
        method: "cam" or "gradcam".
    """

    raw: torch.Tensor
    heatmap: torch.Tensor
    class_idx: int
    probability: float
    method: Method


def compute_cam(model: ConvNet, x: torch.Tensor, *, class_idx: int | None = None, method: Method = "cam",
                layer: nn.Module | str | None = None) -> CamResult:
    """Explain one preprocessed image ``x`` (3, H, W) for ``class_idx`` (default: the top-1 class).

    ``method="cam"`` needs a GAP + linear head (every effnet classifier); ``"gradcam"`` works at any
    ``layer``. The model is put in eval mode.
    """
    if x.dim() != 3:
        raise EffnetError(f"compute_cam explains one image: expected (3, H, W), got {tuple(x.shape)}")
    if not isinstance(model.classifier, nn.Linear):
        raise EffnetError(f"{model.spec.name} has no linear classifier (num_classes=0): CAM needs class weights")
    model.eval()
    batch = x[None].to(next(model.parameters()).device)
    with torch.no_grad():
        features = model.forward_features(batch)
        probs = model.forward_head(features).softmax(-1)[0]
    k = int(probs.argmax()) if class_idx is None else class_idx
    if not 0 <= k < model.num_classes:
        raise EffnetError(f"class {k} is outside the model's classes 0..{model.num_classes - 1}")
    if method == "cam":
        if layer is not None:
            raise EffnetError("CAM uses the last feature map only; use method='gradcam' for another layer")
        raw = class_activation_map(features, model.classifier.weight.detach(), k)[0]
    elif method == "gradcam":
        raw = grad_cam(model, batch, k, layer)[0]
    else:
        raise EffnetError(f"unknown CAM method {method!r}; use 'cam' or 'gradcam'")
    heat = normalize_cam(upsample_cam(raw, (x.shape[1], x.shape[2])))
    return CamResult(raw.cpu(), heat.cpu(), k, float(probs[k]), method)


def overlay(image: Image.Image, cam: torch.Tensor | np.ndarray, *, alpha: float = 0.5,
            colormap: str = "jet") -> Image.Image:
    """Blend a heat map over ``image``: the map is resized to the image, normalised, coloured with a
    matplotlib colormap (jet, as in the CAM and Grad-CAM papers' figures) and mixed with weight ``alpha``."""
    if not 0.0 <= alpha <= 1.0:
        raise EffnetError(f"alpha={alpha} must be in [0, 1]")
    heat = torch.as_tensor(np.asarray(cam, dtype=np.float32))
    if heat.dim() != 2:
        raise EffnetError(f"overlay needs one (H, W) map, got shape {tuple(heat.shape)}")
    heat = normalize_cam(upsample_cam(heat, (image.height, image.width))).numpy()
    colored = matplotlib.colormaps[colormap](heat)[..., :3]  # RGBA in [0, 1] → RGB
    base = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    mixed = (1.0 - alpha) * base + alpha * colored
    return Image.fromarray(np.clip(np.rint(mixed * 255.0), 0, 255).astype(np.uint8))
