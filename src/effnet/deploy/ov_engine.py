"""effnet's OpenVINO engine: an ONNX file compiled by OpenVINO's CPU plugin, latency mode for small
batches and one stream per core for large ones.

Why OpenVINO: its CPU plugin fuses what ONNX Runtime's MLAS runs as separate passes (SiLU into the
convolution, the squeeze-excitation gate multiply into the next layer) and keeps one blocked layout
end to end, which is what EfficientNet's memory-bound layers need; with avx512_bf16/AMX it also runs
bf16 natively (docs/engines.md has the measured ratios). It reads effnet's own export (BN folded, SE
squeeze as ``GlobalAveragePool``; :func:`effnet.deploy.export.export_onnx`) directly.

Two compiled models share the file:

* **latency** (``PERFORMANCE_HINT=LATENCY``, one stream over ``threads`` threads) runs batches smaller
  than ``threads``: batch 1, where every image must use every core;
* **throughput** (``PERFORMANCE_HINT=THROUGHPUT``, one single-threaded stream per core) runs larger
  batches split into ``threads`` parts at once, as :class:`effnet.deploy.ort_plan.SplitSession` does
  for ONNX Runtime: a stream never waits for another core between EfficientNet's ~250 small layers.

Precision is always set: OpenVINO's CPU plugin *defaults* to bf16 on a CPU with AMX, so without the
hint an "fp32" OpenVINO figure on such a CPU is a bf16 figure.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from effnet.deploy.export import require
from effnet.errors import EffnetError

__all__ = ["OvModel", "ov_config"]

PRECISIONS = {"fp32": "f32", "bf16": "bf16"}


def ov_config(hint: str, threads: int, dtype: str = "fp32") -> dict[str, Any]:
    """The CPU plugin settings for ``hint`` (LATENCY or THROUGHPUT): ``threads`` threads in all, one stream
    for LATENCY and one per thread for THROUGHPUT, the inference precision stated (never the default),
    and no thread pinning: pinned threads cannot move off a core another process is using, and on a
    shared 2-core machine at load 15 that made B0 at batch 1 3.8x slower (docs/engines.md)."""
    if dtype not in PRECISIONS:
        raise EffnetError(f"the openvino engine runs fp32 or bf16, not {dtype!r}")
    return {"PERFORMANCE_HINT": hint, "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": 1 if hint == "LATENCY" else threads, "INFERENCE_PRECISION_HINT": PRECISIONS[dtype],
            "ENABLE_CPU_PINNING": False}


class OvModel:
    """An ONNX file compiled by OpenVINO, callable on NCHW float32 torch tensors like the model.

    Args:
        path: the ``.onnx`` file (dynamic batch, as :func:`effnet.deploy.export.export_onnx` writes).
        threads: cores to use (default: torch's thread count).
        dtype: ``fp32`` or ``bf16`` (OpenVINO's inference precision hint; bf16 needs AVX512-bf16 or AMX).
        split: run batches of at least ``threads`` images through the one-stream-per-core model; False
            keeps every batch on the latency model (what a plain OpenVINO user gets with one hint).
    """

    def __init__(self, path: str | Path, *, threads: int | None = None, dtype: str = "fp32",
                 split: bool = True) -> None:
        ov = require("openvino", "openvino")
        self.path, self.dtype = Path(path), dtype
        if not self.path.is_file():
            raise EffnetError(f"no ONNX file at {self.path}; write one with `effnet export` or effnet.export_onnx")
        self.threads = threads or torch.get_num_threads()
        core = ov.Core()
        try:
            model = core.read_model(str(self.path))
            self._latency = core.compile_model(model, "CPU", ov_config("LATENCY", self.threads, dtype))
            self._requests = [self._latency.create_infer_request()]
            self._split = split and self.threads > 1
            if self._split:
                wide = core.compile_model(model, "CPU", ov_config("THROUGHPUT", self.threads, dtype))
                self._parts = [wide.create_infer_request() for _ in range(self.threads)]
        except RuntimeError as e:  # OpenVINO's read/compile errors: a corrupt file, an unsupported op
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise EffnetError(f"OpenVINO cannot compile {self.path}: {first[:300]}") from e
        self._lock = threading.Lock()  # an infer request serves one call at a time

    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits (the first output) for the NCHW float32 array ``x``."""
        with self._lock:
            if not self._split or x.shape[0] < self.threads:
                return np.array(self._requests[0].infer({0: x})[0])
            parts = np.array_split(x, self.threads)
            for req, part in zip(self._parts, parts, strict=True):
                req.start_async({0: part})
            for req in self._parts:
                req.wait()
            return np.concatenate([np.array(req.get_output_tensor(0).data) for req in self._parts])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.run(x.detach().to(torch.float32).contiguous().numpy()))

    def __repr__(self) -> str:
        return f"OvModel({str(self.path)!r}, dtype={self.dtype!r}, threads={self.threads})"
