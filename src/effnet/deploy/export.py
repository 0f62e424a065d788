"""Export to ONNX (run by ONNX Runtime) and to ``torch.export`` ``.pt2``, with parity checks.

Why effnet exports its own graph rather than the training module as is: batch norm is folded into
the convolutions first (exact, see :func:`effnet.deploy.fold.fold_bn`), and squeeze-excitation's
global mean is written as ``GlobalAveragePool`` instead of ``ReduceMean``. ONNX Runtime's NCHWc
layout pass keeps ``GlobalAveragePool`` in its blocked layout but wraps every ``ReduceMean`` in
layout reorders (docs/performance-notes.md: reorders were ~12 % of ORT's time on B0), so the
rewrite removes one reorder per SE block. The ONNX file is self-contained (no ``.onnx.data``).

A model that cannot be exported raises :class:`ExportError` naming the cause (e.g. Python control
flow on tensor values), never a page of tracer internals.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from effnet.deploy.fold import check_parity, prepare_for_export
from effnet.errors import EffnetError

__all__ = ["ExportError", "OrtModel", "export_onnx", "export_pt2", "load_pt2", "require"]

# Batch sizes a dynamic-batch export must accept; the example uses 2 because torch.export
# specialises a dimension of size 1 to a constant.
_MAX_BATCH = 4096


class ExportError(EffnetError, RuntimeError):
    """A model that cannot be exported, or an export that does not match the eager model."""


def require(module: str, extra: str = "bench") -> Any:
    """Import an optional dependency or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise EffnetError(f"{module} is not installed; pip install 'effnet[{extra}]'") from None


def _example(model: nn.Module, example: torch.Tensor | None, batch: int = 2) -> torch.Tensor:
    if example is not None:
        return example
    spec = getattr(model, "spec", None)
    if spec is None:
        raise ExportError(f"{type(model).__name__} has no .spec to size an input from; pass example=")
    in_chans = model.stem.conv.in_channels  # type: ignore[union-attr]
    return torch.randn(batch, in_chans, spec.resolution, spec.resolution)


def _explain(e: Exception) -> str:
    """One line that says why an export failed; tracer messages run to pages."""
    text = str(e)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    hints = {
        "data-dependent": "Python control flow on tensor values (an `if` on a tensor) cannot be traced; "
                          "use torch.where or torch.cond",
        "GuardOnDataDependent": "Python control flow on tensor values (an `if` on a tensor) cannot be traced; "
                                "use torch.where or torch.cond",
        "Constraints violated": "the model specialises the batch size, so a dynamic batch is impossible",
        "not supported": "an operator has no export rule",
    }
    for key, hint in hints.items():
        if key in text:
            return f"{hint} ({type(e).__name__}: {lines[0][:200] if lines else ''})"
    return f"{type(e).__name__}: {lines[0][:300] if lines else 'no message'}"


def _export_program(model: nn.Module, x: torch.Tensor, dynamic_batch: bool) -> torch.export.ExportedProgram:
    dims = ({0: torch.export.Dim("batch", min=1, max=_MAX_BATCH)},) if dynamic_batch else None
    try:
        return torch.export.export(model, (x,), dynamic_shapes=dims, strict=False)
    except Exception as e:  # torch raises a dozen exception types from the tracer
        raise ExportError(f"cannot export {type(model).__name__}: {_explain(e)}") from e


def _gap_rewrite(proto: Any) -> int:
    """Replace ``ReduceMean(x, axes=[2, 3] or [-2, -1], keepdims=1)`` with ``GlobalAveragePool(x)``.

    The two are the same function on 4-D input (every image model's feature maps); only the latter
    stays in ORT's NCHWc layout. Rewrites ``proto`` in place.
    Returns the number of nodes rewritten.
    """
    from onnx import helper, numpy_helper

    consts = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    for n in proto.graph.node:
        if n.op_type == "Constant" and n.attribute:
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    nodes, count = [], 0
    for n in proto.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        axes = consts.get(n.input[1]) if n.op_type == "ReduceMean" and len(n.input) == 2 else attrs.get("axes")
        if (n.op_type == "ReduceMean" and axes is not None and sorted(np.asarray(axes).tolist()) in ([2, 3], [-2, -1])
                and attrs.get("keepdims", 1) == 1):
            nodes.append(helper.make_node("GlobalAveragePool", [n.input[0]], list(n.output), name=f"{n.name}_gap"))
            count += 1
        else:
            nodes.append(n)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    return count


def export_onnx(model: nn.Module, path: str | Path, *, example: torch.Tensor | None = None,
                dynamic_batch: bool = True, check: bool = True, atol: float = 1e-4) -> Path:
    """Write ``model`` as one self-contained ONNX file (dynamo exporter) and check it in ORT.

    Args:
        model: an effnet :class:`~effnet.model.ConvNet` or any module taking one NCHW tensor.
        path: the ``.onnx`` file to write.
        example: an input (default: random, at the model's resolution, batch 2).
        dynamic_batch: the batch dimension is symbolic, so one file serves every batch size.
        check: run the file in ONNX Runtime and compare with eager fp32 (``atol``).
    """
    onnx = require("onnx")
    x = _example(model, example)
    prepared = prepare_for_export(model)
    program = _export_program(prepared, x, dynamic_batch)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = os.path.join(tmp, "model.onnx")
        try:
            torch.onnx.export(program, (x,), raw, dynamo=True, optimize=True, verbose=False,
                              dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=_MAX_BATCH)},)
                              if dynamic_batch else None)
        except Exception as e:
            raise ExportError(f"cannot convert {type(model).__name__} to ONNX: {_explain(e)}") from e
        proto = onnx.load(raw)  # pulls the external .onnx.data back in
    _gap_rewrite(proto)
    onnx.save(proto, str(path))
    if check:
        check_parity(model, OrtModel(path), x, atol=atol, what=f"ONNX export {path.name}")
    return path


def export_pt2(model: nn.Module, path: str | Path, *, example: torch.Tensor | None = None,
               dynamic_batch: bool = True, check: bool = True, atol: float = 1e-4) -> Path:
    """Write a ``torch.export`` program (BN folded) as ``.pt2`` and check the reloaded file."""
    x = _example(model, example)
    program = _export_program(prepare_for_export(model), x, dynamic_batch)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, str(path))
    if check:
        check_parity(model, load_pt2(path), x, atol=atol, what=f".pt2 export {path.name}")
    return path


def load_pt2(path: str | Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """Load a ``.pt2`` written by :func:`export_pt2` as a callable (only load files you trust)."""
    module = torch.export.load(str(path)).module()

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return module(x)

    return run


def _session_options(threads: int | None = None) -> Any:
    """SessionOptions tuned for these machines.

    Graph optimisation level ALL (BN/activation fusion and the NCHWc layout), ``threads`` intra-op
    threads (default: torch's), one inter-op thread, and no spin-waiting: spinning ORT threads steal
    the cores from whatever runs next (measured: torch eager 10× slower right after an ORT call).
    """
    ort = require("onnxruntime")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads or torch.get_num_threads()
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


class OrtModel:
    """An ONNX file as a callable on torch tensors (what :func:`effnet.optimize_for_inference` returns).

    With ``plans=True`` (the default) this is effnet's ORT engine (:mod:`effnet.deploy.ort_plan`): a model
    with squeeze-excitation runs each batch size through an SE-folded plan of ORT's graph (no layout
    reorders around SE; each plan checked against plain ORT on its first run), and a batch of at
    least ``threads`` images is split across ``threads`` single-threaded sessions run at once.
    ``plans=False`` is plain ONNX Runtime with ``threads`` intra-op threads (the benchmarks' peer).
    """

    def __init__(self, path: str | Path, *, threads: int | None = None, plans: bool = True) -> None:
        from effnet.deploy.ort_plan import PlannedSession, SplitSession

        require("onnxruntime")
        self.path = Path(path)
        self.plans = plans
        if not self.path.is_file():
            raise EffnetError(f"no ONNX file at {self.path}; write one with `effnet export` or effnet.export_onnx")
        n = threads or torch.get_num_threads()
        self.session: PlannedSession | SplitSession
        try:
            if not plans:
                self.session = PlannedSession(path, lambda: _session_options(n), max_plans=0)
            elif n > 1:
                self.session = SplitSession(path, _session_options, n)
            else:
                self.session = PlannedSession(path, lambda: _session_options(1))
        except Exception as e:  # ORT's load errors: a truncated or non-ONNX file, an unknown operator
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise EffnetError(f"ONNX Runtime cannot load {self.path}: {first[:300]}") from e

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(x.detach().to(torch.float32).contiguous().numpy()))

    def __repr__(self) -> str:
        return f"OrtModel({str(self.path)!r}, plans={self.plans})"
