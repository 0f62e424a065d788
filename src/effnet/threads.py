"""effnet's one threading setting: how many threads torch uses and how idle OpenMP threads wait.

Why a setting at all: torch's CPU kernels run on its bundled GNU OpenMP runtime, whose worker
threads spin at each barrier before they sleep. When another process holds a core, the spinning
thread waits for a partner that the OS has descheduled; EfficientNet-B0 has about 250 such barriers
per forward pass, and on a 2-core machine beside one busy process a 2-thread forward pass measured
over 20× slower than a 1-thread one. ``OMP_WAIT_POLICY=PASSIVE`` makes idle threads sleep at once
(GCC libgomp manual, "OMP_WAIT_POLICY"). The measurements that chose the default are in
docs/performance.md ("Threads under load") and are reproduced by ``benchmarks/threads.py``.

The OpenMP runtime reads its environment once, when torch loads, so :func:`configure` only edits
the environment and must run before ``import torch``; the CLI calls it first. The module imports no
torch (the core's contract in pyproject.toml); the caller applies the count to a torch that is
already loaded.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from dataclasses import dataclass

from effnet.errors import EffnetError

__all__ = ["THREADS_ENV", "WAIT_POLICY", "ThreadSetting", "configure", "resolve_threads"]

THREADS_ENV = "EFFNET_THREADS"
WAIT_POLICY = "PASSIVE"  # the default chosen by benchmarks/threads.py (docs/performance.md)


@dataclass(frozen=True)
class ThreadSetting:
    """What :func:`configure` decided, and where each part came from (for messages and records)."""

    threads: int | None  # None: torch's own default (one thread per core, or $OMP_NUM_THREADS)
    source: str  # "--threads", "$EFFNET_THREADS" or "default"
    wait_policy: str  # the OMP_WAIT_POLICY in effect once torch loads
    wait_policy_source: str  # "effnet" (set here) or "environment" (the user's own value kept)


def _positive(text: str, where: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise EffnetError(f"{where} {text!r}: give a whole number of threads >= 1, e.g. 1 or 2")
    return n


def resolve_threads(flag: int | None, environ: MutableMapping[str, str] | None = None) -> tuple[int | None, str]:
    """The thread count to use and its source: ``--threads`` beats ``$EFFNET_THREADS`` beats torch's default."""
    env = os.environ if environ is None else environ
    if flag is not None:
        return _positive(str(flag), "--threads"), "--threads"
    text = env.get(THREADS_ENV, "").strip()
    if text:
        return _positive(text, f"${THREADS_ENV}"), f"${THREADS_ENV}"
    return None, "default"


def configure(flag: int | None = None, environ: MutableMapping[str, str] | None = None) -> ThreadSetting:
    """Resolve the setting and write it into the environment, before torch is imported.

    Sets ``OMP_NUM_THREADS`` when a count was given (torch and child processes such as torchrun's
    ranks read it) and ``OMP_WAIT_POLICY=PASSIVE`` unless the user already set a policy.
    """
    env = os.environ if environ is None else environ
    threads, source = resolve_threads(flag, env)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    user_policy = env.get("OMP_WAIT_POLICY", "").strip()
    if not user_policy:
        env["OMP_WAIT_POLICY"] = WAIT_POLICY
    return ThreadSetting(threads=threads, source=source, wait_policy=user_policy or WAIT_POLICY,
                         wait_policy_source="environment" if user_policy else "effnet")
