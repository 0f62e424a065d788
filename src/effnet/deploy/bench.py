"""Inference benchmarks: effnet's paths and the peers (timm, torchvision, ONNX Runtime and OpenVINO on
timm's export) timed side by side in one process.

Why side by side: these 2-core machines drift by up to 1.5× between processes but stay within
5–10 % inside one (reference/performance.md). So every contender runs in the same process, in
interleaved rounds (each round runs every contender ``inner`` times), after a warm-up, and the
figure reported is the median over rounds. Ratios between contenders are the robust output; the
absolute images/s move with whatever else runs on the machine.

Achieved GFLOP/s counts 2 FLOPs per multiply-add of effnet's analytic MAC count, and is set against
the fp32 matmul peak measured in the same process (the machine's compute limit for dense work).
"""

from __future__ import annotations

import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from effnet.deploy.timing import interleaved_times, peak_rss_bytes
from effnet.errors import EffnetError
from effnet.plots import pyplot, save_figure

__all__ = ["BenchRow", "effnet_contenders", "matmul_peak", "peer_contenders", "run_side_by_side"]

Runner = Callable[[torch.Tensor], Any]

# effnet name → (timm name, torchvision name); only published presets have peers.
PEERS: dict[str, tuple[str | None, str | None]] = {
    **{f"efficientnet_b{i}": (f"efficientnet_b{i}", f"efficientnet_b{i}") for i in range(8)},
    **{f"efficientnet_lite{i}": (f"tf_efficientnet_lite{i}", None) for i in range(5)},
    "mobilenetv2": ("mobilenetv2_100", "mobilenet_v2"),
    "resnet18": ("resnet18", "resnet18"), "resnet34": ("resnet34", "resnet34"),
    "resnet50": ("resnet50", "resnet50"),
}


@dataclass
class BenchRow:
    """One contender at one batch size."""

    label: str
    batch: int
    dtype: str
    ms_per_batch: float
    images_per_s: float
    gflops: float  # achieved, 2·MACs·images/s
    peak_fraction: float  # of the measured fp32 matmul peak
    max_error: float | None = None  # |Δlogit| against effnet eager fp32 (None: a peer)
    ratio: float = float("nan")  # images/s over the baseline contender's
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def matmul_peak(n: int = 1024, repeats: int = 5) -> float:
    """fp32 ``torch.matmul`` GFLOP/s at the current thread count (median of ``repeats``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        torch.matmul(a, b)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def _cl(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def _torch_runner(model: nn.Module, *, channels_last: bool, dtype: torch.dtype | None = None,
                  autocast: bool = False) -> Runner:
    model = model.eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if dtype is not None:
        model = model.to(dtype)

    def run(x: torch.Tensor) -> torch.Tensor:
        x = _cl(x) if channels_last else x
        if dtype is not None:
            x = x.to(dtype)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return model(x)

    return run


def effnet_contenders(model: nn.Module, example: torch.Tensor, *, dtype: str = "fp32",
                      engines: tuple[str, ...] = ("eager", "onnxruntime"), workdir: str | Path | None = None,
                      calibration: torch.Tensor | None = None, bf16_guard: float = 0.0) -> dict[str, Any]:
    """effnet's inference paths for ``model``, each verified (see :mod:`effnet.deploy.inference`). The bf16
    near-tie guard is off by default here: with random weights nearly every row is a near-tie."""
    from effnet.deploy.inference import _verify, build_engine

    out: dict[str, Any] = {}
    for engine in engines:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cand = build_engine(model, engine, dtype=dtype, example=example, workdir=workdir,
                                calibration=calibration, bf16_guard=bf16_guard)
            out[f"effnet {engine} {dtype}"] = _verify(model, cand, example)
    return out


def _timm_onnx(model: nn.Module, example: torch.Tensor, workdir: Path) -> Path:
    """timm's model exported as is (dynamo exporter, dynamic batch): what the ONNX peers run."""
    path = workdir / "timm.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (example,), str(path), dynamo=True, optimize=True, verbose=False,
                          dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},))
    return path


def onnx_peers(path: Path, *, threads: int | None = None) -> dict[str, Runner]:
    """The runtimes' own best plain settings on a peer's ONNX file: ONNX Runtime (all graph
    optimisations, ``threads`` intra-op threads, no spinning) and, when installed, OpenVINO with its
    LATENCY hint (one stream over ``threads`` threads, fp32 precision stated: its default on an AMX CPU is
    bf16) for every batch size, as a user who sets one hint gets."""
    import importlib.util

    from effnet.deploy.export import OrtModel

    out: dict[str, Runner] = {"ORT on timm export fp32": OrtModel(path, plans=False, threads=threads)}
    if importlib.util.find_spec("openvino") is not None:
        from effnet.deploy.ov_engine import OvModel

        out["OpenVINO on timm export fp32"] = OvModel(path, threads=threads, split=False)
    return out


def peer_contenders(name: str, example: torch.Tensor, *, dtype: str = "fp32", onnx: bool = True,
                    workdir: str | Path | None = None) -> dict[str, Runner]:
    """The installed peers of the published model ``name``: timm eager (default layout and
    channels_last), ONNX Runtime and OpenVINO on timm's export (:func:`onnx_peers`), torchvision eager;
    for bf16 the torch bf16 paths (autocast and bf16 weights, channels_last)."""
    timm_name, tv_name = PEERS.get(name, (None, None))
    out: dict[str, Runner] = {}
    try:
        import timm
    except ImportError:
        timm = None
    if timm is not None and timm_name is not None:
        def make() -> nn.Module:
            return timm.create_model(timm_name, pretrained=False).eval()
        if dtype == "fp32":
            out["timm eager fp32"] = _torch_runner(make(), channels_last=False)
            out["timm channels_last fp32"] = _torch_runner(make(), channels_last=True)
            if onnx:
                work = Path(workdir or tempfile.mkdtemp(prefix="effnet-bench-"))
                out |= onnx_peers(_timm_onnx(make(), example, work))
        elif dtype == "bf16":
            out["timm autocast bf16 CL"] = _torch_runner(make(), channels_last=True, autocast=True)
            out["timm bf16 weights CL"] = _torch_runner(make(), channels_last=True, dtype=torch.bfloat16)
    try:
        import torchvision
    except ImportError:
        torchvision = None
    if torchvision is not None and tv_name is not None and dtype == "fp32":
        out["torchvision eager fp32"] = _torch_runner(torchvision.models.get_model(tv_name, weights=None),
                                                      channels_last=False)
    return out


def run_side_by_side(contenders: dict[str, Runner], x: torch.Tensor, *, rounds: int = 5, inner: int = 1,
                     warmup: int = 2) -> dict[str, list[float]]:
    """Seconds per call of each contender on ``x``: :func:`effnet.deploy.timing.interleaved_times`."""
    return interleaved_times({k: (lambda fn=fn: fn(x)) for k, fn in contenders.items()}, rounds=rounds,
                             inner=inner, warmup=warmup)


def rows_from_times(times: dict[str, list[float]], batch: int, *, macs: int, peak: float,
                    errors: dict[str, float | None], baseline: str | None = None) -> list[BenchRow]:
    """Median seconds → rows with images/s, achieved GFLOP/s and ratios to ``baseline``."""
    rows = []
    for label, ts in times.items():
        sec = statistics.median(ts)
        ips = batch / sec
        gflops = 2 * macs * ips / 1e9
        dtype = label.rsplit(" ", 1)[-1]
        rows.append(BenchRow(label, batch, dtype, 1000 * sec, ips, gflops, gflops / peak, errors.get(label)))
    base = next((r for r in rows if r.label == baseline), None)
    for r in rows:
        r.ratio = r.images_per_s / base.images_per_s if base else float("nan")
    return rows


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (:func:`effnet.deploy.timing.peak_rss_bytes`)."""
    return peak_rss_bytes() / 2**20


def _auto_contender(model: nn.Module, x: torch.Tensor, dtype: str, workdir: str,
                    calibration: torch.Tensor | None) -> tuple[str, Any]:
    """effnet's automatic choice for the input ``x`` (its batch size): label and the chosen engine."""
    from effnet.deploy.inference import optimize_for_inference

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast = optimize_for_inference(model, example=x, dtype=dtype, workdir=workdir, calibration=calibration,
                                      bf16_guard=0.0)
    return f"effnet auto={fast.engine} {fast.dtype}", fast


def _spread(ts: list[float]) -> float:
    return (max(ts) - min(ts)) / statistics.median(ts)


def bench_model(model: nn.Module, name: str | None, *, batches: tuple[int, ...] = (1, 16), dtype: str = "fp32",
                engines: tuple[str, ...] = ("auto",), peers: bool = False, rounds: int = 5,
                calibration: torch.Tensor | None = None) -> list[BenchRow]:
    """effnet's paths (and with ``peers`` the peers of ``name``) at each batch size, side by side.
    ``auto`` in ``engines`` is ``optimize_for_inference``'s choice for each batch size; its row carries
    the choice's report in ``extra["choice"]``. Every row carries the load average and CPU features."""
    from effnet.deploy.machine import cpu_features, load_average
    from effnet.macs import estimate_cost

    spec = getattr(model, "spec", None)
    if spec is None:
        raise EffnetError("bench needs an effnet model (it reads the resolution and MACs from model.spec)")
    macs = estimate_cost(spec).macs
    res, in_chans = spec.resolution, model.stem.conv.in_channels  # type: ignore[union-attr]
    peak = matmul_peak()
    rows: list[BenchRow] = []
    with tempfile.TemporaryDirectory(prefix="effnet-bench-") as tmp:
        example = torch.randn(max(2, max(batches)), in_chans, res, res)
        fixed = tuple(e for e in engines if e != "auto")
        ours = effnet_contenders(model, example[:2], dtype=dtype, engines=fixed, workdir=tmp,
                                 calibration=calibration) if fixed else {}
        errors: dict[str, float | None] = {k: v.max_error for k, v in ours.items()}
        theirs: dict[str, Runner] = {}
        if peers and name is not None and name in PEERS:
            theirs = peer_contenders(name, example[:2], dtype=dtype, workdir=tmp)
            errors |= dict.fromkeys(theirs)
        for b in batches:
            x = torch.randn(b, in_chans, res, res)
            auto: dict[str, Any] = {}
            if "auto" in engines:
                auto = dict([_auto_contender(model, x, dtype, tmp, calibration)])
            errors |= {k: v.max_error for k, v in auto.items()}
            contenders = {**theirs, **ours, **auto}
            times = run_side_by_side(contenders, x, rounds=rounds, inner=max(1, 8 // b))
            new = rows_from_times(times, b, macs=macs, peak=peak, errors=errors, baseline=next(iter(contenders)))
            for r in new:
                r.extra |= {"load_average": load_average(), "spread": _spread(times[r.label])}
                if r.label in auto:
                    r.extra["choice"] = auto[r.label].report()
            rows += new
    for r in rows:
        r.extra |= {"matmul_peak_gflops": peak, "peak_rss_mb": peak_rss_mb(), "cpu_features": cpu_features()}
    return rows


def bench_family(name: str, phis: list[float], *, engine: str = "eager", batch: int = 1,
                 rounds: int = 5) -> list[dict[str, Any]]:
    """Latency of ``engine`` across a compound-scaled family against each member's MACs: the
    data behind "FLOPs are not latency" (depthwise-heavy nets run far below the matmul peak)."""
    from effnet.deploy.inference import optimize_for_inference
    from effnet.macs import estimate_cost
    from effnet.registry import create_model

    out = []
    for phi in phis:
        model = create_model(name, phi=phi)
        spec = model.spec  # type: ignore[union-attr]
        x = torch.randn(batch, 3, spec.resolution, spec.resolution)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fast = optimize_for_inference(model, example=torch.randn(2, 3, spec.resolution, spec.resolution),
                                          engine=engine)
        sec = statistics.median(run_side_by_side({"m": fast}, x, rounds=rounds)["m"])
        macs = estimate_cost(spec).macs
        out.append({"phi": phi, "resolution": spec.resolution, "macs": macs, "ms": 1000 * sec,
                    "gflops": 2 * macs * batch / sec / 1e9})
    return out


def plot_family(points: list[dict[str, Any]], path: str | Path, *, title: str) -> None:
    """Latency against MACs, with the line latency would follow if it were proportional to MACs."""
    plt = pyplot()

    macs = [p["macs"] / 1e9 for p in points]
    ms = [p["ms"] for p in points]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(macs, ms, "o-", label="measured")
    ax.plot(macs, [ms[0] * m / macs[0] for m in macs], "--", color="gray", label="∝ MACs (from the first)")
    for p, x, y in zip(points, macs, ms, strict=True):
        ax.annotate(f"φ={p['phi']:g}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=8)
    ax.set_xlabel("GMACs")
    ax.set_ylabel("latency, ms")
    ax.set_title(title)
    ax.legend()
    save_figure(fig, path, dpi=120)
