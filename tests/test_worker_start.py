"""Worker processes started by a process that has already run autograd (a notebook, a test run).

PyTorch refuses a backward pass in a child forked from a process that has run one on a machine with
an accelerator (pytorch/pytorch, torch/csrc/autograd/engine.cpp); the search's workers therefore
start from a forkserver (effnet.search.trials.worker_context). tests/autograd_parent.py plays that
calling process (a one-device Python accelerator backend, then a backward pass) in a subprocess, and
each test checks that the workers it then starts train: with fork, every one of them failed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from effnet.errors import EffnetError
from effnet.search.trials import run_worker_processes

PARENT = str(Path(__file__).with_name("autograd_parent.py"))


def _parent(out: Path, *steps: str, timeout: float = 300) -> dict[str, dict[str, Any]]:
    done = subprocess.run([sys.executable, PARENT, str(out), *steps], capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return {r["step"]: r for r in map(json.loads, done.stdout.splitlines())}


def test_workers_run_autograd_after_the_caller_did(tmp_path) -> None:
    res = _parent(tmp_path, "fork", "grad")
    # the simulated machine reproduces the bug: a plain fork of this process cannot run backward
    # (PyTorch's error, or a child that deadlocked and was killed: both fail where workers must not)
    child = res["fork"]["child"]
    assert "Unable to handle autograd's threading" in child or child == "hung", child
    grad = res["grad"]
    assert grad["workers"] == 2 and len(grad["results"]) == 2
    assert f"grad-{grad['parent']}.json" not in grad["results"]  # computed in the workers, not here
    for r in grad["results"].values():
        assert r["threads"] == 1  # the workers' one-thread policy still applies
        assert r["grad"] == pytest.approx(grad["expected"], abs=1e-6)


def test_a_closure_is_refused_before_any_worker_starts(tmp_path) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(EffnetError, match=r"cannot be sent to a worker process.*module-level function"):
        run_worker_processes(2, lambda: marker.write_text("x"))
    assert not marker.exists()


def test_two_worker_latency_nas_and_the_training_pool_after_autograd(tmp_path) -> None:
    """The NAS path with real proxy training on Fashion-MNIST and the CLI's measured-latency timer
    (pickled to the workers), then run_jobs' pool (STEP 2, compare), in a process that trained first."""
    res = _parent(tmp_path, "nas", "jobs", timeout=600)
    nas = res["nas"]["result"]
    assert res["nas"]["workers"] == 2
    assert nas["counts"] == {"COMPLETE": 4, "FAIL": 0, "RUNNING": 0, "WAITING": 0}, nas["trials"]
    assert all(r["latency_ms"] > 0 and 0 <= r["accuracy"] <= 100 for r in nas["trials"])
    jobs = res["jobs"]
    assert len(jobs["results"]) == 2 and all(0 <= r["accuracy"] <= 100 for r in jobs["results"])
    assert all(r["macs_ratio"] == 1.0 for r in jobs["results"]) and all(n > 0 for n in jobs["weights"])


def test_training_data_loader_workers_still_fork_after_autograd(tmp_path) -> None:
    """`effnet train --workers` keeps fork (src/effnet/train/loop.py): every loader after the first
    epoch is forked from a process that has run backward passes, which is safe because loader
    workers only decode and augment images."""
    pytest.importorskip("sklearn")
    res = _parent(tmp_path, "loader")
    assert res["loader"]["epochs"] == 2 and res["loader"]["top1"] is not None
