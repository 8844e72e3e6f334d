"""
Devices flashed with the ORIGINAL HyperTCP firmware header, against the real
daemon: C{firmware/host/original} reads the stream exactly as that header
does (raw-token LOGIN; the first frame after it is the login answer; a
RESPONSE's header is read and its payload never is; Arduino's 1 s stream
timeout; no reconnecting).  A single status byte after login would leave it
one byte out of step and offline, so the server sends such devices only
empty RESPONSEs after their login answer, whatever the real status; the
project's own library, which logs in with protocol level 2, still gets every
status (tests/test_firmware.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hypertcp.client import Client
from hypertcp.protocol.commands import Status

from tests.daemon import Daemon
from tests.firmware import Device


@pytest.fixture
def original(build):
    """Factory: original(token, port) -> a running original-firmware device, checked at teardown."""
    started: list[Device] = []

    def start(token: str, port: int) -> Device:
        d = Device(build / "original", "--token", token, "--host", "127.0.0.1", "--port", str(port))
        started.append(d)
        return d

    yield start
    for d in started:
        d.close()


def received(d: Device) -> tuple[str, dict]:
    """The next message the device printed: (sender, payload)."""
    _kind, sender, text = d.expect(r"message .*").group(0).split(" ", 2)
    return sender, json.loads(text)


def test_an_original_device_stays_in_sync_through_every_status(start_daemon, token, original):
    server = start_daemon("--idle-timeout", "60", "--max-payload", "256", "--rate-limit", "10")
    d = original(token("legacy-1", "--reach", "app", "--reach", "nobody-here"), server.port)
    d.expect("login-ok")
    with Client("127.0.0.1", server.port, token=token("app")) as app:

        def still_in_sync(n: int) -> None:
            # Acknowledged by the device itself, and delivered intact.
            assert app.send("legacy-1", {"n": n}, ack=True) == Status.SUCCESS
            assert received(d) == ("app", {"n": n})

        still_in_sync(0)
        # Each of these is answered with a status (7, 6, 11, 11, 2, 1), which
        # the server logs and sends to this device as an empty RESPONSE.
        provocations = [
            'send nobody-here {"x":1}',  # offline target
            'send elsewhere {"x":1}',    # a target its token may not reach
            'send app {"x":',            # not JSON
            "big 300 app",               # over the server's 256-byte limit
            "login",                     # a second LOGIN
            'flood 40 app {"x":1}',      # over the rate limit of 10/s
        ]
        for n, provocation in enumerate(provocations, 1):
            d.command(provocation)
            d.expect(r"sent|flooded 40")
            d.expect(r"response \d+ 0")
            still_in_sync(n)
    assert "dropped" not in d.history
    # Every RESPONSE header it read after login announced an empty payload.
    responses = [line for line in d.history if line.startswith("response ")]
    assert len(responses) >= len(provocations) + 30
    assert all(line.endswith(" 0") for line in responses), responses


def test_an_original_device_logs_in_through_the_balancer(start_daemon, token, tmp_path: Path,
                                                        original):
    # It reads only the first frame after LOGIN and cannot follow a REDIRECT,
    # so the balancer carries its connection through to a node instead.
    node = start_daemon("--idle-timeout", "60")
    token_file = tmp_path / "balancer.token"
    token_file.write_text(token("balancer", "--role", "fleet", "--grant", "stats", "drain") + "\n")
    balancer: Daemon = start_daemon("--balancer", "tcp:0:interface=127.0.0.1",
                                    "--backend", f"127.0.0.1:{node.port}",
                                    "--set", f"balancer.token_file={token_file}",
                                    "--set", "balancer.health_interval=0.3",
                                    expect=("tcp", "balancer"))
    balancer.wait_for_log(f"node 127.0.0.1:{node.port} is up")
    d = original(token("legacy-1"), balancer.ports["balancer"])
    d.expect("login-ok")
    with Client("127.0.0.1", node.port, token=token("app")) as app:
        assert app.send("legacy-1", {"via": "node"}, ack=True) == Status.SUCCESS
        assert received(d) == ("app", {"via": "node"})
        d.command('send app {"via":"balancer"}')
        d.expect("sent")
        message = app.receive(timeout=10)
        assert message is not None
        assert (message.sender, message.payload) == ("legacy-1", {"via": "balancer"})
    assert not [line for line in d.history if line.startswith(("redirect", "dropped"))]
