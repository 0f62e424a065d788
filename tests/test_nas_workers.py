"""The architecture search's study over separate worker processes (tests/nas_worker.py: the real
draw/decode/cost path, a formula for training): exact slot counts, a worker killed mid-trial, a
raising trial, a reused name with other settings, NSGA-II, and a real PostgreSQL server."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from effnet.errors import EffnetError
from effnet.search.nas import NasSettings, collect_nas, open_nas
from effnet.search.nas_objective import parse_objective
from effnet.search.nas_space import SearchSpace
from effnet.search.storage import open_storage
from test_search_workers import _events, _finish, kill_mid_trial, postgres_url  # noqa: F401  (a fixture)

WORKER = str(Path(__file__).with_name("nas_worker.py"))


def _start(storage: str, log: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, WORKER, storage, "s", str(log), *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _genomes(result: dict) -> list[str]:
    return [repr(r["genome"]) for r in result["trials"] if r["state"] == "COMPLETE"]


def test_two_workers_run_exactly_the_queued_slots_with_distinct_draws(tmp_path) -> None:
    storage, log = str(tmp_path / "nas.log"), tmp_path / "events"
    procs = [_start(storage, log, "--trials", "8", "--sleep", "0.3") for _ in range(2)]
    _finish(procs)
    ev = _events(log)
    assert Counter(i for k, i, _ in ev if k == "start") == Counter(range(8))  # each slot once, no extra trial
    assert {pid for k, _, pid in ev if k == "done"} == {p.pid for p in procs}
    result = collect_nas(open_storage(storage), "s")
    assert result["counts"]["COMPLETE"] == 8 and len(set(_genomes(result))) == 8  # workers do not repeat draws
    best = result["trials"][0]
    assert best["reward"] == max(r["reward"] for r in result["trials"])
    assert best["macs"] > 0 and best["spec"]["stages"] and len(best["genome"]) == 7


def test_killed_worker_resumes_exactly_the_unfinished_slots(tmp_path) -> None:
    storage, log = str(tmp_path / "nas.log"), tmp_path / "events"
    args = ("--trials", "8", "--sleep", "0.4", "--heartbeat", "0.2", "--stale-after", "1.5")
    before, finished, killed = kill_mid_trial(_start(storage, log, *args), log)
    drawn = {r["slot"]: r["genome"] for r in collect_nas(open_storage(storage), "s")["trials"] if r["genome"]}

    second = _start(storage, log, *args)
    _finish([second])
    after = _events(log)[len(before):]
    assert Counter(i for k, i, _ in after if k == "start") == Counter(set(range(8)) - finished)
    result = collect_nas(open_storage(storage), "s")
    assert result["counts"] == {"COMPLETE": 8, "FAIL": 0, "RUNNING": 0, "WAITING": 0}
    rec = {r["slot"]: r for r in result["trials"]}
    assert rec[killed]["attempts"] == 2
    assert all(rec[s]["genome"] == g for s, g in drawn.items())  # finished slots untouched


def test_raising_trial_is_failed_and_the_search_goes_on(tmp_path) -> None:
    storage, log = str(tmp_path / "nas.log"), tmp_path / "events"
    _finish([_start(storage, log, "--trials", "5", "--sleep", "0", "--fail", "2")])
    result = collect_nas(open_storage(storage), "s")
    assert result["counts"]["COMPLETE"] == 4 and result["counts"]["FAIL"] == 1
    failed = next(r for r in result["trials"] if r["state"] == "FAIL")
    assert failed["slot"] == 2 and "slot 2 diverged" in failed["error"]


def test_pareto_search_with_nsga2_keeps_two_values(tmp_path) -> None:
    storage, log = str(tmp_path / "nas.log"), tmp_path / "events"
    _finish([_start(storage, log, "--trials", "10", "--sleep", "0", "--strategy", "nsga2", "--objective",
                    "pareto")])
    result = collect_nas(open_storage(storage), "s")
    assert result["counts"]["COMPLETE"] == 10
    assert all(r["values"] == [r["accuracy"], r["macs"]] for r in result["trials"])


def test_reused_name_with_other_settings_is_refused(tmp_path) -> None:
    storage, log = str(tmp_path / "nas.log"), tmp_path / "events"
    _finish([_start(storage, log, "--trials", "3", "--sleep", "0")])
    from effnet.search.trials import Experiment
    from effnet.train.budget import Budget
    from nas_worker import BASE, T

    exp = Experiment(BASE, "fashion-mnist", Budget())
    other = NasSettings(SearchSpace(kernels=(3,)), parse_objective("macs", T, -0.07), "tpe", 3)
    with pytest.raises(EffnetError, match=r"already exists with a different architecture search.*kernels"):
        open_nas(open_storage(storage), "s", other, exp)
    assert collect_nas(open_storage(storage), "s")["counts"]["COMPLETE"] == 3  # kept


def test_two_nas_workers_on_a_real_postgresql_server(postgres_url, tmp_path) -> None:  # noqa: F811
    log = tmp_path / "events"
    procs = [_start(postgres_url, log, "--trials", "6", "--sleep", "0.3") for _ in range(2)]
    _finish(procs, timeout=120)
    result = collect_nas(open_storage(postgres_url), "s")
    assert result["counts"]["COMPLETE"] == 6
    assert Counter(i for k, i, _ in _events(log) if k == "start") == Counter(range(6))
