"""A listening port as a service, saying where it listens."""

from __future__ import annotations

from typing import Any, Optional

from twisted.application.internet import StreamServerEndpointService
from twisted.internet import endpoints
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.logger import Logger

from hypertcp.app.startup import failed


class Listener(StreamServerEndpointService):
    """
    Twisted's endpoint service, binding in C{privilegedStartService} (so a
    port below 1024 works under C{twistd --uid}) and failing start-up when
    it cannot bind, that also logs the address actually bound: C{tcp:0}
    works, and tests and operators read the port from the log.
    """

    log = Logger()
    #: A port that cannot be bound stops start-up instead of being logged and forgotten.
    _raiseSynchronously = True
    port: Optional[IListeningPort] = None

    def __init__(self, kind: str, description: str, factory: IProtocolFactory,
                 reactor: Any = None, reuse_port: bool = False) -> None:
        if reactor is None:
            from twisted.internet import reactor
        if reuse_port:
            from hypertcp.app import reuseport
            endpoint: Any = reuseport.endpoint(reactor, description)
        else:
            endpoint = endpoints.serverFromString(reactor, description)
        super().__init__(endpoint, factory)
        self.kind = kind
        self.description = description

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            reason = getattr(e.socketError, "strerror", None) or str(e.socketError)
            raise failed(f"cannot listen on {self.description}: {reason}") from None
        except OSError as e:  # e.g. a UNIX socket's directory is missing
            raise failed(f"cannot listen on {self.description}: {e.strerror or e}") from None
        self._waitingForPort.addCallback(self._listening)

    def _listening(self, port: Optional[IListeningPort]) -> Optional[IListeningPort]:
        if port is not None:
            self.port = port
            address = port.getHost()
            self.log.info("HyperTCP {kind} listening on {host}:{port}",
                          kind=self.kind, host=address.host, port=address.port)
        return port
