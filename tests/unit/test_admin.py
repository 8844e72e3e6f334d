"""
Admin powers are granted, not implied (issue 15, item 5): redirect, kick,
drain, undrain and stats need an explicit grant on the token, are bounded
by its prefix and reach, and send sessions only where the server allows.
"""

from __future__ import annotations

import pytest

from hypertcp.protocol.commands import Status
from hypertcp.server import commands
from hypertcp.server.tokens import GRANTS, TokenStore
from tests.inprocess import Peer, Server

EVERY = {
    "redirect": {"command": "redirect", "deviceId": "dev1", "server": "192.0.2.66", "port": 8080},
    "kick": {"command": "kick", "deviceId": "dev1"},
    "drain": {"command": "drain", "server": "192.0.2.66", "port": 8080},
    "undrain": {"command": "undrain"},
    "stats": {"command": "stats"},
}


def run(peer: Peer, payload: dict) -> int:
    return peer.answer(peer.message("server", payload))


def test_an_observer_without_grants_runs_no_admin_command(tmp_path):
    server = Server(tmp_path)
    dev1 = server.online("dev1")
    observer = server.online("watch", "observer")
    for name, payload in EVERY.items():
        assert run(observer, payload) == Status.NOT_ALLOWED, name
    assert not dev1.closing and server.hub.draining is None
    assert not [f for f in dev1.frames() if f.command == 41], "no REDIRECT reached dev1"


def test_a_narrow_observer_cannot_redirect_or_kick_a_device_outside_its_prefix(tmp_path):
    # The report's case: --prefix mon- --reach server sent dev1 elsewhere.
    server = Server(tmp_path)
    dev1 = server.online("dev1")
    narrow = server.online("mon", "observer", "mon-1", prefix="mon-", reach=["server"],
                           grants=["redirect", "kick"])
    assert run(narrow, EVERY["redirect"]) == Status.NOT_ALLOWED
    assert run(narrow, EVERY["kick"]) == Status.NOT_ALLOWED
    assert not dev1.closing and "dev1" in server.hub.devices
    other = server.online("mon-2-token", "fleet", "mon-2")
    assert run(narrow, {"command": "kick", "deviceId": "mon-2"}) == Status.NOT_ALLOWED, \
        "mon-2 is within the prefix but outside the reach"
    wide = server.online("ops", "observer", "mon-ops", prefix="mon-", reach=["server", "mon-*"],
                         grants=["kick"])
    assert run(wide, {"command": "kick", "deviceId": "mon-2"}) == Status.SUCCESS
    assert other.closing


def test_commands_on_every_session_need_an_unbounded_token(tmp_path):
    server = Server(tmp_path)
    server.online("dev1")
    bounded = server.online("ops", "observer", "ops-1", prefix="ops-",
                            grants=["redirect", "drain"])
    assert run(bounded, {"command": "redirect", "server": "192.0.2.66", "port": 1}) \
        == Status.NOT_ALLOWED
    assert run(bounded, EVERY["drain"]) == Status.NOT_ALLOWED
    assert run(bounded, EVERY["undrain"]) == Status.NOT_ALLOWED
    admin = server.online("admin", "observer", grants=list(GRANTS))
    assert run(admin, EVERY["drain"]) == Status.SUCCESS
    assert server.hub.draining == ("192.0.2.66", 8080, False)
    assert run(admin, EVERY["undrain"]) == Status.SUCCESS
    assert server.hub.draining is None


def test_a_grant_allows_its_command_and_no_other(tmp_path):
    server = Server(tmp_path)
    dev1 = server.online("dev1")
    stats = server.online("balancer", "fleet", grants=["stats"])
    assert run(stats, EVERY["stats"]) == Status.SUCCESS
    [(_, reply)] = stats.delivered()
    assert reply["payload"]["command"] == "stats" and reply["payload"]["sessions"] == 2
    for name in ("redirect", "kick", "drain", "undrain"):
        assert run(stats, EVERY[name]) == Status.NOT_ALLOWED, name
    kicker = server.online("kicker", "fleet", grants=["kick"])
    assert run(kicker, EVERY["kick"]) == Status.SUCCESS
    assert dev1.closing


def test_redirect_targets_restrict_where_sessions_may_be_sent(tmp_path):
    server = Server(tmp_path)
    commands.install(server.hub, redirect_targets=[("10.0.0.2", 8080)])
    dev1 = server.online("dev1")
    admin = server.online("admin", "observer", grants=list(GRANTS))
    assert run(admin, EVERY["redirect"]) == Status.NOT_ALLOWED
    assert run(admin, EVERY["drain"]) == Status.NOT_ALLOWED
    assert server.hub.draining is None and "dev1" in server.hub.devices
    assert run(admin, {**EVERY["redirect"], "server": "10.0.0.2"}) == Status.SUCCESS
    assert [f for f in dev1.frames() if f.command == 41]


def test_grants_are_checked_when_a_token_is_made(tmp_path):
    store = TokenStore(tmp_path / "tokens.json")
    with pytest.raises(ValueError, match="grant"):
        store.add("x", "fleet", grants=["root"])
    with pytest.raises(ValueError, match="device"):
        store.add("dev", "device", grants=["kick"])
    store.add("balancer", "fleet", grants=["stats", "drain"])
    [record] = store.list()
    assert record.grants == ["stats", "drain"]
    assert TokenStore(store.path).list()[0].grants == ["stats", "drain"], "kept in the file"


def test_token_files_from_before_grants_load_with_none(tmp_path):
    path = tmp_path / "tokens.json"
    path.write_text('{"version": 1, "tokens": [{"name": "ops", "role": "observer", '
                    '"hash": "' + "ab" * 32 + '"}]}')
    assert TokenStore(path).list()[0].grants == []


def test_the_command_line_grants_and_lists_admin_commands(tmp_path, capsys):
    from hypertcp.cli.main import main

    path = str(tmp_path / "tokens.json")
    assert main(["token", "add", "balancer", "--role", "fleet", "--grant", "stats", "drain",
                 "--tokens", path]) == 0
    assert "It may run: stats, drain" in capsys.readouterr().out
    assert TokenStore(path).list()[0].grants == ["stats", "drain"]
    assert main(["token", "list", "--tokens", path]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split()[4] == "GRANTS" and row.split()[4] == "stats,drain"
    assert main(["token", "add", "lamp", "--grant", "kick", "--tokens", path]) == 1
    assert "device token cannot be granted" in capsys.readouterr().err
