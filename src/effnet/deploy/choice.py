"""The automatic engine choice: timed so that a busy machine cannot flip it, reported, and remembered.

Why each rule (docs/engines.md has the measurements):

* **Interleaved rounds, medians** (:func:`effnet.deploy.timing.interleaved_times`): a burst of load
  slows whichever contender runs during it; interleaving spreads it over all of them and the median
  drops the rounds it hit.
* **A minimum time**: every candidate is called often enough to fill ``min_seconds`` / candidates,
  so a 5 ms engine is not judged on five calls, each one scheduler tick from doubling.
* **Re-measure when within noise**: when the rounds, compared in pairs, cannot tell the two fastest
  apart (the median ratio under 1.05, or the faster one ahead in fewer than 70 % of the rounds), more
  rounds are taken; if they still cannot, the choice falls to a fixed order (:data:`PREFERENCE`)
  instead of to the last coin toss. That is what keeps ten calls under a competing process on one
  engine.
* **Cached** per (model spec, input shape, dtype, CPU features, threads, engine versions) in
  ``~/.cache/effnet/engine-choice.json`` (written atomically; :func:`cache_root`): a repeated call
  builds and verifies only the engine chosen before and times nothing. ``EFFNET_ENGINE_CACHE=off``
  disables the file (a path moves it); ``EFFNET_ENGINE=<engine>`` makes ``auto`` take that engine
  without timing.
* **A choice made beside other work is provisional**: the race records how many cores other
  processes used just before it (:func:`other_work`, a 0.2 s /proc/stat sample). Load does not hit
  engines alike: on the 2-core Xeon, B0 at batch 1, OpenVINO won the quiet race by 1.15x while beside
  one busy process ONNX Runtime won ten races of ten (docs/engines.md). A cached choice measured at
  :data:`BUSY_CORES` or more is raced again on the first call that finds the machine quiet, and the
  quiet result replaces it; a quiet choice is kept whatever the load later, so calls under load take
  the engine the quiet machine chose.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from effnet.deploy.machine import cpu_features, load_average
from effnet.deploy.timing import interleaved_times

__all__ = ["BUSY_CORES", "CACHE_ENV", "PREFERENCE", "Choice", "Timed", "atomic_write", "cache_key", "cache_path",
           "cache_root", "choose", "load_choice", "now_choice", "other_work", "package_versions", "provisional",
           "save_choice"]

# The order to break a tie in: effnet's ONNX Runtime engine won every race measured on the AVX-512 Xeon
# (batch 1 and 16, B0, B3, Lite0; docs/engines.md), then OpenVINO. It decides only between candidates
# whose rounds cannot tell them apart.
PREFERENCE = ("onnxruntime", "openvino", "eager", "compile")
NOISE = 0.05  # below this relative gap two candidates are never told apart
WINS = 0.7  # ... nor unless the faster one is faster in this share of the rounds
_CACHE_VERSION = 1
BUSY_CORES = 0.5  # other processes using half a core or more: the race measured the load as much as the engines


@dataclass(frozen=True)
class Timed:
    """One candidate's figure: median ms per call over ``rounds`` rounds and their spread."""

    engine: str
    ms: float
    spread: float  # interquartile range of the rounds over their median
    rounds: int
    calls: int  # calls timed in all


@dataclass(frozen=True)
class Choice:
    """What ``optimize_for_inference(engine="auto")`` measured and chose, and on which machine."""

    engine: str
    reason: str
    timed: tuple[Timed, ...] = ()
    shape: tuple[int, ...] = ()
    dtype: str = "fp32"
    threads: int = 1
    features: tuple[str, ...] = ()
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)
    when: str = ""
    cached: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)
    busy: float | None = None  # cores other processes used when it was timed (None: not sampled)

    def report(self) -> str:
        """Every candidate with its figure, the choice and why, the machine and its load."""
        lines = [f"engine choice for input {'x'.join(map(str, self.shape))} {self.dtype}, {self.threads} threads: "
                 f"{self.engine} ({self.reason})"]
        if self.timed:
            best = min(t.ms for t in self.timed)
            for t in sorted(self.timed, key=lambda t: t.ms):
                mark = "*" if t.engine == self.engine else " "
                lines.append(f" {mark} {t.engine:<12} {t.ms:9.2f} ms/call  {best / t.ms:5.2f}x fastest  "
                             f"spread {100 * t.spread:4.1f} %  ({t.rounds} rounds, {t.calls} calls)")
        load = " / ".join(f"{v:.2f}" for v in self.load)
        others = "" if self.busy is None else f", other processes {self.busy:.2f} cores"
        lines.append(f"   measured {self.when or 'now'}: CPU {' '.join(self.features) or '?'}, "
                     f"load average {load}{others}" + (" (cached: nothing timed now)" if self.cached else ""))
        lines += [f"   note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Choice:
        body = dict(d)
        body["timed"] = tuple(Timed(**t) for t in d.get("timed", ()))
        for key in ("shape", "features", "load", "notes"):
            body[key] = tuple(d.get(key, ()))
        return cls(**body)


def _figures(times: Mapping[str, list[float]], calls: Mapping[str, int]) -> list[Timed]:
    out = []
    for k, ts in times.items():
        med = statistics.median(ts)
        q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [med, med, med]
        out.append(Timed(k, 1000 * med, (q[2] - q[0]) / med if med > 0 else 0.0, len(ts), calls[k] * len(ts)))
    return sorted(out, key=lambda t: t.ms)


def _within_noise(times: Mapping[str, list[float]], a: str, b: str, noise: float) -> bool:
    """Whether the rounds cannot tell ``a`` (the faster median) from ``b``. Rounds are compared in
    pairs: both candidates of one round ran seconds apart under the same load, so the per-round ratio
    cancels what a busy machine does to both, where the spread of each alone would not (at load 12 a
    1.4x gap sat inside a 50 % spread). ``a`` must be faster by more than ``noise`` in the median
    ratio and faster in at least :data:`WINS` of the rounds."""
    ratios = [tb / ta for ta, tb in zip(times[a], times[b], strict=True)]
    wins = sum(r > 1 for r in ratios) / len(ratios)
    return not (statistics.median(ratios) > 1 + noise and wins >= WINS)


def _once(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return max(time.perf_counter() - t, 1e-6)


def choose(calls: Mapping[str, Callable[[], object]], *, rounds: int = 5, min_seconds: float = 1.0,
           extra: int = 2, noise: float = NOISE, prefer: tuple[str, ...] = PREFERENCE,
           ) -> tuple[str, str, tuple[Timed, ...]]:
    """Time ``calls`` (engine → zero-argument call) and pick one: (engine, why, figures).

    ``rounds`` interleaved rounds, each candidate repeated so that all of them together last at least
    ``min_seconds``; while the two fastest are within noise, up to ``extra`` more sets of rounds; then,
    among those still within noise of the fastest, the first in ``prefer``."""
    if len(calls) == 1:
        return next(iter(calls)), "the only candidate", ()
    single: dict[str, float] = {}
    for k, fn in calls.items():  # the first call builds lazy plans; the fastest of three is the estimate
        fn()
        single[k] = min(_once(fn) for _ in range(3))
    share = min_seconds / len(calls) / rounds
    inner = {k: max(1, math.ceil(share / s)) for k, s in single.items()}
    times: dict[str, list[float]] = {k: [] for k in calls}
    for attempt in range(extra + 1):
        new = interleaved_times(calls, rounds=rounds, inner=inner, warmup=0, seed=attempt)
        for k, ts in new.items():
            times[k] += ts
        figures = _figures(times, inner)
        best = figures[0].engine
        if not _within_noise(times, best, figures[1].engine, noise):
            return best, f"fastest, {figures[1].ms / figures[0].ms:.2f}x the next", tuple(figures)
    tied = [t.engine for t in figures if t.engine == best or _within_noise(times, best, t.engine, noise)]
    pick = min(tied, key=lambda e: prefer.index(e) if e in prefer else len(prefer))
    return pick, f"{', '.join(tied)} within noise after {len(times[pick])} rounds: preferred order", tuple(figures)


CACHE_ENV = "EFFNET_CACHE"
_OFF = ("", "0", "off", "no", "false")


def cache_root() -> Path | None:
    """effnet's cache folder, shared by the engine choice and the engine files
    (:mod:`effnet.deploy.engine_cache`): ``$EFFNET_CACHE`` (``off``/``0``/empty: no cache at all), else
    ``$XDG_CACHE_HOME/effnet`` (``~/.cache/effnet`` by default)."""
    env = os.environ.get(CACHE_ENV)
    if env is not None:
        return None if env.strip().lower() in _OFF else Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "effnet"


def cache_path() -> Path | None:
    """Where choices are kept: ``EFFNET_ENGINE_CACHE`` (``off``/``0``/empty: nowhere), else
    ``engine-choice.json`` in :func:`cache_root`."""
    env = os.environ.get("EFFNET_ENGINE_CACHE")
    if env is not None:
        return None if env.strip().lower() in _OFF else Path(env).expanduser()
    root = cache_root()
    return None if root is None else root / "engine-choice.json"


def package_versions(packages: tuple[str, ...] = ("torch", "onnxruntime", "openvino")) -> dict[str, str]:
    """Installed versions of ``packages`` ("" where absent): part of every cache key, since a new
    engine library may be faster (the choice) or write a different file (the engine cache)."""
    import importlib.metadata as md

    out = {}
    for pkg in packages:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = ""
    return out


def cache_key(model_id: Mapping[str, Any], shape: tuple[int, ...], dtype: str, threads: int,
              candidates: tuple[str, ...]) -> str:
    """A hash of everything that decides which engine is fastest: the network (``model_id``: its spec),
    the input shape, the dtype, the CPU's vector features, the thread count, the candidates and the
    engines' versions. The weights' values are not in it: they do not change the speed."""
    body = {"v": _CACHE_VERSION, "model": model_id, "shape": list(shape), "dtype": dtype, "threads": threads,
            "features": list(cpu_features()), "candidates": list(candidates), "versions": package_versions()}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):  # absent, or half of a file another process broke: start afresh
        return {}
    return data if isinstance(data, dict) else {}


def load_choice(key: str) -> Choice | None:
    """The cached choice for ``key``, or None (no cache, no entry, or an entry this version cannot read)."""
    path = cache_path()
    entry = _read(path).get(key) if path is not None else None
    if not isinstance(entry, dict):
        return None
    try:
        return Choice.from_dict(entry)
    except (TypeError, ValueError):
        return None


def atomic_write(path: Path, write: Callable[[Any], None], *, binary: bool = False) -> None:
    """``write(f)`` to a temporary file beside ``path``, then rename it over ``path``: a reader never
    sees half a file, and of two writers at once the last rename wins whole. Raises OSError (a
    read-only folder, a full disk); the temporary file is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_choice(key: str, choice: Choice) -> None:
    """Add ``choice`` under ``key``, written atomically (:func:`atomic_write`; two writers at once may
    lose one entry, never the file). A read-only home: the choice still holds for this call."""
    path = cache_path()
    if path is None:
        return
    data = _read(path)
    data[key] = choice.to_dict()
    try:
        atomic_write(path, lambda f: json.dump(data, f, indent=1))
    except OSError:
        return


def now_choice(engine: str, reason: str, timed: tuple[Timed, ...], *, shape: tuple[int, ...], dtype: str,
               threads: int, notes: tuple[str, ...] = (), busy: float | None = None) -> Choice:
    """A :class:`Choice` stamped with this machine's features, load and the time."""
    return Choice(engine, reason, timed, tuple(shape), dtype, threads, cpu_features(), load_average(),
                  time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), notes=notes, busy=busy)


def other_work() -> float | None:
    """Cores' worth of CPU other processes use now (:func:`effnet.threads.other_cpu_use` over 0.2 s:
    what runs now, where the load average lags by a minute); None where /proc/stat is missing."""
    from effnet.threads import other_cpu_use

    return other_cpu_use(0.2)


def provisional(cached: Choice, busy_now: float | None) -> bool:
    """Whether ``cached`` should be raced again: it was timed beside at least :data:`BUSY_CORES` of
    other work and the machine is quiet now. A quiet choice, or one made when nothing was sampled, stands."""
    return (cached.busy is not None and cached.busy >= BUSY_CORES
            and busy_now is not None and busy_now < BUSY_CORES)
