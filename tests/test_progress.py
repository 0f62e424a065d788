"""effnet.progress: a redrawn bar on a terminal, one plain line per change of the count in a log."""

from __future__ import annotations

import io
import subprocess
import sys

from effnet.progress import LineProgress, progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_one_line_per_count_and_no_redraws() -> None:
    log = io.StringIO()
    bar = progress_bar(4, "search", unit="run", file=log)
    assert isinstance(bar, LineProgress)
    for n in (1, 1, 2, 3, 3, 4):  # the search sets n and refreshes every second, changed or not
        bar.n = n
        bar.set_postfix_str(f"best {n}")
        bar.refresh()
    bar.write("a message", file=log)  # tqdm.write clears and redraws every bar around it
    bar.close()
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines[:-1] == [line for line in lines[:-1] if line.startswith("search: ")]
    assert [line.split()[2] for line in lines[:-1]] == ["0/4", "1/4", "2/4", "3/4", "4/4"]
    assert lines[-1] == "a message"  # close() does not print the finished bar a second time
    assert "best 3" in lines[3]


def test_min_interval_thins_fast_bars_but_keeps_the_last_line() -> None:
    log = io.StringIO()
    bar = progress_bar(1000, unit="step", file=log, min_interval=3600.0)
    for _ in range(999):
        bar.update(1)
    bar.close()  # stopped early (e.g. an exception): the state it stopped in is still written
    assert [line.split()[1] for line in log.getvalue().splitlines()] == ["0/1000", "999/1000"]


def test_terminal_gets_tqdm_and_disabled_bars_write_nothing() -> None:
    term = _Terminal()
    bar = progress_bar(3, "x", file=term)
    assert not isinstance(bar, LineProgress)
    bar.update(3)
    bar.close()
    assert "\r" in term.getvalue()  # redrawn in place
    quiet = io.StringIO()
    bar = progress_bar(3, "x", file=quiet, enabled=False)
    bar.update(3)
    bar.close()
    assert quiet.getvalue() == ""


def test_progress_imports_no_torch() -> None:
    code = "import sys, effnet.progress; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
