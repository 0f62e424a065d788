"""The ``effnet`` command line. ``app`` builds the parser and dispatches; ``models``, ``train``,
``search`` and ``deploy`` each add their sub-commands. Nothing in the library imports this package.
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """The console script's entry point (``effnet = "effnet.cli:main"``)."""
    from effnet.cli.app import main as run

    return run(argv)


__all__ = ["main"]
