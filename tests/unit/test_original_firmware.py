"""
Devices flashed with the original firmware read a RESPONSE's header and
never its payload after login (PROTOCOL.md section 6), so the server never
sends them a status byte outside the login answer; clients of the project
announce protocol level 2 at login and learn every status.
"""

from __future__ import annotations

import json

import pytest

from hypertcp.protocol.commands import Command, Status
from hypertcp.protocol.frames import HEADER
from tests.inprocess import Server


@pytest.fixture
def server(tmp_path):
    return Server(tmp_path, max_payload=1024, rate_limit=5, rate_burst=5)


def refusals(peer):
    """Provoke each status a logged-in client can be answered with; their RESPONSE payloads."""
    peer.frames()
    ids = {
        Status.DEVICE_NOT_IN_NETWORK: peer.message("nobody", {"x": 1}),
        Status.ILLEGAL_COMMAND_BODY: peer.send(Command.JSON_MESSAGE, b"{not json"),
        Status.ILLEGAL_COMMAND: peer.send(Command.LOGIN, b"again"),
    }
    oversize = peer.send(Command.JSON_MESSAGE, b"x" * 2000)
    ids[Status.ILLEGAL_COMMAND_BODY + 1000] = oversize  # a second 11, from the oversize path
    answers = {status: peer.response_payload(msg_id) for status, msg_id in ids.items()}
    # Past the burst of 5: the sixth frame within the same instant is over the rate.
    ids_over = [peer.send(Command.PING) for _ in range(3)]
    answers[Status.QUOTA_LIMIT] = peer.response_payload(ids_over[-1])
    return answers


@pytest.mark.parametrize("login", ["raw", "json"])
def test_an_original_device_is_never_sent_a_status_byte_after_login(server, login):
    token = server.token("esp32")
    peer = server.connect()
    body = token.encode() if login == "raw" else json.dumps({"token": token}).encode()
    msg_id = peer.send(Command.LOGIN, body)
    assert peer.response_payload(msg_id) == bytes((Status.SUCCESS,))  # the login answer keeps it
    for status, payload in refusals(peer).items():
        assert payload == b"", f"status {status} reached an original device as {payload!r}"
    assert not peer.closing


def test_a_project_client_learns_every_status(server):
    peer = server.connect()
    assert peer.login(server.token("esp32"), proto=2) == Status.SUCCESS
    answers = refusals(peer)
    assert answers == {
        Status.DEVICE_NOT_IN_NETWORK: bytes((7,)),
        Status.ILLEGAL_COMMAND_BODY: bytes((11,)),
        Status.ILLEGAL_COMMAND: bytes((2,)),
        Status.ILLEGAL_COMMAND_BODY + 1000: bytes((11,)),
        Status.QUOTA_LIMIT: bytes((1,)),
    }


def test_an_original_device_stays_in_step_reading_headers_only(server):
    """Read the server's bytes as the original sketch does: after login, headers only for RESPONSE."""
    sender = server.connect()
    assert sender.login(server.token("esp32"), proto=None) == Status.SUCCESS
    app = server.online("app", "fleet", device_id="app")
    sender.frames()
    sender.message("nobody", {"x": 1})
    sender.message("app", {"n": 1})
    stream = sender.transport.value()
    # The original reader: 5-byte header; a RESPONSE's payload is never read.
    offset, seen = 0, []
    while offset < len(stream):
        command, msg_id, length = HEADER.unpack_from(stream, offset)
        offset += 5
        if command != Command.RESPONSE:
            offset += length
        seen.append(command)
    assert offset == len(stream) and seen == [Command.RESPONSE, Command.RESPONSE]
    assert app.delivered() == [(Command.JSON_MESSAGE, {"from": "esp32", "payload": {"n": 1}})]


def test_the_login_answer_still_carries_its_byte_for_everyone(server):
    peer = server.connect()
    msg_id = peer.send(Command.LOGIN, b"not-a-token")
    assert peer.response_payload(msg_id) == bytes((Status.INVALID_TOKEN,))
