"""
The Twisted client in-process: its protocol against a fake clock (login,
heartbeat, answers matched by msg_id, deliveries acknowledged, refusals,
REDIRECT), then linked to a real server session.
"""

from __future__ import annotations

import json

from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from hypertcp.client import HyperTCPError
from hypertcp.client.txclient import HyperTCPClientFactory
from hypertcp.protocol.commands import Command, Status
from hypertcp.protocol.frames import Decoder, Frame, encode, response
from tests.inprocess import Server


# -- the Twisted protocol's timers, against a fake clock --

def connected(clock: Clock, heartbeat: float = 30.0, timeout: float = 30.0, **kw):
    factory = HyperTCPClientFactory("secret", "dev", heartbeat=heartbeat,
                                    responseTimeout=timeout, clock=clock, **kw)
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return factory, protocol, transport


def frames(transport: StringTransport) -> list[Frame]:
    sent = Decoder().feed(transport.value())
    transport.clear()
    return sent


def test_protocol_logs_in_then_beats_every_interval():
    clock = Clock()
    factory, protocol, transport = connected(clock, heartbeat=30)
    [login] = frames(transport)
    assert (login.command, login.msg_id) == (Command.LOGIN, 1)
    assert json.loads(login.payload) == {"token": "secret", "device_id": "dev", "proto": 2}
    ready = factory.whenLoggedIn()
    assert not ready.called
    protocol.dataReceived(response(1, Status.SUCCESS, login=True))
    assert ready.result is protocol and protocol.authenticated
    clock.advance(29.9)
    assert frames(transport) == []
    clock.advance(0.1)
    [ping] = frames(transport)
    assert ping.command == Command.PING
    protocol.dataReceived(response(ping.msg_id))
    clock.advance(30)
    assert [f.command for f in frames(transport)] == [Command.PING]


def test_unanswered_heartbeat_drops_the_connection():
    clock = Clock()
    _, protocol, transport = connected(clock, heartbeat=30, timeout=10)
    protocol.dataReceived(response(1, Status.SUCCESS, login=True))
    clock.advance(30)
    assert not transport.disconnecting
    clock.advance(10)
    assert transport.disconnecting


def test_deliveries_are_acked_before_the_callback_runs():
    clock = Clock()
    seen: list = []
    _, protocol, transport = connected(clock, onMessage=lambda m: seen.append(
        (m, transport.value())))
    protocol.dataReceived(response(1, Status.SUCCESS, login=True))
    transport.clear()
    protocol.dataReceived(encode(Command.JSON_MESSAGE, 7, b'{"from":"a","payload":{"x":1}}')
                          + encode(Command.PING, 8))
    [(message, written)] = seen
    assert (message.sender, message.payload) == ("a", {"x": 1})
    assert written.startswith(response(7))
    assert transport.value() == response(7) + response(8)


def test_requests_match_answers_by_msg_id_and_fail_when_lost():
    clock = Clock()
    _, protocol, transport = connected(clock, timeout=5)
    protocol.dataReceived(response(1, Status.SUCCESS, login=True))
    transport.clear()
    first = protocol.send("a", {})
    second = protocol.broadcast({})
    third = protocol.ping()
    one, two, three = frames(transport)
    protocol.dataReceived(response(two.msg_id) + response(one.msg_id, Status.DEVICE_NOT_IN_NETWORK))
    assert first.result == Status.DEVICE_NOT_IN_NETWORK and second.result == Status.SUCCESS
    clock.advance(5)
    third_failure = []
    third.addErrback(third_failure.append)
    assert third_failure[0].check(defer.TimeoutError)
    lost = protocol.send("a", {})
    protocol.connectionLost(Failure(ConnectionDone()))
    lost_failure = []
    lost.addErrback(lost_failure.append)
    assert lost_failure[0].check(ConnectionDone)
    closed = []
    protocol.send("a", {}).addErrback(closed.append)
    assert closed[0].check(ConnectionError)


def test_refused_token_fails_when_logged_in():
    clock = Clock()
    factory, protocol, transport = connected(clock)
    ready = factory.whenLoggedIn()
    protocol.dataReceived(response(1, Status.INVALID_TOKEN, login=True))
    assert transport.disconnecting
    failures: list = []
    ready.addErrback(failures.append)
    assert failures[0].value.status == Status.INVALID_TOKEN
    later: list = []
    factory.whenLoggedIn().addErrback(later.append)
    assert later[0].check(HyperTCPError)


def test_redirect_without_a_service_closes_and_is_logged():
    clock = Clock()
    _, protocol, transport = connected(clock)
    protocol.dataReceived(response(1, Status.SUCCESS, login=True))
    protocol.dataReceived(encode(Command.REDIRECT, 2, b'{"server": "10.0.0.2", "port": 9000}'))
    assert transport.disconnecting


# -- the Twisted client and a real session ----------------------------------------

def linked(server: Server, token: str, device_id: str, heartbeat: float = 30.0):
    """A Twisted client connected to C{server} over a L{tests.inprocess.Link}."""
    seen: list = []
    factory = HyperTCPClientFactory(token, device_id, heartbeat=heartbeat, responseTimeout=10,
                                    clock=server.clock, onMessage=seen.append)
    link = server.link(factory.buildProtocol(None))
    return factory, link, seen


def results(d) -> list:
    out: list = []
    d.addBoth(out.append)
    return out


def test_the_twisted_client_exchanges_messages_with_a_session(server):
    factory, link, seen = linked(server, server.token("fleet", "fleet"), "twisted")
    protocol = factory.current
    assert protocol is not None and server.hub.devices["twisted"][0].proto == 2
    other = server.online("other")
    acked = other.message("twisted", {"to": "twisted"}, ack=True)
    link.pump()
    assert [(m.sender, m.payload) for m in seen] == [("other", {"to": "twisted"})]
    assert other.answer(acked) == Status.SUCCESS, "acknowledged on receipt"
    other.send_json(Command.BROADCAST, {"payload": {"to": "all"}})
    link.pump()
    assert (seen[-1].command, seen[-1].payload) == (Command.BROADCAST, {"to": "all"})
    sent = results(protocol.send("other", {"from": "twisted"}))
    nowhere = results(protocol.send("nobody", {}))
    link.pump()
    assert (sent, nowhere) == ([Status.SUCCESS], [Status.DEVICE_NOT_IN_NETWORK])
    assert other.delivered() == [(Command.JSON_MESSAGE,
                                  {"from": "twisted", "payload": {"from": "twisted"}})]


def test_the_heartbeat_keeps_one_connection_past_the_idle_timeout(tmp_path):
    server = Server(tmp_path, idle_timeout=60)
    factory, link, _ = linked(server, server.token("beating"), "beating", heartbeat=20)
    protocol = factory.current
    for _ in range(30):  # ten idle timeouts
        server.clock.advance(20)
        link.pump()
    assert not link.closed and factory.current is protocol


def test_the_twisted_client_answers_the_servers_pings(tmp_path):
    server = Server(tmp_path, idle_timeout=60)
    factory, link, _ = linked(server, server.token("quiet"), "quiet", heartbeat=1000)
    for _ in range(10):
        server.clock.advance(30)
        link.pump()
    assert not link.closed, "its answers to the server's PINGs are life"


def test_an_invalid_token_is_final(server):
    factory, link, _ = linked(server, "not-a-token", "nobody")
    assert link.closed
    failure = results(factory.whenLoggedIn())[0]
    assert isinstance(failure.value, HyperTCPError)
    assert failure.value.status == Status.INVALID_TOKEN


def test_a_redirect_from_the_server_closes_the_connection(server):
    factory, link, _ = linked(server, server.token("mover"), "mover")
    server.hub.redirect("mover", "10.0.0.2", 9000)
    link.pump()
    assert link.closed and factory.current is None


def test_a_redirect_before_the_login_answer_is_followed_before_counting_itself_online():
    # The balancer's answer: REDIRECT, then SUCCESS, in one write.
    class Following(HyperTCPClientFactory):
        def redirect(self, host, port, tls):
            followed.append((host, port, tls))

    followed: list = []
    factory = Following("secret", "dev", clock=Clock())
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(encode(Command.REDIRECT, 1, b'{"server": "10.0.0.7", "port": 9000}')
                          + response(1, Status.SUCCESS, login=True))
    assert followed == [("10.0.0.7", 9000, False)]
    assert transport.disconnecting
    assert factory.current is None and not protocol.authenticated, \
        "never online at the balancer"
