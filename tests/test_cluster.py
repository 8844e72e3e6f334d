"""
Several real `twistd hypertcp` nodes on one real redis-server behave as one
server: routing, acknowledgements, broadcasts, presence and commands across
nodes, and what happens when Redis or a node fails.
"""

from __future__ import annotations

import json
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import pytest

from hypertcp.client import Client, HyperTCPError
from hypertcp.protocol.commands import Command, Status
from tests.daemon import hypertcp
from tests.raw import Raw
from tests.redis_server import RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture
def fleet(token):
    return token("fleet", "--role", "fleet")


@pytest.fixture
def ops(token):
    return token("ops", "--role", "observer")


@pytest.fixture
def nodes(start_daemon, redis):
    """Factory: nodes(n, *args) -> n daemons joined through the test's Redis."""
    def start(n: int = 2, *args: str) -> list:
        return [start_daemon("--cluster", redis.url, "--set", f"cluster.node_id=n{i}",
                             "--set", "cluster.ttl=2", "--set", "cluster.refresh=0.3", *args)
                for i in range(n)]
    for_each = start
    return for_each


def joined(node, count: int, timeout: float = 10) -> None:
    node.wait_for(lambda: node.output.count("Redis at") and "is up" in node.output, timeout,
                  "the cluster bus up")


class Watcher:
    """An observer on one node, collecting the presence events it is sent."""

    def __init__(self, port: int, token: str, name: str = "watcher") -> None:
        self.client = Client("127.0.0.1", port, token, name, timeout=10).connect()
        self.events: list[dict] = []

    def wait(self, event: str, device: str, timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for payload in self.events:
                if payload.get("event") == event and payload.get("deviceId") == device:
                    self.events.remove(payload)
                    return payload
            left = deadline - time.monotonic()
            assert left > 0, f"no {event} for {device}; saw {self.events}"
            message = self.client.receive(left)
            if message is not None and message.sender == "server" and \
                    isinstance(message.payload, dict) and "event" in message.payload:
                self.events.append(message.payload)

    def close(self) -> None:
        self.client.close()


def online(port: int, token: str, name: str, watcher: Optional[Watcher] = None) -> Client:
    client = Client("127.0.0.1", port, token, name, timeout=10).connect()
    if watcher is not None:
        watcher.wait("deviceConnected", name)
    return client


def test_devices_on_two_nodes_talk_as_on_one(nodes, fleet, ops):
    one, two = nodes(2)
    for node in (one, two):
        joined(node, 2)
    watch_one, watch_two = Watcher(one.port, ops, "w1"), Watcher(two.port, ops, "w2")
    a = online(one.port, fleet, "dev-a", watch_two)
    b = online(two.port, fleet, "dev-b", watch_one)
    watch_one.wait("deviceConnected", "dev-a")
    watch_two.wait("deviceConnected", "dev-b")
    with a, b:
        assert a.send("dev-b", {"n": 1}) == Status.SUCCESS
        message = b.receive(10)
        assert (message.command, message.sender, message.payload) == (
            Command.JSON_MESSAGE, "dev-a", {"n": 1})
        assert b.send("dev-a", {"n": 2}) == Status.SUCCESS
        assert (a.receive(10).sender, a.receive(0) is None) == ("dev-b", True)
        assert a.send("nobody", {}) == Status.DEVICE_NOT_IN_NETWORK
        # A broadcast reaches every connection on every node once, not the sender.
        assert a.broadcast({"all": True}) == Status.SUCCESS
        got = b.receive(10)
        assert (got.command, got.sender, got.payload) == (Command.BROADCAST, "dev-a", {"all": True})
        for watcher in (watch_one, watch_two):
            seen = [m for m in iter(lambda: watcher.client.receive(1), None)
                    if m.command == Command.BROADCAST]
            assert [(m.sender, m.payload) for m in seen] == [("dev-a", {"all": True})]
        assert b.receive(0.5) is None and a.receive(0.5) is None
    watch_one.wait("deviceDisconnected", "dev-b")
    watch_two.wait("deviceDisconnected", "dev-a")
    watch_one.close()
    watch_two.close()


def test_an_observer_sees_the_whole_cluster_at_login(nodes, fleet, ops):
    one, two = nodes(2)
    for node in (one, two):
        joined(node, 2)
    # Each node has heard of every connection on the other before "late"
    # logs in: a node learns of the other's through the bus, a moment later.
    near = Watcher(two.port, ops, "near")
    far = Watcher(one.port, ops, "far")
    near.wait("deviceConnected", "far")
    a = online(one.port, fleet, "dev-a", near)
    b = online(two.port, fleet, "dev-b", far)
    with a, b:
        late = Watcher(two.port, ops, "late")
        names = ("dev-a", "dev-b", "near", "far")
        statuses = {late.wait("deviceStatus", name)["deviceId"] for name in names}
        assert statuses == set(names)
        late.close()
    far.close()
    near.close()


def test_acknowledged_delivery_across_nodes(nodes, fleet, ops):
    one, two = nodes(2, "--set", "limits.ack_timeout=1")
    watch = Watcher(one.port, ops)
    a = online(one.port, fleet, "dev-a")
    with a, Raw(two.port) as silent:
        assert silent.login_json(fleet, "silent") == Status.SUCCESS
        watch.wait("deviceConnected", "silent")
        b = online(two.port, fleet, "dev-b", watch)
        with b, ThreadPoolExecutor(1) as pool:
            # The receiver acknowledges as it reads, so the sender waits in another thread.
            answer = pool.submit(a.send, "dev-b", {"n": 1}, ack=True)
            assert b.receive(10).payload == {"n": 1}
            assert answer.result(10) == Status.SUCCESS
        # A receiver that never acknowledges: TIMEOUT, after the ack timeout.
        started = time.monotonic()
        assert a.send("silent", {"n": 2}, ack=True) == Status.TIMEOUT
        assert time.monotonic() - started < 8
        assert silent.message(ack=False) == {"from": "dev-a", "payload": {"n": 2}}
    watch.close()


def test_server_commands_act_on_the_whole_cluster(nodes, fleet, ops, token):
    one, two = nodes(2)
    watch = Watcher(one.port, ops)
    b = online(two.port, fleet, "dev-b", watch)
    granted = token("admin", "--role", "observer", "--grant", "stats", "kick")
    with Client("127.0.0.1", one.port, granted, "admin", timeout=10).connect() as admin:
        deadline = time.monotonic() + 10
        while True:  # node two is counted once node one has read the registry
            assert admin.send_to_server({"command": "stats"}) == Status.SUCCESS
            stats = next(m.payload for m in iter(lambda: admin.receive(5), None)
                         if m.payload.get("command") == "stats")
            if stats["cluster"]["nodes"] == 2 or time.monotonic() > deadline:
                break
        assert stats["cluster"]["nodes"] == 2
        assert stats["cluster"]["elsewhere"]["devices"] >= 1
        assert admin.send_to_server({"command": "kick", "deviceId": "dev-b"}) == Status.SUCCESS
    watch.wait("deviceDisconnected", "dev-b")
    with pytest.raises(ConnectionError):
        b.receive(10)
    watch.close()


def test_redis_going_away_and_back(nodes, redis, fleet, ops):
    one, two = nodes(2)
    watch = Watcher(one.port, ops)
    a = online(one.port, fleet, "dev-a")
    b = online(two.port, fleet, "dev-b", watch)
    local = online(one.port, fleet, "dev-local", watch)
    with a, b, local:
        redis.stop()
        one.wait_for_log("is unreachable")
        two.wait_for_log("is unreachable")
        # This node's own devices are served as before.
        assert a.send("dev-local", {"n": 1}) == Status.SUCCESS
        assert local.receive(10).payload == {"n": 1}
        # Across nodes the answer says the bus is down, at once, not a hang.
        started = time.monotonic()
        assert a.send("dev-b", {"n": 2}) == Status.SERVER_EXCEPTION
        assert time.monotonic() - started < 5
        redis.start()
        for node in (one, two):
            node.wait_for(lambda n=node: n.output.count("is up") >= 2, 20, "Redis back")
        deadline = time.monotonic() + 10
        while a.send("dev-b", {"n": 3}) != Status.SUCCESS:
            assert time.monotonic() < deadline, "cross-node sends never resumed"
            # Paced well under the rate limit: this polls, it must not flood.
            a.receive(0.1)
        assert b.receive(10).payload == {"n": 3}
    assert one.alive() and two.alive()
    watch.close()


def test_a_killed_nodes_devices_leave_within_the_ttl(nodes, fleet, ops):
    one, two = nodes(2)
    watch = Watcher(one.port, ops)
    a = online(one.port, fleet, "dev-a")
    b = online(two.port, fleet, "dev-b", watch)
    with a:
        two.proc.send_signal(signal.SIGKILL)
        two.proc.wait(10)
        killed = time.monotonic()
        watch.wait("deviceDisconnected", "dev-b", timeout=10)
        assert time.monotonic() - killed < 2 + 2  # the ttl, and a renewal to notice it
        started = time.monotonic()
        assert a.send("dev-b", {"n": 1}) == Status.DEVICE_NOT_IN_NETWORK
        assert time.monotonic() - started < 2
    b.close()
    watch.close()


def test_a_restarted_node_is_routable_again(nodes, start_daemon, redis, fleet, ops):
    one, two = nodes(2)
    watch = Watcher(one.port, ops)
    a = online(one.port, fleet, "dev-a")
    b = online(two.port, fleet, "dev-b", watch)
    b.close()
    two.stop()
    watch.wait("deviceDisconnected", "dev-b")
    again = start_daemon("--cluster", redis.url, "--set", "cluster.node_id=n1-again")
    b = online(again.port, fleet, "dev-b", watch)
    with a, b:
        assert a.send("dev-b", {"back": True}) == Status.SUCCESS
        assert b.receive(10).payload == {"back": True}
    watch.close()


def test_without_redis_at_start_a_node_serves_its_own_and_joins_later(start_daemon, tmp_path,
                                                                       fleet, ops):
    redis = RedisServer(tmp_path)
    one = start_daemon("--cluster", redis.url, "--set", "cluster.node_id=alone")
    one.wait_for_log("is unreachable")
    a = online(one.port, fleet, "dev-a")
    c = online(one.port, fleet, "dev-c")
    with a, c:
        assert a.send("dev-c", {"n": 1}) == Status.SUCCESS
        assert c.receive(10).payload == {"n": 1}
        assert one.output.count("is unreachable") == 1, "said once, not at every retry"
        redis.start()
        try:
            one.wait_for_log("is up", timeout=20)
            assert json.loads(redis.cli("GET", "hypertcp:node:alone"))["devices"] == 2
        finally:
            redis.stop()


def test_a_malformed_url_stops_start_up_with_one_line(start_daemon):
    with pytest.raises(AssertionError) as failed:
        start_daemon("--cluster", "redis://:s3cret@host:notaport/0", expect=("tcp",))
    output = str(failed.value)
    assert "[cluster] redis" in output and "s3cret" not in output
    assert "Traceback" not in output


def test_the_password_works_and_is_never_logged(start_daemon, tmp_path, fleet):
    secured = RedisServer(tmp_path, "--requirepass", "s3cret").start()
    try:
        url = f"redis://:s3cret@127.0.0.1:{secured.port}/2"
        one = start_daemon("--cluster", url, "--set", "cluster.node_id=locked")
        one.wait_for_log("is up")
        assert "s3cret" not in one.output
        assert f"redis://:***@127.0.0.1:{secured.port}/2" in one.output
        assert "locked" in secured.cli("-a", "s3cret", "-n", "2", "SMEMBERS", "hypertcp:nodes")
    finally:
        secured.stop()


def test_tokens_added_or_revoked_anywhere_count_everywhere(start_daemon, redis, tmp_path, fleet):
    one = start_daemon("--cluster", redis.url)
    one.wait_for_log("the cluster had no tokens; 1 from")
    # A node with a token file of its own takes the cluster's tokens.
    two = start_daemon("--cluster", redis.url, "--tokens", str(tmp_path / "two.json"))
    two.wait_for_log("tokens updated from the cluster (1 live)")
    # The first node to reach an empty cluster brought its token file's tokens.
    listed = hypertcp("token", "list", "--cluster", redis.url)
    assert listed.returncode == 0 and "fleet" in listed.stdout, listed.stderr
    added = hypertcp("token", "add", "lamp", "--cluster", redis.url)
    assert added.returncode == 0, added.stderr
    secret = added.stdout.strip().splitlines()[-1]
    started = time.monotonic()
    deadline = started + 2
    while True:
        try:
            lamp = Client("127.0.0.1", two.port, secret, timeout=5).connect()
            break
        except HyperTCPError:
            assert time.monotonic() < deadline, "the new token did not reach node two in 2 s"
    again = hypertcp("token", "add", "lamp", "--cluster", redis.url)
    assert again.returncode == 1 and "exists already" in again.stderr
    other = Client("127.0.0.1", one.port, secret, timeout=5).connect()
    with lamp, other:
        revoked = hypertcp("token", "revoke", "lamp", "--cluster", redis.url)
        assert revoked.returncode == 0, revoked.stderr
        for client in (lamp, other):
            with pytest.raises(ConnectionError):
                client.receive(5)
    with pytest.raises(HyperTCPError):
        Client("127.0.0.1", one.port, secret, timeout=5).connect()


def test_one_owner_per_id_across_nodes(nodes, fleet, ops, token):
    """The rule of one node holds across nodes: an id online belongs to its token's owner."""
    other = token("other", "--role", "fleet")
    one, two = nodes(2)
    watch = Watcher(two.port, ops)
    first = online(one.port, fleet, "dev-x", watch)
    with first:
        with pytest.raises(HyperTCPError) as refused:
            Client("127.0.0.1", two.port, other, "dev-x", timeout=10).connect()
        assert refused.value.status == Status.NOT_ALLOWED
        # The same owner may join it on the other node; a message reaches both.
        with Client("127.0.0.1", two.port, fleet, "dev-x", timeout=10).connect() as second, \
                Client("127.0.0.1", two.port, fleet, "sender", timeout=10).connect() as sender:
            assert sender.send("dev-x", {"n": 1}) == Status.SUCCESS
            assert first.receive(10).payload == {"n": 1}
            assert second.receive(10).payload == {"n": 1}
    watch.close()
