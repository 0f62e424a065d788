"""Seeded mutation fuzzing of the input boundaries (tests/fuzz_worker.py): 500 mutated inputs for each
of checkpoint headers, checkpoint bytes, YAML configs and spec JSON files. Every outcome is success or
``EffnetError``; each target runs in its own process with its address space bounded 1.5 GiB above
what its imports took, so an input that made effnet allocate before validating would fail here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TARGETS = ("header", "bytes", "yaml", "spec")
N = 500
WORKER = Path(__file__).with_name("fuzz_worker.py")


def test_every_mutated_input_is_accepted_or_refused_by_name(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    procs = {}
    for seed, target in enumerate(TARGETS):
        folder = tmp_path / target
        folder.mkdir()
        procs[target] = subprocess.Popen([sys.executable, str(WORKER), target, str(N), str(seed), str(folder)],
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    failures, counts = [], {}
    for target, proc in procs.items():
        out, err = proc.communicate(timeout=900)
        if proc.returncode != 0:
            failures.append(f"{target}: exit {proc.returncode}\n{err[-3000:]}")
            continue
        ok, refused = (int(x) for x in out.split()[1::2])
        counts[target] = (ok, refused)
        assert ok + refused == N
    assert not failures, "\n".join(failures)
    # The mutations reach both sides of the validation: some inputs stay valid, most are refused.
    assert all(refused > 0 for _, refused in counts.values()), counts
    assert sum(ok for ok, _ in counts.values()) > 0, counts


def test_the_memory_bound_catches_an_unchecked_allocation() -> None:
    """The bound is real: under it, 4 GB for one tensor (what an unchecked huge layer asks) fails."""
    code = (f"import runpy, torch; w = runpy.run_path({str(WORKER)!r}); w['_bound_memory'](); "
            "torch.zeros(10**5, 10**4)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode != 0 and "alloc" in proc.stderr, proc.stderr[-1000:]
