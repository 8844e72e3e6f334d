"""
Connections that have not logged in cannot crowd out devices (issue 15,
item 8): a cap per source address on them, the slots they hold yielded to
newcomers when the server is full, and refusals logged once per window,
not once per connection.
"""

from __future__ import annotations

from dataclasses import replace

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.testing import StringTransport
from twisted.logger import Logger

from hypertcp.protocol.commands import Command, Status
from hypertcp.server.admission import source_of
from tests.inprocess import Peer, Server


def connect(server: Server, host: str, port: int = 50000):
    """factory.buildProtocol as a listener calls it: the session, or None when refused."""
    kind = IPv6Address if ":" in host else IPv4Address
    addr = kind("TCP", host, port)
    session = server.factory.buildProtocol(addr)
    if session is None:
        return None
    transport = StringTransport(peerAddress=addr)
    session.makeConnection(transport)
    return Peer(server, session, transport)


def aborted(peer: Peer) -> bool:
    # StringTransport.abortConnection sets "disconnected" (its docstring says "aborted").
    return bool(getattr(peer.transport, "disconnected", False))


def test_connections_not_logged_in_are_capped_per_source(tmp_path):
    server = Server(tmp_path, max_pending_per_source=3)
    crowd = [connect(server, "198.51.100.7", 1000 + i) for i in range(3)]
    assert all(crowd)
    assert connect(server, "198.51.100.7", 1003) is None, "the fourth from one address"
    assert connect(server, "198.51.100.8") is not None, "another address is not held up"
    # Logging in, or leaving, gives the slot back.
    assert crowd[0].login(server.token("dev1")) == Status.SUCCESS
    assert connect(server, "198.51.100.7", 1004) is not None
    assert connect(server, "198.51.100.7", 1005) is None
    crowd[1].lose()
    assert connect(server, "198.51.100.7", 1006) is not None


def test_an_ipv6_source_is_its_64_prefix():
    assert source_of("2001:db8::1") == source_of("2001:db8::ffff:2") == "2001:db8::/64"
    assert source_of("2001:db8:0:1::1") == "2001:db8:0:1::/64"
    assert source_of("::ffff:192.0.2.1") == "192.0.2.1"
    assert source_of("192.0.2.1") == "192.0.2.1"


def test_ipv6_connections_are_capped_by_their_64(tmp_path):
    server = Server(tmp_path, max_pending_per_source=2)
    assert connect(server, "2001:db8::1") and connect(server, "2001:db8::2")
    assert connect(server, "2001:db8::3") is None
    assert connect(server, "2001:db8:0:1::1") is not None


def test_a_full_server_gives_a_slot_held_by_no_login_to_a_newcomer(tmp_path):
    server = Server(tmp_path, max_connections=4)
    first = server.online("first")
    second = server.online("second")
    stale = connect(server, "203.0.113.1")
    server.clock.advance(1)
    newer = connect(server, "203.0.113.2")
    device = connect(server, "192.0.2.99")
    assert device is not None, "admitted: a connection that has not logged in yields"
    assert aborted(stale) and not aborted(newer), "the oldest one yields"
    assert not first.closing and not second.closing
    assert device.login(server.token("dev")) == Status.SUCCESS
    stale.lose()
    assert newer.send(Command.PING) and newer.answer(1) == Status.SUCCESS


def test_a_server_full_of_logged_in_connections_refuses_newcomers(tmp_path):
    server = Server(tmp_path, max_connections=2)
    first, second = server.online("first"), server.online("second")
    assert connect(server, "192.0.2.99") is None
    assert not first.closing and not second.closing


def test_refusals_are_logged_once_per_window(tmp_path):
    server = Server(tmp_path, max_pending_per_source=1)
    lines: list[dict] = []
    server.factory.admission.log = Logger(observer=lines.append)
    assert connect(server, "198.51.100.7", 1) is not None
    for port in range(2, 1002):
        assert connect(server, "198.51.100.7", port) is None
    assert len(lines) == 1
    server.clock.advance(10)
    assert connect(server, "198.51.100.7", 5000) is None
    assert len(lines) == 2
    assert "999 more refused since" in lines[1]["log_format"].format(**lines[1])
    assert server.factory.counters["pending_per_source"] == 1001


def test_limits_reloaded_on_sighup_apply_to_admission(tmp_path):
    server = Server(tmp_path, max_pending_per_source=1)
    assert connect(server, "198.51.100.7", 1) is not None
    assert connect(server, "198.51.100.7", 2) is None
    server.factory.set_limits(replace(server.limits, max_pending_per_source=2))
    assert connect(server, "198.51.100.7", 3) is not None
