"""effnet's ONNX Runtime engine: batch-specialised plans that keep squeeze-excitation in ORT's
blocked layout, and batches split across single-threaded sessions.

Why this exists: ONNX Runtime's NCHWc pass (what makes its CPU convolutions fast) cannot apply a
``Mul`` of an ``[N, C, H, W]`` feature map by an ``[N, C, 1, 1]`` gate in the blocked layout, so
around every SE block it converts the expanded feature map back to NCHW, multiplies, and converts
it again (docs/performance-notes.md). Measured with ORT's profiler on B0 at batch 16 those two
reorders and the Mul are 16 % of the kernel time.

effnet rewrites ORT's *own* optimised graph: the gate multiply becomes a depthwise 1×1 NCHWc
convolution whose weights are the gate. The gate differs per image and a convolution's weights do
not, so the batch is folded into the channels: a blocked ``[N, C, H, W]`` tensor with C a whole
number of blocks is the same memory as a blocked ``[1, N·C, H, W]`` one, and a blocked
``[N, C, 1, 1]`` gate is the same memory as ``[N·C, 1, 1, 1]`` depthwise weights. Nothing leaves the
blocked layout and the result is bit-for-bit the same multiply. Because a convolution's group count
is an attribute, a plan serves one batch size; :class:`PlannedSession` builds one on the first call
with a batch size (about 50 ms for B0), checks its first output against the unmodified session, and
keeps the last few.

:class:`SplitSession` adds data parallelism: a batch is split across one single-threaded session
per core, which avoids ORT's thread synchronisation after each of EfficientNet's many small operators.

The optimised graph is specific to this CPU (its block size: 16 with AVX-512, 8 with AVX2), which is
why plans are built at run time from the portable ``.onnx`` file and never saved.
"""

from __future__ import annotations

import collections
import os
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PlannedSession", "SplitSession", "fold_se_gates", "optimized_graph"]

_NCHWC = "com.microsoft.nchwc"
_MAX_PLANS = 4
# single-input ops that keep a blocked tensor's shape (ORT runs them on NCHWc data as is)
_ELEMENTWISE = {"QuickGelu", "Sigmoid", "Relu", "Tanh", "HardSigmoid", "LeakyRelu", "Clip"}


def _optimized_session(path: str | Path, session_options: Any) -> tuple[Any, Any]:
    """An ORT session on ``path`` and the fully optimised graph it built (NCHWc nodes, fused
    BN/activations) as a ModelProto, or None where ORT's saved graph cannot be read back: one graph
    optimisation serves both. A missing or corrupt model raises ORT's error, as a plain session does."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="effnet-ort-") as tmp:
        out = os.path.join(tmp, "optimized.onnx")
        session_options.optimized_model_filepath = out
        session = ort.InferenceSession(str(path), session_options, providers=["CPUExecutionProvider"])
        try:
            return session, onnx.load(out)
        except Exception:  # an ORT or onnx version whose saved graph does not load
            return session, None


def optimized_graph(path: str | Path, session_options: Any) -> Any:
    """ORT's fully optimised graph of ``path`` (NCHWc nodes, fused BN/activations) as a ModelProto."""
    graph = _optimized_session(path, session_options)[1]
    if graph is None:
        raise RuntimeError(f"ONNX Runtime's optimised graph of {path} cannot be read back")
    return graph


def _shapes(proto: Any) -> dict[str, list[int | str]]:
    g = proto.graph
    return {v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]
            for v in [*g.value_info, *g.input, *g.output]}


class _Graph:
    """Look-ups over one ONNX graph that the SE rewrite needs: producers, users, shapes, initializers,
    and shape constants added once each."""

    def __init__(self, proto: Any) -> None:
        self.g = proto.graph
        self.shapes = _shapes(proto)
        self.inits = {i.name: i for i in self.g.initializer}
        self.producer = {o: n for n in self.g.node for o in n.output}
        self.users: dict[str, list[Any]] = collections.defaultdict(list)
        for n in self.g.node:
            for i in n.input:
                self.users[i].append(n)
        self._consts: dict[tuple[int, ...], str] = {}

    def const(self, values: list[int]) -> str:
        from onnx import numpy_helper

        key = tuple(values)
        if key not in self._consts:
            t = numpy_helper.from_array(np.array(values, dtype=np.int64), name=f"effnet_se_shape_{len(self._consts)}")
            self.g.initializer.append(t)
            self._consts[key] = t.name
        return self._consts[key]

    def reorder_output(self, name: str) -> Any:
        n = self.producer.get(name)
        return n if n is not None and n.op_type == "ReorderOutput" and n.domain == _NCHWC else None

    def blocked_channels(self, name: str) -> int | None:
        """C' of a blocked tensor: the padded output count of the NCHWc conv that made it (through
        elementwise activations), read from the conv's reordered weights."""
        for _ in range(4):
            n = self.producer.get(name)
            if n is None:
                return None
            if n.op_type == "Conv" and n.domain == _NCHWC:
                w = self.inits.get(n.input[1])
                return int(w.dims[0]) if w is not None else None
            if n.op_type not in _ELEMENTWISE or len(n.input) != 1:
                return None
            name = n.input[0]
        return None

    def match_gate(self, mul: Any) -> tuple[Any, Any, Any, int] | None:
        """(feature map's ReorderOutput, gate producer, the ReorderInput after the Mul, C') when ``mul``
        is an SE gate multiply the rewrite can fold, else None."""
        if mul.op_type != "Mul" or mul.domain not in ("", "ai.onnx") or len(mul.input) != 2:
            return None
        after = self.users[mul.output[0]]
        if len(after) != 1 or after[0].op_type != "ReorderInput" or after[0].domain != _NCHWC:
            return None
        sides = [(self.producer.get(i), self.shapes.get(i)) for i in mul.input]
        if any(n is None or s is None or len(s) != 4 for n, s in sides):
            return None
        (x_ro, x_shape), (gate, g_shape) = sorted(sides, key=lambda side: side[1][2:] == [1, 1])
        if (g_shape[2:] != [1, 1] or x_shape[2:] == [1, 1] or x_shape[1] != g_shape[1]
                or x_ro.op_type != "ReorderOutput" or x_ro.domain != _NCHWC):
            return None
        padded = self.blocked_channels(x_ro.input[0])
        return None if padded is None else (x_ro, gate, after[0], padded)


def _gate_conv(graph: _Graph, mul: Any, x_ro: Any, gate: Any, after: Any, padded: int, batch: int,
               ) -> tuple[list[Any], Any]:
    """The nodes that replace one SE multiply, and the gate's ReorderOutput (None if it had none)."""
    from onnx import helper

    xr, wr, yr = (f"{mul.output[0]}_effnet_{s}" for s in ("x", "w", "y"))
    added = []
    g_ro = graph.reorder_output(gate.output[0])
    if g_ro is not None:  # the gate is already blocked before ORT reorders it for the Mul
        g_blocked = g_ro.input[0]
    else:  # an NCHW gate ([N, C, 1, 1]: a few floats per image) is blocked here
        g_blocked = f"{mul.output[0]}_effnet_g"
        added.append(helper.make_node("ReorderInput", [gate.output[0]], [g_blocked], domain=_NCHWC,
                                      channels_last=0))
    if batch == 1:  # [1, C', H, W] already is the folded shape: no reshapes (5 µs each at batch 1)
        xr, yr = x_ro.input[0], after.output[0]
    else:
        added += [helper.make_node("Reshape", [x_ro.input[0], graph.const([1, -1, 0, 0])], [xr]),
                  helper.make_node("Reshape", [yr, graph.const([batch, -1, 0, 0])], [after.output[0]])]
    added += [
        helper.make_node("Reshape", [g_blocked, graph.const([-1, 1, 1, 1])], [wr]),
        helper.make_node("Conv", [xr, wr], [yr], domain=_NCHWC, group=batch * padded, kernel_shape=[1, 1],
                         strides=[1, 1], pads=[0, 0, 0, 0], dilations=[1, 1]),
    ]
    return added, g_ro


def fold_se_gates(proto: Any, batch: int) -> int:
    """Rewrite, in place, every ``ReorderOutput(x) · ReorderOutput(gate) → ReorderInput`` of ORT's
    optimised graph into ``Reshape → depthwise 1×1 NCHWc Conv(weights = gate) → Reshape`` for
    ``batch`` images. Returns the number of gates rewritten (0: nothing to gain, leave it alone).

    A Mul qualifies only when ORT's recorded shapes say one side is ``[N, C, H, W]`` and the other
    ``[N, C, 1, 1]``, the feature map is reordered out of an NCHWc convolution's output (whose
    weights give the padded channel count C' the blocked tensor really has), and the product goes
    straight back into the blocked layout."""
    graph = _Graph(proto)
    removed: set[int] = set()
    added: list[Any] = []
    count = 0
    for mul in graph.g.node:
        found = graph.match_gate(mul)
        if found is None:
            continue
        x_ro, gate, after, padded = found
        nodes, g_ro = _gate_conv(graph, mul, x_ro, gate, after, padded, batch)
        added += nodes
        count += 1
        removed |= {id(mul), id(after)}
        for ro in (x_ro, g_ro):
            if ro is not None and all(id(u) in removed for u in graph.users[ro.output[0]]):
                removed.add(id(ro))
    if count:
        _replace_nodes(graph.g, [n for n in graph.g.node if id(n) not in removed] + added)
    return count


def _replace_nodes(g: Any, nodes: list[Any]) -> None:
    """Set ``g``'s nodes to ``nodes`` in topological order (ONNX requires it)."""
    ready = {i.name for i in g.input} | {i.name for i in g.initializer} | {""}
    ordered: list[Any] = []
    while nodes:
        rest = []
        for n in nodes:
            if all(i in ready for i in n.input):
                ordered.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(nodes):
            raise RuntimeError("SE gate rewrite left a node whose inputs are never produced")
        nodes = rest
    seen: set[str] = set()
    for i, n in enumerate(ordered):  # ORT saves fused nodes under one name; a loaded model needs unique ones
        if n.name in seen or not n.name:
            n.name = f"effnet_node_{i}"
        seen.add(n.name)
    del g.node[:]
    g.node.extend(ordered)


class PlannedSession:
    """An ORT session that runs each batch size through its own SE-folded plan when the model has
    SE gates, and through the plain session otherwise (or when a plan fails its check).

    Args:
        path: the ``.onnx`` file.
        session_options: a factory for the ``SessionOptions`` to use (threads, spinning).
        max_plans: batch sizes kept (each plan holds a copy of the weights); 0 runs plain ORT only.
        like: another PlannedSession of the same file whose plain session (the reference every plan
            is checked against, and the fallback) and optimised graph this one shares, so a shard of
            :class:`SplitSession` costs no second copy of them.
    """

    def __init__(self, path: str | Path, session_options: Any, *, max_plans: int = _MAX_PLANS,
                 like: PlannedSession | None = None) -> None:
        import onnxruntime as ort

        self._ort = ort
        self._options = session_options
        self._plans: collections.OrderedDict[int, Any] = collections.OrderedDict()
        self._max_plans = max_plans
        self._lock = threading.Lock()
        if like is not None and like.gates:
            self.plain, self.input_name, self.gates, self._graph = like.plain, like.input_name, like.gates, like._graph
            return
        self.gates = 0
        self._graph: Any = None
        if max_plans > 0 and like is None:  # (like without gates: nothing to plan)
            # the plain session saves the graph it optimised: the plans start from that
            self.plain, graph = _optimized_session(path, session_options())
            try:
                if graph is None:
                    raise RuntimeError("ONNX Runtime's saved graph cannot be read back")
                probe = type(graph)()
                probe.CopyFrom(graph)
                self.gates = fold_se_gates(probe, 1)
                self._graph = graph if self.gates else None
            except Exception as e:  # an ORT or onnx version whose optimised graph we cannot read
                warnings.warn(f"effnet: SE-gate plans disabled for {Path(path).name}: {e}", stacklevel=2)
        else:
            self.plain = ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])
        self.input_name = self.plain.get_inputs()[0].name

    def _plan(self, batch: int) -> Any:
        with self._lock:
            if batch in self._plans:
                self._plans.move_to_end(batch)
                return self._plans[batch]
        proto = type(self._graph)()
        proto.CopyFrom(self._graph)
        fold_se_gates(proto, batch)
        opts = self._options()
        opts.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            session = self._ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        except Exception as e:
            warnings.warn(f"effnet: SE-gate plan for batch {batch} failed to load ({e}); using the plain session",
                          stacklevel=3)
            session = None
        with self._lock:
            self._plans[batch] = session
            while len(self._plans) > self._max_plans:
                self._plans.popitem(last=False)
        return session

    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits (the first output) for the NCHW float32 array ``x``."""
        feed = {self.input_name: x}
        if self._graph is None:
            return self.plain.run(None, feed)[0]
        batch = int(x.shape[0])
        fresh = batch not in self._plans
        session = self._plan(batch)
        if session is None:
            return self.plain.run(None, feed)[0]
        out = session.run(None, feed)[0]
        if fresh:  # the first output of every plan is checked against the unmodified graph
            ref = self.plain.run(None, feed)[0]
            err = float(np.abs(out - ref).max()) if out.shape == ref.shape else float("inf")
            if not err <= 1e-5 * max(1.0, float(np.abs(ref).max())):
                warnings.warn(f"effnet: SE-gate plan for batch {batch} differs from ORT's graph by {err:.2e}; "
                              "using the plain session", stacklevel=2)
                with self._lock:
                    self._plans[batch] = None
                return ref
        return out


class SplitSession:
    """Data-parallel inference on one machine: a batch of at least ``threads`` images is split into
    ``threads`` shards, each run by its own single-threaded session at the same time; smaller
    batches go to one ``threads``-threaded session.

    Why: ORT parallelises inside each operator and synchronises its threads after every one of
    EfficientNet's ~250 small operators; a single-threaded session per core never waits. Measured on
    these 2-core machines (B0 @224, SE plans in both): +7 % at batch 16, +11 % at batch 2 over one
    2-thread session. ORT releases the GIL while it runs, so Python threads suffice.
    """

    def __init__(self, path: str | Path, session_options: Any, threads: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.threads = threads
        self.whole = PlannedSession(path, lambda: session_options(threads))
        self.shards = [PlannedSession(path, lambda: session_options(1), like=self.whole) for _ in range(threads)]
        self.input_name, self.gates = self.whole.input_name, self.whole.gates
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="effnet-ort")

    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits (the first output) for the NCHW float32 array ``x``."""
        if x.shape[0] < self.threads:
            return self.whole.run(x)
        parts = np.array_split(x, self.threads)
        jobs = self._pool.map(lambda job: job[0].run(job[1]), zip(self.shards, parts, strict=True))
        return np.concatenate(list(jobs))
