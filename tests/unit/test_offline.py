"""
Store and forward's rules, in-process: a real session, hub and SQLite store
(in memory, its batches run inline) on a Clock.  What is stored and when
STORED is answered, the order and pacing of delivery at login, bounds and
expiry.  tests/test_offline.py proves the same through real processes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import pytest
from twisted.internet.defer import maybeDeferred
from twisted.logger import formatEvent, globalLogPublisher

from hypertcp.protocol.bodies import login_body
from hypertcp.protocol.commands import Command, Status
from hypertcp.server.offline import Offline
from hypertcp.store.records import Bounds
from hypertcp.store.sqlite import SQLiteStore
from hypertcp.store.sqlitefile import open_writer
from hypertcp.store.writers import ThreadWriter
from tests.inprocess import Peer, Server

ACK_TIMEOUT = 10.0


def inline(function: Any, *args: Any) -> Any:
    """Run a store batch at once, where the server would use its thread."""
    return maybeDeferred(function, *args)


class Harness:
    """A server with store and forward, a sender online, and a device that logs in at will."""

    def __init__(self, tmp_path: Path, window: int = 8, max_queued: int = 1000,
                 max_bytes: int = 1 << 20, max_total: int = 1 << 28, default_ttl: float = 3600,
                 max_ttl: float = 86400, path: str = ":memory:", start: float = 0) -> None:
        self.server = Server(tmp_path, rate_limit=0, ack_timeout=ACK_TIMEOUT)
        self.clock = self.server.clock
        self.clock.advance(start)  # before anything is scheduled
        self.store = SQLiteStore(ThreadWriter(open_writer(path), self.clock, run=inline),
                                 Bounds(max_queued, max_bytes, max_total), self.clock, path)
        self.offline = Offline(self.server.hub, self.store, self.clock, default_ttl, max_ttl,
                               window)
        self.sender = self.server.online("app", "fleet", "app")
        self.turn()  # its login's read of the store
        self._tokens: dict[str, str] = {}

    def turn(self) -> None:
        """One reactor turn: the store's batch commits, and what follows it runs."""
        self.clock.advance(0)

    def send(self, target: str, payload: dict, **extra: Any) -> Optional[int]:
        """Send and return the answer once the store has committed."""
        msg_id = self.sender.message(target, payload, **extra)
        self.turn()
        return self.sender.answer(msg_id)

    def login(self, device: str = "lamp", proto: Optional[int] = 2) -> Peer:
        token = self._tokens.get(device) or self._tokens.setdefault(
            device, self.server.token(device))
        peer = self.server.connect()
        assert peer.login(token, proto=proto) == Status.SUCCESS
        self.turn()
        return peer

    def queued(self, device: str = "lamp") -> list[dict]:
        found: list = []
        self.store.messages(device, 10_000).addCallback(found.extend)
        self.turn()
        return [json.loads(m.payload) for m in found]


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


@pytest.fixture
def logged():
    """The server's log lines while the test runs."""
    lines: list[str] = []

    def observer(event: dict) -> None:
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    yield lines
    globalLogPublisher.removeObserver(observer)


def messages(peer: Peer) -> list[tuple[Any, dict]]:
    """The JSON_MESSAGE frames delivered since the last look, as (frame, body)."""
    return [(f, json.loads(f.payload)) for f in peer.frames() if f.command == Command.JSON_MESSAGE]


def ack_all(h: Harness, peer: Peer, delivered: list) -> None:
    for frame, _ in delivered:
        peer.ack(frame)
    h.turn()


# -- what is stored, and what the sender is told ---------------------------------

def test_qos_to_an_offline_device_is_stored_and_answered_202_once_committed(h):
    msg_id = h.sender.message("lamp", {"on": True}, qos=1)
    assert h.sender.answer(msg_id) is None, "not before the batch has committed"
    h.turn()
    assert h.sender.answer(msg_id) == Status.STORED
    assert h.queued() == [{"on": True}]
    assert h.offline.stats()["stored"] == 1


def test_without_qos_nothing_is_stored_and_no_202_is_ever_sent(h):
    before = h.store.operations
    assert h.send("lamp", {"n": 1}) == Status.DEVICE_NOT_IN_NETWORK
    assert h.send("lamp", {"n": 2}, qos=0) == Status.DEVICE_NOT_IN_NETWORK
    assert h.send("lamp", {"n": 3}, ttl=60) == Status.DEVICE_NOT_IN_NETWORK
    lamp = h.login()
    assert h.send("lamp", {"n": 4}) == Status.SUCCESS
    assert [body["payload"] for _, body in messages(lamp)] == [{"n": 4}]
    # Only the one read at the login: the messages themselves never reached the store.
    assert h.store.operations == before + 1 and h.queued() == []


@pytest.mark.parametrize("envelope, why", [
    ({"qos": 2}, '"qos" must be 0 or 1'),
    ({"qos": "1"}, '"qos" must be 0 or 1'),
    ({"qos": 1, "ttl": 0}, '"ttl" must be a positive number'),
    ({"qos": 1, "ttl": -5}, '"ttl" must be a positive number'),
    ({"qos": 1, "ttl": "60"}, '"ttl" must be a positive number'),
    ({"qos": 1, "ttl": 86401}, "86400 s at most"),
])
def test_a_bad_qos_or_ttl_is_answered_11_and_logged(h, logged, envelope, why):
    assert h.send("lamp", {"x": 1}, **envelope) == Status.ILLEGAL_COMMAND_BODY
    assert any(why in line for line in logged), logged
    assert h.queued() == []


def test_qos_on_a_broadcast_is_refused_with_11(h):
    msg_id = h.sender.send_json(Command.BROADCAST, {"payload": {"x": 1}, "qos": 1})
    h.turn()
    assert h.sender.answer(msg_id) == Status.ILLEGAL_COMMAND_BODY
    assert h.send("broadcast", {"x": 1}, qos=1) == Status.ILLEGAL_COMMAND_BODY


def test_qos_to_server_is_an_ordinary_server_message(h):
    msg_id = h.sender.message("server", {"command": "ping", "timestamp": 5}, qos=1)
    assert h.sender.answer(msg_id) == Status.SUCCESS
    assert [body["payload"] for _, body in messages(h.sender)] == [
        {"command": "pong", "timestamp": 5}]


def test_a_target_the_token_may_not_reach_is_refused_not_stored(h):
    narrow = h.server.online("narrow", "fleet", "narrow", reach=["sensor-*"])
    msg_id = narrow.message("lamp", {"x": 1}, qos=1)
    h.turn()
    assert narrow.answer(msg_id) == Status.NOT_ALLOWED
    assert h.queued() == []


# -- delivery at login -------------------------------------------------------------

def test_stored_messages_arrive_at_login_in_order_and_leave_once_acknowledged(h):
    for n in range(150):  # more than two pages of the store
        assert h.send("lamp", {"n": n}, qos=1) == Status.STORED
    lamp = h.login()
    got: list[int] = []
    while True:
        delivered = messages(lamp)
        if not delivered:
            break
        assert len(delivered) <= 8, "never more than the window unacknowledged"
        for _, body in delivered:
            assert body["from"] == "app"
            assert isinstance(body["queued_at"], int)
            got.append(body["payload"]["n"])
        ack_all(h, lamp, delivered)
    assert got == list(range(150))
    assert h.queued() == []
    assert h.offline.stats()["delivered"] == 150
    lamp.lose()
    again = h.login()
    assert messages(again) == [], "acknowledged messages are not delivered again"


def test_queued_at_is_when_the_server_accepted_it(h):
    h.clock.advance(5.5)
    h.send("lamp", {"x": 1}, qos=1)
    h.clock.advance(30)
    [(_, body)] = messages(h.login())
    assert body["queued_at"] == 5500


def test_a_device_below_protocol_level_2_gets_the_contracts_frame_without_queued_at(h):
    h.send("lamp", {"x": 1}, qos=1)
    lamp = h.login(proto=None)  # the original sketch's raw-token login
    [(frame, body)] = messages(lamp)
    assert body == {"from": "app", "payload": {"x": 1}}
    lamp.ack(frame)
    h.turn()
    assert h.queued() == []


def test_unacknowledged_messages_come_again_at_the_next_login_in_order(h):
    for n in range(12):
        h.send("lamp", {"n": n}, qos=1)
    lamp = h.login()
    first = messages(lamp)
    assert [body["payload"]["n"] for _, body in first] == list(range(8))
    ack_all(h, lamp, first[:3])  # takes three, then goes silent
    more = messages(lamp)
    assert [body["payload"]["n"] for _, body in more] == [8, 9, 10]
    h.clock.advance(ACK_TIMEOUT)
    assert messages(lamp) == [], "a frame not acknowledged in time ends the backlog"
    lamp.lose()
    again = h.login()
    redelivered = [body["payload"]["n"] for _, body in messages(again)]
    assert redelivered == list(range(3, 11))
    assert h.queued() == [{"n": n} for n in range(3, 12)]


def test_delivery_waits_while_the_device_is_not_reading(h):
    for n in range(5):
        h.send("lamp", {"n": n}, qos=1)
    peer = h.server.connect()
    token = h.server.token("lamp")
    assert peer.login(token) == Status.SUCCESS
    peer.session.pauseProducing()  # what the transport says when the peer stops reading
    h.turn()
    assert messages(peer) == []
    peer.session.resumeProducing()
    h.turn()
    assert [body["payload"]["n"] for _, body in messages(peer)] == list(range(5))


def test_an_observers_snapshot_and_its_stored_messages_both_wait_for_it_to_read(h):
    h.send("ops", {"x": 1}, qos=1)
    token = h.server.token("ops", "observer")
    peer = h.server.connect()
    peer.session.pauseProducing()
    assert peer.login(token, "ops") == Status.SUCCESS
    h.turn()
    peer.session.resumeProducing()
    h.turn()
    bodies = [body for _, body in messages(peer)]
    assert {"from": "app", "payload": {"x": 1}} in [
        {k: v for k, v in b.items() if k != "queued_at"} for b in bodies]
    assert any(b["payload"].get("event") == "deviceStatus" for b in bodies)


def test_a_device_that_logs_in_again_takes_over_its_backlog(h):
    for n in range(10):
        h.send("lamp", {"n": n}, qos=1)
    old = h.login()
    assert len(messages(old)) == 8  # and it never answers: a half-open connection
    new = h.login()
    delivered = messages(new)
    assert [body["payload"]["n"] for _, body in delivered] == list(range(8))
    ack_all(h, new, delivered)
    rest = messages(new)
    assert [body["payload"]["n"] for _, body in rest] == [8, 9]
    ack_all(h, new, rest)
    assert h.queued() == []


def test_the_backlog_moves_to_another_connection_when_its_own_closes(h):
    token = h.server.token("multi", "fleet")
    first, second = h.server.connect(), h.server.connect()
    assert first.login(token, "gw") == Status.SUCCESS
    assert second.login(token, "gw") == Status.SUCCESS
    h.turn()
    h.send("gw", {"late": True}, qos=1)
    messages(first), messages(second)  # the live delivery went to both; neither acks
    h.clock.advance(ACK_TIMEOUT)
    assert h.queued("gw") == [{"late": True}], "stored after the ack timeout"
    second.lose()
    h.turn()
    delivered = messages(first)
    assert [body["payload"] for _, body in delivered] == [{"late": True}]


# -- qos to a device that is online ------------------------------------------------

def test_qos_to_an_online_device_is_delivered_at_once_and_answered_200(h):
    lamp = h.login()
    msg_id = h.sender.message("lamp", {"x": 1}, qos=1)
    assert h.sender.answer(msg_id) == Status.SUCCESS
    [(frame, body)] = messages(lamp)
    assert body == {"from": "app", "payload": {"x": 1}}
    lamp.ack(frame)
    h.clock.advance(ACK_TIMEOUT)
    assert h.queued() == []


def test_qos_to_an_online_device_that_does_not_acknowledge_is_stored_for_its_next_login(h):
    lamp = h.login()
    assert h.send("lamp", {"x": 1}, qos=1) == Status.SUCCESS
    assert len(messages(lamp)) == 1
    h.clock.advance(ACK_TIMEOUT)
    assert h.queued() == [{"x": 1}]
    assert h.offline.stats()["undelivered"] == 1
    lamp.lose()
    [(_, body)] = messages(h.login())
    assert body["payload"] == {"x": 1} and "queued_at" in body


def test_qos_with_ack_is_answered_with_the_acknowledgement_or_stored(h):
    lamp = h.login()
    msg_id = h.sender.message("lamp", {"x": 1}, qos=1, ack=True)
    assert h.sender.answer(msg_id) is None
    [(frame, _)] = messages(lamp)
    lamp.ack(frame)
    assert h.sender.answer(msg_id) == Status.SUCCESS
    msg_id = h.sender.message("lamp", {"x": 2}, qos=1, ack=True)
    h.clock.advance(ACK_TIMEOUT)
    assert h.sender.answer(msg_id) == Status.STORED


def drain(h: Harness, peer: Peer, got: list) -> None:
    """Take and acknowledge everything, in as many rounds as the window needs."""
    while True:
        delivered = messages(peer)
        if not delivered:
            return
        got += [body["payload"]["n"] for _, body in delivered]
        ack_all(h, peer, delivered)


def test_qos_while_the_store_is_read_is_stored_behind_the_backlog(h):
    for n in range(10):
        h.send("lamp", {"n": n}, qos=1)
    lamp = h.server.connect()
    assert lamp.login(h.server.token("lamp")) == Status.SUCCESS
    msg_id = h.sender.message("lamp", {"n": 10}, qos=1)  # the store's first read is under way
    h.turn()
    assert h.sender.answer(msg_id) == Status.STORED
    got: list[int] = []
    drain(h, lamp, got)
    assert got == list(range(11))
    assert h.queued() == []


def test_qos_once_the_store_is_read_queues_in_memory_behind_the_backlog(h):
    for n in range(10):
        h.send("lamp", {"n": n}, qos=1)
    lamp = h.login()
    first = messages(lamp)
    operations = h.store.operations
    assert h.send("lamp", {"n": 10}, qos=1) == Status.SUCCESS, "delivered, as if live"
    assert h.store.operations == operations, "held in memory, not stored"
    got = [body["payload"]["n"] for _, body in first]
    ack_all(h, lamp, first)
    drain(h, lamp, got)
    assert got == list(range(11))
    assert h.queued() == []


def test_held_messages_the_device_does_not_take_are_stored_in_order(h):
    for n in range(10):
        h.send("lamp", {"n": n}, qos=1)
    lamp = h.login()
    first = messages(lamp)
    for n in range(10, 13):
        assert h.send("lamp", {"n": n}, qos=1) == Status.SUCCESS
    ack_all(h, lamp, first[:5])
    assert [body["payload"]["n"] for _, body in messages(lamp)] == [8, 9, 10, 11, 12]
    msg_id = h.sender.message("lamp", {"n": 13}, qos=1, ack=True)
    lamp.lose()  # gone with eight frames unacknowledged and one held
    h.turn()
    assert h.sender.answer(msg_id) == Status.STORED
    again = h.login()
    got: list[int] = []
    drain(h, again, got)
    assert got == list(range(5, 14))


# -- bounds and expiry ---------------------------------------------------------------

def test_over_max_queued_the_message_is_refused_with_1_and_counted(tmp_path):
    h = Harness(tmp_path, max_queued=3)
    assert [h.send("lamp", {"n": n}, qos=1) for n in range(4)] == [
        Status.STORED, Status.STORED, Status.STORED, Status.QUOTA_LIMIT]
    assert h.send("other", {"n": 0}, qos=1) == Status.STORED, "the bound is per device"
    assert h.offline.stats()["refused"] == 1
    assert h.server.factory.counters["quota_limit"] == 1
    assert h.queued() == [{"n": 0}, {"n": 1}, {"n": 2}]


def test_over_max_queued_bytes_or_the_total_the_message_is_refused(tmp_path):
    h = Harness(tmp_path, max_bytes=100, max_total=150)
    big = {"pad": "x" * 40}  # 52 bytes of payload, 3 of sender
    assert h.send("lamp", big, qos=1) == Status.STORED
    assert h.send("lamp", big, qos=1) == Status.QUOTA_LIMIT
    assert h.send("fan", big, qos=1) == Status.STORED
    assert h.send("pump", big, qos=1) == Status.QUOTA_LIMIT, "over the store's total"
    assert h.send("lamp", {"pad": "x" * 200}, qos=1) == Status.QUOTA_LIMIT


def test_an_expired_message_is_never_delivered_and_the_sweep_deletes_it(h):
    h.send("lamp", {"short": True}, qos=1, ttl=5)
    h.send("lamp", {"long": True}, qos=1, ttl=60)
    h.clock.advance(5)
    [(_, body)] = messages(h.login())
    assert body["payload"] == {"long": True}
    assert h.queued() == [{"short": True}, {"long": True}], "until the sweep"
    swept: list[int] = []
    h.offline.sweep().addCallback(swept.append)
    h.turn()
    assert swept == [1] and h.offline.stats()["expired"] == 1
    assert h.queued() == [{"long": True}]


def test_a_message_that_expires_while_it_waits_its_turn_is_not_sent(h):
    for n in range(10):
        h.send("lamp", {"n": n}, qos=1, ttl=5 if n == 9 else 60)
    lamp = h.login()
    first = messages(lamp)
    h.clock.advance(5)
    ack_all(h, lamp, first)
    assert [body["payload"]["n"] for _, body in messages(lamp)] == [8]


def test_expired_messages_make_room_under_the_bound(tmp_path):
    h = Harness(tmp_path, max_queued=2)
    h.send("lamp", {"n": 0}, qos=1, ttl=1)
    h.send("lamp", {"n": 1}, qos=1, ttl=1)
    h.clock.advance(1)
    assert h.send("lamp", {"n": 2}, qos=1) == Status.STORED
    assert h.queued() == [{"n": 2}]
    assert h.offline.stats()["expired"] == 2


def test_the_default_ttl_applies_when_the_sender_names_none(tmp_path):
    h = Harness(tmp_path, default_ttl=100)
    h.send("lamp", {"x": 1}, qos=1)
    h.clock.advance(100)
    assert messages(h.login()) == []


# -- failures ------------------------------------------------------------------------

def test_a_failing_store_answers_19_and_the_server_goes_on(h):
    h.store.writer.writer.conn.close()  # the disk is gone, as far as SQLite can tell
    assert h.send("lamp", {"x": 1}, qos=1) == Status.SERVER_EXCEPTION
    assert h.offline.stats()["failed"] == 1
    assert h.send("app", {"still": "fine"}) == Status.SUCCESS
    lamp = h.login()  # its read fails: logged, and the login stands
    assert not lamp.closing


def test_a_failing_store_is_logged_once_per_interval_not_per_message(h, logged):
    h.store.writer.writer.conn.close()
    for n in range(5):
        assert h.send("lamp", {"n": n}, qos=1) == Status.SERVER_EXCEPTION
    h.login()
    assert len([line for line in logged if line.startswith("message store: ")]) == 1


def test_an_unreachable_store_answers_19_and_leaves_the_saying_to_its_link(tmp_path, logged):
    from hypertcp.cluster.keys import Keys
    from hypertcp.cluster.redis import RedisLink
    from hypertcp.cluster.url import parse
    from hypertcp.store.redis import RedisStore

    from twisted.internet import reactor

    # A link never started, so never connected: every command fails at once,
    # as while Redis is away.
    link = RedisLink(parse("redis://127.0.0.1:1/0"), [], lambda *a: None, lambda: None,
                     lambda: None, reactor=reactor)
    h = Harness(tmp_path)
    h.offline.store = RedisStore(link.call, Keys(), Bounds(10, 1000, 10000), h.clock)
    assert h.send("lamp", {"x": 1}, qos=1) == Status.SERVER_EXCEPTION
    h.login()
    assert h.offline.stats()["failed"] == 1
    assert not [line for line in logged if "message store" in line or "unreachable" in line]


def test_stats_carry_the_store_counts(h):
    h.send("lamp", {"x": 1}, qos=1)
    token = h.server.token("ops", "observer", grants=["stats"])
    ops = h.server.connect()
    assert ops.login(token, "ops") == Status.SUCCESS
    msg_id = ops.message("server", {"command": "stats"})
    h.turn()
    assert ops.answer(msg_id) == Status.SUCCESS
    [stats] = [body["payload"] for _, body in messages(ops)
               if body["payload"].get("command") == "stats"]
    assert stats["store"]["stored"] == 1
    assert {"delivered", "expired", "refused", "failed", "backlogs"} <= set(stats["store"])


# -- clients -------------------------------------------------------------------

def test_the_twisted_client_sends_qos_and_ttl_and_hears_stored():
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport

    from hypertcp.client.txclient import HyperTCPClientFactory
    from hypertcp.protocol.frames import Decoder, response

    clock = Clock()
    factory = HyperTCPClientFactory("secret", "app", clock=clock)
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(response(1, Status.SUCCESS, login=True))
    transport.clear()
    answers: list = []
    protocol.send("lamp", {"on": True}, qos=1, ttl=60).addCallback(answers.append)
    [frame] = Decoder().feed(transport.value())
    assert json.loads(frame.payload) == {"targetId": "lamp", "payload": {"on": True},
                                         "qos": 1, "ttl": 60}
    protocol.dataReceived(response(frame.msg_id, Status.STORED))
    assert answers == [Status.STORED]
    protocol.connectionLost(None)


def test_stored_is_answered_as_each_senders_protocol_level_reads_it(h):
    # 202 to a sender at level 2; the empty RESPONSE a level-1 client reads;
    # and no refusal body before it for a client that asked for reasons.
    token = h.server.token("apps", "fleet")
    for proto, reasons, expected in ((2, False, bytes((Status.STORED,))), (1, False, b""),
                                     (2, True, bytes((Status.STORED,)))):
        sender = h.server.connect()
        msg_id = sender.send(Command.LOGIN, login_body(token, f"app-{proto}-{reasons}", proto,
                                                       reasons))
        assert sender.answer(msg_id) == Status.SUCCESS
        sent = sender.message("lamp", {"proto": proto}, qos=1)
        h.turn()
        assert sender.response_payload(sent) == expected
        assert sender.frames() == [], "nothing else: no refusal told, for STORED is no refusal"
    assert [m["proto"] for m in h.queued()] == [2, 1, 2]
