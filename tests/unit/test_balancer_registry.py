"""
The balancer over the nodes registered in a cluster's Redis, in-process: a
real L{ClusterNode}, L{Balancer} and balancer sessions on a Clock and
StringTransports, over a dict that answers the few Redis commands a node
sends (tests/test_cluster_balancer.py runs the same against redis-server).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import succeed
from twisted.internet.testing import StringTransport
from zope.interface.verify import verifyClass

from hypertcp.app.balancer.backends import Backend
from hypertcp.app.balancer.interfaces import INode
from hypertcp.app.balancer.registered import RegisteredNode, parse_address
from hypertcp.app.balancer.service import Balancer
from hypertcp.app.config import ConfigError, load
from hypertcp.cluster import envelopes as env
from hypertcp.cluster.keys import Keys
from hypertcp.cluster.node import FORGET, ClusterNode
from hypertcp.protocol.commands import Command, Status
from tests.inprocess import Peer, Server

KEYS = Keys()
REDIS_URL = "redis://127.0.0.1:6379/0"


class DictRedis:
    """The commands a node sends, kept in dicts; PUBLISH reaches C{listening} channels."""

    def __init__(self) -> None:
        self.strings: dict[str, bytes] = {}
        self.sets: dict[str, set[str]] = {}
        self.hashes: dict[str, dict[bytes, bytes]] = {}
        self.published: list[tuple[str, bytes]] = []
        self.listening: set[str] = set()

    def call(self, command: str, *args: Any) -> Any:
        key = args[0] if args else None
        if command == "SET":
            self.strings[key] = args[1] if isinstance(args[1], bytes) else args[1].encode()
        elif command == "SADD":
            self.sets.setdefault(key, set()).update(args[1:])
        elif command == "SREM":
            self.sets.get(key, set()).difference_update(args[1:])
        elif command == "SMEMBERS":
            return succeed([m.encode() for m in sorted(self.sets.get(key, ()))])
        elif command == "MGET":
            return succeed([self.strings.get(k) for k in args])
        elif command == "DEL":
            for k in args:
                self.strings.pop(k, None)
                self.hashes.pop(k, None)
        elif command == "HSET":
            self.hashes.setdefault(key, {}).update(zip(args[1::2], args[2::2]))
        elif command == "HDEL":
            self.hashes.get(key, {}).pop(args[1], None)
        elif command == "HGETALL":
            return succeed([x for pair in self.hashes.get(key, {}).items() for x in pair])
        elif command == "EVAL" and args[0] == FORGET:
            if args[2] not in self.strings:
                self.sets.get(args[3], set()).discard(args[5])
                self.hashes.pop(args[4], None)
        elif command == "PUBLISH":
            self.published.append((key, args[1]))
            return succeed(int(key in self.listening))
        elif command in ("MULTI", "EXEC"):
            pass  # one caller at a time: every command is already atomic here
        else:
            raise AssertionError(f"unexpected Redis command {command}")
        return succeed(None)

    def publish(self, channel: str, data: bytes) -> Any:
        return self.call("PUBLISH", channel, data)

    def register(self, node_id: str, address: Optional[str], sessions: int = 0,
                 draining: bool = False, beat: int = 1, pid: int = 1) -> None:
        """Another node renews its registration, as its heartbeat does."""
        self.sets.setdefault(KEYS.nodes, set()).add(node_id)
        self.listening.add(KEYS.inbox(node_id))
        self.strings[KEYS.node(node_id)] = json.dumps(
            {"id": node_id, "address": address, "tls": False, "sessions": sessions,
             "devices": sessions, "draining": draining, "pid": pid, "started": 1.0,
             "beat": beat}).encode()

    def expire(self, node_id: str) -> None:
        """A node's registration runs out: it died."""
        self.strings.pop(KEYS.node(node_id), None)
        self.listening.discard(KEYS.inbox(node_id))

    def commands_to(self, node_id: str) -> list[dict]:
        """The COMMAND items published on C{node_id}'s inbox so far."""
        ops = []
        for channel, data in self.published:
            if channel == KEYS.inbox(node_id):
                ops += [json.loads(item.body) for item in env.decode_batch(data)[1]
                        if item.kind == env.COMMAND]
        return ops


class Cluster:
    """This process: a node's core on a Clock, its ClusterNode on a DictRedis, and a balancer."""

    def __init__(self, tmp_path: Path, redis: DictRedis, *settings: tuple[str, str, str],
                 node_id: str = "balancer", address: Optional[tuple[str, int]] = None) -> None:
        self.server = Server(tmp_path)
        self.clock = self.server.clock
        self.redis = redis
        self.node = ClusterNode(self.server.hub, node_id, lambda: address, KEYS, self.clock,
                                ttl=5, refresh=1)
        self.node.start(redis)
        self.node.bus_up()
        overrides = {("cluster", "redis"): REDIS_URL, ("balancer", "listen"): "tcp:0",
                     ("balancer", "advertise"): "127.0.0.1:7000"}
        overrides.update({(section, key): value for section, key, value in settings})
        config = load(None, overrides)
        self.balancer = Balancer(config.balancer, self.server.factory, self.clock, self.node)
        self.fleet = self.server.token("fleet", role="fleet")

    def look(self) -> None:
        """One renewal: the cluster node reads the registry again."""
        self.clock.advance(1)

    def login(self, device_id: str) -> Optional[tuple[str, int]]:
        """Log in at the balancer; the (host, port) its REDIRECT names, None if refused."""
        address = IPv4Address("TCP", "192.0.2.1", 5000)
        session = self.balancer.factory.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        session.makeConnection(transport)
        peer = Peer(self.server, session, transport)
        status = peer.login(self.fleet, device_id)
        if status != Status.SUCCESS:
            return None
        [redirect] = [f for f in peer.frames() if f.command == Command.REDIRECT]
        body = json.loads(redirect.payload)
        return body["server"], body["port"]

    def where(self, *device_ids: str) -> list[str]:
        """The name of the node each login is sent to."""
        by_address = {(b.host, b.port): b.name for b in self.balancer.backends}
        return [by_address[self.login(d)] for d in device_ids]


@pytest.fixture
def redis() -> DictRedis:
    return DictRedis()


def test_a_registered_node_is_linked_to_where_its_registration_says(tmp_path, redis) -> None:
    """The relay's way in (for devices that cannot follow a REDIRECT) follows the registry."""
    cluster = Cluster(tmp_path, redis)
    dialled: list[tuple] = []
    cluster.balancer.registry.connect = lambda host, port, tls: (
        lambda protocol: dialled.append((host, port, tls, protocol)))
    redis.register("n0", "10.0.0.1:8080")
    cluster.look()
    node = cluster.balancer.backend("n0")
    node.link("device-1")
    redis.register("n0", "10.0.0.7:8443", beat=2)  # restarted elsewhere, same id
    cluster.look()
    node.link("device-2")
    assert dialled == [("10.0.0.1", 8080, False, "device-1"), ("10.0.0.7", 8443, False, "device-2")]


def test_both_kinds_of_node_provide_the_interface() -> None:
    assert verifyClass(INode, Backend) and verifyClass(INode, RegisteredNode)


def test_addresses_from_registrations() -> None:
    assert parse_address("10.0.0.1:8080") == ("10.0.0.1", 8080)
    assert parse_address("::1:8080") == ("::1", 8080)
    for bad in (None, 8080, "host", "host:0", "host:http", ":8080", "h:70000"):
        assert parse_address(bad) is None, bad


def test_the_registered_nodes_are_the_candidates(tmp_path, redis) -> None:
    redis.register("n0", "10.0.0.1:8080", sessions=5)
    redis.register("n1", "10.0.0.2:8080", sessions=2)
    redis.register("n2", "10.0.0.3:8080", sessions=0, draining=True)
    redis.register("n3", None, sessions=0)
    cluster = Cluster(tmp_path, redis)
    assert cluster.balancer.backends == []
    assert cluster.login("early") is None, "no node known yet: refused"
    cluster.look()
    states = {s["backend"]: s for s in cluster.balancer.status()["backends"]}
    assert cluster.balancer.status()["source"] == "registry"
    assert sorted(states) == ["n0", "n1", "n2", "n3"], "not this process: it has no address"
    assert (states["n2"]["draining"], states["n3"]["up"]) == (True, False)
    # Least connections over the published counts, plus the devices sent since.
    assert cluster.where("a", "b", "c", "d", "e") == ["n1", "n1", "n1", "n0", "n1"]
    assert (cluster.balancer.backend("n0").load, cluster.balancer.backend("n1").load) == (6, 6)


def test_the_devices_sent_since_a_count_are_added_until_a_later_one_can_hold_them(
        tmp_path, redis) -> None:
    redis.register("n0", "10.0.0.1:8080", sessions=0)
    cluster = Cluster(tmp_path, redis)
    cluster.look()
    n0 = cluster.balancer.backend("n0")
    cluster.where("a", "b", "c")
    assert n0.load == 3
    # The node renews with the three counted, but it may have written that
    # before they arrived: they stay added for one more renewal.
    redis.register("n0", "10.0.0.1:8080", sessions=3, beat=2)
    cluster.look()
    assert n0.load == 6
    cluster.look()  # not renewed since (a node with a longer refresh): no change
    assert n0.load == 6
    redis.register("n0", "10.0.0.1:8080", sessions=3, beat=3)
    cluster.look()
    assert n0.load == 3


def test_a_node_whose_registration_runs_out_is_dropped_and_one_that_registers_is_picked(
        tmp_path, redis) -> None:
    redis.register("n0", "10.0.0.1:8080", sessions=50)
    redis.register("n1", "10.0.0.2:8080", sessions=0)
    cluster = Cluster(tmp_path, redis)
    cluster.look()
    redis.expire("n1")
    cluster.look()
    assert [b.name for b in cluster.balancer.backends] == ["n0"]
    assert cluster.where("a") == ["n0"]
    redis.register("n2", "10.0.0.3:8080", sessions=0)
    cluster.look()
    assert cluster.where("b") == ["n2"]


def test_sticky_keeps_devices_on_a_ring_rebuilt_when_nodes_come_and_go(tmp_path, redis) -> None:
    for i in range(3):
        redis.register(f"n{i}", f"10.0.0.{i + 1}:8080")
    cluster = Cluster(tmp_path, redis, ("balancer", "policy", "sticky"))
    cluster.look()
    devices = [f"sensor-{i}" for i in range(60)]
    home = dict(zip(devices, cluster.where(*devices)))
    assert set(home.values()) == {"n0", "n1", "n2"}
    ring = cluster.balancer._ring
    cluster.look()
    assert cluster.balancer._ring is ring, "rebuilt only when the set of nodes changes"
    redis.expire("n2")
    cluster.look()
    moved = dict(zip(devices, cluster.where(*devices)))
    assert set(moved.values()) == {"n0", "n1"}
    assert all(moved[d] == home[d] for d in devices if home[d] != "n2"), \
        "only the devices of the node that went move"
    redis.register("n2", "10.0.0.3:8080")
    cluster.look()
    assert dict(zip(devices, cluster.where(*devices))) == home


def test_draining_a_registered_node_is_a_command_to_its_inbox(tmp_path, redis) -> None:
    redis.register("n0", "10.0.0.1:8080", sessions=0)
    redis.register("n1", "10.0.0.2:8080", sessions=9)
    cluster = Cluster(tmp_path, redis)
    cluster.look()
    answers: list[int] = []
    cluster.balancer.drain("n0").addCallback(answers.append)
    assert cluster.where("a") == ["n1"], "drained through this balancer: out at once"
    cluster.clock.advance(0)  # the outboxes go out once a reactor turn
    assert answers == [Status.SUCCESS]
    assert redis.commands_to("n0") == [
        {"op": "drain", "server": "127.0.0.1", "port": 7000, "tls": False}]
    # Its registration says so: the registry decides from now on, for every balancer.
    redis.register("n0", "10.0.0.1:8080", sessions=0, draining=True, beat=2)
    cluster.look()
    n0 = cluster.balancer.backend("n0")
    assert (n0.draining, n0.node_draining, n0.available) == (False, True, False)
    cluster.balancer.undrain("n0")
    cluster.clock.advance(0)
    assert redis.commands_to("n0")[-1] == {"op": "undrain"}
    assert cluster.where("b") == ["n0"]


def test_a_drain_command_no_node_hears_answers_device_not_in_network(tmp_path, redis) -> None:
    redis.register("n0", "10.0.0.1:8080")
    cluster = Cluster(tmp_path, redis)
    cluster.look()
    redis.listening.clear()  # it died a moment ago; its registration has not run out yet
    answers: list[int] = []
    cluster.balancer.drain("n0").addCallback(answers.append)
    cluster.clock.advance(0)
    assert answers == [Status.DEVICE_NOT_IN_NETWORK]
    cluster.node.bus_down()
    cluster.balancer.drain("n0").addCallback(answers.append)
    assert answers[-1] == Status.SERVER_EXCEPTION


def test_a_node_drains_itself_when_its_inbox_says_so(tmp_path, redis) -> None:
    node = Cluster(tmp_path, redis, node_id="n0", address=("10.0.0.1", 8080))
    devices = [node.server.online(f"dev-{i}") for i in range(3)]
    op = {"op": "drain", "server": "127.0.0.1", "port": 7000, "tls": False}
    batch = env.encode_batch("balancer", [env.encode_item(env.COMMAND, 0, "", json.dumps(op)
                                                           .encode())])
    node.node.received(KEYS.inbox("n0").encode(), batch)
    for device in devices:
        [redirect] = [f for f in device.frames() if f.command == Command.REDIRECT]
        assert json.loads(redirect.payload) == {"server": "127.0.0.1", "port": 7000}
    assert node.server.hub.draining == ("127.0.0.1", 7000, False)
    # Renewed at once, not at the next beat, so balancers see it sooner.
    assert json.loads(redis.strings[KEYS.node("n0")])["draining"] is True
    undrain = env.encode_batch("balancer", [env.encode_item(env.COMMAND, 0, "", b'{"op":"undrain"}')])
    node.node.received(KEYS.inbox("n0").encode(), undrain)
    assert node.server.hub.draining is None
    assert json.loads(redis.strings[KEYS.node("n0")])["draining"] is False


def test_a_balancer_that_is_also_a_node_is_a_candidate_and_drains_itself(tmp_path, redis) -> None:
    redis.register("n1", "10.0.0.2:8080", sessions=4)
    both = Cluster(tmp_path, redis, node_id="n0", address=("10.0.0.1", 8080))
    both.look()
    assert [b.name for b in both.balancer.backends] == ["n0", "n1"]
    assert both.where("a") == ["n0"]
    both.balancer.drain("n0")
    assert both.server.hub.draining == ("127.0.0.1", 7000, False)
    assert redis.commands_to("n0") == [], "run here, not through Redis"


def test_a_node_restarted_under_the_same_id_is_synced_again(tmp_path, redis) -> None:
    """A worker the monitor restarts keeps its id: what its old run held is forgotten."""
    redis.register("w1", "10.0.0.1:8080", pid=100)
    redis.hashes[KEYS.devices("w1")] = {b"lamp\x0010.0.0.9:5000": b"1"}
    cluster = Cluster(tmp_path, redis)
    watcher = cluster.server.online("ops", role="observer")
    cluster.look()
    assert cluster.node.holds("lamp")
    redis.register("w1", "10.0.0.1:8080", pid=101)  # restarted: it rewrote its devices
    redis.hashes[KEYS.devices("w1")] = {}
    cluster.look()
    assert not cluster.node.holds("lamp")
    events = [body["payload"] for _, body in watcher.delivered()]
    assert {"event": "deviceDisconnected", "deviceId": "lamp"}.items() <= events[-1].items()


def test_registry_mode_needs_no_backends_and_no_token_file() -> None:
    config = load(None, {("balancer", "listen"): "tcp:0", ("cluster", "redis"): REDIS_URL})
    assert config.balancer.backends == [] and config.balancer.token_file == ""
    with pytest.raises(ConfigError, match=r"\[balancer\] backends, or \[cluster\] redis"):
        load(None, {("balancer", "listen"): "tcp:0"})
    with pytest.raises(ConfigError, match="token_file"):
        load(None, {("balancer", "listen"): "tcp:0", ("balancer", "backends"): "h:1"})
