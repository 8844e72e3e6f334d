"""
C{makeService}: wire the configured pieces into one MultiService.

Nothing here decides behaviour; it builds the token store, the hub and the
session factory from the configuration and attaches a listener per endpoint.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from twisted.application.internet import TimerService
from twisted.application.service import IService, MultiService, Service
from twisted.internet import endpoints
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.logger import Logger

from hypertcp.config import Options
from hypertcp.hub import Hub
from hypertcp.session import HyperTCPFactory
from hypertcp.tokens import TokenStore

__all__ = ["Options", "makeService", "Listener"]


class Listener(Service):
    """
    Listen on a Twisted endpoint string and log the address actually bound,
    so C{tcp:0} works and tests and operators can read the port.
    """

    log = Logger()
    port: Any = None

    def __init__(self, kind: str, description: str, factory: IProtocolFactory,
                 reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.kind = kind
        self.description = description
        self.factory = factory
        self.endpoint = endpoints.serverFromString(reactor, description)

    def startService(self) -> None:
        super().startService()
        d = self.endpoint.listen(self.factory)
        d.addCallbacks(self._listening, self._failed)

    def _listening(self, port: IListeningPort) -> None:
        self.port = port
        address = port.getHost()
        self.log.info("HyperTCP {kind} listening on {host}:{port}",
                      kind=self.kind, host=address.host, port=address.port)

    def _failed(self, failure: Any) -> None:
        self.log.failure("HyperTCP {kind} could not listen on {where}", failure,
                         kind=self.kind, where=self.description)
        from twisted.internet import reactor
        reactor.stop()

    def stopService(self) -> Any:
        super().stopService()
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()


def first_start(store: TokenStore) -> None:
    """
    With no token file, make one holding a single fleet token and print it
    once: the server works with no editing and no well-known secret.
    """
    secret = store.add("default", role="fleet")
    print(f"HyperTCP: created token file {store.path} with one fleet token.\n"
          f"HyperTCP: it is shown only now; log in with:\n{secret}",
          file=sys.stderr, flush=True)


def makeService(options: Options) -> IService:
    config = options.config
    from twisted.internet import reactor

    store = TokenStore(config.server.tokens)
    if not store.exists:
        first_start(store)
    hub = Hub(reactor, config.limits.ack_timeout)
    for hook in config.server.handlers:
        module, _, name = hook.partition(":")
        getattr(importlib.import_module(module), name)(hub)
    factory = HyperTCPFactory(config.limits, store, hub, reactor)

    top = MultiService()
    for description in config.server.listen:
        Listener("tcp", description, factory, reactor).setServiceParent(top)
    TimerService(config.server.token_reload, factory.reload_tokens).setServiceParent(top)
    top.factory = factory
    # The optional services load their modules (pyOpenSSL, conch) only when configured.
    certificate = None
    if config.tls.certificate:
        from hypertcp import tls
        tls_service = tls.makeService(config.tls, factory, reactor)
        tls_service.setServiceParent(top)
        certificate = tls_service.certificate
    balancer = None
    if config.balancer.listen:
        from hypertcp import balancer as load_balancer
        balancer = load_balancer.makeService(config.balancer, factory, certificate, reactor)
        balancer.setServiceParent(top)
    if config.manhole.listen:
        from hypertcp import manhole
        manhole.makeService(config.manhole, factory, balancer, reactor).setServiceParent(top)
    return top
