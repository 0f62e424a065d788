"""Time two (or more) NAS winners side by side: the proxies their ``baseline.json`` files hold, in one
process, interleaved rounds, medians (docs/nas.md, "latency-aware against FLOPs-aware").

    .venv/bin/python benchmarks/nas_latency_pair.py runs/nas-lat2/baseline.json runs/nas-macs2/baseline.json

Latencies timed inside a search run beside training and other trials; only figures taken side by side
on a quiet machine compare two networks. ONNX Runtime, 1 thread (what ``effnet nas`` times), batch 1,
one input channel and 10 classes as the Fashion-MNIST proxies.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

from effnet.deploy.bench import run_side_by_side
from effnet.deploy.inference import optimize_for_inference
from effnet.deploy.machine import describe
from effnet.macs import estimate_cost
from effnet.registry import create_model
from effnet.spec import NetworkSpec


def _stages(spec: NetworkSpec) -> str:
    return ", ".join(f"{s.block}{s.expand_ratio:g} k{s.kernel_size}x{s.repeats}/{s.out_channels}"
                     + (" SE" if s.se_ratio else "") for s in spec.stages)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("baselines", nargs="+", type=Path, help="baseline.json files written by effnet nas")
    p.add_argument("--rounds", type=int, default=15)
    args = p.parse_args()
    torch.set_num_threads(1)
    specs = {str(f): NetworkSpec.from_dict(json.loads(f.read_text())["proxy_spec"]) for f in args.baselines}
    engines = {k: optimize_for_inference(create_model(s, num_classes=10, in_chans=1),
                                         example=torch.randn(2, 1, s.resolution, s.resolution), engine="onnxruntime")
               for k, s in specs.items()}
    r = {s.resolution for s in specs.values()}
    if len(r) != 1:
        raise SystemExit(f"the proxies have different resolutions {sorted(r)}; time them separately")
    res = r.pop()
    times = run_side_by_side(engines, torch.randn(1, 1, res, res), rounds=args.rounds, inner=20, warmup=10)
    print(describe())
    for k, s in specs.items():
        c = estimate_cost(s, num_classes=10, in_chans=1)
        print(f"{k}: {1e3 * statistics.median(times[k]):.3f} ms/img (median of {args.rounds} rounds), "
              f"MACs {c.macs / 1e6:.2f}M, params {c.params / 1e6:.3f}M, "
              f"{sum(st.repeats for st in s.stages)} blocks: {_stages(s)}")


if __name__ == "__main__":
    main()
