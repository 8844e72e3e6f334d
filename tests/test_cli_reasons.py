"""
The command line against the real daemon, saying why: the reason the server
gives for a refusal, a server command's reply, and `hypertcp listen`
outliving a server restart.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hypertcp.client import Client, HyperTCPError, Status
from hypertcp.protocol.bodies import message_body
from tests.daemon import Daemon, hypertcp

pytestmark = pytest.mark.integration


def env(token: str) -> dict:
    return {**{k: v for k, v in os.environ.items() if k != "HYPERTCP_TOKENS"},
            "HYPERTCP_TOKEN": token}


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_refusals_say_why_and_server_replies_are_printed(start_daemon, token, tokens_file):
    daemon = start_daemon()
    fleet = token("fleet", "--role", "fleet")
    observer = token("ops", "--role", "observer", "--grant", "stats")
    port = ("--port", str(daemon.port))
    big = {"blob": "x" * 8990}
    size = len(message_body("server", big))
    result = hypertcp("send", *port, "server", json.dumps(big), env=env(fleet))
    assert one_error_line(result) == (
        f"hypertcp send: send to server: payload of {size:,} bytes over the 8,192-byte limit "
        "(ILLEGAL_COMMAND_BODY, 11)")
    result = hypertcp("send", *port, "nobody", '{"on": true}', env=env(fleet))
    assert one_error_line(result) == ("hypertcp send: send to nobody: 'nobody' is not connected "
                                      "(DEVICE_NOT_IN_NETWORK, 7)")
    result = hypertcp("send", *port, "server", '{"command": "stats"}', env=env(observer))
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert reply["command"] == "stats" and reply["sessions"] == 1
    result = hypertcp("ping", *port, env=env("not-a-token"))
    assert one_error_line(result).endswith(
        "refused: login with an unknown or revoked token (INVALID_TOKEN, 9)")

    listener = subprocess.Popen([sys.executable, "-m", "hypertcp.cli", "listen", *port],
                                stderr=subprocess.PIPE, text=True, env=env(token("lamp")))
    try:
        assert listener.stderr.readline().startswith("listening on")
        assert hypertcp("token", "revoke", "lamp", "--tokens", str(tokens_file)).returncode == 0
        assert listener.wait(30) == 1
        assert "closed the connection (token lamp revoked)" in listener.stderr.read()
    finally:
        listener.kill()
        listener.wait()


def test_listen_outlives_a_server_restart(tmp_path: Path, tokens_file: Path, token):
    fleet = token("fleet", "--role", "fleet")
    first = Daemon(tmp_path, "--tokens", str(tokens_file)).start()
    port = first.port
    listener = subprocess.Popen(
        [sys.executable, "-m", "hypertcp.cli", "listen", "--port", str(port),
         "--device-id", "lamp", "--count", "2", "--timeout", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(fleet))
    second = None
    try:
        assert listener.stderr.readline().startswith("listening on")
        sent = hypertcp("send", "--port", str(port), "lamp", '{"n": 1}', env=env(fleet))
        assert sent.returncode == 0, sent.stderr
        assert json.loads(listener.stdout.readline())["payload"] == {"n": 1}
        first.stop()
        second = Daemon(tmp_path, "--tokens", str(tokens_file),
                        "--listen", f"tcp:{port}:interface=127.0.0.1").start()
        assert listener.stderr.readline().strip() == f"reconnected to 127.0.0.1:{port}"
        sent = hypertcp("send", "--port", str(port), "lamp", '{"n": 2}', env=env(fleet))
        assert sent.returncode == 0, sent.stderr
        assert json.loads(listener.stdout.readline())["payload"] == {"n": 2}
        assert listener.wait(30) == 0
    finally:
        listener.kill()
        listener.wait()
        first.stop()
        if second is not None:
            second.stop()


def test_the_blocking_client_raises_on_error_with_the_reason(start_daemon, token):
    daemon = start_daemon()
    fleet = token("fleet", "--role", "fleet")
    with Client(port=daemon.port, token=fleet, device_id="web-1") as client:
        assert client.send("nobody", {}) == Status.DEVICE_NOT_IN_NETWORK
        assert client.last_reason == "'nobody' is not connected"
        assert client.ping() > 0 and client.last_reason is None
        client.raise_on_error = True
        with pytest.raises(HyperTCPError) as error:
            client.send("nobody", {})
        assert str(error.value) == ("send to nobody refused: 'nobody' is not connected "
                                    "(DEVICE_NOT_IN_NETWORK, 7)")
    with pytest.raises(HyperTCPError, match="unknown or revoked token") as refused:
        Client(port=daemon.port, token="wrong").connect()
    assert refused.value.status == Status.INVALID_TOKEN
