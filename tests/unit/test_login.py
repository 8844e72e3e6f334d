"""
LOGIN and what comes before it, on a real session: the deadline, the raw and
JSON logins, what each token role may log in as, and the refusals that keep
or close the connection.
"""

from __future__ import annotations

import json

import pytest

from hypertcp.protocol.commands import Command, Status
from hypertcp.protocol.frames import Frame
from tests.inprocess import Server


def test_login_deadline_sends_timeout_with_msg_id_1_then_closes(tmp_path, log):
    server = Server(tmp_path, login_timeout=10)
    peer = server.connect()
    server.clock.advance(9.9)
    assert peer.frames() == [] and not peer.closing
    server.clock.advance(0.1)
    assert peer.frames() == [Frame(Command.RESPONSE, 1, bytes((Status.TIMEOUT,)))]
    assert peer.closing and not peer.dropped, "closed after the TIMEOUT is written, not aborted"
    assert server.factory.counters["login_timeout"] == 1
    assert "closing: no login within 10 s" in log


def test_a_login_in_time_stops_the_deadline(tmp_path):
    server = Server(tmp_path, login_timeout=10)
    peer = server.connect()
    server.clock.advance(9)
    assert peer.login(server.token("dev")) == Status.SUCCESS
    server.clock.advance(5)
    assert peer.frames() == [] and not peer.closing


def test_a_ping_before_login_does_not_stop_the_deadline(tmp_path):
    server = Server(tmp_path, login_timeout=10)
    peer = server.connect()
    server.clock.advance(5)
    assert peer.ping() == Status.SUCCESS
    server.clock.advance(5)
    assert peer.closing


def test_raw_token_login_as_the_sketch_sends_it(server):
    peer = server.connect()
    msg_id = peer.send(Command.LOGIN, server.token("esp32-1").encode() + b"\x00")
    assert peer.response_payload(msg_id) == bytes((Status.SUCCESS,)), \
        "the LOGIN answer carries its status byte, success included"
    assert (peer.session.device_id, peer.session.proto) == ("esp32-1", 1)


def test_json_login_announces_its_protocol_level(server):
    level_2, level_1 = server.connect(), server.connect()
    assert level_2.login(server.token("new"), proto=2) == Status.SUCCESS
    msg_id = level_1.send_json(Command.LOGIN, {"token": server.token("old")})
    assert level_1.response_payload(msg_id) == bytes((Status.SUCCESS,))
    assert (level_2.session.proto, level_1.session.proto) == (2, 1)


def test_a_device_token_is_bound_to_its_name_and_a_refusal_keeps_the_connection(server):
    secret = server.token("meter-7")
    peer = server.connect()
    assert peer.login(secret, "someone-else") == Status.NOT_ALLOWED
    assert not peer.closing, "NOT_ALLOWED: the connection stays open and may try again"
    assert peer.ping() == Status.SUCCESS
    assert peer.login(secret, "meter-7") == Status.SUCCESS
    assert peer.session.device_id == "meter-7"
    other = server.connect()
    assert other.login(secret) == Status.SUCCESS, "no id named: the token's own"
    assert other.session.device_id == "meter-7"


def test_a_fleet_token_names_its_id_within_its_prefix(server):
    secret = server.token("farm", "fleet", prefix="farm-")
    peer = server.connect()
    assert peer.login(secret, "city-1") == Status.NOT_ALLOWED
    assert peer.login(secret, "farm-1") == Status.SUCCESS
    assert peer.session.device_id == "farm-1"


def test_without_a_name_the_server_assigns_device_ip_port_behind_the_prefix(server):
    anyone = server.connect("192.0.2.7")
    assert anyone.login(server.token("fleet", "fleet")) == Status.SUCCESS
    assert anyone.session.device_id == f"device_192.0.2.7_{anyone.session.port}"
    farm = server.connect("192.0.2.8")
    assert farm.login(server.token("farm", "fleet", prefix="farm-")) == Status.SUCCESS
    assert farm.session.device_id == f"farm-device_192.0.2.8_{farm.session.port}"


def test_an_observer_token_names_its_id_like_a_fleet_token(server):
    secret = server.token("ops", "observer", prefix="ops-")
    peer = server.connect()
    assert peer.login(secret, "dash") == Status.NOT_ALLOWED
    assert peer.login(secret, "ops-1") == Status.SUCCESS
    assert server.hub.observers == {peer.session}


@pytest.mark.parametrize("device_id", ["server", "broadcast", "x" * 129])
def test_reserved_and_overlong_ids_are_not_allowed(server, device_id):
    peer = server.connect()
    assert peer.login(server.token("fleet", "fleet"), device_id) == Status.NOT_ALLOWED
    assert not peer.closing


def test_an_id_of_128_characters_is_allowed(server):
    peer = server.connect()
    assert peer.login(server.token("fleet", "fleet"), "x" * 128) == Status.SUCCESS


@pytest.mark.parametrize("proto", [None, 2])
def test_an_invalid_token_is_answered_then_closed(server, log, proto):
    peer = server.connect()
    assert peer.login("not-a-token", proto=proto) == Status.INVALID_TOKEN
    assert peer.closing
    assert server.factory.counters["invalid_token"] == 1
    assert "closing: login with an unknown or revoked token" in log


def test_a_revoked_token_is_an_invalid_one(server):
    secret = server.token("gone")
    server.tokens.revoke("gone")
    peer = server.connect()
    assert peer.login(secret) == Status.INVALID_TOKEN
    assert peer.closing


def test_a_second_login_is_an_illegal_command(server):
    secret = server.token("twice")
    peer = server.connect()
    assert peer.login(secret) == Status.SUCCESS
    assert peer.login(secret) == Status.ILLEGAL_COMMAND
    assert peer.ping() == Status.SUCCESS
    assert server.hub.devices == {"twice": [peer.session]}


def test_before_login_only_ping_is_served(server, log):
    bystander = server.online("bystander")
    peer = server.connect()
    assert peer.ping() == Status.SUCCESS
    assert peer.answer(peer.message("bystander", {})) == Status.NOT_AUTHENTICATED
    assert peer.answer(peer.send_json(Command.BROADCAST, {"payload": {}})) \
        == Status.NOT_AUTHENTICATED
    assert peer.answer(peer.send(99, b"whatever")) == Status.NOT_AUTHENTICATED
    assert peer.answer(peer.send(Command.REDIRECT, b"{}")) == Status.NOT_AUTHENTICATED
    assert bystander.frames() == []
    assert peer.login(server.token("late")) == Status.SUCCESS, "the connection lives on"
    assert "command 30 before login" in log


def test_response_frames_are_never_answered_before_or_after_login(server):
    peer = server.connect()
    peer.send(Command.RESPONSE, msg_id=77)
    assert peer.frames() == []
    assert peer.login(server.token("dev")) == Status.SUCCESS
    peer.send(Command.RESPONSE, b"\x10", msg_id=78)
    assert peer.frames() == []


@pytest.mark.parametrize("body, why", [
    (b"\xff\xfe\xfd", "login is not UTF-8"),
    (b"", "empty login"),
    (b"\x00 \r\n", "empty login"),
    (b"{oops", "payload is not JSON"),
    (b'{"token": 5}', "login needs a string token"),
    (b'{"device_id": "x"}', "login needs a string token"),
    (b'{"token": "t", "device_id": 7}', "device_id must be a string"),
    (b'{"token": "t", "proto": 0}', "proto must be a positive integer"),
    (b'{"token": "t", "proto": "2"}', "proto must be a positive integer"),
    (b'{"key": "k"}', "a challenge answer needs string key and proof"),
], ids=["not-utf8", "empty", "blank", "not-json", "token-not-string", "no-token",
        "id-not-string", "proto-zero", "proto-string", "key-without-proof"])
def test_a_bad_login_body_is_answered_11_and_the_connection_lives(server, log, body, why):
    peer = server.connect()
    msg_id = peer.send(Command.LOGIN, body)
    assert peer.response_payload(msg_id) == bytes((Status.ILLEGAL_COMMAND_BODY,))
    assert not peer.closing
    assert why in log
    assert peer.login(server.token("dev")) == Status.SUCCESS


def test_a_login_split_over_many_reads_is_one_login(server):
    secret = server.token("slow")
    peer = server.connect()
    data = b"".join([bytes((Command.LOGIN, 0, 1, 0, len(secret))), secret.encode()])
    for byte in data:
        peer.session.dataReceived(bytes((byte,)))
    assert peer.answer(1) == Status.SUCCESS
    assert peer.session.device_id == "slow"


def test_the_assigned_id_is_what_whoami_reports(server):
    peer = server.connect("192.0.2.9")
    assert peer.login(server.token("fleet", "fleet")) == Status.SUCCESS
    status, [reply] = peer.to_server({"command": "whoami"})
    assert status == Status.SUCCESS
    assert reply == {"command": "whoami", "deviceId": f"device_192.0.2.9_{peer.session.port}",
                     "role": "fleet"}
    assert json.loads(json.dumps(reply))  # plain JSON all the way
