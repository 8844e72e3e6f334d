"""
The C{hypertcp} command line, run as a user runs it, against the real daemon.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Optional

import pytest

from hypertcp.client import Client
from hypertcp.protocol.commands import Status
from tests.daemon import hypertcp

pytestmark = pytest.mark.integration


def env_with(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HYPERTCP_TOKEN", "HYPERTCP_TOKENS")}
    env.update(extra)
    return env


class Listener:
    """C{hypertcp listen} in the background; its stdout lines as they come."""

    def __init__(self, *args: str, env: Optional[dict] = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hypertcp.cli", "listen", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        assert self.proc.stderr
        # Printed once logged in; an error line and exit otherwise.
        self.banner = self.proc.stderr.readline()
        assert self.banner.startswith("listening on"), self.banner + self.proc.stderr.read()
        self._lines: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            self._lines.put(line)

    def line(self, timeout: float = 10) -> dict:
        """The next JSON line it prints."""
        return json.loads(self._lines.get(timeout=timeout))

    def finish(self, timeout: float = 30) -> tuple[int, list[dict], str]:
        """Wait for it to exit: its status, its remaining JSON lines, its stderr after the banner."""
        assert self.proc.stderr
        self.proc.wait(timeout)
        self._reader.join(timeout)  # it ends at the end of stdout
        err = self.proc.stderr.read()
        lines = []
        while not self._lines.empty():
            lines.append(json.loads(self._lines.get()))
        return self.proc.returncode, lines, err

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def listeners():
    started: list[Listener] = []

    def start(*args: str, env: Optional[dict] = None) -> Listener:
        started.append(Listener(*args, env=env))
        return started[-1]

    yield start
    for listener in started:
        listener.stop()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


@pytest.fixture
def fleet(token) -> str:
    return token("fleet", "--role", "fleet")


def test_send_and_broadcast_reach_listen(start_daemon, fleet, listeners):
    server = start_daemon()
    port = str(server.port)
    listener = listeners("--port", port, f"--token={fleet}", "--device-id", "lamp",
                         "--count", "3", "--timeout", "20")
    assert "as lamp" in listener.banner

    sent = hypertcp("send", "lamp", '{"switch": "on", "note": "é/ü"}', "--port", port,
                    f"--token={fleet}", "--device-id", "phone")
    assert (sent.returncode, sent.stdout, sent.stderr) == (0, "SUCCESS\n", "")
    sent = hypertcp("broadcast", '{"notice": "maintenance at 5"}', "--port", port,
                    env=env_with(HYPERTCP_TOKEN=fleet))
    assert (sent.returncode, sent.stdout) == (0, "SUCCESS\n"), sent.stderr
    sent = hypertcp("send", "lamp", "-", "--ack", "--port", port, f"--token={fleet}",
                    input='{"read": "from stdin"}')
    assert (sent.returncode, sent.stdout) == (0, "SUCCESS\n"), sent.stderr

    code, lines, _ = listener.finish()
    assert code == 0
    assert lines[0] == {"command": "message", "from": "phone",
                        "payload": {"switch": "on", "note": "é/ü"}}
    assert lines[1]["command"] == "broadcast"
    assert lines[1]["payload"] == {"notice": "maintenance at 5"}
    assert lines[1]["from"].startswith("device_127.0.0.1_")
    assert lines[2]["payload"] == {"read": "from stdin"}


def test_listen_prints_each_line_as_it_arrives(start_daemon, fleet, listeners):
    server = start_daemon()
    listener = listeners("--port", str(server.port), f"--token={fleet}", "--device-id", "lamp")
    with Client(port=server.port, token=fleet) as client:
        for n in range(3):
            assert client.send("lamp", {"n": n}) == Status.SUCCESS
            # Flushed per message: readable before the next one is even sent.
            assert listener.line()["payload"] == {"n": n}


def test_listen_timeout(start_daemon, fleet, listeners):
    server = start_daemon()
    port = str(server.port)
    code, lines, err = listeners("--port", port, f"--token={fleet}", "--timeout", "0.5").finish()
    assert (code, lines, err) == (0, [], "")
    code, lines, err = listeners("--port", port, f"--token={fleet}",
                                 "--timeout", "0.5", "--count", "2").finish()
    assert code == 1
    assert one_line(err) == "hypertcp listen: timed out after 0.5 s with 0 of 2 messages"


def test_ping(start_daemon, fleet):
    server = start_daemon()
    result = hypertcp("ping", "--port", str(server.port), f"--token={fleet}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith(f" ms from 127.0.0.1:{server.port}\n")
    assert float(result.stdout.split()[0]) > 0


def test_statuses_are_errors_printed_by_name(start_daemon, fleet, token):
    boxed = token("boxed", "--role", "fleet", "--reach", "server", "dash*")
    server = start_daemon()
    port = str(server.port)
    result = hypertcp("send", "nobody", "{}", "--port", port, f"--token={fleet}")
    assert result.returncode == 1 and result.stdout == ""
    assert one_line(result.stderr) == \
        "hypertcp send: send to nobody: 'nobody' is not connected (DEVICE_NOT_IN_NETWORK, 7)"
    result = hypertcp("send", "lamp", "{}", "--port", port, f"--token={boxed}")
    assert result.returncode == 1
    assert "NOT_ALLOWED" in one_line(result.stderr)
    result = hypertcp("send", "server", '{"status": "online"}', "--port", port, f"--token={boxed}")
    assert result.returncode == 0, result.stderr
    result = hypertcp("ping", "--port", port, "--token=not-a-token")
    assert result.returncode == 1
    assert one_line(result.stderr) == \
        f"hypertcp ping: login to 127.0.0.1:{port} refused: " \
        "login with an unknown or revoked token (INVALID_TOKEN, 9)"


def test_usage_and_connection_errors():
    port = str(closed_port())
    result = hypertcp("ping", "--port", port, env=env_with())
    assert result.returncode == 2
    assert one_line(result.stderr) == \
        "hypertcp ping: no token: pass --token or set HYPERTCP_TOKEN"
    result = hypertcp("ping", "--port", port, "--token=x")
    assert result.returncode == 1
    assert one_line(result.stderr) == f"hypertcp ping: 127.0.0.1:{port}: Connection refused"
    for bad in ("{oops", "[1, 2]", '"text"'):
        result = hypertcp("send", "lamp", bad, "--port", port, "--token=x")
        assert result.returncode == 2, bad
        assert one_line(result.stderr).startswith("hypertcp send: "), result.stderr
    assert hypertcp().returncode == 2
    assert hypertcp("send", "only-a-target").returncode == 2
    assert hypertcp("token").returncode == 2


def test_token_add_list_revoke(tmp_path: Path, start_daemon):
    tokens = str(tmp_path / "cli-tokens.json")
    added = hypertcp("token", "add", "esp32-kitchen", "--tokens", tokens)
    assert added.returncode == 0, added.stderr
    *explanation, device = added.stdout.strip().splitlines()
    assert "device esp32-kitchen" in explanation[0]
    added = hypertcp("token", "add", "backend", "--role", "fleet", "--prefix", "web-",
                     "--reach", "esp32-*", "--reach", "server", env=env_with(HYPERTCP_TOKENS=tokens))
    assert added.returncode == 0, added.stderr
    backend = added.stdout.strip().splitlines()[-1]
    assert "esp32-*, server" in added.stdout
    assert device != backend and len(device) >= 22  # >= 128 bits, url-safe base64

    listing = hypertcp("token", "list", "--tokens", tokens)
    assert listing.returncode == 0, listing.stderr
    header, kitchen, web = listing.stdout.splitlines()
    assert header.split() == ["NAME", "ROLE", "PREFIX", "REACH", "GRANTS", "CREATED", "STATE"]
    assert kitchen.split()[:4] == ["esp32-kitchen", "device", "-", "*"]
    assert web.split()[:4] == ["backend", "fleet", "web-", "esp32-*,server"]
    assert kitchen.split()[-1] == web.split()[-1] == "live"
    assert device not in listing.stdout and backend not in Path(tokens).read_text()

    # The tokens work as listed: the device is bound to its id, the back end to its prefix.
    server = start_daemon("--tokens", tokens)
    with Client(port=server.port, token=device) as kitchen_client, \
            Client(port=server.port, token=backend, device_id="web-1") as web_client:
        assert web_client.send("esp32-kitchen", {"oven": "off"}) == Status.SUCCESS
        assert kitchen_client.receive(timeout=5).sender == "web-1"

    revoked = hypertcp("token", "revoke", "esp32-kitchen", "--tokens", tokens)
    assert revoked.returncode == 0, revoked.stderr
    assert "Revoked 1 token named 'esp32-kitchen'" in revoked.stdout
    assert hypertcp("token", "list", "--tokens", tokens).stdout.splitlines()[1].endswith("revoked")
    again = hypertcp("token", "revoke", "esp32-kitchen", "--tokens", tokens)
    assert again.returncode == 1
    assert one_line(again.stderr).startswith("hypertcp token: no live token named 'esp32-kitchen'")


def test_token_add_refusals(tmp_path: Path):
    tokens = str(tmp_path / "t.json")
    result = hypertcp("token", "add", "lamp", "--prefix", "x-", "--tokens", tokens)
    assert result.returncode == 1
    assert one_line(result.stderr).startswith("hypertcp token: ")
    result = hypertcp("token", "add", "lamp", "--role", "admin", "--tokens", tokens)
    assert result.returncode == 2
    listing = hypertcp("token", "list", "--tokens", tokens)
    assert listing.returncode == 1 and listing.stderr == f"hypertcp token: {tokens}: no such token file\n"
