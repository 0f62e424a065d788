"""Training-step benchmark: step time side by side in one process, peak memory in fresh processes.

Why two kinds of run: step times drift between processes on these machines, so they are compared
interleaved in one process; peak memory (VmHWM) only grows within a process, so each
variant's memory is measured in its own subprocess as peak RSS minus the RSS before the first step
(model, optimizer and batch already built), which is what the step itself adds.

A step is forward + cross-entropy + backward + SGD with momentum, on random images and labels.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from effnet.deploy.bench import PEERS
from effnet.deploy.timing import interleaved_times, medians, peak_rss_bytes, rss_bytes

__all__ = ["VARIANTS", "Variant", "measure_memory", "run_train_bench", "time_steps"]


@dataclass(frozen=True)
class Variant:
    """One way to run a training step."""

    source: str  # "effnet" | "timm"
    channels_last: bool = False
    amp: str = "none"  # none | bf16
    grad_checkpointing: bool = False

    @property
    def label(self) -> str:
        parts = [self.source, "CL" if self.channels_last else "NCHW", "bf16" if self.amp == "bf16" else "fp32"]
        return " ".join(parts + (["grad-ckpt"] if self.grad_checkpointing else []))


VARIANTS = {
    "timm": Variant("timm"),
    "effnet-fp32": Variant("effnet"),
    # effnet's lean training setting: channels_last + bf16 autocast (docs/performance-notes.md, Training)
    "effnet": Variant("effnet", channels_last=True, amp="bf16"),
    "effnet-ckpt": Variant("effnet", channels_last=True, amp="bf16", grad_checkpointing=True),
}


def _model(name: str, phi: float | None, v: Variant) -> nn.Module:
    if v.source == "timm":
        import timm

        model = timm.create_model(PEERS[name][0] or name, pretrained=False)
        if v.grad_checkpointing:
            model.set_grad_checkpointing(True)
    else:
        from effnet.registry import create_model

        model = create_model(name, phi=phi)
        if v.grad_checkpointing:
            model.set_grad_checkpointing(True)  # type: ignore[union-attr]
    if v.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model.train()


def make_step(name: str, phi: float | None, v: Variant, batch: int, resolution: int) -> Callable[[], float]:
    """A closure running one training step of ``v``; returns the loss (so the work is not elided)."""
    model = _model(name, phi, v)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, resolution, resolution)
    if v.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,))

    def step() -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=v.amp == "bf16"):
            loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def time_steps(steps: dict[str, Callable[[], float]], *, rounds: int = 3, warmup: int = 1) -> dict[str, float]:
    """Median seconds per step of each variant, interleaved and shuffled like every effnet timing."""
    return medians(interleaved_times(steps, rounds=rounds, warmup=warmup))


def _worker(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    step = make_step(args.model, args.phi, Variant(**json.loads(args.variant)), args.batch, args.resolution)
    base = rss_bytes()
    for _ in range(args.steps):
        step()
    peak = peak_rss_bytes()
    print(json.dumps({"baseline": base, "peak": peak, "delta": peak - base}))


def measure_memory(name: str, phi: float | None, v: Variant, *, batch: int, resolution: int, threads: int,
                   steps: int = 2) -> dict[str, int]:
    """Peak RSS added by ``steps`` training steps of ``v``, in a fresh process (bytes)."""
    cmd = [sys.executable, "-m", "effnet.deploy.trainbench", "--model", name, "--batch", str(batch), "--resolution",
           str(resolution), "--threads", str(threads), "--steps", str(steps),
           "--variant", json.dumps(v.__dict__)] + ([] if phi is None else ["--phi", str(phi)])
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"memory worker failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_train_bench(args: argparse.Namespace) -> int:
    """``effnet bench MODEL --train``: step time (interleaved) and peak memory (subprocesses) of
    timm eager, effnet fp32, effnet's lean default, and with ``--grad-checkpointing`` its checkpointed form."""
    from effnet.catalog import get_spec
    from effnet.deploy.memory import estimate_train_memory
    from effnet.textfmt import table

    batch = int(args.batch.split(",")[-1]) if args.batch != "1,16" else 32
    spec = get_spec(args.model, phi=args.phi)
    names = ["timm", "effnet-fp32", "effnet"] + (["effnet-ckpt"] if args.grad_checkpointing else [])
    if args.model not in PEERS or args.phi is not None:
        names.remove("timm")
    steps = {n: make_step(args.model, args.phi, VARIANTS[n], batch, spec.resolution) for n in names}
    times = time_steps(steps, rounds=args.rounds)
    del steps
    rows, data = [], []
    base = times[names[0]]
    for n in names:
        v = VARIANTS[n]
        mem = measure_memory(args.model, args.phi, v, batch=batch, resolution=spec.resolution,
                             threads=torch.get_num_threads())
        est = None
        if v.source == "effnet":
            e = estimate_train_memory(spec, batch, amp=v.amp, channels_last=v.channels_last,
                                      grad_checkpointing=v.grad_checkpointing)
            est = e.total - e.weights
        data.append({"variant": v.label, "step_s": times[n], "images_per_s": batch / times[n],
                     "speedup": base / times[n], "memory_bytes": mem["delta"], "estimate_bytes": est})
        rows.append([v.label, f"{times[n]:.2f}", f"{batch / times[n]:.1f}", f"{base / times[n]:.2f}",
                     f"{mem['delta'] / 2**20:.0f}", "-" if est is None else f"{est / 2**20:.0f}",
                     "-" if est is None else f"{100 * (est / mem['delta'] - 1):+.0f}%"])
    if args.json:
        print(json.dumps({"model": args.model, "batch": batch, "rows": data}, indent=2))
    else:
        print(f"{args.model} training step, batch {batch} @{spec.resolution}, {torch.get_num_threads()} threads, "
              f"SGD momentum; times: medians of {args.rounds} interleaved steps; memory: peak RSS added by a "
              "step, fresh process each")
        print(table(["variant", "step s", "img/s", f"x {VARIANTS[names[0]].label}", "peak MB", "estimate MB",
                     "est. error"], rows))
    return 0


def main() -> None:
    p = argparse.ArgumentParser(description="memory worker for effnet.deploy.trainbench (internal)")
    p.add_argument("--model", required=True)
    p.add_argument("--phi", type=float)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--resolution", type=int, required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--variant", required=True)
    _worker(p.parse_args())


if __name__ == "__main__":
    main()
