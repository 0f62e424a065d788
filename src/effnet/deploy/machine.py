"""What this CPU can do and how busy it is: printed beside every figure, and part of every cached choice.

Why: a speed figure means nothing without its machine. The same 2-core VM class came as an Intel Xeon
with AVX-512, AVX512-bf16, AMX and VNNI and as an AMD EPYC with AVX2 only (docs/engines.md); which
engine is fastest, and whether ``bf16`` or ``int8`` can be fast at all, depends on these flags. And
the machines are shared: a figure measured with the load average above the core count is a figure of
the other jobs too, so it is printed with it.
"""

from __future__ import annotations

import functools
import os

__all__ = ["busy_warning", "cores", "cpu_features", "describe", "has_bf16", "has_vnni", "load_average"]

# /proc/cpuinfo flag → the name printed; in the order printed.
_FEATURES = (
    ("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_bf16", "AVX512-bf16"), ("amx_bf16", "AMX-bf16"),
    ("amx_int8", "AMX-int8"), ("avx512_vnni", "AVX512-VNNI"), ("avx_vnni", "AVX-VNNI"),
)


@functools.lru_cache(maxsize=1)
def _flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:  # not Linux: no flags known, so no claim about bf16 or VNNI either
        pass
    return frozenset()


def cpu_features() -> tuple[str, ...]:
    """The vector features that decide the engines' speed (AVX2, AVX-512, bf16, AMX, VNNI) this CPU has."""
    flags = _flags()
    return tuple(name for flag, name in _FEATURES if flag in flags)


def has_bf16() -> bool:
    """Native bf16 arithmetic (AVX512-bf16 or AMX): without it bf16 is emulated and slower than fp32."""
    return bool({"avx512_bf16", "amx_bf16"} & _flags())


def has_vnni() -> bool:
    """int8 dot products (VNNI or AMX-int8): without them int8 convolutions gain little over fp32."""
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & _flags())


def load_average() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages (zeros where the OS has none)."""
    try:
        return os.getloadavg()
    except OSError:
        return (0.0, 0.0, 0.0)


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def describe() -> str:
    """One line for the top of every benchmark: CPU features, cores, load average."""
    one, five, fifteen = load_average()
    return (f"CPU: {' '.join(cpu_features()) or 'no AVX2'}; {cores()} cores; "
            f"load average {one:.2f} / {five:.2f} / {fifteen:.2f}")


def busy_warning(spread: float | None = None) -> str | None:
    """A warning when figures measured now are not to be trusted as absolutes: the 1-minute load is above
    half the cores, or the rounds of one contender spread by more than 25 % (``spread``: (max − min) /
    median of its rounds). None when the machine looks quiet."""
    load, n = load_average()[0], cores()
    why = []
    if load > 0.5 * n:
        why.append(f"load average {load:.2f} on {n} cores")
    if spread is not None and spread > 0.25:
        why.append(f"rounds spread by {100 * spread:.0f} %")
    if not why:
        return None
    return "warning: the machine is busy (" + ", ".join(why) + "); read the ratios, not the absolute figures"
