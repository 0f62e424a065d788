"""The one check every input file goes through before a reader opens it (no torch).

Checkpoints, foreign weights and images all fail in the same three ways before their own reader
sees them: the path is missing, it is a folder, or the file is empty (an interrupted save or copy).
Each reader passes its own error class and its own advice, so the message stays specific to what
the user was trying to load while the checks themselves live here once.
"""

from __future__ import annotations

from pathlib import Path

from effnet.errors import EffnetError

__all__ = ["require_file"]


def require_file(path: Path, error: type[EffnetError], *, what: str, if_dir: str, if_empty: str) -> None:
    """Raise ``error`` with one line if ``path`` is missing, a folder or 0 bytes long.

    Args:
        path: the file a reader is about to open.
        error: the reader's :class:`EffnetError` subclass (``CheckpointError``, ``DataError``, ...).
        what: the noun in "no such WHAT", e.g. ``"checkpoint file"``.
        if_dir: the advice when the path is a folder.
        if_empty: the advice when the file is empty.
    """
    if not path.exists():
        raise error(f"{path}: no such {what} (relative paths start from {Path.cwd()}); check the path")
    if path.is_dir():
        raise error(f"{path}: is a directory; {if_dir}")
    if path.stat().st_size == 0:
        raise error(f"{path}: file is empty (0 bytes); {if_empty}")
