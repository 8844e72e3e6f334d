"""
The WebSocket gateway at /ws: the resource that checks a request before
Autobahn takes its connection, and the factory of the L{WebSession}s, on
the node's factory and hub.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory
from twisted.logger import Logger
from twisted.web.server import Request

from hypertcp.app.web.session import WebSession
from hypertcp.app.web.site import problem

if TYPE_CHECKING:
    from hypertcp.server.factory import HyperTCPFactory


class WebGateway(WebSocketServerFactory):
    """
    Builds a L{WebSession} for each upgraded request, on the node's factory
    (C{node}): its limits, tokens, hub and write batch.  Autobahn's own
    timers and size limits are off: the sessions keep the node's, on the
    node's clock.
    """

    protocol = WebSession

    def __init__(self, node: "HyperTCPFactory", allowed_origins: list[str]) -> None:
        super().__init__(server=None, reactor=node.clock)
        self.node = node
        self.allowed_origins = frozenset(allowed_origins)
        #: Messages of the WebSocket sessions since closed (the metrics split by transport).
        self.closed_in = self.closed_out = 0
        #: As the TCP factory's: frames received and sent on their own, by command.
        self.received_by_command = [0] * 256
        self.sent_by_command = [0] * 256
        self.setProtocolOptions(
            openHandshakeTimeout=0, closeHandshakeTimeout=0, autoPingInterval=0,
            maxFramePayloadSize=0, maxMessagePayloadSize=0,
            # The JSON parser refuses text that is not UTF-8, naming it, where
            # Autobahn's check would end the connection.
            utf8validateIncoming=False, webStatus=False)

    def closed(self, session: WebSession) -> None:
        self.closed_in += session.messages_in
        self.closed_out += session.messages_out

    def origin_allowed(self, origin: str, host: str) -> bool:
        """
        May a page from C{origin} open /ws?  Its own (the origin names the
        host the request was sent to), the configured ones, or any with *.
        """
        origin = origin.lower().rstrip("/")
        if "*" in self.allowed_origins or origin in self.allowed_origins:
            return True
        scheme, _, authority = origin.partition("://")
        return scheme in ("http", "https") and authority == host.lower()


class GatewayResource(WebSocketResource):
    """
    /ws: the Origin and the connection cap are checked here, answered in
    JSON like the rest of the site, before Autobahn takes the connection.
    """

    log = Logger()

    def __init__(self, gateway: WebGateway) -> None:
        super().__init__(gateway)
        self.gateway = gateway

    def render(self, request: Request) -> bytes:
        upgrade = request.getHeader(b"upgrade") or b""
        if request.method != b"GET" or upgrade.lower() != b"websocket":
            request.setHeader(b"upgrade", b"websocket")
            return problem(request, 426, "this is the WebSocket gateway: open it with a "
                                         "WebSocket client (see /hypertcp.js)")
        origin = request.getHeader(b"origin")
        if origin is not None and not self.gateway.origin_allowed(
                origin.decode("latin-1"), (request.getHeader(b"host") or b"").decode("latin-1")):
            self.log.warn("{addr}: WebSocket from origin {origin} refused "
                          "(not in [web] allowed_origins)",
                          addr=request.getClientAddress().host, origin=origin.decode("latin-1"))
            return problem(request, 403, f"pages from {origin.decode('latin-1')} may not open "
                                         "this gateway (see [web] allowed_origins)")
        node = self.gateway.node
        if not node.admission.admit(request.getClientAddress(), len(node.sessions)):
            return problem(request, 503, "the server has all the connections it takes")
        return super().render(request)
