"""``optimize_for_inference``: the fastest *verified* way to run a model on this machine.

Engines (reference/performance.md §2 measured them on these 2-core machines, B0 at batch 16):

* ``eager``: BN folded + channels_last in PyTorch (≈ 2.8× timm's default eager path);
* ``compile``: the same under ``torch.compile`` (inductor); best torch latency at batch 1, but a cold
  compile takes 30–50 s, so ``auto`` never picks it;
* ``onnxruntime``: effnet's own ONNX export (BN folded, SE pools kept in ORT's blocked layout);
  the fp32 leader (≈ 4× timm eager);
* ``bf16``: ``dtype="bf16"`` runs the folded channels_last model in bfloat16 weights and
  activations (avx512_bf16 doubles the FMA peak); checked by top-1 agreement, not by 1e-4. Rows
  whose top-2 logits nearly tie are re-run in fp32 (``bf16_guard``): plain bf16 flips 3 of the 100
  imagenet-sample-100 predictions of Lite0, all near-ties, and the guard re-runs ~6 % of rows.

Every candidate is compared with the eager fp32 model on ``example`` before it is returned; one
that does not match is never handed out.
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from effnet.deploy.fold import check_parity, fold_bn
from effnet.deploy.timing import interleaved_times, medians
from effnet.errors import EffnetError

__all__ = ["ENGINES", "OptimizedModel", "build_engine", "optimize_for_inference"]

ENGINES = ("auto", "eager", "compile", "onnxruntime")
DTYPES = ("fp32", "bf16", "int8")
# bf16 rows whose top-2 margin is under this fraction of their largest |logit| are re-run in fp32.
BF16_GUARD = 0.02


class OptimizedModel:
    """A callable taking the model's NCHW fp32 input and returning fp32 logits.

    Attributes:
        engine, dtype: what runs underneath.
        max_error: max |Δlogit| against eager fp32 on the verification input.
        agreement: top-1 agreement with eager fp32 on that input (fraction).
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], *, engine: str, dtype: str,
                 channels_last: bool = False) -> None:
        self._fn, self.engine, self.dtype, self.channels_last = fn, engine, dtype, channels_last
        self.max_error = float("nan")
        self.agreement = float("nan")
        self._recheck: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.recheck_margin = 0.0
        self.rechecked = 0  # rows re-run in fp32 so far

    def guard(self, fp32: Callable[[torch.Tensor], torch.Tensor], margin: float) -> OptimizedModel:
        """Re-run in ``fp32`` the rows whose top-2 logit margin is below ``margin`` × their largest
        |logit|: near-ties are where reduced precision flips the prediction (on Lite0, the three
        images bf16 flips have fp32 margins of 0.02–0.16 logits out of 14), and they are few."""
        self._recheck, self.recheck_margin = fp32, margin
        return self

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        xin = x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
        out = self._fn(xin).float()
        if self._recheck is not None and out.ndim == 2 and out.shape[1] > 1:
            top = out.topk(2, dim=1).values
            near = ((top[:, 0] - top[:, 1]) < self.recheck_margin * out.abs().amax(1)).nonzero().flatten()
            if len(near):
                out[near] = self._recheck(x[near]).float()
                self.rechecked += len(near)
        return out

    def __repr__(self) -> str:
        return f"OptimizedModel(engine={self.engine!r}, dtype={self.dtype!r}, max_error={self.max_error:.2g})"


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


def build_engine(model: nn.Module, engine: str, *, dtype: str = "fp32", example: torch.Tensor | None = None,
                 workdir: str | Path | None = None, calibration: torch.Tensor | None = None,
                 bf16_guard: float = BF16_GUARD) -> OptimizedModel:
    """One engine, unverified (``optimize_for_inference`` verifies). ONNX files go to ``workdir``."""
    if engine not in ENGINES[1:]:
        raise EffnetError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
    if dtype not in DTYPES:
        raise EffnetError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    if dtype == "int8":
        if engine != "onnxruntime":
            raise EffnetError("int8 runs in ONNX Runtime: use engine='onnxruntime' (or 'auto')")
        if calibration is None:
            raise EffnetError("int8 needs calibration images (real, preprocessed): pass calibration=")
        from effnet.deploy.quantize import quantize_model

        out = Path(workdir or tempfile.mkdtemp(prefix="effnet-int8-")) / "model.int8.onnx"
        return OptimizedModel(quantize_model(model, out, calibration), engine=engine, dtype="int8")
    if engine == "onnxruntime":
        if dtype != "fp32":
            raise EffnetError("the onnxruntime engine runs fp32 or int8 on CPU; for bf16 use 'eager' or 'compile'")
        from effnet.deploy.export import OrtModel, export_onnx

        out = Path(workdir or tempfile.mkdtemp(prefix="effnet-onnx-")) / "model.onnx"
        return OptimizedModel(OrtModel(export_onnx(model, out, example=example, check=False)),
                              engine=engine, dtype=dtype)
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


def _auto_candidates(dtype: str) -> list[str]:
    if dtype == "bf16":
        return ["eager"]
    if dtype == "int8":
        return ["onnxruntime"]
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        return ["eager"]
    return ["onnxruntime", "eager"]


def optimize_for_inference(model: nn.Module, *, example: torch.Tensor | None = None, dtype: str = "fp32",
                           engine: str = "auto", calibration: torch.Tensor | None = None,
                           workdir: str | Path | None = None, bf16_guard: float = BF16_GUARD) -> OptimizedModel:
    """The fastest verified inference path for ``model`` on this machine.

    Args:
        model: an effnet model (or any module taking one NCHW image tensor); not modified.
        example: input used to verify and, with ``engine="auto"``, to time candidates (default: 2
            random images at the model's resolution). Time with the batch size you will run.
        dtype: ``fp32`` (logits within 1e-4 of eager), ``bf16`` (top-1 agreement) or ``int8``
            (ONNX Runtime static quantisation; needs ``calibration``).
        engine: ``auto`` (time the verified candidates, keep the fastest), ``eager``, ``compile``
            or ``onnxruntime``.
        calibration: preprocessed real images for int8 (100 is enough; random noise is not).
        workdir: where ONNX files are kept (default: a temporary directory).
        bf16_guard: bf16 only: re-run in fp32 the rows whose top-2 logit margin is below this fraction
            of their largest |logit| (near-ties, where bf16 flips predictions); 0 turns it off.

    Returns:
        An :class:`OptimizedModel`: call it like the model.
    """
    if engine not in ENGINES:
        raise EffnetError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
    if dtype not in DTYPES:
        raise EffnetError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    from effnet.deploy.export import _example

    model = model.eval()
    x = _example(model, example)
    names = _auto_candidates(dtype) if engine == "auto" else [engine]
    built: dict[str, OptimizedModel] = {}
    errors: list[str] = []
    for name in names:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                built[name] = _verify(model, build_engine(model, name, dtype=dtype, example=x, workdir=workdir,
                                                          calibration=calibration, bf16_guard=bf16_guard), x)
        except EffnetError as e:
            if engine != "auto":
                raise
            errors.append(f"{name}: {e}")
    if not built:
        raise EffnetError("no inference path passed verification: " + "; ".join(errors))
    if len(built) == 1:
        return next(iter(built.values()))
    # Interleaved rounds, medians: one burst of load must not decide the choice.
    times = medians(interleaved_times({k: (lambda c=c: c(x)) for k, c in built.items()}, rounds=5, warmup=1))
    best = built[min(times, key=times.__getitem__)]
    return best
