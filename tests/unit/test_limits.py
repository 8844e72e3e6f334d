"""
What one connection may cost, on a real session: idle silence, the rate
limit and its strikes, RESPONSE floods, the outbound cap for a peer that
stops reading, oversize frames, the write batch and the connection cap.
"""

from __future__ import annotations

import json

from hypertcp.protocol.commands import Command, Status
from hypertcp.protocol.frames import Frame, encode
from tests.inprocess import Server


def pings(peer) -> list[Frame]:
    return [f for f in peer.frames() if f.command == Command.PING]


def full_bucket(server: Server) -> None:
    """A second passes: every bucket is full again (the LOGIN took one frame's allowance)."""
    server.clock.advance(1)


# -- idle connections ---------------------------------------------------------

def test_a_silent_connection_is_pinged_at_half_the_timeout_and_closed_at_all_of_it(tmp_path, log):
    server = Server(tmp_path, idle_timeout=60)
    quiet = server.online("quiet")
    server.clock.advance(29.9)
    assert quiet.frames() == []
    server.clock.advance(0.1)
    [ping] = quiet.frames()
    assert (ping.command, ping.payload) == (Command.PING, b"")
    server.clock.advance(29.9)
    assert not quiet.closing
    server.clock.advance(0.1)
    assert quiet.closing
    assert server.factory.counters["idle"] == 1
    assert "closing: silent for 60 s" in log


def test_a_client_that_only_answers_pings_stays_connected(tmp_path):
    server = Server(tmp_path, idle_timeout=60)
    polite = server.online("polite")
    for _ in range(10):  # ten idle timeouts
        server.clock.advance(30)
        [ping] = pings(polite)
        polite.ack(ping)
    assert not polite.closing
    assert polite.ping() == Status.SUCCESS


def test_any_frame_counts_as_life(tmp_path):
    server = Server(tmp_path, idle_timeout=60)
    peer = server.online("peer")
    server.clock.advance(20)
    peer.send(Command.RESPONSE, msg_id=1)  # even an acknowledgement of nothing
    server.clock.advance(10)
    assert pings(peer) == [], "silent for 10 s only"
    server.clock.advance(19.9)
    assert pings(peer) == []
    server.clock.advance(0.1)
    assert len(pings(peer)) == 1, "30 s after the last frame"
    server.clock.advance(29.9)
    assert not peer.closing
    server.clock.advance(0.1)
    assert peer.closing, "60 s after the last frame"


def test_a_connection_not_logged_in_is_also_closed_when_silent(tmp_path):
    server = Server(tmp_path, idle_timeout=20, login_timeout=100)
    peer = server.connect()
    server.clock.advance(10)
    assert pings(peer) != []
    server.clock.advance(10)
    assert peer.closing


def test_a_lost_connection_leaves_no_timer_behind(tmp_path):
    server = Server(tmp_path, idle_timeout=60, login_timeout=10)
    peer = server.connect()
    peer.lose()
    assert server.clock.getDelayedCalls() == []


# -- the rate limit -------------------------------------------------------------

def test_frames_over_the_rate_are_answered_1_and_dropped(tmp_path, log):
    server = Server(tmp_path, rate_limit=20, quota_strikes=1000)
    receiver = server.online("receiver")
    flooder = server.online("flooder")
    full_bucket(server)
    body = json.dumps({"targetId": "receiver", "payload": {}}).encode()
    flooder.session.dataReceived(b"".join(encode(Command.JSON_MESSAGE, i, body)
                                          for i in range(1, 101)))
    statuses = [flooder.answer(i) for i in range(1, 101)]
    assert statuses == [Status.SUCCESS] * 20 + [Status.QUOTA_LIMIT] * 80, \
        "a full bucket of 20 (one second's worth), then nothing"
    assert len(receiver.delivered()) == 20, "refused frames are dropped"
    assert server.factory.counters["quota"] == 80
    assert log.count("over the rate limit of 20/s") == 1
    server.clock.advance(0.5)
    statuses = [flooder.ping() for _ in range(12)]
    assert statuses == [Status.SUCCESS] * 10 + [Status.QUOTA_LIMIT] * 2, "refilled at 20/s"
    assert not flooder.closing


def test_rate_burst_sets_the_bucket(tmp_path):
    server = Server(tmp_path, rate_limit=10, rate_burst=3)
    peer = server.online("peer")
    full_bucket(server)
    assert [peer.ping() for _ in range(4)] == [Status.SUCCESS] * 3 + [Status.QUOTA_LIMIT]


def test_past_quota_strikes_within_10_s_the_connection_is_closed(tmp_path, log):
    server = Server(tmp_path, rate_limit=10, quota_strikes=5)
    calm = server.online("calm")
    flooder = server.online("flooder")
    full_bucket(server)
    assert [flooder.ping() for _ in range(15)] == [Status.SUCCESS] * 10 + [Status.QUOTA_LIMIT] * 5
    assert not flooder.closing, "five strikes are allowed"
    assert flooder.ping() == Status.QUOTA_LIMIT
    assert flooder.closing
    assert server.factory.counters["flood"] == 1
    assert "closing: flood: 6 frames over the rate limit within 10 s" in log
    assert calm.ping() == Status.SUCCESS


def test_strikes_older_than_the_window_are_forgotten(tmp_path):
    server = Server(tmp_path, rate_limit=10, quota_strikes=5)
    peer = server.online("peer")
    for _ in range(3):
        full_bucket(server)
        assert [peer.ping() for _ in range(15)] == [Status.SUCCESS] * 10 + [Status.QUOTA_LIMIT] * 5
        server.clock.advance(10)
    assert not peer.closing


def test_responses_are_not_rate_limited(tmp_path):
    server = Server(tmp_path, rate_limit=10, quota_strikes=5)
    peer = server.online("peer")
    full_bucket(server)
    peer.session.dataReceived(b"".join(encode(Command.RESPONSE, i) for i in range(1, 101)))
    assert peer.frames() == []
    assert not peer.closing
    assert [peer.ping() for _ in range(10)] == [Status.SUCCESS] * 10


def test_rate_limit_0_is_no_limit(tmp_path):
    server = Server(tmp_path, rate_limit=0)
    peer = server.online("peer")
    peer.session.dataReceived(b"".join(encode(Command.PING, i) for i in range(1, 5001)))
    assert [f.payload for f in peer.frames()] == [b""] * 5000


# -- RESPONSE floods ------------------------------------------------------------

def test_over_1000_more_responses_than_frames_sent_is_a_flood(server, log):
    peer = server.online("peer")
    peer.session.dataReceived(b"".join(encode(Command.RESPONSE, i) for i in range(1, 1001)))
    assert not peer.closing, "a thousand spare acknowledgements are tolerated"
    peer.send(Command.RESPONSE, msg_id=1001)
    assert peer.closing
    assert server.factory.counters["flood"] == 1
    assert "closing: flood: 1001 RESPONSE frames for 0 frames sent to it" in log


def test_responses_to_what_was_sent_are_not_a_flood(server):
    peer = server.online("peer")
    for n in range(5):
        server.hub.send("peer", {"n": n})
    frames = peer.frames()
    for frame in frames:
        peer.ack(frame)
    peer.session.dataReceived(b"".join(encode(Command.RESPONSE, i) for i in range(1, 1001)))
    assert not peer.closing, "1,000 beyond the 5 it was sent"


# -- a peer that stops reading ----------------------------------------------------

def test_a_reader_that_stops_reading_is_dropped_past_the_cap(tmp_path, log):
    server = Server(tmp_path, max_outbound_buffer=4096)
    sink = server.online("sink")
    sender = server.online("sender")
    sink.stop_reading()
    body = {"blob": "x" * 900}
    statuses = []
    while not sink.dropped and len(statuses) < 10:
        statuses.append(sender.answer(sender.message("sink", body)))
    assert statuses == [Status.SUCCESS] * 5, "about 4 KB queued, then the fifth is over the cap"
    assert sink.dropped, "aborted: what was queued is discarded"
    assert server.factory.counters["slow_receiver"] == 1
    assert "dropping: slow receiver: outbound buffer over 4096 bytes" in log
    written = len(sink.transport.value())
    server.hub.send("sink", {"more": 1})
    assert len(sink.transport.value()) == written, "nothing more is given to a dropped transport"
    server.reap()
    assert sender.answer(sender.message("sink", body)) == Status.DEVICE_NOT_IN_NETWORK


def test_a_dropped_connection_is_served_no_more(tmp_path):
    server = Server(tmp_path, max_outbound_buffer=100)
    sink = server.online("sink")
    sink.stop_reading()
    server.hub.send("sink", {"blob": "x" * 200})
    assert sink.dropped
    sink.transport.clear()
    sink.send(Command.PING)
    assert sink.frames() == []


def test_bytes_queued_while_the_peer_reads_do_not_count(tmp_path):
    server = Server(tmp_path, max_outbound_buffer=4096)
    reader = server.online("reader")
    for _ in range(20):  # 20 KB while reading
        server.hub.send("reader", {"blob": "x" * 1000})
    assert not reader.dropped
    for _ in range(3):  # 3 KB per stall, then the peer catches up
        reader.stop_reading()
        for _ in range(3):
            server.hub.send("reader", {"blob": "x" * 1000})
        reader.resume_reading()
    assert not reader.dropped and not reader.closing


def test_the_sender_is_never_held_up_by_a_stalled_reader(tmp_path):
    server = Server(tmp_path, max_outbound_buffer=1 << 20)
    sink, sender = server.online("sink"), server.online("sender")
    sink.stop_reading()
    for n in range(50):
        msg_id = sender.message("sink", {"n": n})
        assert sender.answer(msg_id) == Status.SUCCESS, "answered in the same read"
    assert not sink.dropped


# -- oversize frames ---------------------------------------------------------------

def test_an_oversize_frame_is_skipped_and_the_stream_stays_in_step(tmp_path, log):
    server = Server(tmp_path, max_payload=1024)
    bystander = server.online("bystander")
    peer = server.online("dev")
    big = encode(Command.JSON_MESSAGE, 500, json.dumps(
        {"targetId": "bystander", "payload": {"pad": "x" * 5000}}).encode())
    after = encode(Command.JSON_MESSAGE, 501, json.dumps(
        {"targetId": "bystander", "payload": {"ok": 1}}).encode())
    stream = big + after
    for i in range(0, len(stream), 997):  # in pieces, as TCP may deliver it
        peer.session.dataReceived(stream[i:i + 997])
    assert peer.answer(500) == Status.ILLEGAL_COMMAND_BODY
    assert peer.answer(501) == Status.SUCCESS
    assert bystander.delivered() == [(Command.JSON_MESSAGE, {"from": "dev", "payload": {"ok": 1}})]
    assert not peer.closing
    assert peer.session._decoder.buffered == 0, "the oversize body was never buffered"
    assert server.factory.counters["oversize"] == 1
    assert f"payload of {len(big) - 5:,} bytes over the 1,024-byte limit skipped" in log


def test_an_oversize_frame_before_login_is_answered_too(tmp_path):
    server = Server(tmp_path, max_payload=100)
    peer = server.connect()
    peer.send(Command.LOGIN, b"x" * 101, msg_id=9)
    assert peer.answer(9) == Status.ILLEGAL_COMMAND_BODY
    assert peer.login(server.token("dev")) == Status.SUCCESS


def test_an_oversize_response_is_skipped_without_an_answer(tmp_path):
    server = Server(tmp_path, max_payload=100)
    peer = server.online("dev")
    peer.send(Command.RESPONSE, b"x" * 1000, msg_id=9)
    assert peer.frames() == []
    assert peer.ping() == Status.SUCCESS


def test_a_payload_exactly_at_the_limit_is_served(tmp_path):
    server = Server(tmp_path, max_payload=100)
    receiver = server.online("receiver")
    peer = server.online("dev")
    body = json.dumps({"targetId": "receiver", "payload": {"pad": ""}}).encode()
    body = body.replace(b'"pad": ""', b'"pad": "' + b"x" * (100 - len(body)) + b'"')
    assert len(body) == 100
    assert peer.answer(peer.send(Command.JSON_MESSAGE, body)) == Status.SUCCESS
    assert len(receiver.delivered()) == 1


# -- the write batch -----------------------------------------------------------------

def test_a_read_makes_one_write_per_peer(tmp_path):
    server = Server(tmp_path, rate_limit=0)
    receiver, other = server.online("receiver"), server.online("other")
    sender = server.online("sender")
    body = json.dumps({"targetId": "receiver", "payload": {"n": 1}}).encode()
    cast = json.dumps({"payload": {"all": 1}}).encode()
    writes = {p: p.transport.writes for p in (receiver, other, sender)}
    sender.session.dataReceived(b"".join(encode(Command.JSON_MESSAGE, i, body)
                                         for i in range(1, 51)) + encode(Command.BROADCAST, 51, cast))
    assert receiver.transport.writes - writes[receiver] == 1
    assert len(receiver.delivered()) == 51, "fifty messages and a broadcast in that one write"
    assert other.transport.writes - writes[other] == 1
    assert sender.transport.writes - writes[sender] == 1
    assert [sender.answer(i) for i in range(1, 52)] == [Status.SUCCESS] * 51


def test_each_read_is_its_own_batch(server):
    receiver, sender = server.online("receiver"), server.online("sender")
    before = receiver.transport.writes
    for n in range(3):
        sender.message("receiver", {"n": n})
    assert receiver.transport.writes - before == 3
    assert [body["payload"]["n"] for _, body in receiver.delivered()] == [0, 1, 2]


def test_outside_a_read_writes_go_straight_out(server):
    peer = server.online("peer")
    before = peer.transport.writes
    server.hub.send("peer", {"a": 1})
    server.hub.send("peer", {"b": 2})
    assert peer.transport.writes - before == 2


# -- the connection cap ---------------------------------------------------------------

def test_past_max_connections_a_new_connection_is_refused_at_once(tmp_path, log):
    server = Server(tmp_path, max_connections=2)
    one, two = server.online("one"), server.online("two")  # logged in: they keep their slots
    assert server.build() is None, "the factory builds no protocol: Twisted closes it"
    assert server.factory.counters["max_connections"] == 1
    assert "refused: 2 connections already open" in log
    assert one.ping() == two.ping() == Status.SUCCESS
    two.lose()
    assert server.build() is not None, "room again once one has gone"


def test_max_connections_0_is_no_cap(tmp_path):
    server = Server(tmp_path, max_connections=0)
    assert all(server.build() is not None for _ in range(100))
