"""
The daemon end to end: twistd -n hypertcp in a subprocess, peers on real
sockets speaking the sketch's and the original Python client's dialects.
The protocol's rules are tested in-process (tests/unit/); these prove the
real process serves them over real sockets.
"""

from __future__ import annotations

from typing import Optional

import pytest

from hypertcp.protocol.commands import Command, Status
from tests.raw import Raw

pytestmark = pytest.mark.integration


@pytest.fixture
def server(start_daemon):
    return start_daemon("--idle-timeout", "60")


def sketch(port: int, token: str, proto: Optional[int] = 2) -> Raw:
    """
    A device: a raw-token login as the original sketch sends (C{proto}
    None), or the project's JSON login at protocol level C{proto}, which
    learns every status.
    """
    peer = Raw(port)
    assert peer.login(token, proto) == Status.SUCCESS
    return peer


def test_sketch_and_python_client_dialects_talk(server, token):
    device = sketch(server.port, token("esp32-1"), proto=None)
    fleet = token("backend", "--role", "fleet")
    with device, Raw(server.port) as app:
        assert app.login_json(fleet, "web-1") == Status.SUCCESS

        # device -> app, targeted
        assert app_receives(device, app, {"temperature": 25.6})
        # app -> device, targeted
        msg_id = app.send_json(Command.JSON_MESSAGE, {"targetId": "esp32-1", "payload": {"relay": 1}})
        assert device.message() == {"from": "web-1", "payload": {"relay": 1}}
        assert app.answer_to(msg_id) == Status.SUCCESS
        # both to the server: ping -> pong
        for peer in (device, app):
            msg_id = peer.send_json(Command.JSON_MESSAGE, {
                "targetId": "server", "payload": {"command": "ping", "timestamp": 42}})
            assert peer.answer_to(msg_id) == Status.SUCCESS
            assert peer.message() == {"from": "server",
                                      "payload": {"command": "pong", "timestamp": 42}}
        # broadcasts both ways: the sketch's BROADCAST command, and targetId "broadcast"
        msg_id = device.send_json(Command.BROADCAST, {"targetId": "broadcast", "payload": {"n": 1}})
        assert device.answer_to(msg_id) == Status.SUCCESS
        assert app.message(Command.BROADCAST) == {"from": "esp32-1", "payload": {"n": 1}}
        msg_id = app.send_json(Command.JSON_MESSAGE, {"targetId": "broadcast", "payload": {"n": 2}})
        assert app.answer_to(msg_id) == Status.SUCCESS
        assert device.message(Command.BROADCAST) == {"from": "web-1", "payload": {"n": 2}}


def app_receives(sender: Raw, receiver: Raw, payload: dict) -> bool:
    msg_id = sender.send_json(Command.JSON_MESSAGE, {"targetId": "web-1", "payload": payload})
    assert sender.answer_to(msg_id) == Status.SUCCESS
    return receiver.message() == {"from": "esp32-1", "payload": payload}


def test_revoked_token_closes_live_sessions(start_daemon, token, tokens_file):
    # The daemon's token reload timer picks up `hypertcp token revoke`.
    server = start_daemon("--set", "server.token_reload=0.2")
    from tests.daemon import hypertcp
    secret = token("doomed")
    with sketch(server.port, secret) as peer:
        result = hypertcp("token", "revoke", "doomed", "--tokens", str(tokens_file))
        assert result.returncode == 0, result.stderr
        assert peer.wait_closed()
    with Raw(server.port) as again:
        assert again.login(secret) == Status.INVALID_TOKEN
