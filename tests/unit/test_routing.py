"""
Where messages go, on real sessions and the real hub: targeted messages,
several connections per id, broadcasts, messages to "server", the token's
reach, end-to-end acknowledgements, and every bad body.
"""

from __future__ import annotations

import json

import pytest

from hypertcp.protocol.commands import Command, Status
from hypertcp.protocol.frames import encode
from tests.inprocess import Server


def test_a_message_reaches_its_target_from_the_senders_logged_in_id(server):
    a, b = server.online("a"), server.online("b")
    msg_id = a.send_json(Command.JSON_MESSAGE, {"targetId": "b", "from": "server",
                                                "payload": {"x": 1}})
    assert a.answer(msg_id) == Status.SUCCESS
    assert b.delivered() == [(Command.JSON_MESSAGE, {"from": "a", "payload": {"x": 1}})], \
        "the sender cannot forge from"
    assert a.delivered() == []


def test_deliveries_carry_server_msg_ids_that_count_up(server):
    a, b = server.online("a"), server.online("b")
    for n in range(3):
        a.message("b", {"n": n})
    assert [f.msg_id for f in b.frames()] == [1, 2, 3]


def test_a_message_to_an_id_with_two_connections_reaches_both(server):
    secret = server.token("twin")
    one, two = server.connect(), server.connect()
    assert one.login(secret) == two.login(secret) == Status.SUCCESS
    sender = server.online("sender")
    assert sender.answer(sender.message("twin", {"k": 1})) == Status.SUCCESS
    expected = [(Command.JSON_MESSAGE, {"from": "sender", "payload": {"k": 1}})]
    assert one.delivered() == two.delivered() == expected
    assert server.hub.delivered == 2
    one.lose()
    assert sender.answer(sender.message("twin", {"k": 2})) == Status.SUCCESS
    assert two.delivered() == [(Command.JSON_MESSAGE, {"from": "sender", "payload": {"k": 2}})]


def test_a_message_to_an_id_not_online_is_answered_7(server):
    lonely = server.online("lonely")
    assert lonely.answer(lonely.message("nobody", {})) == Status.DEVICE_NOT_IN_NETWORK
    assert server.factory.counters["device_not_in_network"] == 1
    gone = server.online("gone")
    gone.lose()
    assert lonely.answer(lonely.message("gone", {})) == Status.DEVICE_NOT_IN_NETWORK


def test_a_device_may_message_itself(server):
    me = server.online("me")
    assert me.answer(me.message("me", {"note": 1})) == Status.SUCCESS
    assert me.delivered() == [(Command.JSON_MESSAGE, {"from": "me", "payload": {"note": 1}})]


@pytest.mark.parametrize("command, body", [
    (Command.BROADCAST, {"payload": {"n": 1}}),
    (Command.BROADCAST, {"targetId": "broadcast", "payload": {"n": 1}}),  # the sketch's
    (Command.JSON_MESSAGE, {"targetId": "broadcast", "payload": {"n": 1}}),
], ids=["broadcast", "sketch-broadcast", "message-to-broadcast"])
def test_a_broadcast_reaches_every_other_logged_in_connection_not_the_sender(server, command,
                                                                             body):
    sender = server.online("sender")
    others = [server.online(f"node-{i}") for i in range(3)]
    stranger = server.connect()  # not logged in
    assert sender.answer(sender.send_json(command, body)) == Status.SUCCESS
    for other in others:
        assert other.delivered() == [(Command.BROADCAST, {"from": "sender", "payload": {"n": 1}})]
    assert sender.delivered() == []
    assert stranger.frames() == []
    assert server.hub.delivered == 3


def test_a_device_with_two_connections_gets_the_others_broadcast_but_not_its_own(server):
    secret = server.token("twin")
    one, two = server.connect(), server.connect()
    assert one.login(secret) == two.login(secret) == Status.SUCCESS
    assert one.answer(one.send_json(Command.BROADCAST, {"payload": {}})) == Status.SUCCESS
    assert one.delivered() == []
    assert two.delivered() == [(Command.BROADCAST, {"from": "twin", "payload": {}})]


def test_telemetry_to_server_is_acknowledged_and_passed_to_every_observer(server):
    ops = server.online("ops", "observer")
    other_ops = server.online("ops-2", "observer")
    bystander = server.online("bystander")
    sensor = server.online("sensor")
    server.clock.advance(0)
    for peer in (ops, other_ops, bystander):
        peer.frames()
    assert sensor.answer(sensor.message("server", {"temperature": 21.5})) == Status.SUCCESS
    seen = {"from": "sensor", "to": "server", "payload": {"temperature": 21.5}}
    assert ops.delivered() == other_ops.delivered() == [(Command.JSON_MESSAGE, seen)]
    assert bystander.delivered() == [] and sensor.delivered() == []


def test_an_observers_own_telemetry_is_not_sent_back_to_it(server):
    ops = server.online("ops", "observer", "ops")
    other = server.online("ops-2", "observer", "ops-2")
    server.clock.advance(0)
    ops.frames(), other.frames()
    assert ops.answer(ops.message("server", {"load": 1})) == Status.SUCCESS
    assert ops.delivered() == []
    assert other.delivered() == [(Command.JSON_MESSAGE,
                                  {"from": "ops", "to": "server", "payload": {"load": 1}})]


def test_a_token_reaches_only_its_patterns(server):
    narrow = server.online("narrow", reach=["server", "farm-*"])
    farm, city = server.online("farm-1"), server.online("city-2")
    assert narrow.answer(narrow.message("city-2", {})) == Status.NOT_ALLOWED
    assert narrow.answer(narrow.message("farm-1", {})) == Status.SUCCESS
    assert narrow.answer(narrow.send_json(Command.BROADCAST, {"payload": {}})) == Status.NOT_ALLOWED
    assert narrow.answer(narrow.message("server", {"t": 1})) == Status.SUCCESS
    assert len(farm.delivered()) == 1 and city.delivered() == []
    assert not narrow.closing, "NOT_ALLOWED keeps the connection"


def test_reach_broadcast_allows_broadcasts_only(server):
    caster = server.online("caster", reach=["broadcast"])
    server.online("other")
    assert caster.answer(caster.send_json(Command.BROADCAST, {"payload": {}})) == Status.SUCCESS
    assert caster.answer(caster.message("other", {})) == Status.NOT_ALLOWED
    assert caster.answer(caster.message("server", {})) == Status.NOT_ALLOWED


def test_a_thousand_messages_in_one_read_arrive_in_order(tmp_path):
    server = Server(tmp_path, rate_limit=0)
    receiver, sender = server.online("receiver"), server.online("sender")
    sender.session.dataReceived(b"".join(encode(Command.JSON_MESSAGE, i, json.dumps(
        {"targetId": "receiver", "payload": {"n": i}}).encode()) for i in range(1, 1001)))
    assert [body["payload"]["n"] for _, body in receiver.delivered()] == list(range(1, 1001))
    assert [sender.answer(i) for i in range(1, 1001)] == [Status.SUCCESS] * 1000


# -- bad bodies ------------------------------------------------------------------

@pytest.mark.parametrize("command, body, why", [
    (Command.JSON_MESSAGE, b"not json", "payload is not JSON"),
    (Command.JSON_MESSAGE, b'{"targetId": "\xff", "payload": {}}', "payload is not UTF-8"),
    (Command.JSON_MESSAGE, b"[1, 2]", "payload is not a JSON object"),
    (Command.JSON_MESSAGE, b'"text"', "payload is not a JSON object"),
    (Command.JSON_MESSAGE, b"{}", 'missing a "payload" object'),
    (Command.JSON_MESSAGE, b'{"targetId": "bystander"}', 'missing a "payload" object'),
    (Command.JSON_MESSAGE, b'{"targetId": "bystander", "payload": 5}', 'missing a "payload" object'),
    (Command.JSON_MESSAGE, b'{"targetId": "bystander", "payload": [1]}',
     'missing a "payload" object'),
    (Command.JSON_MESSAGE, b'{"targetId": 7, "payload": {}}', 'missing a "targetId" string'),
    (Command.JSON_MESSAGE, b'{"targetId": "", "payload": {}}', 'missing a "targetId" string'),
    (Command.JSON_MESSAGE, b'{"payload": {}}', 'missing a "targetId" string'),
    (Command.JSON_MESSAGE, b'{"targetId": "bystander", "payload": {}, "qos": 2}',
     '"qos" must be 0 or 1'),
    (Command.JSON_MESSAGE, b'{"targetId": "bystander", "payload": {}, "qos": true}',
     '"qos" must be 0 or 1'),
    (Command.JSON_MESSAGE, b'{"targetId": "bystander", "payload": {}, "ttl": 0}',
     '"ttl" must be a positive number of seconds'),
    (Command.JSON_MESSAGE, b'{"targetId": "bystander", "payload": {}, "ttl": "1"}',
     '"ttl" must be a positive number of seconds'),
    (Command.JSON_MESSAGE, b'{"targetId": "broadcast", "payload": {}, "qos": 1}',
     '"qos" is for messages to one device, not broadcasts'),
    (Command.BROADCAST, b'{"payload": [1]}', 'missing a "payload" object'),
    (Command.BROADCAST, b"", "payload is not JSON"),
], ids=["not-json", "not-utf8", "array", "string", "empty", "no-payload", "payload-number",
        "payload-array", "target-number", "target-empty", "no-target", "qos-2", "qos-bool",
        "ttl-zero", "ttl-string", "qos-broadcast", "broadcast-payload-array", "broadcast-empty"])
def test_a_bad_body_is_answered_11_and_the_connection_lives(server, log, command, body, why):
    bystander = server.online("bystander")
    peer = server.online("dev")
    assert peer.answer(peer.send(command, body)) == Status.ILLEGAL_COMMAND_BODY
    assert not peer.closing
    assert peer.ping() == Status.SUCCESS
    assert bystander.frames() == []
    assert f"{why}: ILLEGAL_COMMAND_BODY" in log
    assert server.factory.counters["illegal_command_body"] == 1


def test_a_payload_nested_too_deeply_to_relay_is_a_bad_body(server, log):
    bystander = server.online("bystander")
    peer = server.online("dev")
    deep = "[" * 300 + "]" * 300  # the codec reads this, but writes at most 255 levels
    body = ('{"targetId": "bystander", "payload": {"x": %s}}' % deep).encode()
    assert peer.answer(peer.send(Command.JSON_MESSAGE, body)) == Status.ILLEGAL_COMMAND_BODY
    assert peer.ping() == Status.SUCCESS
    assert bystander.frames() == []
    assert "cannot be relayed" in log


def test_an_unknown_command_after_login_is_illegal_and_the_connection_lives(server, log):
    peer = server.online("dev")
    assert peer.answer(peer.send(99, b"whatever")) == Status.ILLEGAL_COMMAND
    assert peer.answer(peer.send(Command.REDIRECT, json.dumps(
        {"server": "x", "port": 1}).encode())) == Status.ILLEGAL_COMMAND
    assert peer.ping() == Status.SUCCESS
    assert "unknown command 99: ILLEGAL_COMMAND" in log


def test_refusals_are_logged_once_per_window_not_once_per_frame(server, log):
    peer = server.online("dev")
    peer.session.dataReceived(b"".join(encode(99, i) for i in range(1, 51)))
    assert [peer.answer(i) for i in range(1, 51)] == [Status.ILLEGAL_COMMAND] * 50
    assert log.count("unknown command 99") == 1
    server.clock.advance(10)
    peer.send(99, msg_id=51)
    assert log.count("unknown command 99: ILLEGAL_COMMAND (49 more refusals unlogged since the last)") == 1


def test_garbage_is_answered_and_never_takes_the_server_down(tmp_path):
    import random

    server = Server(tmp_path, rate_limit=0)
    bystander = server.online("bystander")
    rng = random.Random(1234)
    for _ in range(20):
        peer = server.connect()
        peer.session.dataReceived(rng.randbytes(2000))
        statuses = {f.payload[0] for f in peer.frames() if f.payload}
        assert statuses <= {Status.ILLEGAL_COMMAND, Status.NOT_AUTHENTICATED,
                            Status.ILLEGAL_COMMAND_BODY, Status.INVALID_TOKEN, Status.NOT_ALLOWED,
                            Status.SUCCESS, Status.TIMEOUT}
    assert bystander.ping() == Status.SUCCESS
    assert server.online("after").ping() == Status.SUCCESS
