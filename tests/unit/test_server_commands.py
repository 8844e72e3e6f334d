"""
Messages to "server" that run a command: the built-in ones, the admin ones
each needing its grant, and plug-in commands that answer, refuse or fail.
(Grants bounded by a token's prefix and reach: tests/unit/test_admin.py.)
"""

from __future__ import annotations

import json

import pytest

from hypertcp.protocol.commands import Command, Status
from hypertcp.server.hub import CommandError
from hypertcp.server.tokens import GRANTS


def admin(server):
    """A connection whose observer token holds every grant, no prefix, reach *."""
    return server.online("ops", "observer", "ops", grants=list(GRANTS))


def redirected(peer) -> list[dict]:
    return [json.loads(f.payload) for f in peer.frames() if f.command == Command.REDIRECT]


def test_ping_is_answered_with_pong_and_the_timestamp(server):
    peer = server.online("dev")
    assert peer.to_server({"command": "ping", "timestamp": 42}) == (
        Status.SUCCESS, [{"command": "pong", "timestamp": 42}])


def test_whoami_tells_a_client_its_id_and_role(server):
    peer = server.online("meter-9")
    assert peer.to_server({"command": "whoami"}) == (
        Status.SUCCESS, [{"command": "whoami", "deviceId": "meter-9", "role": "device"}])


@pytest.mark.parametrize("command, grant", [
    ({"command": "stats"}, "stats"),
    ({"command": "kick", "deviceId": "victim"}, "kick"),
    ({"command": "redirect", "deviceId": "victim", "server": "127.0.0.1", "port": 9999},
     "redirect"),
    ({"command": "drain", "server": "127.0.0.1", "port": 9999}, "drain"),
    ({"command": "undrain"}, "drain"),
], ids=lambda c: c["command"] if isinstance(c, dict) else c)
@pytest.mark.parametrize("role", ["device", "fleet", "observer"])
def test_admin_commands_are_refused_without_their_grant(server, log, command, grant, role):
    victim = server.online("victim")
    others = [g for g in GRANTS if g != grant] if role != "device" else []
    peer = server.online("someone", role, None if role == "device" else "someone",
                         **({"grants": others} if others else {}))
    assert peer.to_server(command) == (Status.NOT_ALLOWED, [])
    assert not peer.closing and not victim.closing
    assert victim.frames() == []
    assert server.hub.draining is None
    assert f"{command['command']} needs a token granted {grant!r}" in log


def test_stats_counts_sessions_devices_observers_and_deliveries(server):
    ops = admin(server)
    a = server.online("a")
    server.online("b")
    secret = server.token("twin")
    assert server.connect().login(secret) == server.connect().login(secret) == Status.SUCCESS
    assert a.answer(a.message("b", {})) == Status.SUCCESS
    server.clock.advance(0)
    ops.frames()
    assert ops.to_server({"command": "stats"}) == (Status.SUCCESS, [{
        "command": "stats", "sessions": 5, "devices": 4, "observers": 1, "delivered": 1,
        "draining": False}])


def test_kick_closes_every_connection_of_the_device(server, log):
    ops = admin(server)
    secret = server.token("victim")
    victims = [server.connect(), server.connect()]
    for victim in victims:
        assert victim.login(secret) == Status.SUCCESS
    bystander = server.online("bystander")
    assert ops.to_server({"command": "kick", "deviceId": "victim"}) == (
        Status.SUCCESS, [{"command": "kicked", "sessions": 2}])
    assert all(victim.closing for victim in victims)
    assert not bystander.closing
    assert log.count("closing: kicked by an operator") == 2


@pytest.mark.parametrize("command, status", [
    ({"command": "kick", "deviceId": "nobody"}, Status.DEVICE_NOT_IN_NETWORK),
    ({"command": "kick"}, Status.ILLEGAL_COMMAND_BODY),
    ({"command": "kick", "deviceId": 7}, Status.ILLEGAL_COMMAND_BODY),
    ({"command": "redirect", "deviceId": "nobody", "server": "h", "port": 1},
     Status.DEVICE_NOT_IN_NETWORK),
    ({"command": "redirect", "port": 1}, Status.ILLEGAL_COMMAND_BODY),
    ({"command": "redirect", "server": "h", "port": "1"}, Status.ILLEGAL_COMMAND_BODY),
    ({"command": "redirect", "server": "h", "port": 0}, Status.ILLEGAL_COMMAND_BODY),
    ({"command": "redirect", "server": "h", "port": 65536}, Status.ILLEGAL_COMMAND_BODY),
    ({"command": "redirect", "server": "h", "port": 1, "deviceId": 5}, Status.ILLEGAL_COMMAND_BODY),
    ({"command": "drain", "server": "h"}, Status.ILLEGAL_COMMAND_BODY),
], ids=["kick-nobody", "kick-no-id", "kick-id-number", "redirect-nobody", "redirect-no-server",
        "redirect-port-string", "redirect-port-0", "redirect-port-65536", "redirect-id-number",
        "drain-no-port"])
def test_bad_admin_commands_are_refused_with_a_status(server, command, status):
    ops = admin(server)
    other = server.online("other")
    assert ops.to_server(command) == (status, [])
    assert not other.closing and redirected(other) == []
    assert server.hub.draining is None


def test_redirect_sends_one_device_elsewhere_and_closes_a_second_later(server, log):
    ops = admin(server)
    mover, stay = server.online("mover"), server.online("stay")
    assert ops.to_server({"command": "redirect", "deviceId": "mover", "server": "127.0.0.1",
                          "port": 9999}) == (Status.SUCCESS, [{"command": "redirected", "sessions": 1}])
    assert redirected(mover) == [{"server": "127.0.0.1", "port": 9999}], "tls only when true"
    assert redirected(stay) == []
    server.clock.advance(0.9)
    assert not mover.closing
    server.clock.advance(0.1)
    assert mover.closing and not stay.closing
    server.reap()
    assert "disconnected: redirected to 127.0.0.1:9999" in log


def test_redirect_without_a_device_sends_everyone_with_tls(server):
    ops = admin(server)
    peers = [server.online(f"d{i}") for i in range(3)]
    status, [reply] = ops.to_server({"command": "redirect", "server": "node.example",
                                     "port": 8443, "tls": True})
    assert (status, reply) == (Status.SUCCESS, {"command": "redirected", "sessions": 4})
    for peer in peers:
        assert redirected(peer) == [{"server": "node.example", "port": 8443, "tls": True}]


def test_a_peer_is_redirected_once(server):
    ops = admin(server)
    mover = server.online("mover")
    for _ in range(2):
        ops.to_server({"command": "redirect", "deviceId": "mover", "server": "h", "port": 1})
    assert len(redirected(mover)) == 1


def test_drain_redirects_everyone_but_the_asker_and_marks_the_node(server):
    ops = admin(server)
    peers = [server.online(f"d{i}") for i in range(3)]
    assert ops.to_server({"command": "drain", "server": "10.0.0.2", "port": 8080}) == (
        Status.SUCCESS, [{"command": "drained", "sessions": 3}])
    for peer in peers:
        assert redirected(peer) == [{"server": "10.0.0.2", "port": 8080}]
    assert redirected(ops) == []
    assert server.hub.draining == ("10.0.0.2", 8080, False)
    status, [stats] = ops.to_server({"command": "stats"})
    assert stats["draining"] is True
    assert ops.to_server({"command": "undrain"}) == (Status.SUCCESS, [{"command": "undrained"}])
    assert server.hub.draining is None
    status, [stats] = ops.to_server({"command": "stats"})
    assert stats["draining"] is False


def test_a_command_name_nobody_registered_is_telemetry(server):
    ops = admin(server)
    server.clock.advance(0)
    peer = server.online("dev")
    ops.frames()
    assert peer.to_server({"command": "reboot"}) == (Status.SUCCESS, [])
    assert ops.delivered() == [(Command.JSON_MESSAGE, {"from": "dev", "to": "server",
                                                       "payload": {"command": "reboot"}})]


def test_a_plugin_command_answers_or_refuses(server):
    def echo(hub, sender, payload):
        return payload

    def refuse(hub, sender, payload):
        raise CommandError(Status.QUOTA_LIMIT, "not now")

    server.hub.register_command("echo", echo)
    server.hub.register_command("refuse", refuse)
    peer = server.online("dev")
    assert peer.to_server({"command": "echo", "v": 3}) == (
        Status.SUCCESS, [{"command": "echo", "v": 3}])
    assert peer.to_server({"command": "refuse"}) == (Status.QUOTA_LIMIT, [])


def test_a_failing_command_is_a_server_exception_and_the_connection_lives(server, log):
    def explode(hub, sender, payload):
        raise RuntimeError("explode: a handler bug, on purpose")

    server.hub.register_command("explode", explode)
    peer = server.online("dev")
    assert peer.to_server({"command": "explode"}) == (Status.SERVER_EXCEPTION, [])
    assert not peer.closing
    assert peer.ping() == Status.SUCCESS
    assert server.factory.counters["server_exception"] == 1
    assert "routing failed" in log
    assert any("explode: a handler bug" in str(e.get("log_failure", "")) for e in log.events)
