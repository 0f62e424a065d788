"""A search worker with a tiny evaluator (no training), run as its own process by the search tests.

    python tests/search_worker.py STORAGE STUDY LOG [--sleep S] [--heartbeat S] [--stale-after S] [--fail INDEX]

Every candidate it evaluates is logged as ``start INDEX PID`` before and ``done INDEX PID`` after, so
the tests can see which process ran what and that nothing ran twice. Its accuracy has a known optimum
at (1.2, 1.1, 1.15)-like points: 100 − 10·|α − 1.2| − 10·|β − 1.1| − 10·|γ − 1.15|.
"""

from __future__ import annotations

import argparse
import os
import time

from effnet.search.grid import Candidate, GridSettings, grid_candidates
from effnet.search.storage import open_storage
from effnet.search.study import open_study, run_worker

GRID = GridSettings(step=0.1, target=2.0, tol=0.05)  # 10 candidates


def score(c: Candidate) -> float:
    return 100 - 10 * abs(c.alpha - 1.2) - 10 * abs(c.beta - 1.1) - 10 * abs(c.gamma - 1.15)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("storage")
    p.add_argument("study")
    p.add_argument("log")
    p.add_argument("--sleep", type=float, default=0.2)
    p.add_argument("--heartbeat", type=float, default=0.2)
    p.add_argument("--stale-after", type=float, default=5.0)
    p.add_argument("--fail", type=int, default=-1)
    a = p.parse_args()

    def evaluate(c: Candidate) -> dict[str, float]:
        with open(a.log, "a") as f:
            f.write(f"start {c.index} {os.getpid()}\n")
        time.sleep(a.sleep)
        if c.index == a.fail:
            raise RuntimeError(f"candidate {c.index} diverged")
        with open(a.log, "a") as f:
            f.write(f"done {c.index} {os.getpid()}\n")
        return {"accuracy": score(c), "seconds": a.sleep}

    storage = open_storage(a.storage)
    open_study(storage, a.study, GRID, grid_candidates(GRID), {"evaluator": "tests/search_worker.py"})
    run_worker(storage, a.study, evaluate, heartbeat=a.heartbeat, stale_after=a.stale_after)


if __name__ == "__main__":
    main()
