"""effnet checkpoints: one ``.safetensors`` file holding the weights and, in its header, the spec.

Why this format (the idea of timm's ``PretrainedCfg``, huggingface/pytorch-image-models
``timm/models/_pretrained.py``, carried into the file itself):

- **No pickle.** ``torch.save`` files run arbitrary code when loaded; safetensors files are a JSON
  header plus raw tensor bytes, so loading a checkpoint from a stranger is safe. Where a ``.pth``
  must be read (weight packages, users' timm/torchvision files) :func:`load_torch_file` uses
  ``torch.load(weights_only=True)``, which refuses anything but tensors and containers.
- **Self-describing.** The header's ``"effnet"`` entry is JSON with the architecture
  (``NetworkSpec.to_dict()``), the class count, the input channels and the preprocessing the weights
  expect, so :func:`load_model` rebuilds the network with no registry lookup: a checkpoint of
  ``efficientnet_b0@phi=1.3`` or of a hand-made spec loads as well as a registered name.
- **Strict, with one-line errors.** A key or shape mismatch names the first offending key (and both
  shapes), never a 300-line ``load_state_dict`` report or a silent partial load.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from effnet.errors import CheckpointError, EffnetError, SpecError
from effnet.files import require_file
from effnet.limits import check_network, check_spec_types
from effnet.model import ConvNet
from effnet.preprocessing import Preprocessing
from effnet.spec import NetworkSpec

__all__ = [
    "FORMAT_VERSION", "check_state_dict", "header_spec", "load_model", "load_torch_file", "load_weights",
    "model_from_metadata", "read_checkpoint", "read_metadata", "save_checkpoint",
]

FORMAT_VERSION = 1
_HEADER_KEY = "effnet"
_RESERVED = frozenset({"format_version", "spec", "num_classes", "in_chans", "preprocessing"})
_PICKLE_MAGIC = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def save_checkpoint(path: str | os.PathLike[str], model: ConvNet, *, preprocessing: Preprocessing | None = None,
                    metadata: Mapping[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Write ``model``'s weights and architecture to one ``.safetensors`` file.

    The write is atomic (a temporary file in the same folder, then ``os.replace``), so a crash or a
    full disk never leaves half a checkpoint under the final name, which matters when training
    overwrites ``last.safetensors`` every epoch.

    Args:
        path: destination file.
        model: the network; its ``spec``, ``num_classes`` and stem input channels are recorded.
        preprocessing: the input pipeline the weights expect (defaults to ``model.preprocessing``
            when the model carries one, e.g. pretrained or loaded weights).
        metadata: extra JSON-serialisable entries stored next to the reserved keys (training config,
            metrics, source of converted weights); read back by :func:`read_checkpoint`.
        overwrite: replace an existing file with different content. Without it, an existing file is
            an error unless it already holds the same tensors and metadata (then nothing is written).

    Returns:
        The path written.

    Raises:
        CheckpointError: the file exists (and differs) without ``overwrite``, a metadata key is
            reserved, or a metadata value is not JSON-serialisable.
    """
    path = Path(path)
    if preprocessing is None:
        preprocessing = getattr(model, "preprocessing", None)
    header: dict[str, Any] = {
        "format_version": FORMAT_VERSION, "spec": model.spec.to_dict(), "num_classes": model.num_classes,
        "in_chans": model.stem.conv.in_channels,
        "preprocessing": None if preprocessing is None else preprocessing.to_dict(),
    }
    for key, value in (metadata or {}).items():
        if key in _RESERVED:
            raise CheckpointError(f"metadata key {key!r} is reserved for effnet's own header; rename it")
        header[key] = value
    try:
        text = json.dumps(header, sort_keys=True)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint metadata is not JSON-serialisable ({err}); store plain numbers, "
                              "strings, lists and dicts") from None
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    data = safetensors_bytes(tensors, metadata={_HEADER_KEY: text})
    if path.exists() and not overwrite:
        if _same_content(path, tensors, json.loads(text)):
            return path
        raise CheckpointError(f"{path} already exists and differs; pass overwrite=True (--overwrite) or "
                              "choose another file name")
    _atomic_write(path, data)
    return path


def _same_content(path: Path, tensors: Mapping[str, torch.Tensor], meta: dict[str, Any]) -> bool:
    """True when ``path`` already holds exactly these tensors and metadata (re-saving is then a no-op)."""
    try:
        old_tensors, old_meta = read_checkpoint(path)
    except CheckpointError:
        return False
    return old_meta == meta and old_tensors.keys() == tensors.keys() and all(
        old_tensors[k].dtype == v.dtype and torch.equal(old_tensors[k], v) for k, v in tensors.items())


def _atomic_write(path: Path, data: bytes) -> None:
    if not path.parent.is_dir():
        raise CheckpointError(f"{path.parent}: no such directory; create it first")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Only the metadata of an effnet checkpoint (reads the header, not the tensors).

    Raises:
        CheckpointError: as :func:`read_checkpoint`.
    """
    return _read_header(path)[0]


def _read_header(path: str | os.PathLike[str]) -> tuple[dict[str, Any], NetworkSpec]:
    """The checkpoint's metadata and its spec, validated (:func:`header_spec`) once for both."""
    path = Path(path)
    _check_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({err}); copy it again or "
                              "re-save it") from None
    if _HEADER_KEY not in header:
        raise CheckpointError(f"{path}: a safetensors file but not an effnet checkpoint (no 'effnet' metadata); "
                              "if it holds another library's weights, convert it with `effnet convert`")
    try:
        meta = json.loads(header[_HEADER_KEY])
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: effnet metadata is not valid JSON ({err}); the file is damaged") from None
    missing = sorted(_RESERVED - set(meta)) if isinstance(meta, dict) else sorted(_RESERVED)
    if missing:
        raise CheckpointError(f"{path}: effnet metadata lacks {missing}; the file is damaged or hand-edited")
    if not isinstance(meta["format_version"], int) or meta["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {meta['format_version']!r} is newer than this effnet's "
                              f"({FORMAT_VERSION}); upgrade effnet")
    return meta, header_spec(path, meta)


def header_spec(path: str | os.PathLike[str], meta: Mapping[str, Any]) -> NetworkSpec:
    """The header's spec, type-checked and held to :data:`effnet.limits.LIMITS` before anything is built.

    A header is outside data: a hand-edited one can ask for 10^10 classes or 10^7 channels, which
    would allocate until the machine runs out of memory. This refuses it from the JSON alone.

    Raises:
        CheckpointError: naming the file, the offending key and the fix.
    """
    try:
        for key in ("num_classes", "in_chans"):
            value = meta[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SpecError(f"{key} must be a positive integer, got {str(value)[:40]!r}")
        if meta["preprocessing"] is not None and not isinstance(meta["preprocessing"], dict):
            raise SpecError("preprocessing must be a mapping or null")
        check_spec_types(meta["spec"])
        spec = NetworkSpec.from_dict(meta["spec"])
        check_network(spec, num_classes=meta["num_classes"], in_chans=meta["in_chans"])
    except EffnetError as err:
        raise CheckpointError(f"{path}: header refused: {err}") from None
    return spec


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read an effnet checkpoint: its state dict (on CPU) and its metadata dict.

    Raises:
        CheckpointError: the file is missing, empty, truncated or corrupt, a pickle file, a
            safetensors file without effnet metadata, or from a newer effnet.
    """
    meta = read_metadata(path)
    return _read_tensors(path), meta


def _read_tensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        # The header can be intact while the tensor bytes are cut off.
        raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({err}); copy it again or "
                              "re-save it") from None


def _check_file(path: Path) -> None:
    require_file(path, CheckpointError, what="checkpoint file", if_dir="pass a .safetensors checkpoint file",
                 if_empty="the save was interrupted or the copy failed")
    with path.open("rb") as f:
        head = f.read(8)
    if head.startswith(_PICKLE_MAGIC):
        raise CheckpointError(f"{path}: a PyTorch pickle (.pth/.pt) file, not an effnet checkpoint; convert it "
                              "with `effnet convert --from timm|torchvision|lukemelas --model NAME IN OUT`")


def load_model(path: str | os.PathLike[str], *, build: Callable[[Mapping[str, Any]], ConvNet] | None = None,
               map_location: str | torch.device = "cpu") -> ConvNet:
    """Rebuild the network from the checkpoint's embedded spec (no registry lookup) and load it strictly.

    The header is validated (types, :data:`effnet.limits.LIMITS`) and the tensors' declared shapes are
    checked against the network on the meta device before any memory is spent or tensor read.
    ``build``, when given, receives the validated metadata and returns the receiving network (how
    ``--model NAME --checkpoint F`` loads: the architecture comes from the name, and weights of another
    architecture are an error naming the first bad key); without it the network is
    :func:`model_from_metadata`. The model gets two extra attributes: ``preprocessing`` (a
    :class:`Preprocessing` or None) and ``checkpoint_metadata`` (the whole metadata dict). It is
    returned in training mode, as built; call ``.eval()`` for inference.

    Raises:
        CheckpointError: see :func:`read_checkpoint`, or weights that do not fit the network.
    """
    meta, spec = _read_header(path)
    what = str(path)
    if build is None:
        skeleton = _network(spec, meta, what, device="meta")  # shapes only: no memory yet
        check_state_dict(skeleton, _declared_shapes(path), what=what)
        model = _network(spec, meta, what)
    else:
        model = build(meta)
        check_state_dict(model, _declared_shapes(path), what=what, arch=meta["spec"].get("name"))
    # The tensors are read only now that their declared shapes fit; safetensors loads them as declared.
    _attach(model, _read_tensors(path), meta, what=what)
    return model.to(map_location)


def model_from_metadata(meta: Mapping[str, Any], *, what: str = "the checkpoint",
                        device: str | torch.device = "cpu") -> ConvNet:
    """The untrained network a checkpoint header describes (its spec, class count and input channels),
    held to the documented limits first (:func:`header_spec`)."""
    return _network(header_spec(what, meta), meta, what, device=device)


def _network(spec: NetworkSpec, meta: Mapping[str, Any], what: str, *,
             device: str | torch.device = "cpu") -> ConvNet:
    try:
        with torch.device(device):
            return ConvNet(spec, num_classes=meta["num_classes"], in_chans=meta["in_chans"])
    except (EffnetError, TypeError, ValueError) as err:
        raise CheckpointError(f"{what}: the embedded spec cannot be built ({err})") from None


def _attach(model: ConvNet, state_dict: Mapping[str, Any], meta: dict[str, Any], *, what: str) -> None:
    try:
        pre = None if meta["preprocessing"] is None else Preprocessing.from_dict(meta["preprocessing"])
    except (EffnetError, TypeError, ValueError) as err:
        raise CheckpointError(f"{what}: the embedded preprocessing cannot be read ({err})") from None
    model.load_state_dict(state_dict, strict=True)
    model.preprocessing = pre
    model.checkpoint_metadata = meta


class _Shape:
    """A tensor's declared shape, as :func:`check_state_dict` reads it (``.shape``)."""

    def __init__(self, shape: list[int]) -> None:
        self.shape = tuple(shape)


def _declared_shapes(path: str | os.PathLike[str]) -> dict[str, _Shape]:
    """Each tensor's shape as the safetensors header declares it, without reading the tensor bytes."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: _Shape(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({err}); copy it again or "
                              "re-save it") from None


def load_weights(model: ConvNet, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load an effnet checkpoint's weights into an existing ``model`` strictly; returns the metadata.

    Sets ``model.preprocessing`` and ``model.checkpoint_metadata`` as :func:`load_model` does.
    """
    return load_model(path, build=lambda meta: model).checkpoint_metadata  # type: ignore[no-any-return]


def check_state_dict(model: torch.nn.Module, state_dict: Mapping[str, Any], *, what: str = "the weights",
                     arch: str | None = None) -> None:
    """Raise :class:`CheckpointError` unless ``state_dict`` has exactly ``model``'s keys and shapes.

    The message names the first missing key, the first unexpected key, or the first key whose shape
    differs (with both shapes), in the model's own order, so the mismatch is easy to place.
    """
    expected = model.state_dict()
    name = getattr(getattr(model, "spec", None), "name", type(model).__name__)
    src = f"{what} ({arch})" if arch else what
    missing = [k for k in expected if k not in state_dict]
    # A file's key order means nothing (safetensors sorts by name): report its extras in natural order.
    unexpected = sorted((k for k in state_dict if k not in expected), key=_natural)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"lack {len(missing)} of {name}'s keys, first {missing[0]!r}")
        if unexpected:
            parts.append(f"have {len(unexpected)} keys {name} does not, first {unexpected[0]!r}")
        raise CheckpointError(f"{src} are weights for another architecture: they {' and '.join(parts)}; "
                              "pick the --model the weights were made for")
    for key, tensor in expected.items():
        got = tuple(state_dict[key].shape)
        if got != tuple(tensor.shape):
            raise CheckpointError(f"{src} are weights for another architecture: {key!r} has shape {got} but "
                                  f"{name} needs {tuple(tensor.shape)}; pick the --model the weights were made for")


def _natural(key: str) -> list[Any]:
    """Sort key that puts ``stages.2`` before ``stages.10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]


def load_torch_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read another library's weights: ``.safetensors`` directly, ``.pth/.pt/.bin`` with
    ``torch.load(weights_only=True)`` (never full unpickling). Training checkpoints that wrap the
    weights (``{"state_dict": ...}``, ``{"model": ...}``, ``{"state_dict_ema": ...}``) are unwrapped,
    and DistributedDataParallel's ``module.`` prefix is stripped.
    """
    path = Path(path)
    require_file(path, CheckpointError, what="weights file", if_dir="pass a .pth or .safetensors file",
                 if_empty="copy it again")
    try:
        if path.suffix == ".safetensors":
            obj: Any = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, RuntimeError, OSError, EOFError, ValueError) as err:
        # weights_only refuses pickled code objects with an UnpicklingError (a RuntimeError subclass
        # in some versions), and a cut-off zip/pickle gives RuntimeError or EOFError.
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"{path}: cannot be read as a weights file ({reason}); it must be a state dict "
                              "saved with torch.save or safetensors, not a pickled model object") from None
    except Exception as err:  # pickle.UnpicklingError and friends: any unpickling failure is user data
        raise CheckpointError(f"{path}: refused by torch.load(weights_only=True) ({type(err).__name__}); "
                              "save a plain state dict (model.state_dict()) instead") from None
    for wrapper in ("state_dict", "model", "state_dict_ema", "model_ema"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: does not hold a state dict (a mapping of names to tensors)")
    return {re.sub(r"^module\.", "", k): v for k, v in obj.items()}
