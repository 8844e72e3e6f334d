"""A listening port as a service, saying where it listens."""

from __future__ import annotations

import re
from typing import Any, Optional

from twisted.application.internet import StreamServerEndpointService
from twisted.internet import endpoints
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.logger import Logger

from hypertcp.app.startup import failed


#: The accept queue every listener asks for unless told otherwise ([server]
#: backlog); Twisted's own default is 50, which a reconnecting fleet overruns.
DEFAULT_BACKLOG = 4096
#: Endpoint types whose description takes backlog=N.
_QUEUED = ("tcp", "tcp6", "ssl", "unix")
_NAMES_BACKLOG = re.compile(r"(?<!\\):backlog=")


def with_backlog(description: str, backlog: int) -> str:
    """C{description} asking for C{backlog}, unless it names one or its type takes none."""
    if description.split(":", 1)[0] not in _QUEUED or _NAMES_BACKLOG.search(description):
        return description
    return f"{description}:backlog={backlog}"


class Listener(StreamServerEndpointService):
    """
    Twisted's endpoint service, binding in C{privilegedStartService} (so a
    port below 1024 works under C{twistd --uid}) and failing start-up when
    it cannot bind, that also logs the address actually bound: C{tcp:0}
    works, and tests and operators read the port from the log.  It asks
    for an accept queue of C{backlog} unless the description names one.
    """

    log = Logger()
    #: A port that cannot be bound stops start-up instead of being logged and forgotten.
    _raiseSynchronously = True
    port: Optional[IListeningPort] = None

    def __init__(self, kind: str, description: str, factory: IProtocolFactory,
                 reactor: Any = None, backlog: int = DEFAULT_BACKLOG,
                 reuse_port: bool = False) -> None:
        if reactor is None:
            from twisted.internet import reactor
        bound = with_backlog(description, backlog)
        if reuse_port:
            from hypertcp.app import reuseport
            endpoint: Any = reuseport.endpoint(reactor, bound)
        else:
            endpoint = endpoints.serverFromString(reactor, bound)
        super().__init__(endpoint, factory)
        self.kind = kind
        self.description = description

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            reason = getattr(e.socketError, "strerror", None) or str(e.socketError)
            raise failed(f"{reason}: cannot listen on {self.description}") from None
        except OSError as e:  # e.g. a UNIX socket's directory is missing
            raise failed(f"{e.strerror or e}: cannot listen on {self.description}") from None
        self._waitingForPort.addCallback(self._listening)

    def _listening(self, port: Optional[IListeningPort]) -> Optional[IListeningPort]:
        if port is not None:
            self.port = port
            address = port.getHost()
            self.log.info("HyperTCP {kind} listening on {host}:{port}",
                          kind=self.kind, host=address.host, port=address.port)
        return port
