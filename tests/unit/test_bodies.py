"""
The JSON bodies (hypertcp.protocol.bodies): what clients build, what the
server parses, and each L{BadBody} the server answers with 11.
"""

from __future__ import annotations

import json

import pytest

from hypertcp.protocol.bodies import (
    BadBody, Login, Message, Send, broadcast_body, challenge_body, challenge_request_body,
    delivery_body, event_body, login_body, message_body, parse_challenge, parse_delivery,
    parse_login, parse_object, parse_redirect, parse_send, proof_body, redirect_body, send_of,
    telemetry_body,
)
from hypertcp.protocol.commands import Command
from hypertcp.protocol.frames import MAX_PAYLOAD, Frame


# -- LOGIN ----------------------------------------------------------------------

def test_a_raw_token_login_is_the_token_stripped_of_padding():
    assert parse_login(b"secret") == Login("secret", None, 1)
    assert parse_login(b" secret\x00\r\n") == Login("secret", None, 1)


def test_a_json_login_names_token_id_and_level():
    assert parse_login(b'{"token": "t", "device_id": "d", "proto": 2}') == Login("t", "d", 2)
    assert parse_login(b'{"token": "t"}') == Login("t", None, 1), "no proto: the original level"
    assert parse_login(b'{"token": "t", "device_id": ""}') == Login("t", None, 1), \
        "an empty id asks for one to be assigned"


def test_login_body_round_trips():
    assert json.loads(login_body("t")) == {"token": "t", "proto": 2}
    assert json.loads(login_body("t", "d", proto=3)) == {"token": "t", "proto": 3, "device_id": "d"}
    assert parse_login(login_body("t", "d")) == Login("t", "d", 2)


def test_a_challenge_login_asks_then_answers():
    assert parse_login(challenge_request_body()) == Login(None, None, 2, challenge=True)
    assert parse_login(proof_body("k", "p", "dev")) == Login(None, "dev", 2, key="k", proof="p")
    assert parse_challenge(challenge_body("n0nce")) == "n0nce"


@pytest.mark.parametrize("payload, why", [
    (b"\xff", "login is not UTF-8"),
    (b"", "empty login"),
    (b"{", "payload is not JSON"),
    (b"{}", "login needs a string token"),
    (b'{"token": ""}', "login needs a string token"),
    (b'{"token": ["t"]}', "login needs a string token"),
    (b'{"token": "t", "device_id": 1}', "device_id must be a string"),
    (b'{"token": "t", "proto": -1}', "proto must be a positive integer"),
    (b'{"token": "t", "proto": 2.0}', "proto must be a positive integer"),
    (b'{"key": "k", "proof": 1}', "a challenge answer needs string key and proof"),
    (b'{"proof": "p"}', "a challenge answer needs string key and proof"),
])
def test_bad_logins(payload, why):
    with pytest.raises(BadBody, match=why):
        parse_login(payload)


@pytest.mark.parametrize("payload", [b'{"nonce": ""}', b'{"nonce": 5}', b"{}", b"[]"])
def test_a_challenge_without_a_nonce_is_bad(payload):
    with pytest.raises(BadBody):
        parse_challenge(payload)


# -- JSON_MESSAGE and BROADCAST from a client --------------------------------------

def test_parse_send_reads_target_payload_and_options():
    assert parse_send(Command.JSON_MESSAGE, b'{"targetId": "b", "payload": {"x": 1}}') == \
        Send("b", {"x": 1}, False, 0, None)
    assert parse_send(Command.JSON_MESSAGE,
                      b'{"targetId": "b", "payload": {}, "ack": true, "qos": 1, "ttl": 60}') == \
        Send("b", {}, True, 1, 60)
    assert parse_send(Command.JSON_MESSAGE, b'{"targetId": "b", "payload": {}, "ack": 1}').ack \
        is False, "only true asks for an acknowledgement"


def test_a_broadcast_goes_to_broadcast_whatever_it_names():
    assert parse_send(Command.BROADCAST, b'{"payload": {"n": 1}}') == Send("broadcast", {"n": 1})
    assert parse_send(Command.BROADCAST, b'{"targetId": "x", "payload": {}}').target == "broadcast"


def test_message_and_broadcast_bodies_round_trip():
    body = message_body("b", {"x": 1}, ack=True, qos=1, ttl=5.5)
    assert json.loads(body) == {"targetId": "b", "payload": {"x": 1}, "ack": True, "qos": 1,
                                "ttl": 5.5}
    assert parse_send(Command.JSON_MESSAGE, body) == Send("b", {"x": 1}, True, 1, 5.5)
    assert json.loads(message_body("b", {})) == {"targetId": "b", "payload": {}}
    assert parse_send(Command.BROADCAST, broadcast_body({"n": 2})) == Send("broadcast", {"n": 2})


def test_a_client_is_told_before_sending_what_the_server_would_refuse():
    with pytest.raises(TypeError, match="JSON object"):
        message_body("b", ["not", "an", "object"])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        broadcast_body("text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="a frame carries at most"):
        broadcast_body({"big": "x" * MAX_PAYLOAD})


@pytest.mark.parametrize("command, payload, why", [
    (Command.JSON_MESSAGE, b"nope", "payload is not JSON"),
    (Command.JSON_MESSAGE, b"\xff\xfe", "payload is not UTF-8"),
    (Command.JSON_MESSAGE, b"null", "payload is not a JSON object"),
    (Command.JSON_MESSAGE, b'{"targetId": "b"}', 'missing a "payload" object'),
    (Command.JSON_MESSAGE, b'{"targetId": "b", "payload": null}', 'missing a "payload" object'),
    (Command.JSON_MESSAGE, b'{"payload": {}}', 'missing a "targetId" string'),
    (Command.JSON_MESSAGE, b'{"targetId": ["b"], "payload": {}}', 'missing a "targetId" string'),
    (Command.JSON_MESSAGE, b'{"targetId": "b", "payload": {}, "qos": -1}', '"qos" must be 0 or 1'),
    (Command.JSON_MESSAGE, b'{"targetId": "b", "payload": {}, "qos": 1.0}', '"qos" must be 0 or 1'),
    (Command.JSON_MESSAGE, b'{"targetId": "b", "payload": {}, "ttl": -5}', '"ttl" must be'),
    (Command.JSON_MESSAGE, b'{"targetId": "b", "payload": {}, "ttl": true}', '"ttl" must be'),
    (Command.JSON_MESSAGE, b'{"targetId": "broadcast", "payload": {}, "qos": 1}',
     '"qos" is for messages to one device'),
    (Command.BROADCAST, b'{"payload": {}, "qos": 1}', '"qos" is for messages to one device'),
    (Command.BROADCAST, b'{"payload": "x"}', 'missing a "payload" object'),
])
def test_bad_sends(command, payload, why):
    with pytest.raises(BadBody, match=why):
        parse_send(command, payload)


def test_a_parsed_envelope_reads_as_its_text_would():
    # A WebSocket action: the TCP envelope with the action's own keys beside it.
    action = {"action": "send", "id": 4, "targetId": "b", "payload": {"x": 1}, "ack": True}
    assert send_of(Command.JSON_MESSAGE, action) == Send("b", {"x": 1}, True, 0, None)
    with pytest.raises(BadBody, match='"qos" must be 0 or 1'):
        send_of(Command.JSON_MESSAGE, {"targetId": "b", "payload": {}, "qos": 2})


def test_parse_object_accepts_text_and_bytes():
    assert parse_object('{"a": 1}') == parse_object(b'{"a": 1}') == {"a": 1}
    with pytest.raises(BadBody, match="not JSON"):
        parse_object("{")


# -- what the server sends ------------------------------------------------------------

def test_deliveries_telemetry_and_events():
    assert json.loads(delivery_body("a", {"x": 1})) == {"from": "a", "payload": {"x": 1}}
    assert json.loads(delivery_body("a", {}, queued_at=5)) == {"from": "a", "payload": {},
                                                               "queued_at": 5}
    assert json.loads(telemetry_body("s", {"t": 2})) == {"from": "s", "to": "server",
                                                         "payload": {"t": 2}}
    assert json.loads(event_body("deviceStatus", "d", "1.2.3.4:5", 99, online=True)) == {
        "from": "server", "payload": {"event": "deviceStatus", "deviceId": "d",
                                      "clientId": "1.2.3.4:5", "timestamp": 99, "online": True}}


def test_redirect_bodies_round_trip_and_say_tls_only_when_true():
    assert json.loads(redirect_body("h", 1)) == {"server": "h", "port": 1}
    assert json.loads(redirect_body("h", 1, tls=True)) == {"server": "h", "port": 1, "tls": True}
    assert parse_redirect(redirect_body("h", 443, True)) == ("h", 443, True)
    assert parse_redirect(b'{"server": "h", "port": 1}') == ("h", 1, False)


@pytest.mark.parametrize("payload", [
    b"", b"[]", b'{"port": 1}', b'{"server": "h"}', b'{"server": 5, "port": 1}',
    b'{"server": "h", "port": "1"}', b'{"server": "h", "port": 0}', b'{"server": "h", "port": 65536}',
])
def test_a_malformed_redirect_is_a_value_error(payload):
    with pytest.raises(ValueError, match="malformed REDIRECT"):
        parse_redirect(payload)


def test_a_delivery_parses_into_a_message_with_its_extra_fields():
    frame = Frame(Command.JSON_MESSAGE, 4, b'{"from": "a", "payload": {"x": 1}, "queued_at": 7}')
    assert parse_delivery(frame) == Message(Command.JSON_MESSAGE, 4, "a", {"x": 1}, frame.payload,
                                            {"queued_at": 7})
    broadcast = Frame(Command.BROADCAST, 5, b'{"from": "b", "payload": {}}')
    assert parse_delivery(broadcast).extra is None


@pytest.mark.parametrize("payload", [b"garbage", b"[1]", b'"x"'])
def test_a_malformed_delivery_is_still_a_message(payload):
    message = parse_delivery(Frame(Command.JSON_MESSAGE, 4, payload))
    assert (message.sender, message.payload, message.raw) == (None, None, payload)
