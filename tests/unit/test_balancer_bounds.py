"""
The balancer's connections have the bounds a node's have (issue 15, item
3): five sockets sending PINGs without ever reading took a balancer from
51 MB to 534 MB.  Now the rate limit, the slow-reader cap, the login
deadline, the close deadline and admission apply at the balancer too.
In-process, with a stand-in for the picked node as tests/unit/
test_balancer_relay.py has.
"""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from hypertcp.app.balancer.session import BalancerFactory
from hypertcp.protocol import challenge
from hypertcp.protocol.bodies import challenge_request_body, login_body, proof_body
from hypertcp.protocol.commands import Command, Status
from hypertcp.protocol.frames import Decoder, encode
from tests.inprocess import Server


class Node:
    name = "node-a:1"
    host, port, tls = "node-a", 1, False
    assigned = 0


class Device:
    """One connection to the balancer, held by the test."""

    def __init__(self, factory: BalancerFactory, host: str = "192.0.2.7", port: int = 5000):
        addr = IPv4Address("TCP", host, port)
        self.session = factory.buildProtocol(addr)
        self.transport = StringTransport(peerAddress=addr)
        if self.session is not None:
            self.session.makeConnection(self.transport)

    def send(self, command: int, msg_id: int, payload: bytes = b"") -> None:
        self.session.dataReceived(encode(command, msg_id, payload))

    def frames(self):
        data = self.transport.value()
        self.transport.clear()
        return Decoder().feed(data)

    @property
    def closing(self) -> bool:
        return bool(self.transport.disconnecting)

    @property
    def aborted(self) -> bool:
        # StringTransport.abortConnection sets "disconnected" (its docstring says "aborted").
        return bool(getattr(self.transport, "disconnected", False))


def balancer(tmp_path, **limits) -> tuple[Server, BalancerFactory]:
    server = Server(tmp_path, **limits)
    return server, BalancerFactory(SimpleNamespace(pick=lambda key: Node()), server.factory)


def test_pings_from_a_peer_that_never_reads_cost_bounded_memory(tmp_path):
    server, factory = balancer(tmp_path, rate_limit=0, max_outbound_buffer=4096)
    device = Device(factory)
    device.session.pauseProducing()  # its receive window is full
    for msg_id in range(1, 2001):  # 10 KB of answers it will never read
        device.send(Command.PING, msg_id)
        if device.aborted:
            break
    assert device.aborted and msg_id < 1000
    assert server.factory.counters["slow_receiver"] == 1


def test_a_ping_flood_at_the_balancer_is_rate_limited_and_closed(tmp_path):
    server, factory = balancer(tmp_path, rate_limit=20, quota_strikes=50)
    device = Device(factory)
    device.session.dataReceived(b"".join(encode(Command.PING, i) for i in range(1, 101)))
    statuses = [f.payload[0] if f.payload else Status.SUCCESS for f in device.frames()]
    assert statuses.count(Status.SUCCESS) == 20 and Status.QUOTA_LIMIT in statuses
    assert device.closing, "past quota_strikes it is closed as a flood"


def test_the_login_deadline_and_the_close_deadline_hold_at_the_balancer(tmp_path):
    server, factory = balancer(tmp_path, login_timeout=10, close_timeout=2)
    device = Device(factory)
    device.session.pauseProducing()
    server.clock.advance(10)
    [timeout] = device.frames()
    assert (timeout.command, timeout.msg_id, timeout.payload) == (Command.RESPONSE, 1,
                                                                  bytes((Status.TIMEOUT,)))
    assert device.closing and not device.aborted
    server.clock.advance(2)
    assert device.aborted, "a close the peer does not let finish is aborted"


def test_a_redirected_connection_closes_with_a_deadline(tmp_path):
    server, factory = balancer(tmp_path, close_timeout=2)
    device = Device(factory)
    device.send(Command.LOGIN, 1, login_body(server.token("dev-1")))
    redirect, answer = device.frames()
    assert redirect.command == Command.REDIRECT and answer.payload == bytes((Status.SUCCESS,))
    server.clock.advance(1)
    assert device.closing
    server.clock.advance(2)
    assert device.aborted


def test_refusals_at_the_balancer_are_logged_once_per_window(tmp_path):
    server, factory = balancer(tmp_path)
    lines: list = []
    device = Device(factory)
    device.session.log = SimpleNamespace(warn=lambda *a, **k: lines.append(a),
                                         info=lambda *a, **k: None)
    for msg_id in range(1, 51):
        device.send(Command.LOGIN, msg_id, b'{"token": 5}')
    assert len([f for f in device.frames() if f.payload == bytes((Status.ILLEGAL_COMMAND_BODY,))]) == 50
    assert len(lines) == 1


def test_connections_not_logged_in_are_capped_per_source_at_the_balancer(tmp_path):
    server, factory = balancer(tmp_path, max_pending_per_source=2)
    first, _second = Device(factory, port=1), Device(factory, port=2)
    assert Device(factory, port=3).session is None
    assert Device(factory, host="192.0.2.8").session is not None
    first.send(Command.LOGIN, 1, login_body(server.token("dev-1")))  # redirected: not pending
    assert Device(factory, port=4).session is not None


def test_a_full_balancer_gives_a_slot_held_by_no_login_to_a_newcomer(tmp_path):
    server, factory = balancer(tmp_path, max_connections=2)
    idle = Device(factory, port=1)
    server.clock.advance(1)
    redirected = Device(factory, port=2)
    redirected.send(Command.LOGIN, 1, login_body(server.token("dev-1")))
    newcomer = Device(factory, port=3)
    assert newcomer.session is not None and idle.aborted and not redirected.aborted


def test_a_challenge_login_is_redirected(tmp_path):
    server, factory = balancer(tmp_path)
    secret = server.token("dev-1")
    device = Device(factory)
    device.send(Command.LOGIN, 1, challenge_request_body())
    [nonce_frame] = device.frames()
    assert (nonce_frame.command, nonce_frame.msg_id) == (Command.LOGIN, 1)
    nonce = json.loads(nonce_frame.payload)["nonce"]
    device.send(Command.LOGIN, 2, proof_body(challenge.key_id(secret),
                                             challenge.proof(secret, nonce)))
    redirect, answer = device.frames()
    assert redirect.command == Command.REDIRECT
    assert (answer.msg_id, answer.payload) == (2, bytes((Status.SUCCESS,)))
    replay = Device(factory, port=5001)
    replay.send(Command.LOGIN, 1, proof_body(challenge.key_id(secret),
                                             challenge.proof(secret, nonce)))
    [refused] = replay.frames()
    assert refused.payload == bytes((Status.INVALID_TOKEN,)) and replay.closing


def test_limits_reloaded_on_sighup_apply_at_the_balancer(tmp_path):
    server, factory = balancer(tmp_path, max_pending_per_source=1)
    assert Device(factory, port=1).session is not None
    assert Device(factory, port=2).session is None
    server.factory.set_limits(replace(server.limits, max_pending_per_source=2, rate_limit=1))
    device = Device(factory, port=3)
    assert device.session is not None
    device.session.dataReceived(encode(Command.PING, 1) + encode(Command.PING, 2))
    assert [f.payload for f in device.frames()] == [b"", bytes((Status.QUOTA_LIMIT,))]
