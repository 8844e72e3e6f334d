"""
The balancer as a relay, for devices that cannot follow a REDIRECT.

The original sketch reads only the first frame after its LOGIN and never
reconnects, so a REDIRECT is lost on it.  For a login below protocol level
2 the balancer instead opens a connection to the chosen node, hands it the
device's LOGIN (and whatever followed) byte for byte, and from then on
copies bytes both ways.  The node answers the LOGIN, so the device's first
frame is its login answer, and it never learns there was a balancer.  Each
side is the other's producer, so a slow reader on either end slows the
other instead of filling the balancer's memory.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet import endpoints
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure


class NodeLink(Protocol):
    """The balancer's connection to a node on behalf of one device."""

    #: Registered as the producer of the device's connection.
    producing = False

    def __init__(self, device: Any) -> None:
        self.device = device

    def connectionMade(self) -> None:
        # What the device sent so far, its LOGIN first, exactly as sent.
        self.transport.write(self.device.handover())
        device = self.device.transport
        self.transport.registerProducer(device, True)
        device.registerProducer(self.transport, True)
        self.producing = True
        self.device.linked(self)

    def dataReceived(self, data: bytes) -> None:
        self.device.transport.write(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.device.close("the node closed the relayed connection")


def connect(reactor: Any, host: str, port: int, tls: Any) -> Callable[[Protocol], Deferred]:
    """A function that connects a protocol to the node at C{host}:C{port} (TLS options or False)."""
    endpoint: Any = endpoints.HostnameEndpoint(reactor, host, port)
    if tls:
        endpoint = endpoints.wrapClientTLS(tls, endpoint)
    return lambda protocol: endpoints.connectProtocol(endpoint, protocol)
