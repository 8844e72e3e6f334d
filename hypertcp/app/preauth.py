"""
A deadline and a cap on the connections to a listener that have not
authenticated yet.

The SSH manhole's own login timeout starts only once a client has sent its
version and finished key exchange, and nothing caps how many connections
may sit before that: a thousand bare TCP connections took every file
descriptor the process had.  Wrapped in this, each connection has
C{timeout} seconds to authenticate, and at most C{cap} may be waiting at
once; the rest are closed as they arrive, with refusals logged once per
window.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.internet.interfaces import IDelayedCall, IProtocolFactory
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

from hypertcp.server.refusals import RefusalLog


class PreAuthLimit(WrappingFactory):
    """
    C{wrappedFactory}'s connections, each aborted if C{authenticated(its
    protocol)} is still false C{timeout} seconds after it opened, and at
    most C{cap} (0: no cap) of them unauthenticated at once.
    """

    log = Logger()
    noisy = False

    def __init__(self, wrappedFactory: IProtocolFactory, authenticated: Callable[[Any], bool],
                 timeout: float, cap: int, clock: Any, what: str = "connection") -> None:
        super().__init__(wrappedFactory)
        self.authenticated = authenticated
        self.timeout = timeout
        self.cap = cap
        self.clock = clock
        self.what = what
        self._deadlines: dict[ProtocolWrapper, IDelayedCall] = {}
        self._refusals = RefusalLog(clock.seconds())

    def waiting(self) -> int:
        """Connections open that have not authenticated."""
        return sum(1 for p in self.protocols if not self.authenticated(p.wrappedProtocol))

    def buildProtocol(self, addr: Any) -> Optional[ProtocolWrapper]:
        if self.cap and self.waiting() >= self.cap:
            unlogged = self._refusals.admit(self.clock.seconds())
            if unlogged is not None:
                self.log.warn("{what}: refused {addr}: {cap} connections have not "
                              "authenticated yet{more}", what=self.what,
                              addr=getattr(addr, "host", addr), cap=self.cap,
                              more=f" ({unlogged} more refused since the last line)"
                              if unlogged else "")
            return None
        protocol = super().buildProtocol(addr)
        self._deadlines[protocol] = self.clock.callLater(self.timeout, self._expired, protocol)
        return protocol

    def _expired(self, protocol: ProtocolWrapper) -> None:
        del self._deadlines[protocol]
        if protocol in self.protocols and not self.authenticated(protocol.wrappedProtocol):
            self.log.info("{what}: {addr} did not authenticate within {timeout:g} s; closed",
                          what=self.what, addr=getattr(protocol.getPeer(), "host", "?"),
                          timeout=self.timeout)
            protocol.transport.abortConnection()

    def unregisterProtocol(self, protocol: ProtocolWrapper) -> None:
        super().unregisterProtocol(protocol)
        deadline = self._deadlines.pop(protocol, None)
        if deadline is not None and deadline.active():
            deadline.cancel()
