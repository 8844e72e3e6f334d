"""
Telling clients why (opt-in): a connection whose JSON LOGIN carried
"reasons": true receives, just before each refusal's RESPONSE, a
JSON_MESSAGE from "server" saying why, and before the server closes it, the
reason for closing.  Connections that did not ask see nothing new.
"""

from __future__ import annotations

import json
from typing import Optional

import pytest

from hypertcp.protocol.bodies import refusal_body
from hypertcp.protocol.client import ClientConnection, Closing, Delivered, Refused
from hypertcp.protocol.commands import Command, Status
from hypertcp.protocol.frames import Decoder, encode, response
from hypertcp.server.hub import CommandError
from hypertcp.server.tokens import TokenStore
from tests.inprocess import Peer, Server


def login(peer: Peer, token: str, device_id: Optional[str] = None, reasons: bool = True) -> int:
    body = {"token": token, "proto": 2, "reasons": reasons}
    if device_id:
        body["device_id"] = device_id
    return peer.answer(peer.send_json(Command.LOGIN, body))


def told(peer: Peer) -> list[tuple[int, dict]]:
    """Every frame the peer got, in order: (command, body or status)."""
    out = []
    for frame in peer.frames():
        if frame.command == Command.RESPONSE:
            out.append((Command.RESPONSE, frame.msg_id,
                        frame.payload[0] if frame.payload else Status.SUCCESS))
        else:
            out.append((frame.command, frame.msg_id, json.loads(frame.payload)))
    return out


@pytest.fixture
def server(tmp_path):
    return Server(tmp_path, max_payload=8192)


@pytest.fixture
def fleet(server):
    return server.token("fleet", role="fleet", reach=["lamp*", "server", "nobody"])


def reason_then_status(peer: Peer, msg_id: int, status: int) -> str:
    """The reason told for C{msg_id}, asserting it came just before its RESPONSE."""
    frames = told(peer)
    (command, _, body), answer = frames[-2], frames[-1]
    assert answer == (Command.RESPONSE, msg_id, status), frames
    assert command == Command.JSON_MESSAGE and body["from"] == "server", frames
    notice = body["payload"]
    assert notice["command"] == "refused" and notice["msgId"] == msg_id
    assert notice["status"] == status
    return notice["reason"]


def test_an_oversize_payload(server, fleet):
    peer = server.connect()
    assert login(peer, fleet, "web-1") == Status.SUCCESS
    peer.frames()
    msg_id = peer.send(Command.JSON_MESSAGE, b"x" * 9000)
    assert reason_then_status(peer, msg_id, Status.ILLEGAL_COMMAND_BODY) == \
        "payload of 9,000 bytes over the 8,192-byte limit"


@pytest.mark.parametrize("target, status, reason", [
    ("elsewhere", Status.NOT_ALLOWED, "token fleet may not send to 'elsewhere'"),
    ("nobody", Status.DEVICE_NOT_IN_NETWORK, "'nobody' is not connected"),
])
def test_routing_refusals(server, fleet, target, status, reason):
    peer = server.connect()
    assert login(peer, fleet, "web-1") == Status.SUCCESS
    peer.frames()
    msg_id = peer.message(target, {"on": True})
    assert reason_then_status(peer, msg_id, status) == reason


def test_a_server_command_refusal_says_what_the_command_said(server, fleet):
    def fussy(hub, sender, payload):
        raise CommandError(Status.ILLEGAL_COMMAND_BODY, "fussy needs a colour")

    server.hub.register_command("fussy", fussy)
    peer = server.connect()
    assert login(peer, fleet, "web-1") == Status.SUCCESS
    peer.frames()
    msg_id = peer.message("server", {"command": "fussy"})
    assert reason_then_status(peer, msg_id, Status.ILLEGAL_COMMAND_BODY) == "fussy needs a colour"


def test_a_bad_body(server, fleet):
    peer = server.connect()
    assert login(peer, fleet, "web-1") == Status.SUCCESS
    peer.frames()
    msg_id = peer.send_json(Command.JSON_MESSAGE, {"payload": {}})
    assert reason_then_status(peer, msg_id, Status.ILLEGAL_COMMAND_BODY) == \
        'missing a "targetId" string'


def test_a_refused_login_and_the_close_that_follows(server):
    peer = server.connect()
    msg_id = peer.send_json(Command.LOGIN, {"token": "wrong", "proto": 2, "reasons": True})
    why = "login with an unknown or revoked token"
    (_, _, refusal), answer, (_, _, closing) = told(peer)
    assert refusal["payload"] == {"command": "refused", "msgId": msg_id,
                                  "status": Status.INVALID_TOKEN, "reason": why}
    assert answer == (Command.RESPONSE, msg_id, Status.INVALID_TOKEN)
    assert closing["payload"] == {"command": "closing", "reason": why}
    assert peer.closing


def test_the_reason_for_closing_a_live_session(server):
    lamp_token = server.token("lamp")
    peer = server.connect()
    assert login(peer, lamp_token) == Status.SUCCESS
    peer.frames()
    TokenStore(server.tokens.path).revoke("lamp")  # as the command line does
    server.factory.reload_tokens()
    (command, _, body), = told(peer)
    assert command == Command.JSON_MESSAGE
    assert body == {"from": "server", "payload": {"command": "closing",
                                                  "reason": "token lamp revoked"}}
    assert peer.closing


def test_without_asking_a_client_sees_only_statuses(server, fleet):
    peer = server.connect()
    assert login(peer, fleet, "web-1", reasons=False) == Status.SUCCESS
    peer.frames()
    msg_id = peer.message("nobody", {"on": True})
    bad = peer.send(Command.JSON_MESSAGE, b"x" * 9000)
    assert told(peer) == [(Command.RESPONSE, msg_id, Status.DEVICE_NOT_IN_NETWORK),
                          (Command.RESPONSE, bad, Status.ILLEGAL_COMMAND_BODY)]


def test_reasons_are_bounded_for_a_peer_that_keeps_failing(server, fleet):
    peer = server.connect()
    assert login(peer, fleet, "web-1") == Status.SUCCESS
    peer.frames()
    for _ in range(200):
        peer.message("nobody", {})
    frames = told(peer)
    assert sum(f[0] == Command.RESPONSE for f in frames) == 200
    assert sum(f[0] == Command.JSON_MESSAGE for f in frames) <= 20


# -- the client's side, sans-IO --

def test_the_client_connection_turns_notices_into_events():
    conn = ClientConnection("t", reasons=True)
    assert json.loads(conn.login()[5:])["reasons"] is True
    msg_id, _ = conn.send("nobody", {"on": True})
    data = (encode(Command.JSON_MESSAGE, 7, refusal_body(msg_id, 7, "'nobody' is not connected"))
            + response(msg_id, 7)
            + encode(Command.JSON_MESSAGE, 8, b'{"from":"server","payload":{"command":"closing",'
                     b'"reason":"kicked by an operator"}}'))
    events, reply = conn.receive(data)
    assert events[0] == Refused(msg_id, 7, "'nobody' is not connected")
    assert events[1].msg_id == msg_id and events[1].status == 7
    assert events[2] == Closing("kicked by an operator")
    # Still acknowledged, as every delivered frame is.
    assert list(Decoder().feed(reply))[0].msg_id == 7


def test_a_client_that_did_not_ask_gets_the_notice_as_a_message():
    conn = ClientConnection("t")
    assert "reasons" not in json.loads(conn.login()[5:])
    events, _ = conn.receive(encode(Command.JSON_MESSAGE, 7, refusal_body(3, 7, "why")))
    assert type(events[0]) is Delivered
