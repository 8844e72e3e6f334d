"""
Every close has a deadline, and a closing session leaves the hub at once
(issue 15, items 1 and 2): a peer that stops reading cannot keep its
connection, its slot or its id by never letting the close finish.
"""

from __future__ import annotations

from hypertcp.protocol.commands import Command, Status
from hypertcp.server.limits import Limits
from tests.inprocess import Peer, Server


def _aborted(peer: Peer) -> bool:
    # StringTransport.abortConnection sets "disconnected" (its docstring says "aborted").
    return bool(getattr(peer.transport, "disconnected", False))


def _event(observer: Peer, event: str, device: str) -> bool:
    return any(body["payload"].get("event") == event and body["payload"].get("deviceId") == device
               for _, body in observer.delivered())


def test_a_session_closed_while_its_peer_does_not_read_leaves_the_hub_at_once(tmp_path):
    server = Server(tmp_path, idle_timeout=60)
    watcher = server.online("watcher", "observer")
    sender = server.online("sender")
    stalled = server.online("stalled")
    # The peer's receive window is full: the transport holds what it is sent.
    stalled.session.pauseProducing()
    for _ in range(3):  # the others keep talking; the stalled one is silent
        server.clock.advance(25)
        sender.send(Command.PING)
        watcher.send(Command.PING)
    assert stalled.closing, "closed at the idle timeout"
    assert "stalled" not in server.hub.devices
    assert stalled.session not in server.hub.sessions
    assert _event(watcher, "deviceDisconnected", "stalled")
    assert sender.answer(sender.message("stalled", {"n": 1})) == Status.DEVICE_NOT_IN_NETWORK


def test_a_close_that_does_not_finish_is_aborted_at_the_close_deadline(tmp_path):
    server = Server(tmp_path, idle_timeout=60, close_timeout=3)
    stalled = server.online("stalled")
    stalled.session.pauseProducing()
    server.clock.advance(60)
    assert stalled.closing and not _aborted(stalled)
    server.clock.advance(2.9)
    assert not _aborted(stalled)
    server.clock.advance(0.2)
    assert _aborted(stalled), "aborted once close_timeout passed"
    stalled.lose()
    assert not server.factory.sessions


def test_the_login_deadline_close_is_aborted_at_the_close_deadline(tmp_path):
    # What a half-done TLS handshake does: the TIMEOUT written before the
    # close never leaves, so the close never finishes by itself.
    server = Server(tmp_path, login_timeout=10, close_timeout=2)
    silent = server.connect()
    server.clock.advance(10)
    assert silent.answer(1) == Status.TIMEOUT and silent.closing
    server.clock.advance(2)
    assert _aborted(silent)


def test_a_close_that_finishes_leaves_no_deadline_behind(tmp_path):
    server = Server(tmp_path, close_timeout=3)
    peer = server.online("dev")
    server.hub.kick("dev")
    assert peer.closing
    peer.lose()
    assert not server.clock.getDelayedCalls()
    server.clock.advance(10)
    assert not _aborted(peer)


def test_a_redirected_session_leaves_the_hub_at_once_and_closes_with_a_deadline(tmp_path):
    server = Server(tmp_path, close_timeout=2)
    watcher = server.online("watcher", "observer")
    peer = server.online("dev")
    server.hub.redirect("dev", "192.0.2.50", 7000)
    assert "dev" not in server.hub.devices
    assert _event(watcher, "deviceDisconnected", "dev")
    assert not peer.closing
    server.clock.advance(1.0)
    assert peer.closing
    server.clock.advance(2.0)
    assert _aborted(peer)


def test_close_timeout_has_a_default_of_a_few_seconds():
    assert 1 <= Limits().close_timeout <= 10
