"""The grid search as a shared Optuna study: workers on any machine join, leave, die and resume.

Storage: a journal file on one machine (``runs/search.log`` or ``journal:PATH``), an RDB URL across
machines (``postgresql://user@host/db``; ``sqlite:///file.db`` also works on one machine), opened
by :func:`effnet.search.storage.open_storage`.

Why the grid is *queued* rather than drawn by Optuna's ``GridSampler``: ``GridSampler`` assigns grid
point ``n`` to trial number ``n`` and, once every point has started, hands an idle worker a point that
another worker is still running ("GridSampler is re-evaluating a configuration"), and a dead worker's
RUNNING point is never handed out again. Here the study's creator queues one WAITING trial per
candidate (what ``Study.enqueue_trial`` does); a worker takes one by the storage's atomic
WAITING → RUNNING transition (journal log order; a row lock in PostgreSQL), so no candidate runs
twice. A worker beats a heartbeat into its RUNNING trial; a trial whose heartbeat is older than
``stale_after`` belongs to a dead worker: whoever notices marks it FAIL ("worker lost") and queues a
copy, so a killed search resumes with exactly the unfinished candidates. A trial whose evaluator
raises is FAIL with the error and is not retried; the others go on. The architecture search
(:mod:`effnet.search.nas`) queues empty slots the same way and lets an Optuna sampler draw each
slot's parameters when a worker takes it (:func:`run_sampled_worker`).

Level 0: no torch. Optuna is imported on first use.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

from effnet.errors import EffnetError
from effnet.search.grid import Candidate, GridSettings, SearchResult, TrialRecord, rank_records

__all__ = ["Evaluator", "collect", "completed_metrics", "open_doc_study", "open_study", "run_sampled_worker",
           "run_worker"]

Evaluator = Callable[[Candidate], float | Mapping[str, Any]]
GRID_ATTR, QUEUED_ATTR, BEAT_ATTR = "effnet.grid", "effnet.queued", "effnet.heartbeat"
PARAM = "candidate"


def _grid_doc(grid: GridSettings | Mapping[str, Any], candidates: list[Candidate],
              context: Mapping[str, Any]) -> dict[str, Any]:
    return {"version": 1, "grid": asdict(grid) if isinstance(grid, GridSettings) else dict(grid),
            "candidates": [c.to_dict() for c in candidates], "context": dict(context)}


def _differences(stored: Mapping[str, Any], asked: Mapping[str, Any]) -> str:
    parts = []
    for key in sorted((set(stored) | set(asked)) - {"candidates", "version"}):
        a, b = stored.get(key), asked.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            parts += [f"{k}: stored {a.get(k)!r}, asked {b.get(k)!r}" for k in sorted(set(a) | set(b))
                      if a.get(k) != b.get(k)]
        elif a != b:
            parts.append(f"{key}: stored {a!r}, asked {b!r}")
    if not parts and stored.get("candidates") != asked.get("candidates"):
        parts.append(f"candidates: stored {len(stored['candidates'])}, asked {len(asked['candidates'])}")
    return "; ".join(parts[:4])


def _wait_for(storage: Any, study_id: int, key: str, timeout: float) -> Any:
    end = time.time() + timeout
    while True:
        value = storage.get_study_user_attrs(study_id).get(key)
        if value is not None or time.time() > end:
            return value
        time.sleep(0.2)


def open_study(storage: Any, name: str, grid: GridSettings | Mapping[str, Any] | None = None,
               candidates: list[Candidate] | None = None,
               context: Mapping[str, Any] | None = None, *, queue_timeout: float = 30.0) -> dict[str, Any]:
    """Create study ``name`` with its grid queued, or join it; returns the stored grid document.

    Joining without a grid adopts the stored one (``effnet search --storage S --study NAME``). Other
    experiments queue their own trials the same way: ``grid`` may be any JSON mapping that describes
    them (the training-budget sweep's, :mod:`effnet.search.sweep`), each trial a numbered ``Candidate``.

    Raises:
        EffnetError: the study exists with a different grid or context (it is left untouched), or it
            does not exist and no grid was given.
    """
    asked = None if candidates is None or grid is None else _grid_doc(grid, candidates, context or {})

    def queue(study_id: int, doc: Mapping[str, Any], resume: bool) -> None:
        if not resume:
            return _queue(storage, study_id, candidates or [])
        have = {t.user_attrs.get("grid_id") for t in storage.get_all_trials(study_id, deepcopy=False)}
        _queue(storage, study_id, [Candidate.from_dict(c) for c in doc["candidates"] if c["index"] not in have])

    return open_doc_study(storage, name, asked, queue, attr=GRID_ATTR, what="grid", command="effnet search",
                          queue_timeout=queue_timeout)


def open_doc_study(storage: Any, name: str, asked: Mapping[str, Any] | None,
                   queue: Callable[[int, Mapping[str, Any], bool], None], *, attr: str, what: str, command: str,
                   directions: tuple[str, ...] = ("maximize",), queue_timeout: float = 30.0) -> dict[str, Any]:
    """Create study ``name`` holding the settings document ``asked`` under ``attr`` and queue its trials
    (``queue(study_id, doc, resume=False)``), or join it: the grid search and the architecture search
    share this one way in. A creator that died while queueing is completed by the next joiner
    (``resume=True``: queue what is missing).

    Raises:
        EffnetError: the study exists with other settings (left untouched), holds no ``what``, or does
            not exist and no settings were given.
    """
    from optuna.exceptions import DuplicatedStudyError
    from optuna.study import StudyDirection

    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        if asked is None:
            raise EffnetError(f"no study {name!r} in this storage; give the {what} settings to create it, or "
                              "check --study") from None
        try:
            study_id = storage.create_new_study([StudyDirection.MAXIMIZE if d == "maximize" else
                                                 StudyDirection.MINIMIZE for d in directions], name)
        except DuplicatedStudyError:  # another worker created it first: join
            study_id = storage.get_study_id_from_name(name)
        else:
            storage.set_study_user_attr(study_id, attr, dict(asked))
            queue(study_id, asked, False)
            return dict(asked)
    stored = _wait_for(storage, study_id, attr, queue_timeout)
    if stored is None:
        raise EffnetError(f"study {name!r} exists but holds no effnet {what} (not created by `{command}`); "
                          "use another --study name")
    if asked is not None and stored != asked:
        raise EffnetError(f"study {name!r} already exists with a different {what} ({_differences(stored, asked)}); "
                          "its results are kept: use another --study name or --out, or rerun with its settings")
    if _wait_for(storage, study_id, QUEUED_ATTR, queue_timeout) is None:  # creator died while queueing
        queue(study_id, stored, True)
    return dict(stored)


def _waiting(c: Candidate) -> Any:
    from optuna.trial import TrialState, create_trial

    attrs = {"grid_id": c.index, "alpha": c.alpha, "beta": c.beta, "gamma": c.gamma, "macs_ratio": c.macs_ratio}
    return create_trial(state=TrialState.WAITING, system_attrs={"fixed_params": {PARAM: c.index}}, user_attrs=attrs)


def _queue(storage: Any, study_id: int, candidates: list[Candidate]) -> None:
    for c in candidates:
        storage.create_new_trial(study_id, template_trial=_waiting(c))
    storage.set_study_user_attr(study_id, QUEUED_ATTR, True)


def _candidate(trial: Any) -> Candidate:
    u = trial.user_attrs
    return Candidate(int(u["grid_id"]), u["alpha"], u["beta"], u["gamma"], u.get("macs_ratio"))


_RUN_ATTRS = ("error", "worker", "metrics", "retry_of")  # what a run adds; a retry starts without them


def _retry(t: Any) -> Any:
    """A WAITING copy of trial ``t``: its fixed and already-drawn parameters (so a sampled architecture
    is retried as drawn, not redrawn) and its queue attributes (grid point, slot)."""
    from optuna.trial import TrialState, create_trial

    fixed = {**(t.system_attrs.get("fixed_params") or {}), **t.params}
    attrs = {k: v for k, v in t.user_attrs.items() if k not in _RUN_ATTRS} | {"retry_of": t.number}
    return create_trial(state=TrialState.WAITING, system_attrs={"fixed_params": fixed}, user_attrs=attrs)


def reap_stale(storage: Any, study_id: int, stale_after: float) -> int:
    """FAIL the RUNNING trials whose heartbeat is older than ``stale_after`` seconds and queue a copy of
    each; returns how many this worker requeued (only the worker whose FAIL lands requeues)."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    now, n = time.time(), 0
    for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
        beat = t.system_attrs.get(BEAT_ATTR) or (t.datetime_start.timestamp() if t.datetime_start else now)
        if now - beat <= stale_after:
            continue
        try:
            storage.set_trial_user_attr(t._trial_id, "error", f"worker lost: no heartbeat for {now - beat:.0f} s")
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:
            continue  # its worker finished it after all, or another worker reaped it first
        storage.create_new_trial(study_id, template_trial=_retry(t))
        n += 1
    return n


def _pop(storage: Any, study_id: int) -> Any | None:
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,)):
        try:
            if storage.set_trial_state_values(t._trial_id, TrialState.RUNNING):
                return storage.get_trial(t._trial_id)
        except UpdateFinishedTrialError:
            continue
    return None


class _Heartbeat:
    """A thread that writes ``time.time()`` into the trial every ``interval`` seconds."""

    def __init__(self, storage: Any, trial_id: int, interval: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(storage, trial_id, interval), daemon=True)

    def _run(self, storage: Any, trial_id: int, interval: float) -> None:
        while not self._stop.is_set():
            # A trial finished meanwhile, or a transient storage error: the next beat retries.
            with contextlib.suppress(Exception):
                storage.set_trial_system_attr(trial_id, BEAT_ATTR, time.time())
            self._stop.wait(interval)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _accuracy(metrics: Mapping[str, Any]) -> list[float]:
    return [float(metrics["accuracy"])]


def _finish(storage: Any, trial: Any, outcome: float | Mapping[str, Any] | BaseException,
            values: Callable[[Mapping[str, Any]], list[float]] = _accuracy) -> None:
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    tid = trial._trial_id
    try:
        if isinstance(outcome, BaseException):
            storage.set_trial_user_attr(tid, "error", f"{type(outcome).__name__}: {outcome}"[:500])
            storage.set_trial_state_values(tid, TrialState.FAIL)
            return
        metrics = dict(outcome) if isinstance(outcome, Mapping) else {"accuracy": float(outcome)}
        if not math.isfinite(float(metrics.get("accuracy", math.nan))):
            return _finish(storage, trial, ValueError(f"evaluator returned accuracy {metrics.get('accuracy')!r}"))
        storage.set_trial_user_attr(tid, "metrics", metrics)
        storage.set_trial_state_values(tid, TrialState.COMPLETE, values(metrics))
    except UpdateFinishedTrialError:  # reaped as stale while it ran (heartbeat starved): the retry stands
        pass


def _next_trial(storage: Any, study_id: int, *, heartbeat: float, stale_after: float, wait: bool) -> Any | None:
    """Take the next queued trial (RUNNING, heartbeat started, worker named), or None when the queue
    is empty and no trial is running (``wait=True`` polls while others run, to take over the trial of
    a worker that dies)."""
    from optuna.trial import TrialState

    while True:
        reap_stale(storage, study_id, stale_after)
        trial = _pop(storage, study_id)
        if trial is not None:
            storage.set_trial_system_attr(trial._trial_id, BEAT_ATTR, time.time())
            storage.set_trial_user_attr(trial._trial_id, "worker", f"{socket.gethostname()}:{os.getpid()}")
            return trial
        running = storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        if not (wait and running):
            return None
        time.sleep(min(heartbeat, max(stale_after / 4, 0.2)))


def _guarded(run: Callable[[], Any]) -> Any:
    try:
        return run()
    except Exception as e:  # a failing trial is recorded; the search goes on
        return e


def run_worker(storage: Any, name: str, evaluate: Evaluator, *, heartbeat: float = 10.0, stale_after: float = 60.0,
               max_trials: int | None = None, wait: bool = True,
               on_trial: Callable[[Candidate, Any], None] | None = None) -> int:
    """Evaluate queued candidates of study ``name`` until none is left; returns how many this worker ran.

    ``wait=True`` keeps an idle worker polling while other workers' trials run, so that a trial whose
    worker dies is taken over once it is stale; ``on_trial(candidate, outcome)`` reports progress.
    """
    from optuna.distributions import CategoricalDistribution

    study_id = storage.get_study_id_from_name(name)
    n_candidates = len(storage.get_study_user_attrs(study_id)[GRID_ATTR]["candidates"])
    dist = CategoricalDistribution(list(range(n_candidates)))
    done = 0
    while max_trials is None or done < max_trials:
        trial = _next_trial(storage, study_id, heartbeat=heartbeat, stale_after=stale_after, wait=wait)
        if trial is None:
            break
        cand = _candidate(trial)
        storage.set_trial_param(trial._trial_id, PARAM, dist.to_internal_repr(cand.index), dist)
        with _Heartbeat(storage, trial._trial_id, heartbeat):
            outcome = _guarded(lambda c=cand: evaluate(c))
        _finish(storage, trial, outcome)
        done += 1
        if on_trial is not None:
            on_trial(cand, outcome)
    return done


SampledEvaluator = Callable[[Any], Mapping[str, Any]]
"""Given an ``optuna.Trial`` (to draw parameters from), the trial's metrics (``accuracy`` at least)."""


def run_sampled_worker(storage: Any, name: str, sampler: Callable[[int], Any], evaluate: SampledEvaluator,
                       values: Callable[[Mapping[str, Any]], list[float]], *, heartbeat: float = 10.0,
                       stale_after: float = 60.0, wait: bool = True,
                       on_trial: Callable[[Any, Any], None] | None = None) -> int:
    """Like :func:`run_worker` for a study whose queued trials are empty *slots*: the sampler (TPE,
    NSGA-II, random) draws each slot's parameters when the worker takes it, from every trial finished
    so far (Optuna's ask-and-tell; a retried slot keeps the parameters it was drawn with). The slots
    bound the trial count exactly, however many workers race. ``sampler(trial_number)`` makes the
    sampler for one trial: seeded by the trial number, so that two workers started with one seed do not
    draw the same points, and a trial's draw does not depend on which worker runs it.
    ``values(metrics)`` gives the study's objective values. Returns how many trials this worker ran.
    """
    import optuna

    study_id, done = storage.get_study_id_from_name(name), 0
    while True:
        frozen = _next_trial(storage, study_id, heartbeat=heartbeat, stale_after=stale_after, wait=wait)
        if frozen is None:
            return done
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler(frozen.number))
        with _Heartbeat(storage, frozen._trial_id, heartbeat):
            outcome = _guarded(lambda s=study, t=frozen: evaluate(optuna.Trial(s, t._trial_id)))
        _finish(storage, frozen, outcome, values)
        done += 1
        if on_trial is not None:
            on_trial(storage.get_trial(frozen._trial_id), outcome)


def collect(storage: Any, name: str) -> SearchResult:
    """The study's state as a ranked :class:`SearchResult` (one record per candidate: its completed trial,
    else its running/queued one, else its last failure)."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        raise EffnetError(f"no study {name!r} in this storage; check --study") from None
    doc = storage.get_study_user_attrs(study_id)[GRID_ATTR]
    order = {"COMPLETE": 0, "RUNNING": 1, "WAITING": 2, "FAIL": 3}
    by_id: dict[int, list[Any]] = {}
    for t in storage.get_all_trials(study_id, deepcopy=False):
        if "grid_id" in t.user_attrs:
            by_id.setdefault(int(t.user_attrs["grid_id"]), []).append(t)
    records = []
    for c in (Candidate.from_dict(d) for d in doc["candidates"]):
        trials = sorted(by_id.get(c.index, []), key=lambda t: (order.get(t.state.name, 4), -t.number))
        if not trials:
            records.append(TrialRecord(c, "WAITING", attempts=0))
            continue
        t = trials[0]
        started = sum(x.state.name != "WAITING" for x in trials)
        records.append(TrialRecord(c, t.state.name, t.value if t.state.name == "COMPLETE" else None,
                                   t.user_attrs.get("metrics") or {}, t.user_attrs.get("error"), started,
                                   t.user_attrs.get("worker")))
    return SearchResult(name, GridSettings(**doc["grid"]), doc["context"], rank_records(records))


def completed_metrics(storage: Any, name: str) -> dict[int, dict[str, Any]]:
    """The metrics of every COMPLETE trial of study ``name`` by its candidate index (retries of one
    candidate are one entry); candidates not finished yet are absent."""
    from optuna.trial import TrialState

    study_id = storage.get_study_id_from_name(name)
    return {int(t.user_attrs["grid_id"]): dict(t.user_attrs.get("metrics") or {})
            | {"worker": t.user_attrs.get("worker"), "trial": t.number}
            for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.COMPLETE,))
            if "grid_id" in t.user_attrs}
