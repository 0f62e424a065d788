"""Step 0 of the paper: search the baseline itself (EfficientNet §4, MnasNet §3–4), on effnet's
proxy trainer and shared Optuna study.

Each trial draws a genome of :mod:`effnet.search.nas_space` with an Optuna sampler, decodes it to a
``NetworkSpec`` over the base table, trains it with the experiment's fixed budget on held-out
*training* images (never the test set), and is scored by :mod:`effnet.search.nas_objective`.
Samplers, not a hand-written controller: TPE (Bergstra et al. 2011) on the scalar reward, NSGA-II
(Deb et al. 2002) for the Pareto form, and random search, the baseline every NAS result is judged
against (Li & Talwalkar 2019; Sciuto et al. 2019). MnasNet's PPO controller needed 8K models; with
the ~100 trials a CPU affords it would not learn (docs/nas.md).

The study holds ``trials`` queued slots (:func:`effnet.search.study.run_sampled_worker`): workers
on any machine take slots, a killed worker's slot is retried with the genome it had drawn, a raising
trial is recorded as failed, and a study name reused with other settings is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from effnet.errors import EffnetError
from effnet.search.nas_objective import Objective
from effnet.search.nas_space import GENE_KEYS, SearchSpace, decode, genome_from_params
from effnet.search.trials import Experiment, run_worker_processes, train_one
from effnet.spec import NetworkSpec

__all__ = ["NAS_ATTR", "STRATEGIES", "LatencyFn", "NasSettings", "base_cost", "collect_nas", "nas_evaluator",
           "open_nas", "run_nas_workers"]

NAS_ATTR = "effnet.nas"
STRATEGIES = ("tpe", "nsga2", "random")
LatencyFn = Callable[[NetworkSpec], float]
"""Measured milliseconds of one forward pass of a spec; injected by the caller (the CLI times it with
effnet's fastest inference engine, which lives in ``effnet.deploy``, out of this package's reach).
With two or more workers it is pickled to them: a module-level function or a dataclass instance."""


@dataclass(frozen=True)
class NasSettings:
    """What one architecture search is: space, objective, sampler, trial count and sampler seed."""

    space: SearchSpace
    objective: Objective
    strategy: str = "tpe"
    trials: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise EffnetError(f"unknown strategy {self.strategy!r}; use one of {', '.join(STRATEGIES)}")
        if not isinstance(self.trials, int) or self.trials < 1:
            raise EffnetError(f"--trials {self.trials!r}: a search needs at least 1 trial (e.g. 20)")

    def to_dict(self) -> dict[str, Any]:
        return {"space": self.space.to_dict(), "objective": self.objective.to_dict(), "strategy": self.strategy,
                "trials": self.trials, "seed": self.seed}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NasSettings:
        return cls(SearchSpace.from_dict(d["space"]), Objective.from_dict(d["objective"]), str(d["strategy"]),
                   int(d["trials"]), int(d["seed"]))

    def sampler(self, trial_number: int) -> Any:
        """The Optuna sampler for one trial, seeded by (seed, trial number): every strategy's trial k
        starts from the same random state, so TPE's random start-up trials are random search's own
        (a paired comparison). TPE draws a quarter of the trials at random first (at most 10, Optuna's
        default) and uses the constant liar so that parallel workers do not crowd one point."""
        import optuna

        seed = self.seed * 1_000_003 + trial_number
        if self.strategy == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if self.strategy == "nsga2":
            pop = max(4, min(20, self.trials // 4))
            return optuna.samplers.NSGAIISampler(seed=seed, population_size=pop)
        startup = max(2, min(10, self.trials // 4))
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True, multivariate=True)


def base_cost(exp: Experiment, latency: LatencyFn | None = None) -> dict[str, float]:
    """The proxy baseline's MACs (at the experiment's classes and gray input) and, given a timing
    function, its latency: the default targets T (400M MACs is an ImageNet-224 target, §4; a proxy
    network at 20 px is ~100× smaller)."""
    from effnet.macs import estimate_cost

    k = len(exp.arrays().classes)
    out = {"macs": float(estimate_cost(exp.baseline, num_classes=k, in_chans=1).macs)}
    if latency is not None:
        out["latency"] = float(latency(exp.baseline))
    return out


def _draw(trial: Any, space: SearchSpace, n: int) -> list[dict[str, Any]]:
    opts = space.options()
    params = {f"s{i}_{k}": trial.suggest_categorical(f"s{i}_{k}", list(opts[k])) for i in range(n) for k in GENE_KEYS}
    return genome_from_params(params, n)


Train = Callable[[NetworkSpec], Mapping[str, Any]]


def nas_evaluator(exp: Experiment, settings: NasSettings, latency: LatencyFn | None = None, *,
                  train: Train | None = None, num_classes: int | None = None) -> Callable[[Any], dict[str, Any]]:
    """A trial → its genome drawn by the sampler, decoded, costed, trained; returns the metrics that
    results.json keeps (genome, spec, params, MACs, latency, accuracy, reward, objective values).

    ``train(spec)`` defaults to the experiment's fixed-budget proxy training (accuracy on held-out
    training images); ``num_classes`` to the experiment's data's.
    """
    from effnet.macs import estimate_cost

    obj, space, base = settings.objective, settings.space, exp.baseline
    if obj.cost == "latency" and latency is None:
        raise EffnetError("a latency objective needs a timing function (the CLI measures latency); use "
                          "--objective macs without one")
    fit: Train = train or (lambda spec: train_one(spec, exp, exp.seed))

    def evaluate(trial: Any) -> dict[str, Any]:
        genome = _draw(trial, space, len(base.stages))
        spec = decode(genome, base)
        k = num_classes if num_classes is not None else len(exp.arrays().classes)
        cost = estimate_cost(spec, num_classes=k, in_chans=1)
        ms = latency(spec) if latency is not None else None
        out = dict(fit(spec))
        c = float(cost.macs if obj.cost == "macs" else ms)  # type: ignore[arg-type]
        return out | {"genome": genome, "spec": spec.to_dict(), "params": cost.params, "macs": cost.macs,
                      "latency_ms": ms, "reward": obj.scalar(out["accuracy"], c),
                      "values": obj.values(out["accuracy"], c)}

    return evaluate


def _values(metrics: Mapping[str, Any]) -> list[float]:
    return [float(v) for v in metrics["values"]]


def open_nas(storage: Any, name: str, settings: NasSettings | None = None, exp: Experiment | None = None,
             *, queue_timeout: float = 30.0) -> dict[str, Any]:
    """Create study ``name`` with ``settings.trials`` queued slots, or join it; the stored document.

    Raises:
        EffnetError: the study exists with other settings (it is kept), or the base is not in the space.
    """
    from effnet.search.study import QUEUED_ATTR, open_doc_study

    asked = None
    if settings is not None and exp is not None:
        asked = {"version": 1, **settings.to_dict(), "context": exp.to_dict()}
    directions = settings.objective.directions if settings is not None else ("maximize",)

    def queue(study_id: int, doc: Mapping[str, Any], resume: bool) -> None:
        from optuna.trial import TrialState, create_trial

        have = ({t.user_attrs.get("slot") for t in storage.get_all_trials(study_id, deepcopy=False)}
                if resume else set())
        for i in range(int(doc["trials"])):
            if i not in have:
                storage.create_new_trial(study_id, template_trial=create_trial(
                    state=TrialState.WAITING, user_attrs={"slot": i}))
        storage.set_study_user_attr(study_id, QUEUED_ATTR, True)

    return open_doc_study(storage, name, asked, queue, attr=NAS_ATTR, what="architecture search",
                          command="effnet nas", directions=directions, queue_timeout=queue_timeout)


def _nas_worker(url: str, study: str, latency: LatencyFn | None, heartbeat: float, stale_after: float,
                on_trial: Callable[[Any, Any], None] | None = None) -> None:
    import warnings

    from optuna.exceptions import ExperimentalWarning

    from effnet.search.storage import open_storage
    from effnet.search.study import run_sampled_worker

    warnings.filterwarnings("ignore", category=ExperimentalWarning)  # multivariate TPE: stable since 2020
    storage = open_storage(url)
    doc = storage.get_study_user_attrs(storage.get_study_id_from_name(study))[NAS_ATTR]
    settings, exp = NasSettings.from_dict(doc), Experiment.from_dict(doc["context"])
    run_sampled_worker(storage, study, settings.sampler, nas_evaluator(exp, settings, latency), _values,
                       heartbeat=heartbeat, stale_after=stale_after, on_trial=on_trial)


def run_nas_workers(url: str, study: str, *, workers: int = 1, latency: LatencyFn | None = None,
                    heartbeat: float = 10.0, stale_after: float = 60.0,
                    on_progress: Callable[[dict[str, Any]], None] | None = None) -> int:
    """Run ``workers`` architecture-search workers on an existing study until its slots are done
    (in-process when 1, else :func:`effnet.search.trials.run_worker_processes`, which pickles
    ``latency`` to them); ``on_progress(collected)`` gets :func:`collect_nas` output as it changes."""
    from effnet.search.storage import open_storage

    storage = open_storage(url)
    poll = None if on_progress is None else (lambda: on_progress(collect_nas(storage, study)))
    if workers <= 1:
        if poll is not None:
            poll()
        _nas_worker(url, study, latency, heartbeat, stale_after, (lambda _t, _o: poll()) if poll else None)
        return 1
    return run_worker_processes(workers, partial(_nas_worker, url, study, latency, heartbeat, stale_after), poll)


def _record(t: Any, attempts: int) -> dict[str, Any]:
    m = dict(t.user_attrs.get("metrics") or {})
    return {"slot": t.user_attrs.get("slot"), "trial": t.number, "state": t.state.name, "attempts": attempts,
            "genome": m.get("genome"), "spec": m.get("spec"), "params": m.get("params"), "macs": m.get("macs"),
            "latency_ms": m.get("latency_ms"), "accuracy": m.get("accuracy"), "reward": m.get("reward"),
            "values": m.get("values"), "seconds": m.get("seconds"), "error": t.user_attrs.get("error"),
            "worker": t.user_attrs.get("worker")}


def collect_nas(storage: Any, name: str) -> dict[str, Any]:
    """The study as results.json holds it: settings, context, counts, and one record per slot (its
    completed trial, else its running/queued one, else its last failure), best reward first."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        raise EffnetError(f"no study {name!r} in this storage; check --study / --out") from None
    doc = storage.get_study_user_attrs(study_id).get(NAS_ATTR)
    if doc is None:
        raise EffnetError(f"study {name!r} is not an architecture search (`effnet nas`)")
    order = {"COMPLETE": 0, "RUNNING": 1, "WAITING": 2, "FAIL": 3}
    by_slot: dict[int, list[Any]] = {}
    for t in storage.get_all_trials(study_id, deepcopy=False):
        by_slot.setdefault(int(t.user_attrs.get("slot", -1)), []).append(t)
    records = []
    for slot in range(int(doc["trials"])):
        ts = sorted(by_slot.get(slot, []), key=lambda t: (order.get(t.state.name, 4), -t.number))
        if ts:
            records.append(_record(ts[0], sum(x.state.name != "WAITING" for x in ts)))
    records.sort(key=lambda r: (r["state"] != "COMPLETE", -(r["reward"] or 0.0), r["slot"]))
    counts = {s: sum(r["state"] == s for r in records) for s in ("COMPLETE", "FAIL", "RUNNING", "WAITING")}
    return {"study": name, "settings": {k: v for k, v in doc.items() if k != "context"},
            "context": doc["context"], "counts": counts, "trials": records}

