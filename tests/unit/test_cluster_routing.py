"""
Messages between nodes, in-process: a real L{ClusterNode} and its server
core on a Clock, over the dict that stands in for Redis in
tests/unit/test_balancer_registry.py.  What one reactor turn publishes, how
its senders are answered, and how a batch from another node is delivered.
tests/test_cluster.py proves the same between real processes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.defer import Deferred

from hypertcp.cluster import envelopes as env
from hypertcp.cluster.node import ClusterNode, Published
from hypertcp.protocol.bodies import delivery_body
from hypertcp.protocol.commands import Status
from tests.inprocess import Server, captured_log
from tests.unit.test_balancer_registry import KEYS, DictRedis


class Node:
    """This node, with a device "lamp" online on the node "other"."""

    def __init__(self, tmp_path: Path) -> None:
        self.server = Server(tmp_path, rate_limit=0)
        self.redis = DictRedis()
        self.node = ClusterNode(self.server.hub, "here", lambda: None, KEYS, self.server.clock,
                                writes=self.server.factory.batch)
        self.node.start(self.redis)
        self.node.bus_up()
        self.redis.register("other", "192.0.2.2:8080")
        self.node.directory.add("other", "lamp", "192.0.2.50:4000", "lamp-owner")
        self.redis.published.clear()

    def turn(self) -> None:
        self.server.clock.advance(0)

    def to_other(self) -> list[env.Item]:
        """The items published on the other node's inbox since the last look."""
        items = [item for channel, data in self.redis.published
                 if channel == KEYS.inbox("other") for item in env.decode_batch(data)[1]]
        self.redis.published.clear()
        return items


@pytest.fixture
def here(tmp_path: Path) -> Node:
    return Node(tmp_path)


def test_a_turns_messages_to_another_node_go_in_one_publish_and_are_answered_after_it(here):
    senders = [here.server.online(f"s{i}") for i in range(3)]
    here.turn()  # their presence goes out
    here.redis.published.clear()
    sent = [(peer, peer.message("lamp", {"n": i})) for i, peer in enumerate(senders)]
    assert [peer.answer(msg_id) for peer, msg_id in sent] == [None] * 3, \
        "not before the batch is published"
    here.turn()
    assert [channel for channel, _ in here.redis.published] == [KEYS.inbox("other")]
    items = here.to_other()
    assert [(item.kind, item.target) for item in items] == [(env.DELIVER, "lamp")] * 3
    assert [item.body for item in items] == [delivery_body(f"s{i}", {"n": i}) for i in range(3)]
    assert [peer.answer(msg_id) for peer, msg_id in sent] == [Status.SUCCESS] * 3


def test_when_no_node_listens_there_every_sender_of_the_batch_is_answered_7(here):
    here.redis.listening.discard(KEYS.inbox("other"))  # it died; its registration lingers
    senders = [here.server.online(f"s{i}") for i in range(2)]
    sent = [(peer, peer.message("lamp", {})) for peer in senders]
    here.turn()
    assert [peer.answer(msg_id) for peer, msg_id in sent] == [Status.DEVICE_NOT_IN_NETWORK] * 2


def test_while_redis_is_away_a_message_elsewhere_is_answered_19_at_once(here):
    here.node.bus_down()
    sender = here.server.online("s")
    assert sender.answer(sender.message("lamp", {})) == Status.SERVER_EXCEPTION
    assert here.redis.published == []


def test_a_published_batch_answers_every_caller_once_even_after_one_fails():
    published = Published()
    got: list = []

    def broken(status: int) -> None:
        raise RuntimeError("one caller's bug")

    published.addCallback(got.append)
    published.addCallback(broken)
    published.addCallback(lambda status, tag: got.append((status, tag)), "last")
    with captured_log() as log:
        published.fire(Status.SUCCESS)
    assert got == [Status.SUCCESS, (Status.SUCCESS, "last")]
    assert "answering a published batch" in log
    published.addCallback(got.append)  # after the answer: at once, as a Deferred would
    assert got[-1] == Status.SUCCESS


def test_a_batch_from_another_node_reaches_each_device_here_in_one_write(here):
    lamp = here.server.online("lamp2")
    lamp.transport.writes = 0
    batch = env.encode_batch("other", [
        env.encode_item(env.DELIVER, 0, "lamp2", delivery_body("far", {"n": n}))
        for n in range(5)])
    here.node.received(KEYS.inbox("here").encode(), batch)
    assert [body["payload"]["n"] for _, body in lamp.delivered()] == list(range(5))
    assert lamp.transport.writes == 1


def test_presence_heard_while_a_snapshot_was_on_its_way_is_not_undone_by_it(here):
    # A node's view of another's connections is replaced now and then by the
    # list in Redis (HGETALL), while connections come and go over pub/sub,
    # another connection to Redis: the list can be read before a device's
    # HSET and arrive after its PRESENCE.  That stale list must not make the
    # device look gone (observers told it left, messages to it answered 7).
    watcher = here.server.online("ops", role="observer")
    here.node._heartbeat()  # it learns of the other node from the registry
    assert "other" in here.node.nodes
    watcher.delivered()  # what it was told so far
    snapshots: list[tuple[Deferred, list]] = []
    answer = here.redis.call

    def slow_hgetall(command, *args):
        if command == "HGETALL":
            d: Deferred = Deferred()
            snapshots.append((d, answer(command, *args).result))  # Redis's list when it was read
            return d
        return answer(command, *args)

    here.redis.call = slow_hgetall
    here.node._sync("other")
    presence = env.encode_item(env.PRESENCE, 1, "far\x00192.0.2.60:4000\x00far-owner",
                               b'{"event":"deviceConnected","deviceId":"far"}')
    here.node.received(KEYS.everyone.encode(), env.encode_batch("other", [presence]))
    assert here.node.directory.holds("far")
    [(d, stale)] = snapshots
    d.callback(stale)  # read before far's HSET
    assert here.node.directory.holds("far"), "the snapshot read earlier undid what came since"
    events = [(body.get("payload") or body).get("event") for _, body in watcher.delivered()]
    assert events == ["deviceConnected"], "far came once and did not leave"
    # Nor does what was already in the snapshot come twice, nor a change after it get lost.
    here.node._sync("other")
    gone = env.encode_item(env.PRESENCE, 0, "far\x00192.0.2.60:4000\x00far-owner",
                           b'{"event":"deviceDisconnected","deviceId":"far"}')
    here.node.received(KEYS.everyone.encode(), env.encode_batch("other", [gone]))
    d, _ = snapshots[1]
    d.callback([b"far\x00192.0.2.60:4000", b"far-owner"])  # read before far's HDEL
    assert not here.node.directory.holds("far")
