"""The one timer and the one peak-memory reader that every effnet benchmark uses.

These 2-core machines are shared and noisy, so contenders are never timed one after the other:
:func:`interleaved_times` runs ``rounds`` rounds, each calling every contender once in an order
shuffled per round (seeded), and callers quote medians. A fixed order hands the cost of whatever ran
before (torch's OpenMP threads still spinning, another model's weights in the caches) to the same
contender every round; interleaving spreads a burst of load over all of them.
"""

from __future__ import annotations

import random
import resource
import statistics
import time
from collections.abc import Callable, Mapping

__all__ = ["interleaved_times", "medians", "peak_rss_bytes", "rss_bytes"]

def interleaved_times(calls: Mapping[str, Callable[[], object]], *, rounds: int = 5,
                      inner: int | Mapping[str, int] = 1, warmup: int = 2, seed: int = 0) -> dict[str, list[float]]:
    """Seconds per call of each contender, one entry per round.

    Args:
        calls: label → a zero-argument callable (bind the input with a lambda).
        rounds: interleaved rounds; each times ``inner`` back-to-back calls of every contender.
        inner: calls per contender per round (the mean of those is the round's figure), so that a
            round of a fast contender lasts long enough for the clock; a mapping gives each
            contender its own count.
        warmup: untimed calls of each contender first (caches, lazy plans, allocator).
        seed: the shuffle's seed, so that two runs time in the same orders.
    """
    times: dict[str, list[float]] = {k: [] for k in calls}
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    order = list(calls)
    rng = random.Random(seed)
    counts = {k: inner if isinstance(inner, int) else inner.get(k, 1) for k in calls}
    for _ in range(rounds):
        rng.shuffle(order)
        for k in order:
            fn, n = calls[k], counts[k]
            t = time.perf_counter()
            for _ in range(n):
                fn()
            times[k].append((time.perf_counter() - t) / n)
    return times


def medians(times: Mapping[str, list[float]]) -> dict[str, float]:
    """The median of each contender's rounds: robust to the rounds a busy machine slowed."""
    return {k: statistics.median(v) for k, v in times.items()}


def rss_bytes() -> int:
    """This process's resident memory now (``/proc/self/statm``, Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def peak_rss_bytes() -> int:
    """The high-water mark of this process's resident memory (``VmHWM`` in ``/proc/self/status``).

    Not ``ru_maxrss`` where ``/proc`` is readable: Linux carries ``ru_maxrss`` across ``exec`` from the
    parent, so a freshly started worker would report its parent's peak (proc(5), getrusage(2))."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux

