"""Distribution of the grid search over separate worker processes (tests/search_worker.py, a tiny
evaluator): a shared journal file, a worker killed mid-trial, and a real PostgreSQL server."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from effnet.search.storage import open_storage
from effnet.search.study import collect

WORKER = str(Path(__file__).with_name("search_worker.py"))


def _start(storage: str, log: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, WORKER, storage, "s", str(log), *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _events(log: Path) -> list[tuple[str, int, int]]:
    lines = log.read_text().split() if log.exists() else []
    return [(lines[i], int(lines[i + 1]), int(lines[i + 2])) for i in range(0, len(lines) - 2, 3)]


def _finish(procs: list[subprocess.Popen], timeout: float = 60) -> None:
    for p in procs:
        out, _ = p.communicate(timeout=timeout)
        assert p.returncode == 0, out


def _check_split(storage: str, log: Path, procs: list[subprocess.Popen]) -> None:
    ev = _events(log)
    starts = Counter(i for kind, i, _ in ev if kind == "start")
    assert starts == Counter(range(10)), f"each candidate must start exactly once: {starts}"
    by_pid = Counter(pid for kind, _, pid in ev if kind == "done")
    assert set(by_pid) == {p.pid for p in procs}, f"both workers must take a share: {by_pid}"
    result = collect(open_storage(storage), "s")
    assert len(result.completed) == 10
    assert result.best.candidate.alpha == 1.2  # the tiny evaluator's known optimum on this grid


def test_two_worker_processes_split_the_grid_on_a_journal(tmp_path) -> None:
    storage, log = str(tmp_path / "search.log"), tmp_path / "events"
    procs = [_start(storage, log, "--sleep", "0.3") for _ in range(2)]  # both race to create the study
    _finish(procs)
    _check_split(storage, log, procs)


def kill_mid_trial(worker: subprocess.Popen, log: Path) -> tuple[list[tuple[str, int, int]], set[int], int]:
    """SIGKILL ``worker`` while it runs its 4th trial; the events so far, the finished indices and the
    index it was killed in."""
    deadline = time.time() + 60
    while time.time() < deadline:
        ev = _events(log)
        if sum(k == "done" for k, _, _ in ev) >= 3 and ev[-1][0] == "start":
            break
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    before = _events(log)
    finished = {i for k, i, _ in before if k == "done"}
    killed = before[-1][1]
    assert before[-1][0] == "start" and killed not in finished and len(finished) >= 3
    return before, finished, killed


def test_killed_worker_resumes_without_rerunning_finished_trials(tmp_path) -> None:
    storage, log = str(tmp_path / "search.log"), tmp_path / "events"
    args = ("--sleep", "0.4", "--heartbeat", "0.2", "--stale-after", "1.5")
    before, finished, killed = kill_mid_trial(_start(storage, log, *args), log)

    second = _start(storage, log, *args)
    _finish([second])
    after = _events(log)[len(before):]
    assert {i for k, i, _ in after if k == "start"} == set(range(10)) - finished  # no finished one again
    assert Counter(i for k, i, _ in after if k == "done") == Counter(set(range(10)) - finished)
    result = collect(open_storage(storage), "s")
    assert len(result.completed) == 10
    assert next(r for r in result.records if r.candidate.index == killed).attempts == 2


def test_a_raising_evaluator_fails_one_trial_and_the_rest_complete(tmp_path) -> None:
    storage, log = str(tmp_path / "search.log"), tmp_path / "events"
    _finish([_start(storage, log, "--sleep", "0", "--fail", "5")])
    result = collect(open_storage(storage), "s")
    states = {r.candidate.index: r.state for r in result.records}
    assert states.pop(5) == "FAIL" and set(states.values()) == {"COMPLETE"}
    assert "candidate 5 diverged" in next(r.error for r in result.records if r.candidate.index == 5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.skip("PostgreSQL refuses to run as root and runuser is missing; cannot start a server")
    return [runuser, "-u", "postgres", "--", *cmd]


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL server on loopback (Debian's postgresql package), stopped afterwards."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        pytest.skip("no PostgreSQL server installed (apt-get install postgresql); cannot start one")
    bindir = Path(bins[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="effnet-pg-", dir="/tmp"))
    data, port = root / "data", _free_port()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    init = subprocess.run(_as_postgres([str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]),
                          capture_output=True, text=True)
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"initdb failed, cannot start a PostgreSQL server: {init.stderr.strip()[-300:]}")
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
    ctl = [str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "-t", "30"]
    start = subprocess.run(_as_postgres([*ctl, "start"]), capture_output=True, text=True)
    if start.returncode != 0:
        log = (root / "log").read_text()[-300:] if (root / "log").exists() else start.stderr
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"pg_ctl start failed, cannot start a PostgreSQL server: {log.strip()}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_postgres([*ctl, "-m", "fast", "stop"]), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_share_a_study_on_a_real_postgresql_server(postgres_url, tmp_path) -> None:
    log = tmp_path / "events"
    procs = [_start(postgres_url, log, "--sleep", "0.3") for _ in range(2)]
    _finish(procs, timeout=120)
    _check_split(postgres_url, log, procs)
