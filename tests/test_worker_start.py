"""Worker processes started after the calling process has run autograd (a notebook, a test run).

PyTorch refuses a backward pass in a child forked from a process that has already run one
(pytorch/pytorch, torch/csrc/autograd/engine.cpp); the search's workers therefore start from a
forkserver (effnet.search.trials.worker_context). Each test here runs a backward pass in this very
process first, then starts workers that train: with fork, every one of them failed.
"""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path

import pytest
import torch

from effnet.errors import EffnetError
from effnet.search.trials import run_worker_processes


def _backward(seed: int = 0) -> list[float]:
    """One SGD gradient of a small linear model: what every worker and this process compute alike."""
    torch.manual_seed(seed)
    model = torch.nn.Linear(8, 3)
    x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    assert model.weight.grad is not None
    return [float(v) for v in model.weight.grad.flatten()]


def _train_step(out: str) -> None:
    Path(out, f"{os.getpid()}.json").write_text(json.dumps({"threads": torch.get_num_threads(),
                                                            "grad": _backward()}))


def test_workers_run_autograd_after_this_process_did(tmp_path) -> None:
    expected = _backward()  # this process has now started autograd's threads
    assert run_worker_processes(2, partial(_train_step, str(tmp_path))) == 2
    results = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*.json"))]
    assert len(results) == 2 and {p.stem for p in tmp_path.glob("*.json")}.isdisjoint({str(os.getpid())})
    for r in results:
        assert r["threads"] == 1  # the workers' one-thread policy still applies
        assert r["grad"] == pytest.approx(expected, abs=1e-6)


def test_a_closure_is_refused_before_any_worker_starts(tmp_path) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(EffnetError, match=r"cannot be sent to a worker process.*module-level function"):
        run_worker_processes(2, lambda: marker.write_text("x"))
    assert not marker.exists()


def test_two_worker_latency_nas_after_a_backward_pass_completes_every_trial(tmp_path) -> None:
    """The whole NAS path with real proxy training on Fashion-MNIST and the CLI's measured-latency
    timer (pickled to the workers), in a process that trained first."""
    from effnet.cli.nas import SpecLatency
    from effnet.search.nas import NasSettings, base_cost, collect_nas, open_nas, run_nas_workers
    from effnet.search.nas_objective import parse_objective
    from effnet.search.nas_space import SearchSpace
    from effnet.search.storage import open_storage
    from effnet.search.trials import Experiment, resolve_baseline
    from effnet.train.budget import Budget

    _backward()
    base = resolve_baseline("efficientnet_b0", depth=0.5, width=0.5, total_stride=16, resolution=16)
    exp = Experiment(base, "fashion-mnist", Budget(epochs=1, train_images=128, eval_images=64, batch_size=64))
    timer = SpecLatency("eager", 1, 10)
    target = base_cost(exp, timer)["latency"]
    settings = NasSettings(SearchSpace(kernels=(3,)), parse_objective("latency", target, -0.07), "random", 4)
    url = str(tmp_path / "nas.log")
    open_nas(open_storage(url), "s", settings, exp)
    assert run_nas_workers(url, "s", workers=2, latency=timer, heartbeat=1.0, stale_after=30.0) == 2
    result = collect_nas(open_storage(url), "s")
    assert result["counts"] == {"COMPLETE": 4, "FAIL": 0, "RUNNING": 0, "WAITING": 0}, result["trials"]
    assert all(r["latency_ms"] > 0 and 0 <= r["accuracy"] <= 100 for r in result["trials"])


def test_two_pool_workers_train_after_a_backward_pass(tmp_path) -> None:
    """run_jobs' process pool (STEP 2 and the comparison): both jobs trained, their weights cached."""
    from effnet.search.trials import Experiment, job_key, resolve_baseline, run_jobs
    from effnet.train.budget import Budget

    _backward()
    base = resolve_baseline("efficientnet_b0", depth=0.5, width=0.5, total_stride=16, resolution=16)
    exp = Experiment(base, "fashion-mnist", Budget(epochs=1, train_images=128, eval_images=64, batch_size=64))
    jobs = [(base, exp, 0), (base, exp, 1)]
    results = run_jobs(jobs, workers=2, cache=tmp_path)
    assert len(results) == 2 and all(0 <= r["accuracy"] <= 100 and r["macs_ratio"] == 1.0 for r in results)
    assert all((tmp_path / f"{job_key(j)}.pt").stat().st_size > 0 for j in jobs)
