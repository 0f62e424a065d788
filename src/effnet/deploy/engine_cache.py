"""The built engine files, kept on disk: the second ``classify``/``effnet predict`` of a model skips the export.

Exporting a model to ONNX (and, for int8, quantising it) is most of the time
:func:`effnet.deploy.inference.optimize_for_inference` takes; ONNX Runtime's session and the parity
check are the rest (docs/inference.md, "The engine cache", has the split measured). So the files
are kept in ``engines/`` under :func:`effnet.deploy.choice.cache_root` (``~/.cache/effnet/engines``,
``$EFFNET_CACHE/engines``; ``EFFNET_CACHE=off`` keeps nothing) and a later call, in any process,
links the file into its work folder and only creates the session and verifies it.

* **The key** (:func:`engine_key`) is a hash of everything that changes the file: the network (class,
  spec, number of classes), a SHA-256 of the weights' bytes (every tensor of the state dict: a few
  MB, tens of milliseconds), the input's channels and size (the batch is dynamic in every file), the
  dtype, for int8 a SHA-256 of the calibration images and the quantiser's settings, the versions of
  effnet, torch, onnx, onnxscript and ONNX Runtime (together they fix the exporter's opset:
  ``export_onnx`` names none) and the source of the code that writes the file (export, BN folding,
  quantisation, the model's modules), so an edit there is never served a stale file. Models
  without a ``spec`` (any ``nn.Module``) are not cached: their class name does not pin their code.
* **Integrity**: a file is stored as ``<key>.<sha256 of its bytes>.onnx``. A hit is hard-linked (or
  copied) into the caller's work folder first and its bytes hashed there; a mismatch (a truncated
  or corrupted file) deletes the entry and the engine is built afresh. Nothing is unpickled: the
  files are ONNX protobufs, read by ONNX Runtime only after the hash matched.
* **Concurrency**: files are written to a temporary name and renamed
  (:func:`effnet.deploy.choice.atomic_write`), so two processes can fill and read the cache at once;
  a reader holds its own link, so a concurrent ``clear`` or eviction cannot pull a file from under it.
* **Size**: at most ``$EFFNET_CACHE_MB`` megabytes (default 2048, about 100 Lite0 or 8 B7 fp32 files);
  the least recently used files go first. ``effnet cache clear`` empties it, ``effnet cache list``
  shows it.
* **An unwritable folder** costs the cache, not the call: one warning, then the engine is built as
  if there were no cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from effnet.deploy.choice import atomic_write, cache_root, package_versions

__all__ = ["SIZE_ENV", "CacheEntry", "cached_file", "clear", "engine_key", "engines_dir", "entries", "evict",
           "is_cached", "weights_digest"]

SIZE_ENV = "EFFNET_CACHE_MB"
DEFAULT_MB = 2048
_KEY_VERSION = 1
_PACKAGES = ("effnet", "torch", "onnx", "onnxscript", "onnxruntime")
# The modules whose code decides an engine file's bytes, given the weights.
_CODE = ("effnet.deploy.export", "effnet.deploy.fold", "effnet.deploy.quantize", "effnet.model", "effnet.blocks",
         "effnet.layers")
_STALE_TMP_S = 3600  # a temporary file older than this was left by a killed writer
# Work-folder file -> the cache file it was linked from, so that a hit that fails verification can be evicted.
_HITS: dict[Path, Path] = {}


@dataclass(frozen=True)
class CacheEntry:
    """One cached engine file: its path, size in bytes and last use (seconds since the epoch)."""

    path: Path
    size: int
    used: float


def engines_dir() -> Path | None:
    """The folder of cached engine files, or None when ``EFFNET_CACHE`` turns caching off."""
    root = cache_root()
    return None if root is None else root / "engines"


def _digest_tensor(h: Any, t: torch.Tensor) -> None:
    t = t.detach().to("cpu").contiguous().reshape(-1)
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.view(torch.uint8).numpy().data)  # a view of the bytes: any dtype, no copy


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of every tensor of ``model``'s state dict (names, dtypes, shapes and bytes)."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        _digest_tensor(h, t)
    return h.hexdigest()


def _code_digest() -> str:
    import importlib

    h = hashlib.sha256()
    for name in _CODE:
        mod = importlib.import_module(name)
        folder = getattr(mod, "__path__", None)
        files = sorted(Path(folder[0]).glob("*.py")) if folder else [Path(str(mod.__file__))]
        for f in files:
            h.update(f.read_bytes())
    return h.hexdigest()


def engine_key(model: nn.Module, shape: tuple[int, ...], dtype: str, *, calibration: torch.Tensor | None = None,
               options: dict[str, Any] | None = None) -> str | None:
    """The cache key of ``model``'s engine file for inputs shaped ``shape`` (N, C, H, W; N is not part of
    it: files have a dynamic batch) in ``dtype``; None when nothing is cached: a model without a
    ``spec``, or the cache turned off (then the weights are not even hashed)."""
    spec = getattr(model, "spec", None)
    if spec is None or not hasattr(spec, "to_dict") or engines_dir() is None:
        return None
    cal = None
    if calibration is not None:
        h = hashlib.sha256()
        _digest_tensor(h, calibration.float())
        cal = h.hexdigest()
    body = {"v": _KEY_VERSION, "class": f"{type(model).__module__}.{type(model).__qualname__}",
            "spec": spec.to_dict(), "classes": getattr(model, "num_classes", None),
            "weights": weights_digest(model), "input": list(shape[1:]), "batch": "dynamic", "dtype": dtype,
            "calibration": cal, "options": options or {}, "versions": package_versions(_PACKAGES),
            "code": _code_digest()}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()[:16]


def _warn(what: str, err: OSError | str) -> None:
    reason = err if isinstance(err, str) else (err.strerror or type(err).__name__)
    warnings.warn(f"engine cache {what} ({reason}); building the engine without the cache "
                  f"(set EFFNET_CACHE to a writable folder, or EFFNET_CACHE=off)", stacklevel=3)


def _fetch(key: str, out: Path) -> bool:
    """Link the newest intact file of ``key`` to ``out``; False when there is none."""
    folder = engines_dir()
    if folder is None or not folder.is_dir():
        return False
    for src in sorted(folder.glob(f"{key}.*.onnx"), key=_used, reverse=True):
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            try:
                os.link(src, tmp)  # our own name for the bytes: an eviction now cannot take them
            except OSError:
                shutil.copyfile(src, tmp)  # another file system
        except OSError:
            continue  # evicted meanwhile
        if _file_sha(tmp) != src.name.split(".")[1]:
            tmp.unlink(missing_ok=True)
            src.unlink(missing_ok=True)
            warnings.warn(f"cached engine {src.name} was damaged (its bytes do not match its hash); "
                          "rebuilding it", stacklevel=3)
            continue
        os.replace(tmp, out)
        with contextlib.suppress(OSError):
            os.utime(src)  # last use, for the size bound
        _HITS[out] = src
        return True
    return False


def _store(key: str, built: Path) -> None:
    """Copy ``built`` into the cache as ``key`` (atomically), drop the key's older files, bound the size."""
    folder = engines_dir()
    if folder is None:
        return
    dst = folder / f"{key}.{_file_sha(built)}.onnx"
    try:
        if dst.exists():
            os.utime(dst)
        else:
            with built.open("rb") as src:
                atomic_write(dst, lambda f: shutil.copyfileobj(src, f), binary=True)
    except OSError as e:
        _warn(f"folder {folder} is not writable", e)
        return
    try:
        for old in folder.glob(f"{key}.*.onnx"):
            if old != dst:
                old.unlink(missing_ok=True)
        _prune(folder, keep=dst)
    except OSError:  # another process's files, or a folder made read-only meanwhile: the next store tries again
        pass


def cached_file(key: str | None, out: Path, build: Callable[[Path], Path]) -> Path:
    """The engine file for ``key`` at ``out``: linked from the cache on a hit, else ``build(out)``
    (which returns the path it wrote) and stored. ``key`` None: just ``build(out)``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if key is not None:
        try:
            if _fetch(key, out):
                return out
        except OSError as e:  # an unreadable folder: as if empty
            _warn(f"folder {engines_dir()} cannot be read", e)
    # A hit may have left ``out`` as a hard link of a cache file: writing through it would damage the cache.
    out.unlink(missing_ok=True)
    _HITS.pop(out, None)
    path = build(out)
    if key is not None:
        _store(key, path)
    return path


def evict(out: Path) -> bool:
    """Forget the cache file that ``out`` was linked from (it failed verification); True if it was one."""
    src = _HITS.pop(out, None)
    if src is None:
        return False
    src.unlink(missing_ok=True)
    return True


def is_cached(model: nn.Module, shape: tuple[int, ...], dtype: str = "fp32") -> bool:
    """Whether an engine file for ``model`` at ``shape``/``dtype`` is in the cache (not hash-checked:
    enough to decide whether building the engine will be cheap)."""
    folder, key = engines_dir(), engine_key(model, shape, dtype)
    return key is not None and folder is not None and any(folder.glob(f"{key}.*.onnx"))


def _used(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def entries() -> list[CacheEntry]:
    """The cached engine files, most recently used first."""
    folder = engines_dir()
    if folder is None or not folder.is_dir():
        return []
    out = []
    for p in folder.glob("*.onnx"):
        try:
            st = p.stat()
        except OSError:
            continue
        out.append(CacheEntry(p, st.st_size, st.st_mtime))
    return sorted(out, key=lambda e: e.used, reverse=True)


def _limit_bytes() -> int:
    text = os.environ.get(SIZE_ENV, "").strip()
    try:
        return int(float(text) * 2**20) if text else DEFAULT_MB * 2**20
    except ValueError:
        warnings.warn(f"{SIZE_ENV}={text!r} is not a number of megabytes; using {DEFAULT_MB}", stacklevel=4)
        return DEFAULT_MB * 2**20


def _prune(folder: Path, keep: Path) -> None:
    """Least recently used files out until the folder fits :data:`SIZE_ENV`; stale temporaries out."""
    total, limit = 0, _limit_bytes()
    for e in entries():
        total += e.size
        if total > limit and e.path != keep:
            e.path.unlink(missing_ok=True)
            total -= e.size
    now = time.time()
    for tmp in folder.glob(".*.tmp"):
        if now - _used(tmp) > _STALE_TMP_S:
            tmp.unlink(missing_ok=True)


def clear() -> tuple[int, int]:
    """Delete every cached engine file: (files, bytes) removed."""
    gone = entries()
    for e in gone:
        e.path.unlink(missing_ok=True)
    return len(gone), sum(e.size for e in gone)
