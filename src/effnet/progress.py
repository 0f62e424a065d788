"""Progress bars that suit where they are written: a redrawn bar on a terminal, plain lines in a log.

tqdm redraws its bar in place with a carriage return. A log file, a CI console or ``nohup.out`` keeps
every redraw, so a search that refreshes its bar once a second left 475 copies of one bar, and tqdm's
closing redraw printed the last state twice. :func:`progress_bar` is the one constructor every bar in
effnet uses: on a terminal (or in a Jupyter kernel) it returns tqdm's own bar; anywhere else it returns
a :class:`LineProgress`, which writes one line when the count changes (at most one per
``min_interval`` seconds, and always the last one) and nothing else. The line is tqdm's own meter
(count, percentage, elapsed, ETA, rate, postfix), so both modes say the same thing.

tqdm: https://github.com/tqdm/tqdm, ``tqdm/std.py`` (``display``, ``clear`` and ``close`` are the
documented points to override when a bar writes somewhere other than a terminal line).
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from tqdm.std import tqdm

__all__ = ["LineProgress", "is_terminal", "progress_bar"]

# tqdm's meter without the bar itself: a log line, not a drawing.
_LINE_FORMAT = "{percentage:3.0f}% {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


class LineProgress(tqdm):  # type: ignore[type-arg]
    """A tqdm bar for logs: one plain line per change of the count, never a carriage return.

    ``min_interval`` (seconds) thins the lines of fast bars (a training step every few milliseconds);
    the line that reaches ``total`` and the final state at :meth:`close` are always written, once.
    """

    def __init__(self, *args: Any, min_interval: float = 0.0, **kwargs: Any) -> None:
        self._min_interval = min_interval
        self._last_line: tuple[float, float] | None = None  # (count, monotonic time) of the last line
        super().__init__(*args, **kwargs)

    def _write_line(self, *, final: bool) -> None:
        now = time.monotonic()
        if self._last_line is not None:
            count, at = self._last_line
            if self.n == count:
                return
            finished = self.total is not None and self.n >= self.total
            if not (final or finished) and now - at < self._min_interval:
                return
        self._last_line = (self.n, now)
        self.fp.write(self.__str__() + "\n")
        self.fp.flush()

    def display(self, msg: str | None = None, pos: int | None = None) -> None:
        """tqdm's redraw hook: a line when the count changed; a request to erase (``msg=''``) is a no-op."""
        if msg is None:
            self._write_line(final=False)

    def clear(self, nolock: bool = False) -> None:
        """A log has no line to erase (tqdm calls this around ``tqdm.write``)."""

    def close(self) -> None:
        """Write the final state if it was not written yet, then let tqdm clean up without drawing."""
        if self.disable:
            return
        self._write_line(final=True)
        self.sp = None  # tqdm's close() draws nothing for a bar without a status printer
        super().close()


def is_terminal(stream: IO[str] | None) -> bool:
    """Whether ``stream`` is an interactive terminal (False for files, pipes, CI consoles, None)."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def progress_bar(total: int | None, desc: str | None = None, *, unit: str = "it", initial: int = 0,
                 enabled: bool = True, leave: bool = True, min_interval: float = 0.0,
                 file: IO[str] | None = None) -> tqdm:  # type: ignore[type-arg]
    """A progress bar on ``file`` (default: stderr), drawn in place on a terminal, as lines elsewhere.

    Args:
        total, desc, unit, initial, leave: as for ``tqdm``.
        enabled: False returns a disabled bar (every method still works, nothing is written).
        min_interval: in a log, at most one line per this many seconds (the last line always comes).
        file: the stream to write to; whether it is a terminal decides the mode.
    """
    stream = sys.stderr if file is None else file
    if not enabled:
        return tqdm(total=total, desc=desc, unit=unit, initial=initial, disable=True)
    if is_terminal(stream) or "ipykernel" in sys.modules:
        from tqdm.auto import tqdm as auto_tqdm

        return auto_tqdm(total=total, desc=desc, unit=unit, initial=initial, leave=leave, file=stream,
                         dynamic_ncols=True)
    return LineProgress(total=total, desc=desc, unit=unit, initial=initial, leave=leave, file=stream,
                        min_interval=min_interval,
                        bar_format=None if total is None else ("{desc}: " if desc else "") + _LINE_FORMAT,
                        mininterval=0.0)
