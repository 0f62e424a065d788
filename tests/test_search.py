"""STEP 1 grid search: the grid, ranking, results, and the study's rules (in one process, tiny evaluator)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from effnet.errors import EffnetError
from effnet.search.grid import Candidate, GridSettings, grid_candidates, load_result, rank_records
from effnet.search.storage import open_storage, redact
from effnet.search.study import collect, open_study, reap_stale, run_worker

GRID = GridSettings(step=0.1, target=2.0, tol=0.05)


def score(c: Candidate) -> float:
    return 100 - 10 * abs(c.alpha - 1.2) - 10 * abs(c.beta - 1.1) - 10 * abs(c.gamma - 1.15)


def test_grid_holds_exactly_the_constraint_satisfying_points() -> None:
    cands = grid_candidates(GRID)
    assert len(cands) == 10
    assert all(abs(c.flops_base - 2) <= 0.05 + 1e-9 and min(c.alpha, c.beta, c.gamma) >= 1 for c in cands)
    # brute force over the same grid: nothing satisfying is missed
    axis = [round(1 + k / 10, 10) for k in range(12)]
    brute = {(a, b, g) for a in axis for b in axis for g in axis if abs(a * b * b * g * g - 2) <= 0.05 + 1e-9}
    assert {(c.alpha, c.beta, c.gamma) for c in cands} == brute
    assert [c.index for c in cands] == list(range(10))
    assert (1.2, 1.0, 1.3) in brute and (2.0, 1.0, 1.0) in brute


def test_grid_on_measured_macs_uses_the_ratio_not_the_formula() -> None:
    # a fake "measured" ratio that is the formula plus 0.3: only points with formula within 0.05 of 1.7 pass
    cands = grid_candidates(GridSettings(step=0.1, target=2.0, tol=0.05, on="macs"),
                            macs_ratio=lambda c: c.flops_base + 0.3)
    assert cands and all(abs(c.flops_base - 1.7) <= 0.05 + 1e-9 for c in cands)
    assert all(c.macs_ratio == pytest.approx(c.flops_base + 0.3) for c in cands)


@pytest.mark.parametrize(("settings", "message"), [
    (dict(step=0.3, target=2.0, tol=0.01), "no (alpha, beta, gamma) on a 0.3-step grid"),
    (dict(target=0.5, tol=0.1), "cannot be met"),
    (dict(step=0.0), "grid step"),
    (dict(tol=-1.0), "tolerance"),
])
def test_bad_grids_are_clear_errors(settings: dict, message: str) -> None:
    with pytest.raises(EffnetError, match=message.replace("(", r"\(").replace(")", r"\)")):
        grid_candidates(GridSettings(**settings))


def test_study_runs_every_candidate_ranks_them_and_records_a_failure(tmp_path) -> None:
    storage = open_storage(str(tmp_path / "s.log"))
    cands = grid_candidates(GRID)
    open_study(storage, "s", GRID, cands, {"k": 1})
    seen: list[int] = []

    def evaluate(c: Candidate) -> dict:
        seen.append(c.index)
        if c.index == 3:
            raise RuntimeError("loss is nan")
        return {"accuracy": score(c), "seconds": 0.0}

    assert run_worker(storage, "s", evaluate) == 10
    assert sorted(seen) == list(range(10))
    result = collect(storage, "s")
    assert [r.state for r in result.records].count("COMPLETE") == 9
    failed = [r for r in result.records if r.state == "FAIL"]
    assert [r.candidate.index for r in failed] == [3] and "loss is nan" in failed[0].error
    accs = [r.accuracy for r in result.completed]
    assert accs == sorted(accs, reverse=True)
    assert result.best.accuracy == max(score(c) for c in cands if c.index != 3)
    # JSON round trip through results.json
    result.save(tmp_path / "results.json")
    again = load_result(tmp_path / "results.json")
    assert json.dumps(again.to_dict()) == json.dumps(result.to_dict())
    # a finished study: a new worker finds nothing to do and reruns nothing
    assert run_worker(storage, "s", evaluate) == 0 and len(seen) == 10


def test_ranking_is_deterministic_with_ties() -> None:
    from effnet.search.grid import TrialRecord

    recs = [TrialRecord(Candidate(i, 1.0 + i / 10, 1.0, 1.0, macs_ratio=2.0 - i / 100), "COMPLETE", 90.0)
            for i in range(4)] + [TrialRecord(Candidate(9, 1, 1, 1), "FAIL", error="x")]
    ranked = rank_records(list(reversed(recs)))
    assert [r.candidate.index for r in ranked] == [3, 2, 1, 0, 9]  # equal accuracy: lower MACs first


def test_other_grid_under_the_same_name_is_refused_and_the_study_kept(tmp_path) -> None:
    storage = open_storage(str(tmp_path / "s.log"))
    open_study(storage, "s", GRID, grid_candidates(GRID), {"k": 1})
    run_worker(storage, "s", lambda c: score(c), max_trials=4)
    other = GridSettings(step=0.1, target=2.0, tol=0.1)
    with pytest.raises(EffnetError, match=r"already exists with a different grid.*tol: stored 0\.05, asked 0\.1"):
        open_study(storage, "s", other, grid_candidates(other), {"k": 1})
    with pytest.raises(EffnetError, match=r"different grid.*k: stored 1, asked 2"):
        open_study(storage, "s", GRID, grid_candidates(GRID), {"k": 2})
    assert len(collect(storage, "s").completed) == 4  # nothing lost
    # joining without a grid adopts the stored one
    assert len(open_study(storage, "s")["candidates"]) == 10
    with pytest.raises(EffnetError, match="no study 'nope'"):
        open_study(storage, "nope")


def test_unreachable_storage_is_a_clear_error(tmp_path) -> None:
    # A refused connection is not retried (only the table-creation race is), so this returns at once;
    # no wall-clock bound is asserted (tests hold under load).
    with pytest.raises(EffnetError, match=r"cannot open search storage 'postgresql\+psycopg://bob:\*\*\*@127.0.0.1:1/db'"):
        open_storage("postgresql://bob:secret@127.0.0.1:1/db")
    with pytest.raises(EffnetError, match="does not exist"):
        open_storage(str(tmp_path / "missing" / "s.log"))
    assert redact("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"


def test_stale_running_trial_is_failed_and_queued_again(tmp_path) -> None:
    storage = open_storage(str(tmp_path / "s.log"))
    open_study(storage, "s", GRID, grid_candidates(GRID), {})
    from effnet.search.study import _pop

    study_id = storage.get_study_id_from_name("s")
    orphan = _pop(storage, study_id)  # taken by a worker that then dies: RUNNING, no heartbeat
    assert reap_stale(storage, study_id, stale_after=60) == 0  # still fresh
    time.sleep(0.3)
    assert reap_stale(storage, study_id, stale_after=0.1) == 1
    ran = []
    run_worker(storage, "s", lambda c: ran.append(c.index) or score(c))
    assert sorted(ran) == list(range(10))  # the orphan's candidate ran once, by the live worker
    rec = next(r for r in collect(storage, "s").records if r.candidate.index == orphan.user_attrs["grid_id"])
    assert rec.state == "COMPLETE" and rec.attempts == 2


def test_level0_modules_do_not_import_torch() -> None:
    code = ("import sys, effnet.search.grid, effnet.search.study, effnet.search.compare; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_nan_accuracy_is_a_failed_trial_not_a_ranking(tmp_path) -> None:
    storage = open_storage(str(tmp_path / "s.log"))
    open_study(storage, "s", GRID, grid_candidates(GRID), {})
    run_worker(storage, "s", lambda c: float("nan") if c.index == 0 else score(c))
    rec = next(r for r in collect(storage, "s").records if r.candidate.index == 0)
    assert rec.state == "FAIL" and "accuracy nan" in rec.error


def test_a_worker_over_several_studies_moves_on_instead_of_idling(tmp_path) -> None:
    """The sweep's workers (`effnet.search.trials._studies_worker`): while another worker still runs
    a trial of study a, a worker with nothing queued there trains study b first, and only then waits
    on a, taking the trial over once its worker has gone silent (stale)."""
    from effnet.search.study import _next_trial
    from effnet.search.trials import _studies_worker

    url = str(tmp_path / "s.log")
    storage = open_storage(url)
    cands = grid_candidates(GRID)[:3]
    for name in ("a", "b"):
        open_study(storage, name, GRID, cands, {"k": name})
    held = _next_trial(storage, storage.get_study_id_from_name("a"), heartbeat=0.2, stale_after=1.0, wait=False)
    assert held is not None  # another worker's trial, whose worker then dies (no more heartbeats)
    order: list[tuple[str, int]] = []

    def make(_storage, study: str):
        def evaluate(c: Candidate) -> dict:
            order.append((study, c.index))
            return {"accuracy": score(c), "seconds": 0.0}
        return evaluate

    _studies_worker(url, ("a", "b"), make, 0.2, 1.0)
    assert [s for s, _ in order] == ["a", "a", "b", "b", "b", "a"]  # b before a's stale trial
    assert sorted(i for s, i in order if s == "a") == [0, 1, 2]
    assert all(len(collect(storage, n).completed) == 3 for n in ("a", "b"))
