"""``optimize_for_inference``: the fastest *verified* way to run a model on this machine.

Engines (reference/performance.md §2 measured them on these 2-core machines, B0 at batch 16):

* ``eager``: BN folded + channels_last in PyTorch (≈ 2.8× timm's default eager path);
* ``compile``: the same under ``torch.compile`` (inductor); best torch latency at batch 1, but a cold
  compile takes 30–50 s, so ``auto`` never picks it;
* ``onnxruntime``: effnet's own ONNX export (BN folded, SE pools kept in ORT's blocked layout);
  the fp32 leader (≈ 4× timm eager);
* ``openvino``: the same export compiled by OpenVINO's CPU plugin (:mod:`effnet.deploy.ov_engine`):
  fp32, or bf16 through its inference-precision hint where the CPU has native bf16;
* ``bf16``: ``dtype="bf16"`` runs the folded channels_last model in bfloat16 weights and
  activations (avx512_bf16 doubles the FMA peak); checked by top-1 agreement, not by 1e-4. Rows
  whose top-2 logits nearly tie are re-run in fp32 (``bf16_guard``): plain bf16 flips 3 of the 100
  imagenet-sample-100 predictions of Lite0, all near-ties, and the guard re-runs ~6 % of rows.

Every candidate is compared with the eager fp32 model on ``example`` before it is returned; one
that does not match is never handed out. ``engine="auto"`` times the verified candidates on
``example`` and keeps the fastest (:mod:`effnet.deploy.choice`: robust to a busy machine, reported by
``.report()``, cached per model, input shape, dtype, CPU and threads).
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
import warnings
import weakref
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from effnet.deploy.choice import Choice
from effnet.deploy.fold import check_parity, fold_bn
from effnet.deploy.optimized import OptimizedModel
from effnet.errors import EffnetError

__all__ = ["ENGINES", "OptimizedModel", "build_engine", "optimize_for_inference"]

ENGINES = ("auto", "eager", "compile", "onnxruntime", "openvino")
DTYPES = ("fp32", "bf16", "int8")
# bf16 rows whose top-2 margin is under this fraction of their largest |logit| are re-run in fp32.
BF16_GUARD = 0.02


def _torch_path(model: nn.Module, dtype: str, compile_: bool, bf16_guard: float = 0.0) -> OptimizedModel:
    folded = fold_bn(model).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    m = copy.deepcopy(folded).to(torch.bfloat16) if dtype == "bf16" else folded  # .to() is in place
    fn: Callable[[torch.Tensor], torch.Tensor] = m
    if compile_:
        fn = torch.compile(m, dynamic=False)  # type: ignore[assignment]
    cast = torch.bfloat16 if dtype == "bf16" else torch.float32
    out = OptimizedModel(lambda x: fn(x.to(cast)), engine="compile" if compile_ else "eager", dtype=dtype,
                         channels_last=True)
    if dtype == "bf16" and bf16_guard > 0:
        out.guard(lambda x: folded(x.contiguous(memory_format=torch.channels_last)), bf16_guard)
    return out


def _onnx_file(model: nn.Module, example: torch.Tensor | None, workdir: str | Path | None) -> Path:
    """effnet's export of ``model`` (BN folded, SE squeeze as GlobalAveragePool) in ``workdir``, from the
    engine cache when it holds this model's file (:mod:`effnet.deploy.engine_cache`).

    The export is traced with at least two images: ``torch.export`` turns a batch dimension of size 1
    into a constant, so a batch-1 example cannot give a dynamic-batch file (and ``auto`` used to fall
    back to eager at batch 1 for that reason alone)."""
    from effnet.deploy.engine_cache import cached_file, engine_key
    from effnet.deploy.export import _example, export_onnx

    x = _example(model, example)
    if x.shape[0] == 1:
        x = x.expand(2, *x.shape[1:]).contiguous()
    out = Path(workdir or tempfile.mkdtemp(prefix="effnet-onnx-")) / "model.onnx"
    return cached_file(engine_key(model, tuple(x.shape), "fp32"), out,
                       lambda path: export_onnx(model, path, example=x, check=False))


def _int8_file(model: nn.Module, calibration: torch.Tensor, workdir: str | Path | None) -> Path:
    """The statically quantised file (:mod:`effnet.deploy.quantize`), cached per calibration images;
    its fp32 input is :func:`_onnx_file`'s export, itself cached."""
    from effnet.deploy.engine_cache import cached_file, engine_key
    from effnet.deploy.quantize import quantize_onnx

    folder = Path(workdir or tempfile.mkdtemp(prefix="effnet-int8-"))
    cal = calibration.float()
    key = engine_key(model, tuple(cal.shape), "int8", calibration=cal,
                     options={"method": "minmax", "per_channel": True})
    return cached_file(key, folder / "model.int8.onnx",
                       lambda path: quantize_onnx(_onnx_file(model, cal[:2], folder), path, cal))


def _openvino(model: nn.Module, dtype: str, onnx: Path, bf16_guard: float) -> OptimizedModel:
    from effnet.deploy.ov_engine import OvModel

    if dtype not in ("fp32", "bf16"):
        raise EffnetError(f"the openvino engine runs fp32 or bf16, not {dtype}; for int8 use 'onnxruntime'")
    out = OptimizedModel(OvModel(onnx, dtype=dtype), engine="openvino", dtype=dtype)
    if dtype == "bf16" and bf16_guard > 0:
        folded = fold_bn(model).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        out.guard(lambda x: folded(x.contiguous(memory_format=torch.channels_last)), bf16_guard)
    return out


def build_engine(model: nn.Module, engine: str, *, dtype: str = "fp32", example: torch.Tensor | None = None,
                 workdir: str | Path | None = None, calibration: torch.Tensor | None = None,
                 bf16_guard: float = BF16_GUARD, onnx_path: Path | None = None) -> OptimizedModel:
    """One engine, unverified (``optimize_for_inference`` verifies). ONNX files go to ``workdir``;
    ``onnx_path``: effnet's export already written (one file serves both ONNX engines; for int8, the
    quantised file)."""
    if engine not in ENGINES[1:]:
        raise EffnetError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
    if dtype not in DTYPES:
        raise EffnetError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    if engine == "openvino":
        return _openvino(model, dtype, onnx_path or _onnx_file(model, example, workdir), bf16_guard)
    if dtype == "int8":
        if engine != "onnxruntime":
            raise EffnetError("int8 runs in ONNX Runtime: use engine='onnxruntime' (or 'auto')")
        if calibration is None:
            raise EffnetError("int8 needs calibration images (real, preprocessed): pass calibration=")
        from effnet.deploy.export import OrtModel

        path = onnx_path or _int8_file(model, calibration, workdir)
        return OptimizedModel(OrtModel(path), engine=engine, dtype="int8")
    if engine == "onnxruntime":
        if dtype != "fp32":
            raise EffnetError("the onnxruntime engine runs fp32 or int8 on CPU; for bf16 use 'openvino' or 'eager'")
        from effnet.deploy.export import OrtModel

        return OptimizedModel(OrtModel(onnx_path or _onnx_file(model, example, workdir)), engine=engine, dtype=dtype)
    return _torch_path(model, dtype, compile_=engine == "compile", bf16_guard=bf16_guard)


def _verify(model: nn.Module, cand: OptimizedModel, x: torch.Tensor) -> OptimizedModel:
    """fp32 paths must match eager within 1e-4; bf16/int8 must keep the eager top-1 on ``x``
    (bf16 at ≥ 99 % of rows when the example has enough rows to say so) and stay within 10 % of
    the logits' scale, which catches a broken path without pretending bf16 is exact."""
    with torch.inference_mode():
        ref = model.eval()(x.float())
        out = cand(x)
    agree = float((out.argmax(1) == ref.argmax(1)).float().mean()) if ref.ndim == 2 else 1.0
    cand.agreement = agree
    if cand.dtype == "fp32":
        cand.max_error = check_parity(model, cand, x, atol=1e-4, what=f"{cand.engine} fp32")
        return cand
    cand.max_error = float((out - ref).abs().max())
    scale = max(1.0, float(ref.abs().max()))
    if cand.max_error > 0.1 * scale or (cand.dtype == "bf16" and x.shape[0] >= 8 and agree < 0.99):
        raise EffnetError(f"{cand.engine} {cand.dtype}: max |Δlogit| {cand.max_error:.3g} (scale {scale:.3g}), "
                          f"top-1 agreement {100 * agree:.1f} % against eager fp32")
    return cand


def _installed(*modules: str) -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in modules)


def _auto_candidates(dtype: str) -> list[str]:
    """The engines ``auto`` races for ``dtype``, those whose libraries are installed."""
    from effnet.deploy.machine import has_bf16

    onnx = _installed("onnx", "onnxscript")
    if dtype == "int8":
        return ["onnxruntime"]
    if dtype == "bf16":
        return ["eager"] + (["openvino"] if onnx and has_bf16() and _installed("openvino") else [])
    names = [e for e, lib in (("onnxruntime", "onnxruntime"), ("openvino", "openvino")) if onnx and _installed(lib)]
    # eager fp32 runs at 0.4-0.6x ONNX Runtime on every machine measured (docs/engines.md) and is the
    # contender a busy machine slows most: it races only where no ONNX engine is installed (and is
    # the fallback when they fail verification).
    return names or ["eager"]


def _hardware_dtype(dtype: str, engine: str) -> tuple[str, tuple[str, ...]]:
    """``dtype`` as this CPU can run it fast, and what was changed and why: without native bf16,
    ``auto`` runs fp32 instead (emulated bf16 is slower than fp32 and less exact); without VNNI int8
    still runs, on ORT's AVX2 integer kernels, with a warning that the gain over fp32 is small."""
    from effnet.deploy.machine import cpu_features, has_bf16, has_vnni

    cpu = " ".join(cpu_features()) or "no AVX2"
    if dtype == "bf16" and not has_bf16():
        if engine == "auto":
            note = f"this CPU ({cpu}) has no native bf16 (AVX512-bf16 or AMX): running fp32 instead"
            warnings.warn(f"effnet: {note}", stacklevel=3)
            return "fp32", (note,)
        note = f"this CPU ({cpu}) has no native bf16: {engine} emulates it, slower than fp32"
        warnings.warn(f"effnet: {note}", stacklevel=3)
        return dtype, (note,)
    if dtype == "int8" and not has_vnni():
        note = f"this CPU ({cpu}) has no VNNI: int8 runs on AVX2 integer kernels and gains little over fp32"
        warnings.warn(f"effnet: {note}", stacklevel=3)
        return dtype, (note,)
    return dtype, ()


def _model_id(model: nn.Module) -> dict[str, object]:
    """What identifies the network for the choice cache: its spec, else its class and parameter shapes."""
    spec = getattr(model, "spec", None)
    if spec is not None and hasattr(spec, "to_dict"):
        return {"spec": spec.to_dict(), "classes": getattr(model, "num_classes", None)}
    return {"class": type(model).__qualname__, "params": [list(p.shape) for p in model.parameters()]}


def _engine_file(model: nn.Module, names: list[str], x: torch.Tensor, kwargs: dict[str, object]) -> Path | None:
    """The ONNX file the ONNX engines among ``names`` read (one export serves both; int8: the quantised
    file), made here rather than per engine so that the cache's warnings are not silenced below."""
    workdir = kwargs.get("workdir")
    if kwargs.get("dtype") == "int8":
        calibration = kwargs.get("calibration")
        if "onnxruntime" not in names or not isinstance(calibration, torch.Tensor):
            return None  # build_engine says what is missing
        return _int8_file(model, calibration, workdir)  # type: ignore[arg-type]
    if not {"onnxruntime", "openvino"} & set(names):
        return None
    return _onnx_file(model, x, workdir)  # type: ignore[arg-type]


def _build_one(model: nn.Module, name: str, x: torch.Tensor, kwargs: dict[str, object]) -> OptimizedModel:
    """Build and verify ``name``; a cached file that fails is evicted and the engine built afresh once."""
    from effnet.deploy.engine_cache import evict

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _verify(model, build_engine(model, name, example=x, **kwargs), x)  # type: ignore[arg-type]
    except EffnetError:
        path = kwargs.get("onnx_path")
        if name not in ("onnxruntime", "openvino") or not isinstance(path, Path) or not evict(path):
            raise
    kwargs["onnx_path"] = _engine_file(model, [name], x, kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _verify(model, build_engine(model, name, example=x, **kwargs), x)  # type: ignore[arg-type]


def _build_verified(model: nn.Module, names: list[str], x: torch.Tensor, strict: bool,
                    **kwargs: object) -> tuple[dict[str, OptimizedModel], list[str]]:
    built: dict[str, OptimizedModel] = {}
    errors: list[str] = []
    try:
        kwargs["onnx_path"] = _engine_file(model, names, x, kwargs)
    except EffnetError as e:
        if strict:
            raise
        errors.append(f"ONNX export: {e}")
        names = [n for n in names if n not in ("onnxruntime", "openvino")]
    for name in names:
        try:
            built[name] = _build_one(model, name, x, kwargs)
        except EffnetError as e:
            if strict:
                raise
            errors.append(f"{name}: {e}")
    if not built:
        raise EffnetError("no inference path passed verification: " + "; ".join(errors))
    return built, errors


def _usable_choice(cached: Choice | None, names: list[str], notes: tuple[str, ...]
                  ) -> tuple[Choice | None, float | None, tuple[str, ...]]:
    """The cached choice if it still stands, other processes' CPU use if it was sampled, and the notes.

    Other work is sampled (0.2 s) before any engine is built, and only when it decides something: for
    a new race's stamp, or whether a choice timed under load is raced again now that the machine is
    quiet (:func:`effnet.deploy.choice.provisional`)."""
    from effnet.deploy import choice as ch

    if cached is not None and cached.engine not in names:
        cached = None
    busy = ch.other_work() if cached is None or (cached.busy or 0.0) >= ch.BUSY_CORES else None
    if cached is not None and ch.provisional(cached, busy):
        notes += (f"timed again: the cached choice ({cached.engine}) was measured beside {cached.busy:.2f} cores "
                  "of other work and the machine is quiet now",)
        cached = None
    return cached, busy, notes


def _auto(model: nn.Module, x: torch.Tensor, dtype: str, notes: tuple[str, ...], **kwargs: object) -> OptimizedModel:
    """Race the verified candidates (or take the cached or forced choice) and keep the winner."""
    from effnet.deploy import choice as ch

    names = _auto_candidates(dtype)
    threads = torch.get_num_threads()
    shape = tuple(x.shape)
    forced = os.environ.get("EFFNET_ENGINE", "").strip()
    if forced:
        if forced not in ENGINES[1:]:
            raise EffnetError(f"EFFNET_ENGINE={forced!r}: use one of {', '.join(ENGINES[1:])}")
        fast = _build_verified(model, [forced], x, True, dtype=dtype, **kwargs)[0][forced]
        fast.choice = ch.now_choice(forced, "EFFNET_ENGINE", (), shape=shape, dtype=dtype, threads=threads, notes=notes)
        return fast
    key = ch.cache_key(_model_id(model), shape, dtype, threads, tuple(names))
    cached, busy, notes = _usable_choice(ch.load_choice(key), names, notes)
    if cached is not None:
        try:
            fast = _build_verified(model, [cached.engine], x, True, dtype=dtype, **kwargs)[0][cached.engine]
        except EffnetError:
            pass  # it no longer verifies: race again
        else:
            fast.choice = Choice(**{**cached.__dict__, "cached": True, "notes": notes})
            return fast
    try:
        built, errors = _build_verified(model, names, x, False, dtype=dtype, **kwargs)
    except EffnetError as e:
        if "eager" in names:
            raise
        built, errors = _build_verified(model, ["eager"], x, False, dtype=dtype, **kwargs)
        errors.append(str(e))
    busy = ch.other_work() if busy is None else busy
    engine, why, timed = ch.choose({k: (lambda c=c: c(x)) for k, c in built.items()})
    choice = ch.now_choice(engine, why, timed, shape=shape, dtype=dtype, threads=threads, busy=busy,
                           notes=notes + tuple(f"not a candidate: {e}" for e in errors))
    if len(built) > 1:
        ch.save_choice(key, choice)
    fast = built[engine]
    fast.choice = choice
    return fast


def optimize_for_inference(model: nn.Module, *, example: torch.Tensor | None = None, dtype: str = "fp32",
                           engine: str = "auto", calibration: torch.Tensor | None = None,
                           workdir: str | Path | None = None, bf16_guard: float = BF16_GUARD) -> OptimizedModel:
    """The fastest verified inference path for ``model`` on this machine.

    Args:
        model: an effnet model (or any module taking one NCHW image tensor); not modified.
        example: input used to verify and, with ``engine="auto"``, to time candidates (default: 2
            random images at the model's resolution). Time with the batch size you will run: the
            choice is made, and cached, for this input shape.
        dtype: ``fp32`` (logits within 1e-4 of eager), ``bf16`` (top-1 agreement; ``auto`` runs fp32
            instead, and says so, on a CPU without native bf16) or ``int8`` (ONNX Runtime static
            quantisation; needs ``calibration``; warns on a CPU without VNNI).
        engine: ``auto`` (race the verified candidates, keep the fastest; see
            :mod:`effnet.deploy.choice`), ``eager``, ``compile``, ``onnxruntime`` or ``openvino``.
        calibration: preprocessed real images for int8 (100 is enough; random noise is not).
        workdir: where ONNX files are kept (default: a temporary directory, ``.workdir``, deleted when
            the returned engine is garbage-collected or the process exits). The exported (and int8
            quantised) files of effnet models are also kept in the engine cache and reused by later
            calls and processes (:mod:`effnet.deploy.engine_cache`; ``EFFNET_CACHE=off`` disables it).
        bf16_guard: bf16 only: re-run in fp32 the rows whose top-2 logit margin is below this fraction
            of their largest |logit| (near-ties, where bf16 flips predictions); 0 turns it off.

    Returns:
        An :class:`OptimizedModel`: call it like the model; ``.report()`` says what was measured.
    """
    if engine not in ENGINES:
        raise EffnetError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
    if dtype not in DTYPES:
        raise EffnetError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    from effnet.deploy.export import _example

    model = model.eval()
    x = _example(model, example)
    dtype, notes = _hardware_dtype(dtype, engine)
    own = workdir is None  # a temporary folder of ours lives as long as the engine that reads it
    workdir = workdir or tempfile.mkdtemp(prefix="effnet-onnx-")
    kwargs: dict[str, object] = {"workdir": workdir, "calibration": calibration, "bf16_guard": bf16_guard}
    try:
        fast = (_auto(model, x, dtype, notes, **kwargs) if engine == "auto"
                else _build_verified(model, [engine], x, True, dtype=dtype, **kwargs)[0][engine])
    except BaseException:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)
        raise
    if own:  # removed when the engine is garbage-collected or at exit (20 MB for B0 per call otherwise)
        fast.workdir = Path(workdir)
        weakref.finalize(fast, shutil.rmtree, workdir, True)
    return fast
