"""Running many budget trainings: the search's evaluator, a process pool for the rest, and baselines.

Every experiment here (STEP 1 search, STEP 2 family, single-dimension comparison) trains networks
scaled from one baseline under one :class:`~effnet.train.budget.Budget`. An :class:`Experiment`
value says which (baseline spec, data, budget, seed). Inside a process it is passed as that frozen
value; it becomes JSON only where it crosses a boundary (a search study's storage, a job's cache
key), so a worker that joins from another machine trains exactly what the others train.

On small CPU models one thread per process beats one process with two threads (less
synchronisation per tiny convolution), so parallel runs are processes with ``torch`` limited to one
thread each. Those processes are started by a ``forkserver`` (:func:`worker_context`), so they train
correctly whatever the calling process did before (docs/nas.md, "Worker processes"); what they run
is therefore pickled: module-level functions, ``functools.partial`` of them, and frozen values.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import pickle
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from dataclasses import replace as _replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from effnet.catalog import MODELS, get_spec, load_spec_file, searched_proxy
from effnet.errors import EffnetError
from effnet.scaling import DepthRounding, Multipliers, limit_stride, scale_spec
from effnet.search.grid import Candidate
from effnet.spec import NetworkSpec

if TYPE_CHECKING:
    from multiprocessing.context import ForkServerContext, SpawnContext  # no forkserver on Windows

    from effnet.train.budget import Budget, ImageArrays

__all__ = ["EvaluatorFactory", "Experiment", "Job", "job_key", "proxy_settings", "resolve_baseline", "run_jobs",
           "run_search_workers", "run_studies_workers", "run_study_workers", "run_worker_processes", "search_evaluator",
           "train_one", "worker_context"]

_ARRAYS: dict[tuple[str, Budget, int], ImageArrays] = {}  # per process, loaded once per (data, budget, seed)


@dataclass(frozen=True)
class Experiment:
    """What every proxy training of one search, family or comparison shares.

    Attributes:
        baseline: the unscaled network every candidate is scaled from.
        data: a built-in data set name (``fashion-mnist``, ``mnist``, ``digits``).
        budget: the fixed training budget every network gets.
        seed: the data split's seed (which training images are held out for selection).
    """

    baseline: NetworkSpec
    data: str
    budget: Budget
    seed: int = 0

    def replace(self, **changes: Any) -> Experiment:
        return _replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON for the storage and process boundary (the keys search studies have always stored)."""
        return {"baseline": self.baseline.to_dict(), "data": self.data, "budget": self.budget.to_dict(),
                "seed": self.seed}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Experiment:
        from effnet.train.budget import Budget

        return cls(NetworkSpec.from_dict(dict(d["baseline"])), str(d["data"]), Budget(**d["budget"]),
                   int(d.get("seed", 0)))

    def arrays(self) -> ImageArrays:
        """The experiment's images, loaded once per process (worker processes receive their parent's)."""
        from effnet.train.budget import load_arrays

        key = (self.data, self.budget, self.seed)
        if key not in _ARRAYS:
            _ARRAYS[key] = load_arrays(self.data, self.budget, seed=self.seed)
        return _ARRAYS[key]

    def macs_ratio(self, spec: NetworkSpec) -> float:
        """``spec``'s MACs over the baseline's, both with this data's class count and gray input: the
        one definition the grid's candidates, the family and the comparison all report."""
        from effnet.macs import estimate_cost

        k = len(self.arrays().classes)
        return estimate_cost(spec, num_classes=k, in_chans=1).macs / estimate_cost(self.baseline, num_classes=k,
                                                                                     in_chans=1).macs


def proxy_settings(depth: float, width: float, total_stride: int | None, resolution: int | None) -> dict[str, Any]:
    """How :func:`resolve_baseline` shrinks a baseline, as ``effnet nas`` records it in ``baseline.json``
    (``"proxy"``) so that the same settings later give back the searched proxy exactly."""
    return {"depth": float(depth), "width": float(width), "total_stride": total_stride or None,
            "resolution": resolution or None}


def resolve_baseline(name: str, *, depth: float = 1.0, width: float = 1.0, total_stride: int | None = None,
                     resolution: int | None = None, depth_rounding: DepthRounding | None = None) -> NetworkSpec:
    """A baseline from a registered name or a spec JSON file (``NetworkSpec.to_dict()``, or the
    ``{"spec": ...}`` that ``effnet describe --json`` prints), optionally shrunk and adapted to small
    images. Depth/width here *define* the baseline; scaling then starts from it (as B0 is the
    paper's baseline, §4). ``depth_rounding`` (None: the spec's own, ``ceil`` for registered models)
    rounds the baseline's own depth and every network scaled from it."""
    if name in MODELS:
        spec = get_spec(name, multipliers=Multipliers(depth, width) if (depth, width) != (1, 1) else None,
                        depth_rounding=depth_rounding or "ceil")
    else:
        proxy = searched_proxy(name, proxy_settings(depth, width, total_stride, resolution))
        if proxy is not None:  # an `effnet nas` result at the settings it was searched with
            return proxy if depth_rounding is None else proxy.replace(depth_rounding=depth_rounding)
        spec = load_spec_file(name)
        spec = spec if depth_rounding is None else spec.replace(depth_rounding=depth_rounding)
        if (depth, width) != (1, 1):
            spec = scale_spec(spec, Multipliers(depth, width))
    if total_stride:
        spec = limit_stride(spec, total_stride)
    return spec.replace(resolution=resolution) if resolution else spec


def train_one(spec: NetworkSpec, exp: Experiment, seed: int, save: Path | None = None,
              device: str = "cpu") -> dict[str, Any]:
    """Train one spec under ``exp``'s data and budget; the outcome as a dict. ``save``: also write
    the weights there (``torch.save`` of the state dict) for later use (class activation maps)."""
    from effnet.train.budget import train_spec

    trained = train_spec(spec, exp.arrays(), exp.budget, seed=seed, device=device)
    out = trained.to_dict()
    out["macs_ratio"] = exp.macs_ratio(spec)
    if save is not None and trained.model is not None:
        import torch

        torch.save(trained.model.state_dict(), save)
    return out


def search_evaluator(exp: Experiment) -> Callable[[Candidate], dict[str, Any]]:
    """STEP 1's evaluator: the φ = 1 network of a candidate, (α, β, γ) applied to the baseline, trained
    with the experiment's budget; returns its accuracy on the held-out images and its measured cost."""
    base = exp.baseline

    def evaluate(c: Candidate) -> dict[str, Any]:
        spec = scale_spec(base, Multipliers(c.alpha, c.beta, c.gamma), name=f"{base.name}@a{c.alpha:g}b{c.beta:g}"
                          f"g{c.gamma:g}")
        return train_one(spec, exp, exp.seed)

    return evaluate


def _init_worker(arrays: Mapping[tuple[str, Budget, int], ImageArrays] | None = None) -> None:
    """A worker's start: one torch thread, and the images its parent already holds (handed over
    pickled, a copy in milliseconds, instead of reading the data set again: docs/nas.md)."""
    import torch

    torch.set_num_threads(1)
    _ARRAYS.update(arrays or {})


# What the forkserver imports once, so that each worker forked from it starts with torch, effnet's
# trainer and Optuna already loaded instead of importing them itself.
_PRELOAD = ["effnet.train.budget", "effnet.search.study", "effnet.search.storage", "optuna"]


def worker_context() -> ForkServerContext | SpawnContext:
    """The start method of every worker process here: ``forkserver``, whatever the caller did before.

    PyTorch cannot run autograd in a child forked from a process that has already run a backward
    pass on a machine with an accelerator (pytorch/pytorch, torch/csrc/autograd/engine.cpp:
    ``start_device_threads`` arms ``forked_autograd_child`` when a non-CPU device exists, and the
    child's first backward raises "Unable to handle autograd's threading in combination with
    fork-based multiprocessing"). With ``fork``, a notebook or test that trained anything first on a
    CUDA machine failed every trial. A forkserver is a fresh interpreter, started once per calling
    process, that never runs autograd; workers are forked from it. It preloads torch, the trainer and
    Optuna (``_PRELOAD``), and each worker receives the images its parent has loaded
    (``_init_worker``), so a worker starts about as fast as a plain fork (measured in docs/nas.md).
    PyTorch exposes no "autograd device threads started" test, so the choice cannot depend on the
    parent's state: always this.
    """
    if "forkserver" not in mp.get_all_start_methods():  # Windows: spawn, the same contract, slower
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)  # no effect once this process's forkserver runs
    return ctx


def _require_picklable(work: object, what: str) -> None:
    """A lambda or closure cannot reach a forkserver's worker: say so before any process starts."""
    try:
        pickle.dumps(work)
    except (pickle.PicklingError, AttributeError, TypeError) as e:
        raise EffnetError(f"{what} cannot be sent to a worker process ({e}); pass a module-level function, "
                          "a functools.partial of one or a dataclass instance, or use workers=1") from None


Job = tuple[NetworkSpec, Experiment, int]  # (network, experiment, training seed)


def _canonical(job: Job) -> str:
    # The spec's name does not change what is trained: STEP 2's phi = 1 and compare's compound arm are one job.
    spec, exp, seed = job
    return json.dumps([{k: v for k, v in spec.to_dict().items() if k != "name"}, exp.to_dict(), seed],
                      sort_keys=True)


def job_key(job: Job) -> str:
    """A stable name for a (spec, experiment, seed) training job: its cached outcome and weights."""
    return hashlib.sha256(_canonical(job).encode()).hexdigest()[:16]


def _job(job: Job, cache: str | None) -> dict[str, Any]:
    spec, exp, seed = job
    if cache is None:
        return train_one(spec, exp, seed)
    key = Path(cache) / job_key(job)
    out = train_one(spec, exp, seed, save=key.with_suffix(".pt"))
    key.with_suffix(".json").write_text(json.dumps(out))
    return out


def run_jobs(jobs: Sequence[Job], *, workers: int = 1, cache: str | Path | None = None,
             on_done: Callable[[int, dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Train every (spec, experiment, seed) job; ``workers`` processes (one torch thread each), or
    in-process when 1. Identical jobs are trained once. With a ``cache`` folder each job's outcome and
    weights are kept there as ``<job_key>.json``/``.pt`` and a job already there is not trained again
    (a rerun of a killed experiment picks up where it stopped). Results come back in job order."""
    keys = [_canonical(j) for j in jobs]
    first = {k: j for k, j in reversed(list(zip(keys, jobs, strict=True)))}
    unique = list(dict.fromkeys(keys))
    results: dict[str, dict[str, Any]] = {}
    cache_s = None if cache is None else str(cache)

    def done(key: str, res: dict[str, Any]) -> None:
        results[key] = res
        if on_done is not None:
            for i, k in enumerate(keys):
                if k == key:
                    on_done(i, res)

    todo = []
    for key in unique:
        cached = None if cache is None else Path(cache) / (job_key(first[key]) + ".json")
        if cached is not None and cached.is_file() and cached.with_suffix(".pt").is_file():
            done(key, json.loads(cached.read_text()))
        else:
            todo.append(key)
    if workers <= 1 or len(todo) <= 1:
        for key in todo:
            done(key, _job(first[key], cache_s))
    else:
        with ProcessPoolExecutor(min(workers, len(todo)), mp_context=worker_context(),
                                 initializer=_init_worker, initargs=(dict(_ARRAYS),)) as pool:
            futures = {pool.submit(_job, first[key], cache_s): key for key in todo}
            for f in as_completed(futures):
                done(futures[f], f.result())
    return [results[k] for k in keys]


def _search_evaluator_of(storage: Any, study: str) -> Callable[[Candidate], dict[str, Any]]:
    return search_evaluator(_stored_experiment(storage, study))


def _studies_worker(url: str, studies: tuple[str, ...], make: EvaluatorFactory, heartbeat: float,
                    stale_after: float, on_trial: Callable[[Candidate, Any], None] | None = None) -> None:
    """One worker over several studies: first every queued trial, study by study without waiting, so
    that a worker whose study has nothing left queued moves on to the next study instead of idling
    while the last trainings of the first one run; then each study again, waiting for other workers'
    running trials, to take over any whose worker died (``stale_after``)."""
    from effnet.search.storage import open_storage
    from effnet.search.study import run_worker

    storage = open_storage(url)
    evaluators = {study: make(storage, study) for study in studies}
    for wait in (False, True):
        for study in studies:
            run_worker(storage, study, evaluators[study], heartbeat=heartbeat, stale_after=stale_after, wait=wait,
                       on_trial=on_trial)


def _stored_experiment(storage: Any, study: str) -> Experiment:
    """The experiment a search study was created with (its JSON in the study's attributes)."""
    attrs = storage.get_study_user_attrs(storage.get_study_id_from_name(study))
    return Experiment.from_dict(attrs["effnet.grid"]["context"])


EvaluatorFactory = Callable[[Any, str], Callable[[Candidate], dict[str, Any]]]
"""(storage, study name) → the evaluator of that study's queued trials, built from what the study stores;
a module-level function, since worker processes receive it pickled."""


def run_study_workers(url: str, study: str, make: EvaluatorFactory, *, workers: int = 1, heartbeat: float = 10.0,
                      stale_after: float = 60.0, on_progress: Callable[[], None] | None = None) -> int:
    """Run ``workers`` workers on an existing study until it is done; in-process when 1, else that many
    worker processes (each a full worker: they coordinate through the storage alone, so more can join
    from other machines; ``make`` is pickled to them, so it is a module-level function).
    ``on_progress()`` is called after each trial (in-process) or every second. Returns the worker count."""
    return run_studies_workers(url, [study], make, workers=workers, heartbeat=heartbeat, stale_after=stale_after,
                               on_progress=on_progress)


def run_studies_workers(url: str, studies: Sequence[str], make: EvaluatorFactory, *, workers: int = 1,
                        heartbeat: float = 10.0, stale_after: float = 60.0,
                        on_progress: Callable[[], None] | None = None) -> int:
    """:func:`run_study_workers` over several existing studies at once (the budget sweep's): each
    worker takes the queued trials of the first study that has any (:func:`_studies_worker`), so the
    2-core sweep does not run its last training of a study on one core while the next study waits.
    Returns the worker count."""
    if workers <= 1:
        if on_progress is not None:
            on_progress()  # a resumed study starts where it stopped
        _studies_worker(url, tuple(studies), make, heartbeat, stale_after,
                        on_trial=(lambda _c, _o: on_progress()) if on_progress else None)
        return 1
    return run_worker_processes(workers, partial(_studies_worker, url, tuple(studies), make, heartbeat, stale_after),
                                on_progress)


def _in_worker(work: Callable[[], None], arrays: Mapping[tuple[str, Budget, int], ImageArrays]) -> None:
    _init_worker(arrays)
    work()


def run_worker_processes(workers: int, work: Callable[[], None], poll: Callable[[], None] | None = None) -> int:
    """Run ``work`` in ``workers`` processes (one torch thread each, started by :func:`worker_context`)
    until all return, calling ``poll()`` first, every second and at the end. ``work`` is pickled to
    them: a module-level function or a ``functools.partial`` of one. Returns the worker count.

    Raises:
        EffnetError: ``work`` cannot be pickled (before any process starts), or a worker exited with
            an error; the study keeps what finished.
    """
    _require_picklable(work, "the workers' function")
    ctx = worker_context()
    procs = [ctx.Process(target=_in_worker, args=(work, dict(_ARRAYS))) for _ in range(workers)]
    for p in procs:
        p.start()
    try:
        while any(p.is_alive() for p in procs):
            if poll is not None:
                poll()
            time.sleep(1.0)
    finally:
        for p in procs:
            p.join()
    if poll is not None:
        poll()
    bad = [p.exitcode for p in procs if p.exitcode]
    if bad:
        raise EffnetError(f"{len(bad)} of {workers} workers exited with codes {bad}; the study keeps what "
                          "finished: rerun the same command to resume it")
    return workers


def run_search_workers(url: str, study: str, *, workers: int = 1, heartbeat: float = 10.0, stale_after: float = 60.0,
                       on_progress: Callable[[Any], None] | None = None) -> int:
    """Run ``workers`` search workers on an existing study until it is done (:func:`run_study_workers`
    with STEP 1's evaluator). ``on_progress(result)`` gets the collected study state. Returns the worker count."""
    from effnet.search.storage import open_storage
    from effnet.search.study import collect

    storage = open_storage(url)
    report = None if on_progress is None else (lambda: on_progress(collect(storage, study)))
    return run_study_workers(url, study, _search_evaluator_of, workers=workers, heartbeat=heartbeat,
                             stale_after=stale_after, on_progress=report)
