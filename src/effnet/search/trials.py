"""Running many budget trainings: the search's evaluator, a process pool for the rest, and baselines.

Every experiment here (STEP 1 search, STEP 2 family, single-dimension comparison) trains networks
scaled from one baseline under one :class:`~effnet.train.budget.Budget`. A *context* dict says
which (baseline spec, data, budget); it is JSON, so a search study stores it and a worker that joins
from another machine trains exactly what the others train.

On small CPU models one thread per process beats one process with two threads (less
synchronisation per tiny convolution), so parallel runs are processes with ``torch`` limited to one
thread each.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from effnet.catalog import MODELS, get_spec
from effnet.errors import EffnetError, SpecError
from effnet.scaling import Multipliers, limit_stride, scale_spec
from effnet.search.grid import Candidate
from effnet.spec import NetworkSpec

__all__ = ["Job", "job_key", "make_context", "resolve_baseline", "run_jobs", "run_search_workers", "search_evaluator"]

_ARRAYS: dict[str, Any] = {}  # per process: (data, budget, seed) -> ImageArrays, loaded once


def resolve_baseline(name: str, *, depth: float = 1.0, width: float = 1.0, total_stride: int | None = None,
                     resolution: int | None = None) -> NetworkSpec:
    """A baseline from a registered name or a spec JSON file (``NetworkSpec.to_dict()``, or the
    ``{"spec": ...}`` that ``effnet describe --json`` prints), optionally shrunk and adapted to small
    images. Depth/width here *define* the baseline; scaling then starts from it (as B0 is the
    paper's baseline, §4)."""
    if name in MODELS:
        spec = get_spec(name, multipliers=Multipliers(depth, width) if (depth, width) != (1, 1) else None)
    else:
        path = Path(name)
        if not path.is_file():
            raise SpecError(f"baseline {name!r} is neither a registered model (`effnet models`) nor a spec file")
        try:
            d = json.loads(path.read_text())
        except ValueError as e:
            raise SpecError(f"baseline file {name!r} is not JSON ({e}); write one with `effnet describe --json`"
                            ) from None
        spec = NetworkSpec.from_dict(d.get("spec", d) if isinstance(d, dict) else d)
        if (depth, width) != (1, 1):
            spec = scale_spec(spec, Multipliers(depth, width))
    if total_stride:
        spec = limit_stride(spec, total_stride)
    return spec.replace(resolution=resolution) if resolution else spec


def make_context(baseline: NetworkSpec, data: str, budget: Any, seed: int = 0) -> dict[str, Any]:
    """The JSON context of an experiment (round-tripped so stored and asked copies compare equal)."""
    return json.loads(json.dumps({"baseline": baseline.to_dict(), "data": data, "budget": budget.to_dict(),
                                  "seed": seed}))


def _arrays(context: Mapping[str, Any]) -> Any:
    from effnet.train.budget import Budget, load_arrays

    key = json.dumps([context["data"], context["budget"], context.get("seed", 0)], sort_keys=True)
    if key not in _ARRAYS:
        _ARRAYS[key] = load_arrays(context["data"], Budget(**context["budget"]), seed=context.get("seed", 0))
    return _ARRAYS[key]


def train_context(spec_dict: Mapping[str, Any], context: Mapping[str, Any], seed: int,
                  save: Path | None = None) -> dict[str, Any]:
    """Train one spec under ``context``'s data and budget; the outcome as a dict. ``save``: also write
    the weights there (``torch.save`` of the state dict) for later use (class activation maps)."""
    from effnet.macs import estimate_cost
    from effnet.train.budget import Budget, train_spec

    spec = NetworkSpec.from_dict(dict(spec_dict))
    trained = train_spec(spec, _arrays(context), Budget(**context["budget"]), seed=seed)
    out = trained.to_dict()
    base = NetworkSpec.from_dict(context["baseline"])
    k = len(_arrays(context).classes)
    out["macs_ratio"] = out["macs"] / estimate_cost(base, num_classes=k, in_chans=1).macs
    if save is not None and trained.model is not None:
        import torch

        torch.save(trained.model.state_dict(), save)
    return out


def search_evaluator(context: Mapping[str, Any]) -> Callable[[Candidate], dict[str, Any]]:
    """STEP 1's evaluator: the φ = 1 network of a candidate, (α, β, γ) applied to the baseline, trained
    with the context's budget; returns its accuracy on the held-out images and its measured cost."""
    base = NetworkSpec.from_dict(dict(context["baseline"]))

    def evaluate(c: Candidate) -> dict[str, Any]:
        spec = scale_spec(base, Multipliers(c.alpha, c.beta, c.gamma), name=f"{base.name}@a{c.alpha:g}b{c.beta:g}"
                          f"g{c.gamma:g}")
        return train_context(spec.to_dict(), context, int(context.get("seed", 0)))

    return evaluate


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


Job = tuple[dict[str, Any], dict[str, Any], int]


def _canonical(job: Job) -> str:
    # The spec's name does not change what is trained: STEP 2's phi = 1 and compare's compound arm are one job.
    spec, context, seed = job
    return json.dumps([{k: v for k, v in spec.items() if k != "name"}, context, seed], sort_keys=True)


def job_key(job: Job) -> str:
    """A stable name for a (spec dict, context, seed) training job: its cached outcome and weights."""
    return hashlib.sha256(_canonical(job).encode()).hexdigest()[:16]


def _job(job: Job, cache: str | None) -> dict[str, Any]:
    spec, context, seed = job
    if cache is None:
        return train_context(spec, context, seed)
    key = Path(cache) / job_key(job)
    out = train_context(spec, context, seed, save=key.with_suffix(".pt"))
    key.with_suffix(".json").write_text(json.dumps(out))
    return out


def run_jobs(jobs: Sequence[Job], *, workers: int = 1, cache: str | Path | None = None,
             on_done: Callable[[int, dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Train every (spec dict, context, seed) job; ``workers`` processes (one torch thread each), or
    in-process when 1. Identical jobs are trained once. With a ``cache`` folder each job's outcome and
    weights are kept there as ``<job_key>.json``/``.pt`` and a job already there is not trained again
    (a rerun of a killed experiment picks up where it stopped). Results come back in job order."""
    keys = [_canonical(j) for j in jobs]
    first = {k: tuple(j) for k, j in reversed(list(zip(keys, jobs, strict=True)))}
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
        cached = None if cache is None else Path(cache) / (job_key(first[key]) + ".json")  # type: ignore[arg-type]
        if cached is not None and cached.is_file() and cached.with_suffix(".pt").is_file():
            done(key, json.loads(cached.read_text()))
        else:
            todo.append(key)
    if workers <= 1 or len(todo) <= 1:
        for key in todo:
            done(key, _job(first[key], cache_s))  # type: ignore[arg-type]
    else:
        with ProcessPoolExecutor(min(workers, len(todo)), mp_context=mp.get_context("fork"),
                                 initializer=_init_worker) as pool:
            futures = {pool.submit(_job, first[key], cache_s): key for key in todo}
            for f in as_completed(futures):
                done(futures[f], f.result())
    return [results[k] for k in keys]


def _search_process(url: str, study: str, heartbeat: float, stale_after: float) -> None:
    from effnet.search.study import open_storage, run_worker

    _init_worker()
    storage = open_storage(url)
    context = storage.get_study_user_attrs(storage.get_study_id_from_name(study))["effnet.grid"]["context"]
    run_worker(storage, study, search_evaluator(context), heartbeat=heartbeat, stale_after=stale_after)


def run_search_workers(url: str, study: str, *, workers: int = 1, heartbeat: float = 10.0, stale_after: float = 60.0,
                       on_progress: Callable[[Any], None] | None = None) -> int:
    """Run ``workers`` search workers on an existing study until it is done; in-process when 1, else
    that many processes (each a full worker: they coordinate through the storage alone).
    ``on_progress(result)`` gets the collected study state every second. Returns the worker count."""
    from effnet.search.study import collect, open_storage, run_worker

    storage = open_storage(url)
    if workers <= 1:
        context = storage.get_study_user_attrs(storage.get_study_id_from_name(study))["effnet.grid"]["context"]
        if on_progress is not None:
            on_progress(collect(storage, study))  # a resumed study starts where it stopped
        run_worker(storage, study, search_evaluator(context), heartbeat=heartbeat, stale_after=stale_after,
                   on_trial=(lambda _c, _o: on_progress(collect(storage, study))) if on_progress else None)
        return 1
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_search_process, args=(url, study, heartbeat, stale_after)) for _ in range(workers)]
    for p in procs:
        p.start()
    try:
        while any(p.is_alive() for p in procs):
            if on_progress is not None:
                on_progress(collect(storage, study))
            time.sleep(1.0)
    finally:
        for p in procs:
            p.join()
    if on_progress is not None:
        on_progress(collect(storage, study))
    bad = [p.exitcode for p in procs if p.exitcode]
    if bad:
        raise EffnetError(f"{len(bad)} of {workers} search workers exited with codes {bad}; the study keeps what "
                          "finished: rerun the same command to resume it")
    return workers
