"""
The token file changing under a running server: the factory re-reads it
(the daemon on a timer, and on a login with an unknown token) and live
sessions follow their token's record at once.
"""

from __future__ import annotations

import json
from pathlib import Path

from hypertcp.protocol.commands import Status
from hypertcp.server.tokens import TokenStore


def edit(path: Path, name: str, **changes) -> None:
    """Change token C{name}'s record in the file, as an operator's editor would."""
    data = json.loads(path.read_text())
    for record in data["tokens"]:
        if record["name"] == name:
            record.update(changes)
    path.write_text(json.dumps(data))


def test_a_revoked_token_closes_its_sessions(server, log):
    secret = server.token("doomed")
    doomed = [server.connect(), server.connect()]
    for peer in doomed:
        assert peer.login(secret) == Status.SUCCESS
    other = server.online("other")
    assert TokenStore(server.tokens.path).revoke("doomed") == 1  # as `hypertcp token revoke`
    server.factory.reload_tokens()
    assert all(peer.closing for peer in doomed)
    assert not other.closing
    assert log.count("closing: token doomed revoked") == 2
    assert "reloaded" in log
    again = server.connect()
    assert again.login(secret) == Status.INVALID_TOKEN


def test_a_narrowed_reach_applies_to_live_sessions_at_once(server):
    roamer, _ = server.online("roamer"), server.online("other")
    assert roamer.answer(roamer.message("other", {})) == Status.SUCCESS
    edit(server.tokens.path, "roamer", reach=["server"])
    server.factory.reload_tokens()
    assert roamer.answer(roamer.message("other", {})) == Status.NOT_ALLOWED
    assert roamer.answer(roamer.message("server", {})) == Status.SUCCESS
    assert not roamer.closing, "still connected"
    assert roamer.session.token.reach == ["server"]


def test_a_changed_role_closes_the_session(server, log):
    peer = server.online("shifty", "fleet", "shifty-1")
    edit(server.tokens.path, "shifty", role="observer")
    server.factory.reload_tokens()
    assert peer.closing
    assert "closing: token shifty changed: log in again" in log


def test_a_narrowed_prefix_closes_a_session_whose_id_it_no_longer_allows(server):
    inside = server.online("farm", "fleet", "farm-1")
    secret = server.token("city", "fleet")
    outside = server.connect()
    assert outside.login(secret, "town-1") == Status.SUCCESS
    edit(server.tokens.path, "city", prefix="city-")
    edit(server.tokens.path, "farm", prefix="farm-")
    server.factory.reload_tokens()
    assert outside.closing and not inside.closing


def test_a_new_token_works_without_a_restart(server):
    secret = TokenStore(server.tokens.path).add("newcomer")  # another process writes the file
    peer = server.connect()
    assert peer.login(secret) == Status.SUCCESS, "an unknown token makes the server look again"


def test_an_unchanged_file_touches_no_session(server, log):
    peer = server.online("steady")
    server.factory.reload_tokens()
    assert not peer.closing
    assert "reloaded" not in log


def test_a_vanished_token_file_keeps_the_tokens_in_force(server, log):
    secret = server.token("survivor")
    peer = server.connect()
    assert peer.login(secret) == Status.SUCCESS
    server.tokens.path.unlink()
    server.factory.reload_tokens()
    assert not peer.closing
    assert "has gone; the tokens loaded before stay in force" in log
    assert server.connect().login(secret) == Status.SUCCESS


def test_an_unreadable_token_file_keeps_the_old_tokens(server, log):
    secret = server.token("survivor")
    peer = server.connect()
    assert peer.login(secret) == Status.SUCCESS
    server.tokens.path.write_text("{not json")
    server.factory.reload_tokens()
    assert not peer.closing
    assert "unreadable, keeping the old tokens" in log
    assert server.connect().login(secret) == Status.SUCCESS
    server.tokens.path.write_text('{"version": 1}')
    server.factory.reload_tokens()
    assert "not a HyperTCP token file" in log
    assert server.connect().login(secret) == Status.SUCCESS
