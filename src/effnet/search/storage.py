"""Where a study lives: an Optuna storage opened from a URL, checked before anything is written.

A journal file on one machine (``runs/search.log`` or ``journal:PATH``) or an RDB URL across machines
(``postgresql://user@host/db``; ``sqlite:///file.db`` also works on one machine). Both the grid search
and the architecture search (:mod:`effnet.search.study`, :mod:`effnet.search.nas`) open theirs here.
A journal that is not Optuna's is refused by name and never rewritten; a server that cannot be
reached is one line naming the URL with its password redacted.

Level 0: no torch. Optuna is imported on first use.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from effnet.errors import EffnetError

__all__ = ["check_journal", "open_storage", "redact"]


def redact(url: str) -> str:
    """``postgresql://user:secret@host/db`` → ``postgresql://user:***@host/db`` for messages."""
    if "://" in url and "@" in url.split("://", 1)[1]:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        return f"{scheme}://{cred.split(':', 1)[0]}{':***' if ':' in cred else ''}@{host}"
    return url


def open_storage(url: str) -> Any:
    """An Optuna storage for ``url``: RDB for ``postgresql://``/``sqlite://``/``mysql://``, else a journal file.

    Raises:
        EffnetError: the server cannot be reached or the journal's folder does not exist, naming the
            (password-redacted) URL and the fix.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if "://" in url:
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            url = "postgresql+psycopg://" + url.split("://", 1)[1]  # psycopg 3 is the driver we install
        return _rdb_storage(url)
    path = url.removeprefix("journal:")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise EffnetError(f"search storage {path!r}: folder {folder!r} does not exist; create it or choose another "
                          "--storage path")
    check_journal(path)
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    try:  # the constructor replays the whole journal: an entry Optuna cannot apply fails here
        return optuna.storages.JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
        raise EffnetError(f"search storage {path!r}: Optuna cannot replay this journal ({type(err).__name__}: "
                          f"{str(err)[:80]}); {_MOVE_ASIDE}") from None


_MOVE_ASIDE = "move it aside (effnet never rewrites it) or pass another --storage"


def check_journal(path: str) -> None:
    """Refuse a ``--storage`` path that is a folder or a journal Optuna cannot replay, before Optuna reads it.

    Optuna's journal is one JSON object per line (``optuna/storages/journal/_file.py``), each with an
    integer ``op_code``; a last line without its newline is a write in flight, which Optuna skips, so
    it is allowed here too. A corrupt journal is never rewritten: the message says to move it aside.

    Raises:
        EffnetError: naming the file, the first bad line and the fix.
    """
    if os.path.isdir(path):
        raise EffnetError(f"search storage {path!r} is a folder; give a journal file name such as {path}/search.log")
    if not os.path.exists(path):
        return
    fix = f"it is not an Optuna journal or it is damaged; {_MOVE_ASIDE}"
    try:
        with open(path, "rb") as f:
            for number, line in enumerate(f, start=1):
                if not line.endswith(b"\n"):
                    break  # a write in flight
                try:
                    op = json.loads(line)
                except (UnicodeDecodeError, json.JSONDecodeError):
                    raise EffnetError(f"search storage {path!r}: line {number} is not JSON; {fix}") from None
                if not (isinstance(op, dict) and isinstance(op.get("op_code"), int)):
                    raise EffnetError(f"search storage {path!r}: line {number} is not a journal entry; {fix}")
    except OSError as err:
        raise EffnetError(f"search storage {path!r} cannot be read ({err.strerror}); check its permissions") from None


def _rdb_storage(url: str) -> Any:
    import optuna

    connect = {"connect_timeout": 5} if url.startswith("postgresql") else {}
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True, "connect_args": connect})
        except Exception as e:  # sqlalchemy's OperationalError, ArgumentError, missing driver, ...
            text = str(e)
            # Workers that start together on a fresh database race to create Optuna's tables: the loser
            # sees a duplicate key or "already exists"; by the retry the tables are there.
            if attempt < 4 and ("duplicate key" in text or "already exists" in text):
                time.sleep(0.5 * (attempt + 1))
                continue
            first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
            raise EffnetError(f"cannot open search storage {redact(url)!r}: {first[:200]}; check that the server "
                              "is running and reachable and the URL (user, host, port, database) is right") from None
    raise AssertionError("unreachable")
