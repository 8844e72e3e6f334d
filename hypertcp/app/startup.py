"""
How start-up fails: with one line that says why, and a non-zero exit.

A listener that cannot bind raises the L{StartupError} L{failed} makes
from C{privilegedStartService}, where twistd lets it escape: in daemon mode
twistd hands its last line to the waiting parent, which prints it and exits
1; with C{-n} Python would print its traceback, which L{one_line_failures}
replaces with the one line.  The line is logged when the error is made, so
the log holds it before the daemon's parent has exited.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.logger import Logger

log = Logger()


class StartupError(Exception):
    """The server cannot start; the message is the one line that says why (already logged)."""


# A daemon's parent prints only the first 100 bytes the child reports, and
# they begin with the exception's dotted name: keep it short.
StartupError.__module__ = "hypertcp"


def failed(message: str) -> StartupError:
    """Log why start-up cannot go on, and return the error to raise."""
    log.critical("{error}", error=message)
    return StartupError(message)


def one_line_failures(to_terminal: bool) -> None:
    """
    Make an uncaught L{StartupError} end the process quietly, its line
    being in the log already -- and on the terminal as well when
    C{to_terminal} (the log goes to a file).  Any other exception keeps its
    traceback.
    """
    previous = sys.excepthook

    def hook(kind: type, value: BaseException, tb: Any) -> None:
        if not isinstance(value, StartupError):
            previous(kind, value, tb)
            return
        if to_terminal and sys.__stderr__ is not None:
            print(f"twistd hypertcp: {value}", file=sys.__stderr__, flush=True)

    sys.excepthook = hook
