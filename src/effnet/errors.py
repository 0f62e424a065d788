"""User-facing errors.

Every error a user can cause (a bad name, an impossible φ, a corrupt file) is raised as an
:class:`EffnetError` whose message is one line that names the offending value and says how to fix
it. The CLI prints that line and exits with code 2, never a traceback. They subclass ``ValueError``
so that library callers who already catch ``ValueError`` keep working.
"""

from __future__ import annotations


class EffnetError(Exception):
    """A user-facing error: one line naming the offending value and the fix."""


class SpecError(EffnetError, ValueError):
    """An architecture spec, multiplier or coefficient that cannot describe a valid network."""


class DataError(EffnetError, ValueError):
    """A data set, image or class map that cannot be read as asked."""


class CheckpointError(EffnetError, ValueError):
    """A weights or checkpoint file that is missing, damaged, not effnet's, or for another architecture."""
