"""Ten calls of ``optimize_for_inference(b0, example=x1)`` beside one competing CPU-bound process
(docs/engines.md, "the choice under load"):

1. with the choice cache off, so each call races the engines again under the load;
2. with a fresh cache: one call on the quiet machine first, then the ten calls under the load.

    .venv/bin/python benchmarks/choice_under_load.py [--model efficientnet_b0] [--part 1,2]

Run it on an otherwise quiet machine: the competing process is the only load it means to add.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

from effnet.deploy.inference import optimize_for_inference
from effnet.deploy.machine import describe
from effnet.registry import create_model


def _ten(model: torch.nn.Module, x: torch.Tensor, label: str) -> None:
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        picks = []
        for i in range(10):
            fast = optimize_for_inference(model, example=x)
            picks.append(fast.engine)
            c = fast.choice
            figures = ", ".join(f"{t.engine} {t.ms:.1f} ms" for t in c.timed) if c and not c.cached else "cached"
            print(f"{label} call {i + 1:2d}: {fast.engine:<12} ({figures}; {describe()})", flush=True)
    finally:
        burner.kill()
    print(f"{label}: {dict(Counter(picks))}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="efficientnet_b0")
    p.add_argument("--part", default="1,2")
    args = p.parse_args()
    torch.set_num_threads(2)
    model = create_model(args.model).eval()
    x1 = torch.randn(1, 3, 224, 224)
    if "1" in args.part.split(","):
        os.environ["EFFNET_ENGINE_CACHE"] = "off"
        _ten(model, x1, "cache off, raced under load")
    if "2" in args.part.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["EFFNET_ENGINE_CACHE"] = str(Path(tmp) / "choice.json")
            quiet = optimize_for_inference(model, example=x1)
            print(f"quiet race first:\n{quiet.report()}", flush=True)
            _ten(model, x1, "cached quiet choice, under load")


if __name__ == "__main__":
    main()
