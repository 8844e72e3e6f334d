"""
The manhole's helpers on the in-process server, typed into the real conch
console over a StringTransport: every change is audited under the
operator's name and key, secrets stay out of the log, and payloads the
contract forbids are refused.
"""

from __future__ import annotations

import pytest
from twisted.conch.insults.insults import ServerProtocol
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent, globalLogPublisher

from hypertcp.app.audit import AuditedManhole
from hypertcp.app.manhole import Rates, namespace
from tests.inprocess import Server

OPERATOR = "alice (SHA256:abc)"


@pytest.fixture
def logged():
    lines: list[str] = []

    def observer(event: dict) -> None:
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    yield lines
    globalLogPublisher.removeObserver(observer)


@pytest.fixture
def server(tmp_path):
    return Server(tmp_path)


def console(server: Server) -> ServerProtocol:
    names = namespace(server.factory, Rates(server.factory))
    terminal = ServerProtocol(AuditedManhole, names, OPERATOR)
    terminal.makeConnection(StringTransport())
    return terminal


def type_line(terminal: ServerProtocol, line: str) -> str:
    terminal.transport.clear()
    terminal.dataReceived(line.encode() + b"\r")
    return terminal.transport.value().decode("utf-8", "replace")


def test_a_change_is_audited_with_the_operator(server, logged):
    lamp = server.online("lamp")
    terminal = console(server)
    type_line(terminal, 'kick("lamp")')
    assert lamp.closing
    assert f'manhole audit: {OPERATOR} typed: kick("lamp")' in logged
    assert f"manhole audit: {OPERATOR}: kick('lamp') -> 1" in logged


def test_a_new_tokens_secret_is_not_logged(server, logged):
    terminal = console(server)
    output = type_line(terminal, 'add_token("sensor-9")')
    secret = [r for r in server.tokens.list() if r.name == "sensor-9"]
    assert secret, output
    audit = [line for line in logged if "add_token('sensor-9')" in line]
    assert audit == [f"manhole audit: {OPERATOR}: add_token('sensor-9') -> (not logged)"]
    printed = [word.strip("'") for word in output.split() if len(word) > 30]
    assert printed and not any(p in " ".join(logged) for p in printed)


@pytest.mark.parametrize("call", ['send("lamp", [1, 2])', 'broadcast("text")',
                                  'send("lamp", "on")'])
def test_payloads_that_are_not_objects_are_refused(server, logged, call):
    lamp = server.online("lamp")
    terminal = console(server)
    output = type_line(terminal, call)
    assert "TypeError" in output and "must be a dict (a JSON object)" in output
    assert lamp.delivered() == []
    assert any("refused: the payload must be a dict" in line for line in logged)


def test_an_object_payload_is_sent(server):
    lamp = server.online("lamp")
    names = namespace(server.factory, Rates(server.factory))
    assert names["send"]("lamp", {"on": True}) == "SUCCESS"
    assert [body for _, body in lamp.delivered()] == [{"from": "server", "payload": {"on": True}}]
