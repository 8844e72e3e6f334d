"""
Twisted's epoll reactor without its per-event logging context.

For every socket event, Twisted's epoll reactor asks the connection for its
log prefix and runs the handler inside a fresh logging context
(C{log.callWithLogger}: a dictionary copied, a context pushed and popped).
Profiled under ten request/response pairs, that wrapper took more of the
server's time than all of HyperTCP's handling of the message.  The context
only labels legacy log lines with the connection's C{system}; HyperTCP's log
events name their peer themselves, and an exception from a handler is
still caught, logged and closes its connection (C{_doReadOrWrite} does
that, not the wrapper).

The plugin installs this reactor when twistd was not told which one to
use (C{twistd --reactor epoll hypertcp} keeps Twisted's own), and only
where epoll exists.
"""

from __future__ import annotations

import errno
import sys
from typing import Optional

from twisted.python import log

try:
    from select import EPOLLIN

    from twisted.internet.epollreactor import EPollReactor
except ImportError:  # no epoll on this platform: Twisted's default stays
    EPollReactor = None  # type: ignore[assignment,misc]


if EPollReactor is not None:

    class LeanEPollReactor(EPollReactor):  # type: ignore[valid-type,misc]
        """The epoll reactor, calling each event's handler directly."""

        def doPoll(self, timeout: Optional[float]) -> None:
            try:
                events = self._poller.poll(-1 if timeout is None else timeout,
                                           len(self._selectables))
            except OSError as e:
                if e.errno == errno.EINTR:
                    return
                raise
            selectables = self._selectables
            handle = self._doReadOrWrite
            for fd, event in events:
                selectable = selectables.get(fd)
                if selectable is None:
                    continue
                if event != EPOLLIN or selectable.fileno() == -1:
                    handle(selectable, fd, event)
                    continue
                # Readable and nothing else, the event of nearly every
                # message: _doReadOrWrite's work for it, without its tests
                # for the rarer events.
                try:
                    why = selectable.doRead()
                except BaseException:
                    why = sys.exc_info()[1]
                    log.err()
                if why:
                    self._disconnectSelectable(selectable, why, True)

        doIteration = doPoll


def install_default() -> bool:
    """
    Install L{LeanEPollReactor} if no reactor is installed yet and epoll
    exists; True if it was.
    """
    if EPollReactor is None or "twisted.internet.reactor" in sys.modules:
        return False
    from twisted.internet.main import installReactor

    installReactor(LeanEPollReactor())
    return True
