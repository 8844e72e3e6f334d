"""The balancer's relay for devices that cannot follow a REDIRECT, in-process."""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport

from hypertcp.app.balancer.session import BalancerFactory
from hypertcp.protocol.commands import Command, Status
from hypertcp.protocol.frames import encode, response
from tests.inprocess import Server


class FakeBackend:
    name = "node-a:1"
    host, port, tls = "node-a", 1, False
    available = True
    load = 0
    assigned = 0

    def __init__(self) -> None:
        self.links: list = []
        self.pending: list[Deferred] = []

    def link(self, protocol):
        """Hold the connection until the test lets it complete."""
        d: Deferred = Deferred()
        self.links.append(protocol)
        self.pending.append(d)
        return d


def balancer_with(backend: FakeBackend, server: Server):
    balancer = SimpleNamespace(pick=lambda key: backend)
    factory = BalancerFactory(balancer, server.factory)
    device = factory.buildProtocol(IPv4Address("TCP", "192.0.2.7", 5000))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.7", 5000))
    device.makeConnection(transport)
    return device, transport


def test_a_raw_login_is_relayed_with_what_followed_it_byte_for_byte(tmp_path):
    server = Server(tmp_path)
    backend = FakeBackend()
    device, device_transport = balancer_with(backend, server)
    secret = server.token("esp32")
    login = encode(Command.LOGIN, 1, secret.encode())
    after = encode(Command.PING, 2) + encode(Command.JSON_MESSAGE, 3, b'{"targetId"')
    device.dataReceived(login + after)
    assert device_transport.value() == b"", "the node, not the balancer, answers the LOGIN"
    assert device_transport.producerState == "paused", "nothing more is read until the node is up"
    device.dataReceived(b':"x","payload":{}}')  # arrives while the node connects
    [link] = backend.links
    node_transport = StringTransport()
    link.makeConnection(node_transport)
    backend.pending[0].callback(link)
    assert node_transport.value() == login + after + b':"x","payload":{}}'
    assert device_transport.producerState == "producing"
    # From now on bytes pass both ways untouched.
    device.dataReceived(b"\x06\x00\x04\x00\x00")
    assert node_transport.value().endswith(b"\x06\x00\x04\x00\x00")
    link.dataReceived(response(1, Status.SUCCESS, login=True))
    assert device_transport.value() == response(1, Status.SUCCESS, login=True)
    # Either side leaving closes the other.
    link.connectionLost(None)
    assert device_transport.disconnecting


def test_a_project_client_is_redirected_not_relayed(tmp_path):
    server = Server(tmp_path)
    backend = FakeBackend()
    device, device_transport = balancer_with(backend, server)
    body = b'{"token": "%s", "proto": 2}' % server.token("esp32").encode()
    device.dataReceived(encode(Command.LOGIN, 1, body))
    assert backend.links == []
    assert device_transport.value().startswith(bytes((Command.REDIRECT,)))


def test_a_node_that_cannot_be_reached_fails_the_login_with_its_byte(tmp_path):
    server = Server(tmp_path)
    backend = FakeBackend()
    device, device_transport = balancer_with(backend, server)
    device.dataReceived(encode(Command.LOGIN, 1, server.token("esp32").encode()))
    backend.pending[0].errback(ConnectionRefusedError("refused"))
    assert device_transport.value() == response(1, Status.SERVER_EXCEPTION, login=True)
    assert device_transport.disconnecting
