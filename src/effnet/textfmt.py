"""Plain-text tables and human number formats for the CLI and reports (no dependencies)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from effnet.errors import EffnetError

_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}


def parse_count(text: str, what: str) -> float:
    """``"1.5G"`` → 1.5e9, ``"10M"`` → 1e7, ``"2e9"`` → 2e9 (suffixes k, M, G, T; any case)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)\s*([kmgtKMGT]?)\s*", text)
    if not m:
        raise EffnetError(f"{what} {text!r} is not a number; write e.g. 1.5G, 400M or 2e9")
    value = float(m.group(1)) * _SUFFIX[m.group(2).lower()]
    if value <= 0:
        raise EffnetError(f"{what} {text!r} must be > 0")
    return value


def parse_phi_range(text: str) -> list[float]:
    """``"0:7"`` (inclusive, step 1), ``"0:3:0.5"``, ``"1.5"`` or ``"0,1,2.5"`` → list of φ."""
    hint = "write START:STOP[:STEP] (e.g. 0:7 or 0:2:0.5), a number, or a comma list"
    try:
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            if len(parts) not in (2, 3):
                raise ValueError
            start, stop, step = parts[0], parts[1], parts[2] if len(parts) == 3 else 1.0
            if step <= 0 or stop < start:
                raise EffnetError(f"--phi {text!r}: need STOP >= START and STEP > 0; {hint}")
            n = math.floor((stop - start) / step + 1e-9) + 1
            if n > 1000:
                raise EffnetError(f"--phi {text!r} gives {n} values; use a larger STEP (at most 1000 values)")
            return [round(start + i * step, 10) for i in range(n)]
        values = [float(p) for p in text.split(",")]
    except ValueError:
        raise EffnetError(f"--phi {text!r} is malformed; {hint}") from None
    if not all(math.isfinite(v) for v in values):
        raise EffnetError(f"--phi {text!r} must be finite; {hint}")
    return values


def human(n: float, unit: str = "") -> str:
    """3 significant digits with a k/M/G/T suffix: 5288548 → '5.29M'."""
    for suffix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{suffix}{unit}"
    return f"{n:.3g}{unit}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, markdown: bool = False) -> str:
    """A left/right-aligned text table (numbers right-aligned), or a Markdown (GFM) table for reports."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    if markdown:
        return "\n".join(["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(headers),
                          *("| " + " | ".join(r) + " |" for r in cells[1:])])
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [all(re.fullmatch(r"[-+]?[0-9.,]+[%xkMGT]?|", r[i]) for r in cells[1:]) for i in range(len(headers))]

    def fmt(r: list[str]) -> str:
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric, strict=True))

    line = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(cells[0]), line, *(fmt(r) for r in cells[1:])]).rstrip()
