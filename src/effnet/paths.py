"""Output paths checked before any work is spent (no torch).

A training run that trains for an hour and then cannot write its checkpoint, or a plot that fails
after the report was computed, wastes the user's time and ends in an ``OSError`` traceback. Each
command that writes calls :func:`output_dir` or :func:`output_file` on its ``--out`` first: the
path is probed for real (a folder created, a temporary file written and removed), because
``os.access`` says yes to root on a read-only file system such as ``/proc``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from effnet.errors import EffnetError

__all__ = ["output_dir", "output_file"]


def _reason(err: OSError) -> str:
    return err.strerror or type(err).__name__


def _probe(folder: Path, flag: str, shown: str) -> None:
    """Write and remove a temporary file in ``folder``."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".effnet-probe-", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise EffnetError(f"{flag} {shown!r}: cannot write in {str(folder)!r} ({_reason(err)}); choose a "
                          "writable folder") from None


def output_dir(path: str | os.PathLike[str], flag: str = "--out") -> Path:
    """Create ``path`` (and its parents) if needed and check that files can be written in it.

    Raises:
        EffnetError: ``path`` is an existing file, or cannot be created or written (read-only file
            system, no permission), naming the flag, the path and the reason.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise EffnetError(f"{flag} {str(p)!r} is an existing file, not a folder; choose a folder name")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise EffnetError(f"{flag} {str(p)!r}: cannot create the folder ({_reason(err)}); choose a writable "
                          "location") from None
    _probe(p, flag, str(p))
    return p


def output_file(path: str | os.PathLike[str], flag: str = "--out", *, create_parent: bool = False) -> Path:
    """Check that the file ``path`` can be written: its folder exists (or is created when
    ``create_parent``) and is writable, and ``path`` is not a folder.

    Raises:
        EffnetError: naming the flag, the path and the fix.
    """
    p = Path(path)
    if p.is_dir():
        raise EffnetError(f"{flag} {str(p)!r} is a folder; give a file name inside it")
    parent = p.parent
    if not parent.is_dir():
        if parent.exists():
            raise EffnetError(f"{flag} {str(p)!r}: {str(parent)!r} is a file, not a folder")
        if not create_parent:
            raise EffnetError(f"{flag} {str(p)!r}: folder {str(parent)!r} does not exist; create it first "
                              "or choose another path")
        output_dir(parent, flag)
    _probe(parent, flag, str(p))
    return p
