"""
Broadcasts spend a budget of delivered bytes (issue 15, item 10): per token,
whatever number of connections share it, and for the whole server, so a
few senders cannot flood every reader until the slow-reader cap drops them.
"""

from __future__ import annotations

from dataclasses import replace

from hypertcp.protocol.commands import Command, Status
from hypertcp.server.limits import Limits
from tests.inprocess import Server


def broadcast(peer, payload: dict) -> int:
    return peer.answer(peer.send_json(Command.BROADCAST, {"payload": payload}))


def readers(server: Server, count: int) -> list:
    fleet = server.token("readers", "fleet")
    out = []
    for i in range(count):
        peer = server.connect()
        assert peer.login(fleet, f"reader-{i}") == Status.SUCCESS
        out.append(peer)
    return out


def test_connections_sharing_a_token_share_its_broadcast_budget(tmp_path):
    server = Server(tmp_path, rate_limit=0, broadcast_rate=20_000, broadcast_rate_total=0)
    audience = readers(server, 20)
    secret = server.token("loud", "fleet")
    senders = [server.connect() for _ in range(5)]
    for i, sender in enumerate(senders):
        assert sender.login(secret, f"loud-{i}") == Status.SUCCESS
    pad = "x" * 900  # about 1 KB to each of 24 others: about 24 KB a broadcast
    statuses = [broadcast(sender, {"pad": pad}) for _ in range(2) for sender in senders]
    assert statuses[0] == Status.SUCCESS, "a broadcast larger than the budget passes once"
    assert set(statuses[1:]) == {Status.QUOTA_LIMIT}, "then the whole token waits"
    delivered = sum(len(peer.delivered()) for peer in audience)
    assert delivered == 20
    # The budget refills at its rate: 20 KB/s repays the first one's overdraft
    # of about 3.5 KB in 0.2 s; the next leaves a debt of about 22 KB (1.1 s).
    server.clock.advance(0.2)
    assert broadcast(senders[3], {"pad": pad}) == Status.SUCCESS
    server.clock.advance(1.0)
    assert broadcast(senders[3], {"pad": pad}) == Status.QUOTA_LIMIT
    server.clock.advance(0.2)
    assert broadcast(senders[3], {"pad": pad}) == Status.SUCCESS
    other = server.online("quiet", "fleet", "quiet-1")
    assert broadcast(other, {"hello": 1}) == Status.SUCCESS, "another token has its own"


def test_the_budget_counts_bytes_delivered_not_frames(tmp_path):
    server = Server(tmp_path, rate_limit=0, broadcast_rate=100_000, broadcast_rate_total=0)
    readers(server, 10)
    small = server.online("small", "fleet", "small-1")
    big = server.online("big", "fleet", "big-1")
    small_sent = sum(broadcast(small, {"n": i}) == Status.SUCCESS for i in range(200))
    big_sent = sum(broadcast(big, {"pad": "x" * 5000}) == Status.SUCCESS for _ in range(200))
    assert small_sent > 100 and big_sent < 5


def test_the_server_wide_budget_holds_across_tokens(tmp_path):
    server = Server(tmp_path, rate_limit=0, broadcast_rate=0, broadcast_rate_total=30_000)
    readers(server, 20)
    loud = [server.online(f"loud-{i}", "fleet", f"loud-{i}") for i in range(5)]
    pad = "x" * 900
    statuses = [broadcast(peer, {"pad": pad}) for peer in loud]
    assert statuses[:2] == [Status.SUCCESS, Status.SUCCESS]
    assert statuses[2:] == [Status.QUOTA_LIMIT] * 3


def test_messages_to_one_device_are_not_counted(tmp_path):
    server = Server(tmp_path, rate_limit=0, broadcast_rate=1_000, broadcast_rate_total=1_000)
    target = server.online("target")
    sender = server.online("sender")
    for i in range(50):
        assert sender.answer(sender.message("target", {"pad": "x" * 500})) == Status.SUCCESS
    assert len(target.delivered()) == 50


def test_broadcast_budgets_are_on_by_default():
    assert Limits().broadcast_rate > 0 and Limits().broadcast_rate_total >= Limits().broadcast_rate


def test_limits_reloaded_on_sighup_apply_to_the_budget(tmp_path):
    server = Server(tmp_path, rate_limit=0)
    readers(server, 5)
    loud = server.online("loud", "fleet", "loud-1")
    assert broadcast(loud, {"n": 1}) == Status.SUCCESS
    server.factory.set_limits(replace(server.limits, broadcast_rate=1))
    assert broadcast(loud, {"n": 2}) == Status.SUCCESS, "one, then the debt"
    assert broadcast(loud, {"n": 3}) == Status.QUOTA_LIMIT
