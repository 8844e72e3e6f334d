"""
Who may open a connection: the cap on open connections, and the place in it
of connections that have not logged in yet.

Anyone who can reach a port can open connections without a token.  Left
alone they fill the cap and lock devices out until the login deadline ends
each one, and every refusal writes a log line.  So connections not logged
in yet are capped per source address, a full server makes the oldest of
them yield its slot to a newcomer (the slots are kept for connections that
log in), and refusals are logged once per window.  One of these belongs to
each factory, whatever carries its connections (plain TCP, TLS, the
balancer, WebSocket).
"""

from __future__ import annotations

import ipaddress
from typing import Any, Callable, Optional

from twisted.logger import Logger

from hypertcp.server.limits import Limits
from hypertcp.server.refusals import RefusalLog


def source_of(host: str) -> str:
    """
    The source a connection is counted against: its IPv4 address, or the /64
    of an IPv6 one (one subscriber's share, which an attacker has plenty of
    addresses in).
    """
    if ":" not in host:
        return host
    try:
        address = ipaddress.IPv6Address(host.split("%", 1)[0])
    except ValueError:
        return host
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))


class Admission:
    """
    The connections of one factory that have not logged in yet, oldest
    first, by source.  A connection is anything with C{host} and
    C{abort(reason, quiet)}; the factory tells this when one opens
    (L{opened}), logs in (L{logged_in}) and closes (L{closed}).  The caps
    are read from C{owner.limits} at each new connection, so limits
    reloaded on SIGHUP apply from the next one.
    """

    log = Logger()

    def __init__(self, owner: Any, clock: Any,
                 count: Callable[[str], None] = lambda what: None) -> None:
        self.owner = owner
        self.clock = clock
        self.count = count
        #: Connections not logged in yet and their sources, oldest first.
        self.pending: dict[Any, str] = {}
        self._per_source: dict[str, int] = {}
        self._refusals = RefusalLog(clock.seconds())
        self._yields = RefusalLog(clock.seconds())

    def admit(self, addr: Any, open_now: int) -> bool:
        """May one more connection from C{addr} open, with C{open_now} open already?"""
        host = getattr(addr, "host", None) or "?"
        limits: Limits = self.owner.limits
        per_source = limits.max_pending_per_source
        if per_source and self._per_source.get(source_of(host), 0) >= per_source:
            self.count("pending_per_source")
            self._refused(host, f"{per_source} connections from {source_of(host)} "
                                "not logged in yet")
            return False
        cap = limits.max_connections
        if cap and open_now >= cap:
            if self._yield_oldest():
                return True
            self.count("max_connections")
            self._refused(host, f"{cap} connections already open")
            return False
        return True

    def _yield_oldest(self) -> bool:
        """Drop the oldest connection not logged in, to make room; False if there is none."""
        for connection in self.pending:
            self._forget(connection)
            self.count("evicted")
            why = "closed to make room: the server is full and it had not logged in"
            unlogged = self._yields.admit(self.clock.seconds())
            if unlogged is not None:
                self.log.warn("{addr}: {why}{more}", addr=connection.host, why=why,
                              more=f" ({unlogged} more since the last line)" if unlogged else "")
            connection.abort(why, quiet=True)
            return True
        return False

    def _refused(self, host: str, why: str) -> None:
        # Under a flood of connections, one line per window says how many.
        unlogged = self._refusals.admit(self.clock.seconds())
        if unlogged is not None:
            self.log.warn("{addr}: refused: {why}{more}", addr=host, why=why,
                          more=f" ({unlogged} more refused since the last line)"
                          if unlogged else "")

    def opened(self, connection: Any) -> None:
        source = source_of(getattr(connection, "host", None) or "?")
        self.pending[connection] = source
        self._per_source[source] = self._per_source.get(source, 0) + 1

    def logged_in(self, connection: Any) -> None:
        self._forget(connection)

    def closed(self, connection: Any) -> None:
        self._forget(connection)

    def _forget(self, connection: Any) -> None:
        source: Optional[str] = self.pending.pop(connection, None)
        if source is not None:
            left = self._per_source[source] - 1
            if left:
                self._per_source[source] = left
            else:
                del self._per_source[source]
