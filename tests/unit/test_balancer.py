"""
The load balancer in-process: picking a node (least loaded, and sticky on a
consistent-hash ring), the balancer session on a StringTransport with fake
backends, and the balancer service with real health connections (the
Twisted client) linked to real node sessions, on one fake clock.
"""

from __future__ import annotations

import collections
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock

from hypertcp.app.balancer.picking import Ring, least_loaded
from hypertcp.app.balancer.service import Balancer
from hypertcp.app.balancer.session import CLOSE_AFTER, BalancerFactory
from hypertcp.app.config import BalancerConfig
from hypertcp.protocol.commands import Command, Status
from hypertcp.protocol.frames import Frame, encode
from tests.inprocess import Link, Server, captured_log


@dataclass(eq=False)
class Node:
    """A backend as picking and the balancer session see it."""

    name: str
    available: bool = True
    load: int = 0
    host: str = "10.0.0.1"
    port: int = 8080
    tls: bool = False
    assigned: int = 0


# -- picking ---------------------------------------------------------------------

def test_least_loaded_picks_the_available_node_with_the_lowest_load():
    a, b, c = Node("a", load=5), Node("b", load=2), Node("c", load=1, available=False)
    assert least_loaded([a, b, c]) is b
    b.available = False
    assert least_loaded([a, b, c]) is a
    a.available = False
    assert least_loaded([a, b, c]) is None
    assert least_loaded([]) is None


def test_least_loaded_takes_the_first_of_equals():
    a, b = Node("a"), Node("b")
    assert least_loaded([a, b]) is a


def test_the_ring_keeps_each_key_on_its_node():
    nodes = [Node(f"10.0.0.{i}:8080") for i in range(3)]
    ring = Ring(nodes)
    keys = [f"sensor-{i}" for i in range(300)]
    first = {key: ring.pick(key) for key in keys}
    assert {key: Ring(list(reversed(nodes))).pick(key) for key in keys} == first, \
        "placement depends on the names, not the order"
    spread = collections.Counter(node.name for node in first.values())
    assert set(spread) == {n.name for n in nodes}
    assert min(spread.values()) > 300 / 3 / 2, f"an even enough split: {spread}"


def test_a_node_going_away_moves_only_its_own_keys_and_they_come_back():
    nodes = [Node(f"10.0.0.{i}:8080") for i in range(4)]
    ring = Ring(nodes)
    keys = [f"sensor-{i}" for i in range(400)]
    home = {key: ring.pick(key) for key in keys}
    nodes[1].available = False
    moved = {key: ring.pick(key) for key in keys}
    for key in keys:
        if home[key] is nodes[1]:
            assert moved[key] is not nodes[1]
        else:
            assert moved[key] is home[key], "a key whose node stayed does not move"
    nodes[1].available = True
    assert {key: ring.pick(key) for key in keys} == home


def test_a_ring_with_no_node_available_picks_none():
    nodes = [Node("a", available=False), Node("b", available=False)]
    assert Ring(nodes).pick("x") is None
    assert Ring([]).pick("x") is None


# -- the balancer session, with fake backends ----------------------------------------

class Picker:
    """The balancer as its sessions see it: C{pick(key)}, recording the keys."""

    def __init__(self, *nodes: Node) -> None:
        self.nodes = list(nodes)
        self.keys: list[Optional[str]] = []

    def pick(self, key: Optional[str]) -> Optional[Node]:
        self.keys.append(key)
        return least_loaded(self.nodes)


@pytest.fixture
def node(tmp_path: Path) -> Server:
    """The balancer process's own server core: its tokens, limits and counters."""
    return Server(tmp_path, login_timeout=10)


def at_balancer(node: Server, picker: Picker, host: str = "192.0.2.50"):
    factory = BalancerFactory(picker, node.factory)  # type: ignore[arg-type]
    return node.connect(host, factory=factory), factory


def test_a_ping_is_answered_and_a_message_before_login_refused(node):
    device, _ = at_balancer(node, Picker(Node("a")))
    assert device.ping() == Status.SUCCESS
    assert device.answer(device.message("x", {})) == Status.NOT_AUTHENTICATED
    assert device.answer(device.send(99)) == Status.NOT_AUTHENTICATED
    assert not device.closing


def test_a_login_is_answered_with_redirect_then_success_in_one_write(node):
    chosen = Node("10.0.0.7:9000", host="10.0.0.7", port=9000)
    picker = Picker(Node("busy", load=10), chosen)
    device, _ = at_balancer(node, picker)
    writes = device.transport.writes
    login = device.send_json(Command.LOGIN, {"token": node.token("fleet", "fleet"),
                                             "device_id": "dev-1", "proto": 2})
    assert device.transport.writes - writes == 1
    redirect, answer = device.frames()
    assert redirect.command == Command.REDIRECT
    assert json.loads(redirect.payload) == {"server": "10.0.0.7", "port": 9000}
    assert answer == Frame(Command.RESPONSE, login, bytes((Status.SUCCESS,)))
    assert (picker.keys, chosen.assigned) == (["dev-1"], 1)
    assert node.factory.counters["balancer_redirects"] == 1
    node.clock.advance(CLOSE_AFTER - 0.1)
    assert not device.closing
    node.clock.advance(0.1)
    assert device.closing


def test_a_redirect_to_a_tls_node_says_so(node):
    device, _ = at_balancer(node, Picker(Node("n", host="n.example", port=8443, tls=True)))
    assert device.login(node.token("dev-1")) == Status.SUCCESS
    redirect, = device.frames()
    assert json.loads(redirect.payload) == {"server": "n.example", "port": 8443, "tls": True}


def test_a_login_without_an_id_is_kept_on_one_node_by_its_address(node):
    picker = Picker(Node("a"))
    device, _ = at_balancer(node, picker, host="192.0.2.77")
    assert device.login(node.token("fleet", "fleet")) == Status.SUCCESS
    assert picker.keys == ["192.0.2.77"]


def test_after_the_redirect_only_ping_is_served(node):
    device, _ = at_balancer(node, Picker(Node("a")))
    assert device.login(node.token("dev-1")) == Status.SUCCESS
    device.frames()
    assert device.ping() == Status.SUCCESS
    assert device.login(node.token("dev-2")) == Status.ILLEGAL_COMMAND
    assert device.answer(device.message("x", {})) == Status.NOT_AUTHENTICATED


def test_an_invalid_token_is_refused_and_closed(node):
    picker = Picker(Node("a"))
    device, _ = at_balancer(node, picker)
    assert device.login("not-a-token", proto=None) == Status.INVALID_TOKEN
    assert device.closing and picker.keys == []
    assert node.factory.counters["balancer_invalid_token"] == 1


def test_a_login_the_token_does_not_allow_is_refused_and_the_connection_lives(node):
    device, _ = at_balancer(node, Picker(Node("a")))
    secret = node.token("dev-7")
    assert device.login(secret, "dev-8") == Status.NOT_ALLOWED
    assert not device.closing
    assert device.login(secret, "dev-7") == Status.SUCCESS


def test_a_bad_login_body_is_answered_11(node):
    device, _ = at_balancer(node, Picker(Node("a")))
    msg_id = device.send(Command.LOGIN, b"{oops")
    assert device.response_payload(msg_id) == bytes((Status.ILLEGAL_COMMAND_BODY,))
    assert not device.closing


def test_with_no_node_up_a_login_is_refused_and_closed(node, log):
    device, _ = at_balancer(node, Picker(Node("a", available=False)))
    assert device.login(node.token("dev-1")) == Status.SERVER_EXCEPTION
    assert device.closing
    assert "no node is up" in log


def test_the_login_deadline_sends_timeout_then_closes(node):
    device, _ = at_balancer(node, Picker(Node("a")))
    node.clock.advance(9.9)
    assert device.frames() == [] and not device.closing
    node.clock.advance(0.1)
    assert device.frames() == [Frame(Command.RESPONSE, 1, bytes((Status.TIMEOUT,)))]
    assert device.closing


def test_an_oversize_frame_is_skipped_and_answered_11(tmp_path):
    node = Server(tmp_path, max_payload=64)
    device, _ = at_balancer(node, Picker(Node("a")))
    device.session.dataReceived(encode(Command.LOGIN, 5, b"x" * 100) + encode(Command.PING, 6))
    assert device.answer(5) == Status.ILLEGAL_COMMAND_BODY
    assert device.answer(6) == Status.SUCCESS


def test_the_balancer_keeps_to_max_connections_on_its_own_count(tmp_path, log):
    node = Server(tmp_path, max_connections=1)
    node.connect()  # the node's own sessions do not count against the balancer's
    picker = Picker(Node("a"))
    first, factory = at_balancer(node, picker)
    assert first.login(node.token("dev-1")) == Status.SUCCESS, "sent on: it keeps its slot"
    assert factory.open == 1
    assert node.build(factory=factory) is None
    assert "refused: 1 connections already open" in log
    assert first.ping() == Status.SUCCESS
    first.lose()
    assert factory.open == 0
    assert node.build(factory=factory) is not None


# -- the balancer service, its nodes real sessions ---------------------------------------

class Cluster:
    """
    A balancer and two nodes on one clock and one token file; each node's
    health connection is the real Twisted client linked to a real session.
    """

    def __init__(self, tmp_path: Path, policy: str = "least-connections") -> None:
        # The balancer's reactor: a clock, and a reactor its (never started)
        # ClientServices may be built on.
        self.clock = MemoryReactorClock()
        self.home = Server(tmp_path, clock=self.clock)  # the balancer's own process
        self.nodes = {name: Server(tmp_path, clock=self.clock) for name in ("a", "b")}
        self.addresses = {"a": ("10.0.0.1", 8080), "b": ("10.0.0.2", 8080)}
        token_file = tmp_path / "balancer.token"
        # The health token: its stats and drain grants are all it needs.
        token_file.write_text(self.home.token("balancer", "fleet", grants=["stats", "drain"])
                              + "\n")
        config = BalancerConfig(
            listen=[], backends=list(self.addresses.values()), policy=policy,
            token_file=str(token_file), health_interval=5.0, health_timeout=3.0,
            advertise=("10.0.0.9", 7000), tls=False, backend_tls=False, ca="")
        self.balancer = Balancer(config, self.home.factory, reactor=self.clock)
        self.balancer.register_commands(self.home.hub)
        self.fleet = self.home.token("fleet", "fleet")
        self.links: dict[str, Link] = {}
        for name in self.nodes:
            self.connect(name)

    def backend(self, name: str):
        return self.balancer.backend("%s:%d" % self.addresses[name])

    def connect(self, name: str) -> None:
        """The health connection to node C{name} is made (ClientService would retry it)."""
        host, port = self.addresses[name]
        protocol = self.backend(name).buildProtocol(IPv4Address("TCP", host, port))
        self.links[name] = self.nodes[name].link(protocol)

    def pump(self) -> None:
        for link in self.links.values():
            link.pump()

    def tick(self, seconds: float) -> None:
        """Time passes and every live connection carries what it has to."""
        self.clock.advance(seconds)
        self.pump()

    def ask_all(self) -> None:
        self.balancer._ask_all()  # what the TimerService does every health_interval
        self.pump()

    def device(self, device_id: str) -> tuple[str, int]:
        """A device logs in at the balancer: the (host, port) it is sent to."""
        peer = self.home.connect(factory=self.balancer.factory)
        assert peer.login(self.fleet, device_id) == Status.SUCCESS
        [redirect] = [f for f in peer.frames() if f.command == Command.REDIRECT]
        body = json.loads(redirect.payload)
        return body["server"], body["port"]


def test_a_node_is_up_once_its_first_stats_arrive(tmp_path):
    cluster = Cluster(tmp_path)
    for name in ("a", "b"):
        backend = cluster.backend(name)
        assert backend.up and backend.available
        assert backend.sessions == 1, "the health connection itself"
    assert cluster.balancer.status() == {"policy": "least-connections", "source": "backends",
                                         "backends": [
        {"backend": "10.0.0.1:8080", "up": True, "draining": False, "sessions": 1, "load": 1},
        {"backend": "10.0.0.2:8080", "up": True, "draining": False, "sessions": 1, "load": 1}]}


def test_least_connections_counts_the_devices_sent_since_the_last_stats(tmp_path):
    cluster = Cluster(tmp_path)
    for i in range(3):
        cluster.nodes["a"].online(f"local-{i}")
    cluster.ask_all()
    assert (cluster.backend("a").sessions, cluster.backend("b").sessions) == (4, 1)
    places = [cluster.device(f"dev-{i}") for i in range(5)]
    assert places[:3] == [cluster.addresses["b"]] * 3, "b is emptier until it has 4"
    assert set(places[3:]) <= set(cluster.addresses.values())
    assert cluster.backend("b").load == 4 + places[3:].count(cluster.addresses["b"])
    cluster.ask_all()  # the node's count now includes them (none have arrived: stats say 1)
    assert cluster.backend("b").load == 1


def test_sticky_keeps_each_device_on_its_node_while_the_nodes_stay(tmp_path):
    cluster = Cluster(tmp_path, policy="sticky")
    devices = [f"sensor-{i}" for i in range(20)]
    home = {device: cluster.device(device) for device in devices}
    assert set(home.values()) == set(cluster.addresses.values()), "20 ids hash onto both"
    assert {device: cluster.device(device) for device in devices} == home
    cluster.links["b"].close()
    assert not cluster.backend("b").available
    assert {d: cluster.device(d) for d in devices} == dict.fromkeys(devices, cluster.addresses["a"])
    cluster.connect("b")
    assert {device: cluster.device(device) for device in devices} == home, "back, it gets its own"


def test_a_node_whose_connection_drops_is_out_until_it_logs_in_again(tmp_path, log):
    cluster = Cluster(tmp_path)
    cluster.links["b"].close()
    backend = cluster.backend("b")
    assert not backend.up
    assert "node 10.0.0.2:8080 is down" in log
    assert {cluster.device(f"dev-{i}") for i in range(4)} == {cluster.addresses["a"]}
    cluster.connect("b")
    assert backend.up, "up again with its first stats"


def test_a_hung_node_is_out_when_its_ping_goes_unanswered(tmp_path, log):
    cluster = Cluster(tmp_path)
    hung = cluster.links.pop("b")  # its socket stays open; nothing it is sent is read
    cluster.tick(5)  # the heartbeat: a PING to each node
    assert cluster.backend("b").up
    cluster.tick(3)  # health_timeout later
    assert hung.transport.disconnecting, "the health connection is dropped"
    hung.close()
    assert not cluster.backend("b").up and cluster.backend("a").up
    assert "heartbeat unanswered" in log


def test_draining_a_node_moves_its_devices_through_the_balancer(tmp_path):
    cluster = Cluster(tmp_path)
    node_a = cluster.nodes["a"]
    devices = [node_a.online(f"dev-{i}") for i in range(3)]
    answers = []
    cluster.balancer.drain("10.0.0.1:8080").addCallback(answers.append)
    cluster.pump()
    assert answers == [Status.SUCCESS]
    for device in devices:
        [redirect] = [f for f in device.frames() if f.command == Command.REDIRECT]
        assert json.loads(redirect.payload) == {"server": "10.0.0.9", "port": 7000}, \
            "sent back to the balancer, to be spread over the others"
    assert node_a.hub.draining == ("10.0.0.9", 7000, False)
    assert not cluster.links["a"].closed, "the balancer's own connection is kept"
    backend = cluster.backend("a")
    assert backend.draining and not backend.available
    assert {cluster.device(f"new-{i}") for i in range(4)} == {cluster.addresses["b"]}
    assert cluster.balancer.status()["backends"][0]["draining"] is True

    cluster.balancer.undrain("10.0.0.1:8080")
    cluster.pump()
    assert node_a.hub.draining is None
    assert backend.available
    node_a.clock.advance(1)
    node_a.reap()
    cluster.ask_all()
    assert cluster.device("returning") == cluster.addresses["a"], "undrained and emptiest"


def test_a_node_drained_directly_takes_no_one_new(tmp_path, log):
    cluster = Cluster(tmp_path)
    ops = cluster.nodes["a"].online("ops", "observer", "ops", grants=["drain"])
    assert ops.to_server({"command": "drain", "server": "10.0.0.9", "port": 7000})[0] \
        == Status.SUCCESS
    cluster.pump()
    assert cluster.links["a"].closed, "the node redirected the health connection too"
    assert "redirected its health connection; staying" in log
    cluster.connect("a")  # the health connection comes back to the same node
    backend = cluster.backend("a")
    assert backend.up and backend.node_draining and not backend.available
    assert {cluster.device(f"dev-{i}") for i in range(3)} == {cluster.addresses["b"]}


def test_the_balancer_commands_need_their_grants(tmp_path):
    cluster = Cluster(tmp_path)
    watcher = cluster.home.online("watcher", "observer", "watcher", grants=["kick"])
    for command in ({"command": "drain_backend", "backend": "10.0.0.1:8080"},
                    {"command": "undrain_backend", "backend": "10.0.0.1:8080"},
                    {"command": "backends"}):
        assert watcher.to_server(command) == (Status.NOT_ALLOWED, [])
    assert not cluster.backend("a").draining
    admin = cluster.home.online("admin", "observer", "admin", grants=["stats", "drain"])
    assert admin.to_server({"command": "drain_backend", "backend": "10.9.9.9:1"})[0] \
        == Status.DEVICE_NOT_IN_NETWORK
    assert admin.to_server({"command": "drain_backend"})[0] == Status.ILLEGAL_COMMAND_BODY
    status, [reply] = admin.to_server({"command": "backends"})
    assert status == Status.SUCCESS
    assert [(b["backend"], b["up"]) for b in reply["backends"]] == [
        ("10.0.0.1:8080", True), ("10.0.0.2:8080", True)]
    assert admin.to_server({"command": "drain_backend", "backend": "10.0.0.1:8080"}) == (
        Status.SUCCESS, [{"command": "drain_backend", "backend": "10.0.0.1:8080"}])
    cluster.pump()
    assert cluster.backend("a").draining and cluster.nodes["a"].hub.draining is not None
    assert admin.to_server({"command": "undrain_backend", "backend": "10.0.0.1:8080"})[0] \
        == Status.SUCCESS
    cluster.pump()
    assert not cluster.backend("a").draining and cluster.nodes["a"].hub.draining is None


def test_a_health_token_without_the_stats_grant_keeps_the_node_out(tmp_path, log):
    cluster = Cluster(tmp_path)
    link = cluster.links.pop("a")
    link.close()
    cluster.backend("a").token = cluster.home.token("plain", "fleet", grants=["drain"])
    cluster.connect("a")
    assert not cluster.backend("a").up
    assert "refused its stats (NOT_ALLOWED)" in log


def test_an_operator_drains_a_node_from_the_balancers_manhole_helpers(tmp_path, capsys):
    from hypertcp.app.manhole import Rates, namespace

    cluster = Cluster(tmp_path)
    ns = namespace(cluster.home.factory, Rates(cluster.home.factory), cluster.balancer)
    devices = [cluster.nodes["b"].online(f"dev-{i}") for i in range(2)]
    cluster.ask_all()
    ns["backends"]()
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].split() == ["BACKEND", "UP", "DRAINING", "SESSIONS", "LOAD"]
    assert rows[1].split() == ["10.0.0.1:8080", "yes", "no", "1", "1"]
    assert rows[2].split() == ["10.0.0.2:8080", "yes", "no", "3", "3"]
    assert rows[3] == "policy: least-connections"
    answers = []
    ns["drain_backend"]("10.0.0.2:8080").addCallback(answers.append)
    cluster.pump()
    assert answers == [Status.SUCCESS]
    for device in devices:
        assert [f.command for f in device.frames()] == [Command.REDIRECT]
    ns["backends"]()
    assert capsys.readouterr().out.splitlines()[2].split()[:3] == ["10.0.0.2:8080", "yes", "yes"]
    ns["undrain_backend"]("10.0.0.2:8080")
    cluster.pump()
    assert cluster.backend("b").available and cluster.nodes["b"].hub.draining is None


def test_a_reread_health_token_replaces_a_refused_one_and_an_empty_file_changes_nothing(
        tmp_path):
    cluster = Cluster(tmp_path)
    token_file = tmp_path / "balancer.token"
    assert cluster.balancer.reload_token() == f"{token_file} unchanged"
    good = cluster.backend("a").token
    token_file.write_text("not a token anyone issued\n")
    cluster.balancer.reload_token()
    cluster.links["a"].close()
    with captured_log() as log:
        cluster.connect("a")
        cluster.pump()
    assert "refused the health token" in log and cluster.backend("a").loginFailure is not None
    token_file.write_text(good + "\n")
    assert "a new health token, 2 nodes" in cluster.balancer.reload_token()
    assert cluster.backend("a").loginFailure is None, "tried again, not left out for good"
    cluster.links["a"].close()
    cluster.connect("a")
    cluster.ask_all()
    assert cluster.backend("a").up
    token_file.write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        cluster.balancer.reload_token()
    assert cluster.backend("a").token == good, "the old token stays in force"
