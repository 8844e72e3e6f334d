"""
The web service: one site on every C{[web] listen} endpoint, serving the
dashboard, the JavaScript client, the WebSocket gateway (/ws), the HTTP API
(/api) and the metrics (/metrics) on the node's factory and hub.  Imported
only when C{[web] listen} is set, so Autobahn and prometheus_client cost
nothing otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Optional

from twisted.application.service import IServiceCollection, MultiService
from twisted.protocols.tls import TLSMemoryBIOFactory

from hypertcp.app.config import WebConfig
from hypertcp.app.listeners import DEFAULT_BACKLOG, Listener
from hypertcp.app.web.api import Api
from hypertcp.app.web.gateway import GatewayResource, WebGateway
from hypertcp.app.web.metrics import MetricsResource, NodeCollector, registry
from hypertcp.app.web.site import WebSite, root

if TYPE_CHECKING:
    from hypertcp.app.tls import ServerCertificate
    from hypertcp.server.factory import HyperTCPFactory


def listeners(service: Any) -> Iterator[Listener]:
    """Every listener in a service tree."""
    if isinstance(service, Listener):
        yield service
    if IServiceCollection.providedBy(service):
        for child in service:
            yield from listeners(child)


def site(config: WebConfig, node: "HyperTCPFactory", top: Any, reactor: Any) -> WebSite:
    """The site: static files at /, the gateway, the API and the metrics of C{node}."""
    gateway = WebGateway(node, config.allowed_origins)
    collector = NodeCollector(node, gateway, lambda: list(listeners(top)))
    tree = root({b"ws": GatewayResource(gateway), b"api": Api(node, gateway),
                 b"metrics": MetricsResource(registry(collector), config.metrics_token)})
    return WebSite(tree, lambda: node.limits.max_payload, reactor)


def makeService(config: WebConfig, node: "HyperTCPFactory",
                certificate: Optional["ServerCertificate"], top: Any, reactor: Any,
                backlog: int = DEFAULT_BACKLOG, reuse_port: bool = False) -> MultiService:
    """
    A listener per C{[web] listen} endpoint, with the node's accept queue
    (and its shared port under C{--workers}); HTTPS with C{[web] tls}.
    """
    service = MultiService()
    factory: Any = site(config, node, top, reactor)
    if config.tls:
        factory = TLSMemoryBIOFactory(certificate, False, factory)
    for description in config.listen:
        Listener("web", description, factory, reactor, backlog,
                 reuse_port).setServiceParent(service)
    return service
