"""SE-folded ONNX Runtime plans: the rewrite removes the layout reorders around every SE gate,
gives the same logits as plain ORT and eager for each batch size, leaves models without SE alone,
and falls back to plain ORT (with a warning) when a plan does not match."""

from __future__ import annotations

import collections
import warnings

import numpy as np
import pytest
import torch

from effnet.errors import EffnetError
from effnet.registry import create_model
from helpers import randomize_bn

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
onnx = pytest.importorskip("onnx")

from effnet.deploy.export import OrtModel, _session_options, export_onnx  # noqa: E402
from effnet.deploy.ort_plan import PlannedSession, SplitSession, fold_se_gates, optimized_graph  # noqa: E402

NCHWC = "com.microsoft.nchwc"


@pytest.fixture(scope="module")
def b0_onnx(tmp_path_factory):
    model = randomize_bn(create_model("efficientnet_b0", num_classes=10))
    path = export_onnx(model, tmp_path_factory.mktemp("b0") / "b0.onnx", example=torch.randn(2, 3, 96, 96))
    graph = optimized_graph(path, _session_options(1))
    if not any(n.domain == NCHWC for n in graph.graph.node):
        pytest.skip("this CPU has no NCHWc kernels in ONNX Runtime (needs AVX2 or AVX-512)")
    return model, path, graph


def _ops(proto) -> collections.Counter:
    return collections.Counter(n.op_type for n in proto.graph.node)


def _through_reshapes(name: str, step, onward) -> list:
    """The nodes reached from tensor ``name`` by ``step`` (to producers or users), skipping the plan's
    own Reshapes (``onward`` names the tensor a Reshape leads on to)."""
    out = []
    for n in step(name):
        out += _through_reshapes(onward(n), step, onward) if n.op_type == "Reshape" else [n]
    return out


def test_fold_removes_the_reorders_around_every_se_gate(b0_onnx):
    """Structural, so that it holds on every CPU: ORT's NCHWc block is 16 floats with AVX-512 and 8
    with AVX2, and where a gate stays NCHW the plan blocks it with a ReorderInput of its own (a few
    floats per image). What must hold everywhere: no Mul is left, every SE block has one gate conv,
    and no layout reorder touches the feature map on either side of a gate."""
    _, _, graph = b0_onnx
    before = _ops(graph)
    assert before["Mul"] == 16 and before["ReorderOutput"] >= 32  # ORT's own graph: NCHW Mul per SE block
    folded = type(graph)()
    folded.CopyFrom(graph)
    assert fold_se_gates(folded, 4) == 16
    after = _ops(folded)
    assert after["Mul"] == 0
    assert after["ReorderOutput"] <= before["ReorderOutput"] - 16  # at least each feature map's
    producer = {o: n for n in folded.graph.node for o in n.output}
    users = collections.defaultdict(list)
    for n in folded.graph.node:
        for i in n.input:
            users[i].append(n)
    gates = [n for n in folded.graph.node if n.op_type == "Conv" and n.domain == NCHWC
             and any(a.name == "group" and a.i > 1 and a.i % 4 == 0 for a in n.attribute)
             and n.input[1].endswith("_effnet_w")]
    assert len(gates) == 16  # one batch-folded depthwise gate conv per SE block, group = 4 · C'
    reorders = {"ReorderInput", "ReorderOutput"}
    for gate in gates:
        sources = _through_reshapes(gate.input[0], lambda o: [producer[o]] if o in producer else [],
                                    lambda n: n.input[0])
        sinks = _through_reshapes(gate.output[0], lambda o: users[o], lambda n: n.output[0])
        assert sources and sinks
        assert not any(n.op_type in reorders for n in sources + sinks), gate.name
    names = [n.name for n in folded.graph.node]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_plans_match_plain_ort_and_eager(b0_onnx, batch):
    model, path, _ = b0_onnx
    planned, plain = OrtModel(path, threads=1), OrtModel(path, threads=1, plans=False)
    assert planned.session.gates == 16 and plain.session.gates == 0
    x = torch.randn(batch, 3, 96, 96)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a plan that failed its check would warn
        out = planned(x)
        again = planned(x)  # the cached plan, no re-check
    assert planned.session._plans[batch] is not None
    torch.testing.assert_close(out, plain(x), rtol=0, atol=1e-6)
    torch.testing.assert_close(again, out, rtol=0, atol=0)
    with torch.no_grad():
        ref = model(x)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-4 * max(1.0, float(ref.abs().max())))


@pytest.mark.parametrize("batch", [1, 2, 5])
def test_split_batches_run_in_single_threaded_shards_and_match(b0_onnx, batch):
    _, path, _ = b0_onnx
    runner = OrtModel(path, threads=2)
    split = runner.session
    assert isinstance(split, SplitSession) and split.gates == 16
    assert all(shard.plain is split.whole.plain for shard in split.shards)  # one reference, no extra copies
    x = torch.randn(batch, 3, 96, 96)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = runner(x)
    torch.testing.assert_close(out, OrtModel(path, threads=1, plans=False)(x), rtol=0, atol=1e-6)
    if batch >= 2:  # shards of ceil/floor(batch / 2) images, each through its own plan
        sizes = sorted(len(part) for part in np.array_split(np.arange(batch), 2))
        assert sorted(k for shard in split.shards for k, plan in shard._plans.items() if plan) == sizes
        assert not split.whole._plans
    else:
        assert list(split.whole._plans) == [1]


def test_a_model_without_se_runs_plain(tmp_path):
    path = export_onnx(randomize_bn(create_model("mobilenetv2", num_classes=10)), tmp_path / "m.onnx",
                       example=torch.randn(2, 3, 64, 64))
    runner = OrtModel(path, threads=2)
    assert runner.session.gates == 0
    assert all(shard.plain is not runner.session.whole.plain for shard in runner.session.shards)
    x = torch.randn(3, 3, 64, 64)
    torch.testing.assert_close(runner(x), OrtModel(path, threads=1, plans=False)(x), rtol=0, atol=1e-6)


def test_a_plan_that_disagrees_falls_back_to_plain_ort(b0_onnx, monkeypatch):
    _, path, _ = b0_onnx
    session = PlannedSession(path, lambda: _session_options(1))
    real = session._plan

    class Wrong:
        def run(self, names, feed):
            out = real(next(iter(feed.values())).shape[0]).run(names, feed)
            return [out[0] + 1.0]

    monkeypatch.setattr(session, "_plan", lambda batch: Wrong())
    x = np.random.default_rng(0).standard_normal((2, 3, 96, 96)).astype(np.float32)
    with pytest.warns(UserWarning, match="differs from ORT's graph"):
        out = session.run(x)
    np.testing.assert_array_equal(out, session.plain.run(None, {session.input_name: x})[0])
    assert session._plans[2] is None  # the batch size stays on the plain session


@pytest.mark.parametrize("plans", [True, False])
def test_a_missing_or_corrupt_file_is_named_without_a_plan_warning(tmp_path, plans):
    with pytest.raises(EffnetError, match=r"no ONNX file at .*nope\.onnx.*effnet export"):
        OrtModel(tmp_path / "nope.onnx", plans=plans)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the load error itself, not "SE-gate plans disabled"
        with pytest.raises(EffnetError, match=r"ONNX Runtime cannot load .*bad\.onnx"):
            OrtModel(bad, threads=2, plans=plans)
