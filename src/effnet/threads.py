"""effnet's one threading setting: how many threads torch uses and how idle OpenMP threads wait.

Why a setting at all: torch's CPU kernels run on its bundled GNU OpenMP runtime, whose worker
threads spin at each barrier before they sleep. When another process holds a core, the spinning
thread waits for a partner that the OS has descheduled; EfficientNet-B0 has about 250 such barriers
per forward pass, and on a busy 2-core machine a 2-thread forward pass measured over 20× slower
than a 1-thread one. No single setting wins both ways (docs/performance.md, "Threads under load",
measured by ``benchmarks/threads.py``): on an idle machine torch's default (one spinning thread per
core) is fastest and ``OMP_WAIT_POLICY=PASSIVE`` costs 40–75 %; beside one busy process the default
is 2.4–4× slower than its idle time while one thread stays within 1.2–1.7×. So the default is decided
at start from what the machine is doing: idle → torch's default; busy (other processes use at least
half a core) → one thread, and idle threads sleep (``OMP_WAIT_POLICY=PASSIVE``, GCC libgomp
manual) if the user asked for more.

The OpenMP runtime reads its environment once, when torch loads, so :func:`configure` only edits
the environment and must run before ``import torch``; the CLI calls it first. The module imports no
torch (the core's contract in pyproject.toml); the caller applies the count to a torch that is
already loaded.
"""

from __future__ import annotations

import os
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path

from effnet.errors import EffnetError

__all__ = ["BUSY_CORES", "THREADS_ENV", "WAIT_POLICY", "ThreadSetting", "configure", "other_cpu_use",
           "resolve_threads"]

THREADS_ENV = "EFFNET_THREADS"
WAIT_POLICY = "PASSIVE"  # on a busy machine (docs/performance.md)
BUSY_CORES = 0.5  # other processes using this many cores or more: the machine is busy


@dataclass(frozen=True)
class ThreadSetting:
    """What :func:`configure` decided, and why (for messages and records)."""

    threads: int | None  # None: torch's own default (one thread per core, or $OMP_NUM_THREADS)
    source: str  # "--threads", "$EFFNET_THREADS", "$OMP_NUM_THREADS", "busy machine" or "default"
    wait_policy: str  # the OMP_WAIT_POLICY in effect once torch loads ("" = the runtime's default)
    busy_cores: float | None  # CPU that other processes used at start, in cores (None: not measured)


def _positive(text: str, where: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise EffnetError(f"{where} {text!r}: give a whole number of threads >= 1, e.g. 1 or 2")
    return n


def resolve_threads(flag: int | None, environ: MutableMapping[str, str] | None = None) -> tuple[int | None, str]:
    """The count the user asked for and where: ``--threads`` beats ``$EFFNET_THREADS``; else (None, "default")."""
    env = os.environ if environ is None else environ
    if flag is not None:
        return _positive(str(flag), "--threads"), "--threads"
    text = env.get(THREADS_ENV, "").strip()
    if text:
        return _positive(text, f"${THREADS_ENV}"), f"${THREADS_ENV}"
    return None, "default"


def _cpu_times(stat: Path) -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat's first line (proc(5))."""
    fields = [int(v) for v in stat.read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def other_cpu_use(window_s: float = 0.1, stat: Path = Path("/proc/stat")) -> float | None:
    """Cores' worth of CPU that other processes used during a short sleep of this one (Linux).

    Read from /proc/stat before and after the sleep, so it is what runs now, not the one-minute load
    average (which lags a process that just started or stopped). None where /proc/stat is missing.
    """
    try:
        busy0, total0 = _cpu_times(stat)
        time.sleep(window_s)
        busy1, total1 = _cpu_times(stat)
    except (OSError, ValueError, IndexError):
        return None
    cores = os.cpu_count() or 1
    return cores * (busy1 - busy0) / max(total1 - total0, 1)


def configure(flag: int | None = None, environ: MutableMapping[str, str] | None = None, *,
              busy_cores: float | None = None) -> ThreadSetting:
    """Resolve the setting and write it into the environment, before torch is imported.

    Order: ``--threads`` / ``$EFFNET_THREADS`` (written to ``OMP_NUM_THREADS``, which torch and child
    processes such as torchrun's ranks read); the user's own ``OMP_NUM_THREADS``; else one thread when
    other processes use at least :data:`BUSY_CORES` (``busy_cores``, measured by :func:`other_cpu_use`
    when not given), torch's default otherwise. On a busy machine idle threads sleep
    (``OMP_WAIT_POLICY=PASSIVE``) unless the user set a policy.
    """
    env = os.environ if environ is None else environ
    threads, source = resolve_threads(flag, env)
    user_count = env.get("OMP_NUM_THREADS", "").strip()
    user_policy = env.get("OMP_WAIT_POLICY", "").strip()
    if threads is None and user_count:
        return ThreadSetting(None, "$OMP_NUM_THREADS", user_policy, None)
    if busy_cores is None and not (threads is not None and user_policy):
        busy_cores = other_cpu_use()
    busy = busy_cores is not None and busy_cores >= BUSY_CORES
    if threads is None and busy:
        threads, source = 1, "busy machine"
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    if busy and not user_policy:
        env["OMP_WAIT_POLICY"] = user_policy = WAIT_POLICY
    return ThreadSetting(threads, source, user_policy, busy_cores)
