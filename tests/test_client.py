"""
The Python clients against the real daemon.  The blocking client runs in the
test process; the Twisted client runs in a subprocess (tx_driver below) that
reports what happens as JSON lines, so each test is real sockets against the
real daemon, synchronised by waiting for log and report lines, never by
sleeping.  The protocol itself (ClientConnection) and the Twisted client's
timers and answers are tested in-process: tests/unit/test_client_connection.py
and tests/unit/test_txclient.py.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from hypertcp.client import Client, HyperTCPError
from hypertcp.protocol.commands import Command, Status

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.integration


@pytest.fixture
def fleet(token) -> str:
    return token("fleet", "--role", "fleet")


@pytest.fixture
def observer(token) -> str:
    return token("ops", "--role", "observer", "--grant", "redirect")


# -- the blocking client --

def test_send_and_receive(start_daemon, fleet):
    server = start_daemon()
    with Client(port=server.port, token=fleet, device_id="alice") as alice, \
            Client(port=server.port, token=fleet, device_id="bob") as bob:
        assert alice.device_id == "alice"
        assert alice.send("bob", {"temperature": 21.5, "unit": "°C"}) == Status.SUCCESS
        message = bob.receive(timeout=5)
        assert message.command == Command.JSON_MESSAGE
        assert message.sender == "alice"
        assert message.payload == {"temperature": 21.5, "unit": "°C"}
        assert json.loads(message.raw) == {"from": "alice", "payload": message.payload}
        assert bob.receive(timeout=0) is None


def test_messages_iterates_until_quiet(start_daemon, fleet):
    server = start_daemon()
    with Client(port=server.port, token=fleet, device_id="alice") as alice, \
            Client(port=server.port, token=fleet, device_id="bob") as bob:
        for n in range(3):
            assert alice.send("bob", {"n": n}) == Status.SUCCESS
        assert [m.payload["n"] for m in bob.messages(timeout=0.5)] == [0, 1, 2]


def test_refused_login_raises_with_the_status(start_daemon, token):
    device = token("sensor-1")
    server = start_daemon()
    with pytest.raises(HyperTCPError) as refused:
        Client(port=server.port, token="not-a-token").connect()
    assert refused.value.status == Status.INVALID_TOKEN
    assert "INVALID_TOKEN" in str(refused.value)
    with pytest.raises(HyperTCPError) as wrong_id:
        Client(port=server.port, token=device, device_id="sensor-2").connect()
    assert wrong_id.value.status == Status.NOT_ALLOWED


def test_client_answers_server_pings_and_outlives_the_idle_timeout(start_daemon, fleet):
    server = start_daemon("--idle-timeout", "1", "--set", "limits.client_heartbeat=0")
    with Client(port=server.port, token=fleet, device_id="quiet", heartbeat=0.3) as quiet:
        # Only waiting: our heartbeat and answers to the server's pings keep it alive.
        assert quiet.receive(timeout=2.5) is None
        with Client(port=server.port, token=fleet, device_id="alice") as alice:
            assert alice.send("quiet", {"still": "here"}) == Status.SUCCESS
        assert quiet.receive(timeout=5).payload == {"still": "here"}
    assert "silent for" not in server.output


def test_closed_connection_raises_connection_error(start_daemon, fleet):
    server = start_daemon()
    client = Client(port=server.port, token=fleet).connect()
    server.stop()
    with pytest.raises(ConnectionError):
        client.receive(timeout=5)
    with pytest.raises(ConnectionError):
        client.send("anyone", {})


def test_blocking_client_follows_redirect(start_daemon, fleet, observer):
    first, second = start_daemon(), start_daemon()
    with Client(port=first.port, token=fleet, device_id="mover") as mover, \
            Client(port=first.port, token=observer, device_id="ops") as ops, \
            Client(port=second.port, token=fleet, device_id="alice") as alice:
        assert ops.send_to_server({"command": "redirect", "deviceId": "mover",
                                   "server": "127.0.0.1", "port": second.port}) == Status.SUCCESS
        deadline = time.monotonic() + 10
        while mover.port != second.port:
            assert mover.receive(timeout=0.1) is None
            assert time.monotonic() < deadline, "no redirect"
        assert (mover.host, mover.device_id) == ("127.0.0.1", "mover")
        assert alice.send("mover", {"moved": True}) == Status.SUCCESS
        assert mover.receive(timeout=5).payload == {"moved": True}


# -- the Twisted client, end to end --

TX_DRIVER = r'''
"""Runs the Twisted client; reports events as JSON lines; takes JSON commands on stdin."""
import json
import sys

from twisted.internet import stdio, task
from twisted.internet.defer import Deferred
from twisted.protocols.basic import LineReceiver

from hypertcp.client.txclient import HyperTCPClientFactory, HyperTCPClientProtocol, clientService


def report(**event):
    print(json.dumps(event), flush=True)


class Reporting(HyperTCPClientProtocol):
    def loggedIn(self):
        self.factory.logins += 1
        report(event="login", count=self.factory.logins, port=self.transport.getPeer().port)

    def ping(self):
        return super().ping().addCallback(lambda rtt: report(event="pong") or rtt)


class ReportingFactory(HyperTCPClientFactory):
    protocol = Reporting
    logins = 0

    def loginRefused(self, protocol, answer):
        super().loginRefused(protocol, answer)
        report(event="refused", status=int(answer), retrying=bool(self.service.running))


class Commands(LineReceiver):
    delimiter = b"\n"

    def __init__(self, factory):
        self.factory = factory

    def lineReceived(self, line):
        command = json.loads(line)
        d = self.factory.whenLoggedIn()
        if command["do"] == "send":
            d.addCallback(lambda p: p.send(command["target"], command["payload"],
                                           command.get("ack", False)))
        else:
            d.addCallback(lambda p: p.broadcast(command["payload"]))
        d.addCallbacks(lambda status: report(event="status", status=int(status)),
                       lambda f: report(event="error", error=str(f.value)))


def main(reactor, port, token, device_id, heartbeat):
    factory = ReportingFactory(
        token, device_id, heartbeat=float(heartbeat),
        onMessage=lambda m: report(event=m.command.name, sender=m.sender, payload=m.payload))
    service = clientService(factory, "127.0.0.1", int(port), reactor=reactor,
                            initialDelay=0.1, maxDelay=0.5)
    service.startService()
    stdio.StandardIO(Commands(factory), reactor=reactor)
    finished = Deferred()
    # whenLoggedIn() fails only when the token is refused for good.
    factory.whenLoggedIn().addErrback(
        lambda f: (report(event="gave up", status=int(f.value.status)), finished.callback(None)))
    return finished


task.react(main, sys.argv[1:])
'''


class TxDriver:
    """The Twisted client in a subprocess, and what it has reported so far."""

    def __init__(self, script: Path, port: int, token: str, device_id: str,
                 heartbeat: float = 30.0) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen(
            [sys.executable, str(script), str(port), token, device_id, str(heartbeat)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env)
        self.events: list[dict] = []
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            self._lines.put(json.loads(line))
        self._lines.put(None)

    def expect(self, match: Callable[[dict], bool], timeout: float = 10) -> dict:
        """The first reported event (old or new) for which C{match} holds."""
        for event in self.events:
            if match(event):
                return event
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = self._lines.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                raise AssertionError(f"no such event; so far: {self.events}") from None
            if event is None:
                raise AssertionError(f"driver exited: {self.events}\n{self.proc.stderr.read()}")
            self.events.append(event)
            if match(event):
                return event

    def event(self, name: str, timeout: float = 10, **fields: object) -> dict:
        return self.expect(lambda e: e["event"] == name
                           and all(e.get(k) == v for k, v in fields.items()), timeout)

    def command(self, **command: object) -> None:
        assert self.proc.stdin
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def tx(tmp_path: Path):
    """Factory: tx(port, token, device_id, heartbeat=30) -> a running TxDriver."""
    script = tmp_path / "tx_driver.py"
    script.write_text(TX_DRIVER)
    drivers: list[TxDriver] = []

    def start(port: int, token: str, device_id: str, heartbeat: float = 30.0) -> TxDriver:
        driver = TxDriver(script, port, token, device_id, heartbeat)
        drivers.append(driver)
        return driver

    yield start
    for driver in drivers:
        driver.stop()


def test_twisted_client_exchanges_messages(start_daemon, fleet, tx):
    server = start_daemon()
    driver = tx(server.port, fleet, "twisted")
    driver.event("login", count=1, port=server.port)
    with Client(port=server.port, token=fleet, device_id="blocking") as blocking:
        assert blocking.send("twisted", {"to": "twisted"}) == Status.SUCCESS
        driver.event("JSON_MESSAGE", sender="blocking", payload={"to": "twisted"})
        assert blocking.broadcast({"to": "all"}) == Status.SUCCESS
        driver.event("BROADCAST", sender="blocking", payload={"to": "all"})

        driver.command(do="send", target="blocking", payload={"from": "twisted"})
        driver.event("status", status=Status.SUCCESS)
        message = blocking.receive(timeout=5)
        assert (message.sender, message.payload) == ("twisted", {"from": "twisted"})
        driver.command(do="broadcast", payload={"n": 1})
        assert blocking.receive(timeout=5).command == Command.BROADCAST

        # Acknowledged delivery to the Twisted client: it acks what it is sent.
        assert blocking.send("twisted", {"n": 2}, ack=True) == Status.SUCCESS
        driver.command(do="send", target="nobody", payload={})
        driver.event("status", status=Status.DEVICE_NOT_IN_NETWORK)


def test_twisted_client_reconnects_after_the_daemon_restarts(start_daemon, fleet, tx):
    server = start_daemon()
    port = server.port
    driver = tx(port, fleet, "survivor")
    driver.event("login", count=1)
    server.stop()
    restarted = start_daemon("--listen", f"tcp:{port}:interface=127.0.0.1")
    driver.event("login", count=2, port=port, timeout=20)
    with Client(port=restarted.port, token=fleet, device_id="alice") as alice:
        assert alice.send("survivor", {"back": True}) == Status.SUCCESS
        driver.event("JSON_MESSAGE", payload={"back": True})


def test_twisted_client_follows_redirect(start_daemon, fleet, observer, tx):
    first, second = start_daemon(), start_daemon()
    driver = tx(first.port, fleet, "mover")
    driver.event("login", count=1, port=first.port)
    with Client(port=first.port, token=observer, device_id="ops") as ops:
        assert ops.send_to_server({"command": "redirect", "deviceId": "mover",
                                   "server": "127.0.0.1", "port": second.port}) == Status.SUCCESS
    driver.event("login", count=2, port=second.port)
    with Client(port=second.port, token=fleet, device_id="alice") as alice:
        assert alice.send("mover", {"moved": True}) == Status.SUCCESS
        driver.event("JSON_MESSAGE", sender="alice", payload={"moved": True})


def test_twisted_client_stops_on_an_invalid_token(start_daemon, tx):
    server = start_daemon()
    driver = tx(server.port, "not-a-token", "nobody")
    driver.event("refused", status=Status.INVALID_TOKEN, retrying=False)
    driver.event("gave up", status=Status.INVALID_TOKEN)
    assert driver.proc.wait(10) == 0
