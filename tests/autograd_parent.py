"""A calling process that has run autograd on a machine with an accelerator, then starts workers; run
as its own process by tests/test_worker_start.py.

    python tests/autograd_parent.py OUT STEP [STEP ...]    STEP: fork | grad | nas | jobs | loader

PyTorch marks a child forked after a backward pass as unable to run autograd only when the machine
has a non-CPU device: ``Engine::start_device_threads`` returns early without one
(pytorch/pytorch, torch/csrc/autograd/engine.cpp). So this process first registers a one-device
Python accelerator backend (torch.utils.backend_registration, what a CUDA or XPU machine has), runs
a backward pass, and only then does each STEP, printing one JSON line per step:

- ``fork``: a plain ``os.fork`` child's backward pass (fails or hangs: the bug the workers avoid);
- ``grad``: two ``run_worker_processes`` workers each compute a gradient;
- ``nas``: a 2-worker latency-aware architecture search, real proxy training on Fashion-MNIST;
- ``jobs``: two trainings in ``run_jobs``' process pool;
- ``loader``: ``effnet.train`` with a forked data-loader worker, two epochs.

The accelerator is registered here, never in the test process: a registered backend cannot be removed.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch

from effnet.search.trials import Experiment, resolve_baseline, run_worker_processes


def gradient(seed: int = 0) -> list[float]:
    """One gradient of a small linear model: what every worker and this process compute alike."""
    torch.manual_seed(seed)
    model = torch.nn.Linear(8, 3)
    x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    assert model.weight.grad is not None
    return [float(v) for v in model.weight.grad.flatten()]


def _write_gradient(out: str) -> None:
    Path(out, f"grad-{os.getpid()}.json").write_text(json.dumps({"threads": torch.get_num_threads(),
                                                                 "grad": gradient()}))


def _experiment() -> Experiment:
    from effnet.train.budget import Budget

    base = resolve_baseline("efficientnet_b0", depth=0.5, width=0.5, total_stride=16, resolution=16)
    return Experiment(base, "fashion-mnist", Budget(epochs=1, train_images=128, eval_images=64, batch_size=64))


def step_fork(out: Path) -> dict[str, Any]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            gradient()
            msg = "ok"
        except RuntimeError as e:
            msg = str(e)
        os.write(write, msg.encode()[:500])
        os._exit(0)
    os.close(write)
    # The child either raises PyTorch's fork error or, on some runs, deadlocks in the autograd
    # engine's inherited thread state; both are the failure the forkserver avoids. A hung child is
    # killed after 60 s rather than hanging the test.
    for _ in range(600):
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            return {"child": os.read(read, 500).decode()}
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return {"child": "hung"}


def step_grad(out: Path) -> dict[str, Any]:
    n = run_worker_processes(2, partial(_write_gradient, str(out)))
    return {"workers": n, "parent": os.getpid(), "expected": gradient(),
            "results": {p.name: json.loads(p.read_text()) for p in out.glob("grad-*.json")}}


def step_nas(out: Path) -> dict[str, Any]:
    from effnet.cli.nas import SpecLatency
    from effnet.search.nas import NasSettings, base_cost, collect_nas, open_nas, run_nas_workers
    from effnet.search.nas_objective import parse_objective
    from effnet.search.nas_space import SearchSpace
    from effnet.search.storage import open_storage

    exp, timer = _experiment(), SpecLatency("eager", 1, 10)
    target = base_cost(exp, timer)["latency"]
    settings = NasSettings(SearchSpace(kernels=(3,)), parse_objective("latency", target, -0.07), "random", 4)
    url = str(out / "nas.log")
    open_nas(open_storage(url), "s", settings, exp)
    n = run_nas_workers(url, "s", workers=2, latency=timer, heartbeat=1.0, stale_after=30.0)
    return {"workers": n, "result": collect_nas(open_storage(url), "s")}


def step_jobs(out: Path) -> dict[str, Any]:
    from effnet.search.trials import job_key, run_jobs

    exp = _experiment()
    jobs = [(exp.baseline, exp, 0), (exp.baseline, exp, 1)]
    results = run_jobs(jobs, workers=2, cache=out)
    return {"results": results, "weights": [(out / f"{job_key(j)}.pt").stat().st_size for j in jobs]}


def step_loader(out: Path) -> dict[str, Any]:
    from effnet.train.config import TrainConfig
    from effnet.train.loop import train

    cfg = TrainConfig(model="efficientnet_b0", phi=-8.0, total_stride=8, resolution=16, data="digits", batch_size=32,
                      train_subset=256, epochs=2.0, warmup_epochs=0.5, workers=1, progress=False, amp="none")
    result = train(cfg, out / "run")
    return {"epochs": result["epochs"], "top1": result["top1"]}


STEPS = {"fork": step_fork, "grad": step_grad, "nas": step_nas, "jobs": step_jobs, "loader": step_loader}


def main() -> None:
    from torch.utils.backend_registration import _setup_privateuseone_for_python_backend

    out = Path(sys.argv[1])
    _setup_privateuseone_for_python_backend()  # a one-device accelerator, as on a CUDA machine
    gradient()  # autograd has now started its device threads: os.fork children are marked
    for name in sys.argv[2:]:
        print(json.dumps({"step": name, **STEPS[name](out)}), flush=True)


if __name__ == "__main__":
    main()
