"""
Presence for observers: deviceConnected and deviceDisconnected as
connections come and go, and at an observer's login a deviceStatus for
everyone already online, paced by the observer's reading.
"""

from __future__ import annotations

import time

from hypertcp.protocol.commands import Command, Status
from hypertcp.server.hub import SNAPSHOT_BATCH
from tests.inprocess import Server


def events(peer) -> list[dict]:
    """The presence events delivered to C{peer}, as their payloads."""
    out = []
    for command, body in peer.delivered():
        assert (command, body["from"]) == (Command.JSON_MESSAGE, "server")
        out.append(body["payload"])
    return out


def test_an_observer_is_told_who_comes_and_goes(server):
    ops = server.online("ops", "observer", "ops")
    server.clock.advance(0)
    assert events(ops) == []
    before = int(time.time() * 1000)
    late = server.online("late")
    [connected] = events(ops)
    assert connected["event"] == "deviceConnected"
    assert connected["deviceId"] == "late"
    assert connected["clientId"] == late.session.peer == f"192.0.2.10:{late.session.port}"
    assert isinstance(connected["timestamp"], int) and connected["timestamp"] >= before
    late.lose()
    [gone] = events(ops)
    assert (gone["event"], gone["deviceId"], gone["clientId"]) == (
        "deviceDisconnected", "late", late.session.peer)


def test_a_connection_that_never_logged_in_is_not_an_event(server):
    ops = server.online("ops", "observer", "ops")
    server.clock.advance(0)
    stranger = server.connect()
    stranger.ping()
    stranger.lose()
    assert events(ops) == []


def test_every_observer_but_the_newcomer_hears_of_an_observer_login(server):
    first = server.online("ops-1", "observer", "ops-1")
    second = server.online("ops-2", "observer", "ops-2")
    assert [e["deviceId"] for e in events(first)] == ["ops-2"]
    server.clock.advance(0)
    snapshot = events(second)
    assert [(e["event"], e["deviceId"]) for e in snapshot] == [("deviceStatus", "ops-1")]


def test_a_device_that_is_not_an_observer_gets_no_presence_events(server):
    early = server.online("early")
    fleet = server.online("fleet", "fleet", "fleet-1")
    server.online("late").lose()
    server.clock.advance(0)
    assert early.frames() == [] and fleet.frames() == []


def test_at_login_an_observer_gets_a_device_status_for_each_connection_online(server):
    early = server.online("early")
    twin = server.token("twin")
    twins = [server.connect(), server.connect()]
    for peer in twins:
        assert peer.login(twin) == Status.SUCCESS
    ops = server.online("ops", "observer", "ops")
    assert events(ops) == [], "after the login's answer, not inside its read"
    server.clock.advance(0)
    snapshot = events(ops)
    assert all(e["event"] == "deviceStatus" and e["online"] is True for e in snapshot)
    assert sorted((e["deviceId"], e["clientId"]) for e in snapshot) == sorted(
        [("early", early.session.peer)] + [("twin", p.session.peer) for p in twins])


def test_one_who_left_before_the_snapshot_reached_it_is_left_out(server):
    server.online("stay")
    leave = server.online("leave")
    ops = server.online("ops", "observer", "ops")
    leave.lose()
    server.clock.advance(0)
    assert [(e["event"], e["deviceId"]) for e in events(ops)] == [
        ("deviceDisconnected", "leave"), ("deviceStatus", "stay")]


def test_the_snapshot_goes_out_in_batches_a_turn_apart(tmp_path):
    server = Server(tmp_path, rate_limit=0)
    fleet = server.token("fleet", "fleet")
    for i in range(SNAPSHOT_BATCH * 2 + 10):
        assert server.connect().login(fleet, f"d{i:03}") == Status.SUCCESS
    ops = server.online("ops", "observer", "ops")
    counts = []
    for _ in range(4):
        server.turn()
        counts.append(len(events(ops)))
    assert counts == [SNAPSHOT_BATCH, SNAPSHOT_BATCH, 10, 0]


def test_the_snapshot_waits_while_the_observer_is_not_reading(server):
    for i in range(5):
        server.online(f"d{i}")
    ops = server.online("ops", "observer", "ops")
    ops.stop_reading()
    server.clock.advance(0)
    assert len(events(ops)) == 1, "one event, then it waits for the observer to read"
    server.clock.advance(1)
    assert events(ops) == []
    ops.resume_reading()
    server.clock.advance(0)
    assert len(events(ops)) == 4


def test_the_snapshot_is_paced_by_the_observers_reading_and_never_trips_the_cap(tmp_path):
    # 800 deviceStatus events are ~100 KB: sent in one go to an observer
    # whose socket holds 16 KB, 4 KB past that would trip the cap.
    server = Server(tmp_path, rate_limit=0, max_outbound_buffer=4096)
    fleet = server.token("fleet", "fleet")
    for i in range(800):
        assert server.connect().login(fleet, f"d{i:03}") == Status.SUCCESS
    ops = server.online("ops", "observer", "ops")
    ops.transport.buffer_size = 16384
    seen, batches = [], []
    for _ in range(100):
        server.turn()
        batch = events(ops)  # the observer reads; its transport resumes the session
        if not batch:
            break
        batches.append(len(batch))
        seen += [e["deviceId"] for e in batch]
    assert sorted(seen) == [f"d{i:03}" for i in range(800)]
    assert max(batches) < SNAPSHOT_BATCH, "paced by the reading, not only by the batch size"
    assert not ops.dropped and not ops.closing
    assert ops.ping() == Status.SUCCESS


def test_a_snapshot_stops_when_the_observer_leaves(tmp_path):
    server = Server(tmp_path, rate_limit=0)
    fleet = server.token("fleet", "fleet")
    for i in range(SNAPSHOT_BATCH + 5):
        assert server.connect().login(fleet, f"d{i:03}") == Status.SUCCESS
    ops = server.online("ops", "observer", "ops")
    server.turn()
    assert len(events(ops)) == SNAPSHOT_BATCH
    ops.lose()
    server.turn()
    assert ops.frames() == []
