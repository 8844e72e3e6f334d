"""
The manhole's helpers in-process (hypertcp.app.manhole.namespace): what an
operator's calls do to a real server core.  The SSH side, with a real ssh
client, is tests/test_manhole.py's.
"""

from __future__ import annotations

import json

from hypertcp.app.manhole import Rates, namespace
from hypertcp.protocol.commands import Command, Status
from tests.inprocess import Server


def helpers(server: Server, balancer=None) -> dict:
    return namespace(server.factory, Rates(server.factory), balancer)


def test_sessions_lists_each_connection(server, capsys):
    fleet = server.token("fleet", "fleet")
    for name in ("dev-a", "dev-b"):
        assert server.connect().login(fleet, name) == Status.SUCCESS
    server.connect()
    helpers(server)["sessions"]()
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["DEVICE", "ADDRESS", "ROLE", "CONNECTED", "AGE", "IN", "OUT",
                              "BUFFERED"]
    rows = {line.split()[0]: line.split() for line in out[1:-1]}
    assert set(rows) == {"dev-a", "dev-b", "(not"}
    assert rows["dev-a"][2] == "fleet:fleet"
    assert rows["dev-a"][-3:] == ["1", "0", "0"], "the LOGIN counted in"
    assert out[-1] == "3 connections, 2 devices online"


def test_kick_send_broadcast_redirect_and_drain(server):
    ns = helpers(server)
    a, b, c = (server.online(name) for name in ("dev-a", "dev-b", "dev-c"))
    assert ns["kick"]("dev-a") == 1 and a.closing
    server.reap()
    assert ns["send"]("dev-b", {"led": "on"}) == "SUCCESS"
    assert ns["send"]("nobody", {}) == "DEVICE_NOT_IN_NETWORK"
    assert b.delivered() == [(Command.JSON_MESSAGE, {"from": "server", "payload": {"led": "on"}})]
    assert ns["broadcast"]({"notice": "maintenance"}) == 2
    for peer in (b, c):
        assert peer.delivered() == [(Command.BROADCAST, {"from": "server",
                                                         "payload": {"notice": "maintenance"}})]
    assert ns["redirect"]("dev-c", "127.0.0.1", 9000) == 1
    [frame] = c.frames()
    assert (frame.command, json.loads(frame.payload)) == (
        Command.REDIRECT, {"server": "127.0.0.1", "port": 9000})
    assert ns["drain"]("10.0.0.2", 8080) == 1, "dev-c, redirected, has left the hub already"
    assert server.hub.draining == ("10.0.0.2", 8080, False)


def test_add_token_works_at_once_and_revoke_token_closes_its_sessions(server):
    ns = helpers(server)
    secret = ns["add_token"]("dev-z")
    z = server.connect()
    assert z.login(secret) == Status.SUCCESS
    assert ns["revoke_token"]("dev-z") == 1
    assert z.closing, "revoking a token closes its sessions at once"


def test_counters_and_rates(server):
    rates = Rates(server.factory)
    ns = namespace(server.factory, rates)
    a = server.online("a")
    server.online("b")
    rates.sample()
    for n in range(10):
        a.message("b", {"n": n})
    server.clock.advance(2)
    rates.sample()
    counters = ns["counters"]()
    assert (counters["connections"], counters["devices"]) == (2, 2)
    assert counters["received_per_s"] == 5.0 and counters["delivered_per_s"] == 5.0
    assert counters["connections"] == server.factory.counters["connections"]


def test_helpers_lists_each_helper(server, capsys):
    helpers(server)["helpers"]()
    out = capsys.readouterr().out
    assert "kick(device_id): Close every connection of device_id; return how many." in out
    assert "backends" not in out, "the balancer's helpers only where there is a balancer"
