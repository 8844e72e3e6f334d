"""
L{ClientConnection}, the client's sans-IO side: requests become bytes,
received bytes become events, and what the protocol itself must answer
(acknowledgements, PINGs, a login challenge) comes back as bytes to send.
"""

from __future__ import annotations

import json

from hypertcp.protocol.bodies import challenge_body
from hypertcp.protocol.challenge import key_id, stored_key, verify
from hypertcp.protocol.client import (
    Answered, ClientConnection, Delivered, Ignored, LoginAnswered, Redirected,
)
from hypertcp.protocol.commands import Command, Status
from hypertcp.protocol.frames import Decoder, Frame, encode, response


def sent(data: bytes) -> list[Frame]:
    return Decoder().feed(data)


def logged_in(token: str = "secret", device_id: str | None = "dev") -> ClientConnection:
    conn = ClientConnection(token, device_id)
    conn.login()
    events, _ = conn.receive(response(1, Status.SUCCESS, login=True))
    assert events == [LoginAnswered(Status.SUCCESS)]
    return conn


def test_login_is_a_json_login_at_level_2_with_msg_id_1():
    conn = ClientConnection("secret", "dev")
    [frame] = sent(conn.login())
    assert (frame.command, frame.msg_id) == (Command.LOGIN, 1)
    assert json.loads(frame.payload) == {"token": "secret", "proto": 2, "device_id": "dev"}
    assert json.loads(sent(ClientConnection("secret").login())[0].payload) == {
        "token": "secret", "proto": 2}


def test_the_login_answer_is_login_answered_and_only_success_logs_in():
    conn = ClientConnection("secret")
    conn.login()
    assert conn.receive(response(1, Status.NOT_ALLOWED, login=True)) == (
        [LoginAnswered(Status.NOT_ALLOWED)], b"")
    assert not conn.logged_in
    conn = ClientConnection("secret")
    conn.login()
    conn.receive(response(1, Status.SUCCESS, login=True))
    assert conn.logged_in


def test_requests_take_the_next_msg_ids_and_answers_match_them():
    conn = logged_in()
    msg_id, data = conn.send("b", {"x": 1}, ack=True)
    [frame] = sent(data)
    assert (msg_id, frame.command, frame.msg_id) == (2, Command.JSON_MESSAGE, 2)
    assert json.loads(frame.payload) == {"targetId": "b", "payload": {"x": 1}, "ack": True}
    cast_id, data = conn.broadcast({"n": 1})
    assert (cast_id, sent(data)[0].command) == (3, Command.BROADCAST)
    ping_id, data = conn.ping()
    assert sent(data) == [Frame(Command.PING, 4, b"")]
    events, out = conn.receive(response(3) + response(2, Status.DEVICE_NOT_IN_NETWORK)
                               + response(4))
    assert events == [Answered(3, Status.SUCCESS), Answered(2, Status.DEVICE_NOT_IN_NETWORK),
                      Answered(4, Status.SUCCESS)]
    assert out == b"", "nobody answers a RESPONSE"


def test_a_delivered_message_is_acknowledged_in_the_bytes_to_send():
    conn = logged_in()
    events, out = conn.receive(
        encode(Command.JSON_MESSAGE, 7, b'{"from": "a", "payload": {"x": 1}}')
        + encode(Command.BROADCAST, 8, b'{"from": "b", "payload": {}}'))
    [first, second] = events
    assert isinstance(first, Delivered) and isinstance(second, Delivered)
    assert (first.message.command, first.message.sender, first.message.payload) == (
        Command.JSON_MESSAGE, "a", {"x": 1})
    assert (second.message.command, second.message.msg_id) == (Command.BROADCAST, 8)
    assert out == response(7) + response(8)


def test_a_server_ping_is_answered_and_is_no_event():
    conn = logged_in()
    assert conn.receive(encode(Command.PING, 9)) == ([], response(9))


def test_a_redirect_is_an_event_and_a_malformed_one_is_ignored():
    conn = logged_in()
    events, out = conn.receive(encode(Command.REDIRECT, 2, b'{"server": "10.0.0.2", "port": 9000}'))
    assert (events, out) == ([Redirected("10.0.0.2", 9000, False)], b"")
    events, _ = conn.receive(encode(Command.REDIRECT, 3, b'{"server": "h", "port": 1, "tls": true}'))
    assert events == [Redirected("h", 1, True)]
    [ignored], _ = conn.receive(encode(Command.REDIRECT, 4, b"{}"))
    assert isinstance(ignored, Ignored) and "malformed REDIRECT" in ignored.why


def test_an_unknown_command_is_ignored_not_fatal():
    conn = logged_in()
    [ignored], out = conn.receive(encode(77, 5, b"?"))
    assert (ignored.frame, ignored.why, out) == (Frame(77, 5, b"?"), "unknown command 77", b"")


def test_a_delivery_over_our_limit_is_skipped_and_refused_so_the_senders_wait_ends():
    conn = ClientConnection("secret", max_payload=16)
    conn.login()
    big = encode(Command.JSON_MESSAGE, 6, b'{"from": "a", "payload": {"pad": "xxxxxxxxxx"}}')
    events, out = conn.receive(big + encode(Command.PING, 7))
    assert events == []
    assert out == response(6, Status.ILLEGAL_COMMAND_BODY) + response(7)


def test_frames_split_anywhere_are_reassembled():
    conn = logged_in()
    stream = encode(Command.JSON_MESSAGE, 7, b'{"from": "a", "payload": {}}') + response(2)
    events, out = [], b""
    for i in range(len(stream)):
        more, reply = conn.receive(stream[i:i + 1])
        events += more
        out += reply
    assert [type(e) for e in events] == [Delivered, Answered]
    assert out == response(7)


# -- the challenge login --------------------------------------------------------------

def test_a_challenge_login_proves_the_token_without_sending_it():
    token = "s3cret-token"
    conn = ClientConnection(token, "dev-1", use_challenge=True)
    [request] = sent(conn.login())
    assert (request.command, request.msg_id) == (Command.LOGIN, 1)
    assert json.loads(request.payload) == {"proto": 2, "challenge": True}
    nonce = "ab" * 32
    events, out = conn.receive(encode(Command.LOGIN, 1, challenge_body(nonce)))
    assert events == []
    [answer] = sent(out)
    assert (answer.command, answer.msg_id) == (Command.LOGIN, 2)
    body = json.loads(answer.payload)
    assert body.keys() == {"proto", "key", "proof", "device_id"}
    assert (body["key"], body["device_id"]) == (key_id(token), "dev-1")
    assert token not in answer.payload.decode()
    assert verify(stored_key(token), nonce, "dev-1", body["proof"])
    assert not verify(stored_key(token), nonce, "dev-2", body["proof"]), "bound to the id"
    assert not conn.logged_in
    events, _ = conn.receive(response(2, Status.SUCCESS, login=True))
    assert events == [LoginAnswered(Status.SUCCESS)] and conn.logged_in


def test_a_challenge_without_a_nonce_is_ignored():
    conn = ClientConnection("t", use_challenge=True)
    conn.login()
    [ignored], out = conn.receive(encode(Command.LOGIN, 1, b'{"nonce": ""}'))
    assert isinstance(ignored, Ignored) and out == b""


def test_a_login_frame_is_no_challenge_when_none_was_asked_for():
    conn = ClientConnection("t")
    conn.login()
    [ignored], out = conn.receive(encode(Command.LOGIN, 1, challenge_body("ab")))
    assert isinstance(ignored, Ignored) and out == b""
