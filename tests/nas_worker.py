"""An architecture-search worker whose "training" is a formula (no torch training), run as its own
process by tests/test_nas_workers.py.

    python tests/nas_worker.py STORAGE STUDY LOG [--trials N] [--strategy S] [--sleep S] [--heartbeat S]
                               [--stale-after S] [--fail SLOT] [--objective NAME]

It draws, decodes and costs every genome exactly as ``effnet nas`` does (effnet.search.nas's
evaluator); only the proxy training is replaced by an accuracy that falls with distance from the
base's MACs. Each slot it evaluates is logged as ``start SLOT PID`` before and ``done SLOT PID`` after.
"""

from __future__ import annotations

import argparse
import math
import os
import time

from effnet.macs import estimate_cost
from effnet.search.nas import NasSettings, nas_evaluator, open_nas
from effnet.search.nas_objective import parse_objective
from effnet.search.nas_space import SearchSpace
from effnet.search.storage import open_storage
from effnet.search.study import run_sampled_worker
from effnet.search.trials import Experiment, resolve_baseline
from effnet.train.budget import Budget

BASE = resolve_baseline("efficientnet_b0", depth=0.5, width=0.5, total_stride=16, resolution=20)
T = estimate_cost(BASE, num_classes=10, in_chans=1).macs


def fake_train(spec) -> dict[str, float]:
    macs = estimate_cost(spec, num_classes=10, in_chans=1).macs
    return {"accuracy": 90 - 10 * abs(math.log2(macs / T)), "seconds": 0.0}


def main() -> None:
    p = argparse.ArgumentParser()
    for a in ("storage", "study", "log"):
        p.add_argument(a)
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--strategy", default="tpe")
    p.add_argument("--objective", default="macs")
    p.add_argument("--sleep", type=float, default=0.2)
    p.add_argument("--heartbeat", type=float, default=0.2)
    p.add_argument("--stale-after", type=float, default=5.0)
    p.add_argument("--fail", type=int, default=-1)
    a = p.parse_args()

    settings = NasSettings(SearchSpace(), parse_objective(a.objective, T, -0.07), a.strategy, a.trials)
    exp = Experiment(BASE, "fashion-mnist", Budget())
    inner = nas_evaluator(exp, settings, train=fake_train, num_classes=10)

    def evaluate(trial) -> dict:
        slot = trial.user_attrs["slot"]
        with open(a.log, "a") as f:
            f.write(f"start {slot} {os.getpid()}\n")
        time.sleep(a.sleep)
        if slot == a.fail:
            raise RuntimeError(f"slot {slot} diverged")
        out = inner(trial)
        with open(a.log, "a") as f:
            f.write(f"done {slot} {os.getpid()}\n")
        return out

    storage = open_storage(a.storage)
    open_nas(storage, a.study, settings, exp)
    run_sampled_worker(storage, a.study, settings.sampler, evaluate, lambda m: list(m["values"]),
                       heartbeat=a.heartbeat, stale_after=a.stale_after)


if __name__ == "__main__":
    main()
