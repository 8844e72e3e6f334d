"""
Every id has one owner (issue 15, item 4): the ids of device tokens are
theirs alone, and an id online under one token cannot be joined from
another, so no token can listen in on, or speak as, a device it does not
hold.
"""

from __future__ import annotations

from hypertcp.protocol.commands import Status
from hypertcp.server.tokens import TokenStore
from tests.inprocess import Server


def test_a_fleet_token_cannot_take_the_id_of_an_online_device(tmp_path):
    server = Server(tmp_path)
    genuine = server.online("dev1")
    sender = server.online("sender")
    thief = server.connect()
    assert thief.login(server.token("default", "fleet"), "dev1") == Status.NOT_ALLOWED
    assert server.hub.devices["dev1"] == [genuine.session]
    sender.message("dev1", {"secret": 1})
    assert [body["payload"] for _, body in genuine.delivered()] == [{"secret": 1}]
    assert thief.delivered() == []


def test_a_fleet_or_observer_token_cannot_take_the_id_of_an_offline_device(tmp_path):
    server = Server(tmp_path)
    server.token("dev1")  # a device token: its id is reserved, online or not
    for role in ("fleet", "observer"):
        peer = server.connect()
        assert peer.login(server.token(f"any-{role}", role), "dev1") == Status.NOT_ALLOWED
        assert not peer.closing, "the connection may log in again as another id"
    assert "dev1" not in server.hub.devices


def test_connections_holding_the_same_token_share_an_id(tmp_path):
    # The contract: a device id may have several live connections, and a
    # message to it reaches all of them.
    server = Server(tmp_path)
    secret = server.token("dev1")
    first, second = server.connect(), server.connect()
    assert first.login(secret) == Status.SUCCESS and second.login(secret) == Status.SUCCESS
    fleet = server.token("fleet", "fleet")
    a, b = server.connect(), server.connect()
    assert a.login(fleet, "pump") == Status.SUCCESS and b.login(fleet, "pump") == Status.SUCCESS
    sender = server.online("sender")
    for target in ("dev1", "pump"):
        sender.message(target, {"to": target})
    for peer, target in ((first, "dev1"), (second, "dev1"), (a, "pump"), (b, "pump")):
        assert [body["payload"] for _, body in peer.delivered()] == [{"to": target}]


def test_a_device_with_a_reissued_token_gets_its_own_id_back(tmp_path):
    # Revoked and reissued (as `hypertcp token revoke` then `add` do), the
    # device logs in with the new token before the server has reread the
    # file: the old session is closed, and the id is the device's again.
    server = Server(tmp_path)
    old = server.online("dev1")
    operator = TokenStore(server.tokens.path)
    operator.revoke("dev1")
    fresh = server.connect()
    assert fresh.login(operator.add("dev1")) == Status.SUCCESS
    assert old.closing
    assert server.hub.devices["dev1"] == [fresh.session]


def test_an_id_online_under_one_token_is_refused_to_another_until_it_leaves(tmp_path):
    server = Server(tmp_path)
    first = server.connect()
    assert first.login(server.token("fleet-a", "fleet"), "pump") == Status.SUCCESS
    other = server.token("fleet-b", "fleet")
    second = server.connect()
    assert second.login(other, "pump") == Status.NOT_ALLOWED
    assert server.hub.devices["pump"] == [first.session]
    first.lose()
    third = server.connect()
    assert third.login(other, "pump") == Status.SUCCESS


def test_a_device_token_added_later_closes_other_tokens_sessions_on_its_id(tmp_path):
    server = Server(tmp_path)
    squatter = server.connect()
    assert squatter.login(server.token("fleet", "fleet"), "dev2") == Status.SUCCESS
    TokenStore(server.tokens.path).add("dev2")  # as `hypertcp token add` does
    server.factory.reload_tokens()
    assert squatter.closing
    assert "dev2" not in server.hub.devices
