"""
The manhole's connections that have not authenticated are timed out and
capped (issue 15, item 9): 1,040 bare TCP connections used to exhaust the
process's file descriptors and lock devices out.  The real manhole service
on a MemoryReactorClock; tests/test_security.py drives it with OpenSSH.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from hypertcp.app.config import load
from hypertcp.app.manhole import makeService
from tests.inprocess import Server


def manhole(tmp_path: Path, **keys: str):
    """The manhole's listening factory and the clock it runs on."""
    config = load(None, {("manhole", "listen"): "0",
                         ("manhole", "authorized_keys"): str(tmp_path / "keys"),
                         ("manhole", "host_key"): str(tmp_path / "host_key"),
                         **{("manhole", k): v for k, v in keys.items()}})
    reactor = MemoryReactorClock()
    makeService(config.manhole, Server(tmp_path).factory, reactor=reactor).privilegedStartService()
    [(_, factory, _, _)] = reactor.tcpServers
    factory.doStart()  # as a real port does when it starts listening
    return factory, reactor


def connect(factory, port: int):
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", port))
    if protocol is None:
        return None
    transport = StringTransport()
    protocol.makeConnection(transport)
    assert transport.value().startswith(b"SSH-2.0-"), "the SSH server speaks first"
    return transport


def aborted(transport: StringTransport) -> bool:
    return bool(getattr(transport, "disconnected", False))


def test_connections_that_do_not_authenticate_are_closed_at_the_deadline(tmp_path):
    factory, clock = manhole(tmp_path, login_timeout="20")
    bare = connect(factory, 40001)
    clock.advance(19.9)
    assert not aborted(bare)
    clock.advance(0.2)
    assert aborted(bare)


def test_connections_that_have_not_authenticated_are_capped(tmp_path):
    factory, clock = manhole(tmp_path, max_pending="3")
    held = [connect(factory, 40001 + i) for i in range(3)]
    assert all(held)
    assert connect(factory, 40010) is None, "the fourth is closed at once"
    # The deadline frees them.
    clock.advance(60)
    for protocol in list(factory.protocols):
        protocol.connectionLost(None)
    assert connect(factory, 40011) is not None


def test_an_authenticated_operator_is_neither_timed_out_nor_counted(tmp_path):
    factory, clock = manhole(tmp_path, max_pending="1", login_timeout="20")
    operator = connect(factory, 40001)
    [protocol] = factory.protocols
    # What SSHUserAuthServer does when a key is accepted: the connection service starts.
    protocol.wrappedProtocol.service = SimpleNamespace(name=b"ssh-connection")
    assert connect(factory, 40002) is not None, "the operator holds no pre-auth slot"
    clock.advance(30)
    assert not aborted(operator)
