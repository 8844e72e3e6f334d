"""
C{--workers N}: N real node processes on one port (SO_REUSEPORT), joined
through a real redis-server, run and restarted by one monitor process.
"""

from __future__ import annotations

import os
import re
import signal
import time

import pytest

from hypertcp.client import Client
from hypertcp.cluster.node import FORGET
from hypertcp.protocol.commands import Status
from tests.daemon import Daemon
from tests.redis_server import free_port

pytestmark = pytest.mark.integration


def reach(sender: Client, target: str, payload: dict, timeout: float = 10) -> None:
    """
    Send until the target's node is known to the sender's: a login reaches
    the other nodes as a presence event, a moment after it is answered.
    """
    deadline = time.monotonic() + timeout
    while (status := sender.send(target, payload)) != Status.SUCCESS:
        assert status == Status.DEVICE_NOT_IN_NETWORK, status
        assert time.monotonic() < deadline, f"{target} never became reachable"
        sender.receive(0.05)  # paced: the node's rate limit counts these


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


class Workers:
    """What the monitor's log (the workers' lines tagged with their ids) says."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def pids(self, name: str) -> list[int]:
        return [int(p) for p in re.findall(rf"workers: {name} started as pid (\d+)",
                                           self.daemon.output)]

    def count(self, name: str, text: str) -> int:
        return sum(1 for line in self.daemon.output.splitlines()
                   if f"[{name}] " in line and text in line)

    def of(self, device_id: str) -> str:
        """The worker that logged C{device_id} in."""
        pattern = re.compile(rf"\[(w-\d)\] .* logged in as {re.escape(device_id)} ")
        self.daemon.wait_for(lambda: pattern.search(self.daemon.output), 10,
                             f"the login of {device_id}")
        return pattern.search(self.daemon.output).group(1)


def test_workers_share_one_port_and_act_as_one_server(start_daemon, redis, token) -> None:
    fleet = token("fleet", "--role", "fleet")
    port = free_port()
    monitor = start_daemon("--workers", "2", "--cluster", redis.url,
                           "--listen", f"tcp:{port}:interface=127.0.0.1",
                           "--set", "cluster.node_id=w", "--set", "cluster.ttl=2",
                           "--set", "cluster.refresh=0.3")
    workers = Workers(monitor)
    for name in ("w-1", "w-2"):
        monitor.wait_for(lambda n=name: workers.count(n, "is up") == 1, 20, f"{name} joined")
        assert workers.count(name, f"listening on 127.0.0.1:{port}") == 1
    [first] = workers.pids("w-1")

    # The kernel spreads connections to the one port over both workers.
    clients: dict[str, list[Client]] = {"w-1": [], "w-2": []}
    try:
        for i in range(16):
            client = Client("127.0.0.1", port, fleet, f"dev-{i}", timeout=10).connect()
            clients[workers.of(f"dev-{i}")].append(client)
        assert clients["w-1"] and clients["w-2"], {k: len(v) for k, v in clients.items()}

        # A device on one worker reaches a device on the other.
        a, b = clients["w-1"][0], clients["w-2"][0]
        reach(a, b.device_id, {"n": 1})
        message = b.receive(10)
        assert (message.sender, message.payload) == (a.device_id, {"n": 1})

        # A worker killed is restarted, under the same id, and is a node again.
        os.kill(first, signal.SIGKILL)
        monitor.wait_for(lambda: len(workers.pids("w-1")) == 2, 20, "w-1 restarted")
        assert "workers: w-1 exited" in monitor.output
        second = workers.pids("w-1")[1]
        assert second != first and gone(first)
        monitor.wait_for(lambda: workers.count("w-1", "is up") == 2, 20, "w-1 back in the cluster")
        deadline = time.monotonic() + 10
        while b.send(a.device_id, {"n": 2}) != Status.DEVICE_NOT_IN_NETWORK:
            assert time.monotonic() < deadline, "a device of the killed worker is still routable"
            b.receive(0.05)  # paced: the worker's rate limit counts these
        again = None
        for i in range(16, 48):
            client = Client("127.0.0.1", port, fleet, f"dev-{i}", timeout=10).connect()
            clients[workers.of(f"dev-{i}")].append(client)
            if workers.of(f"dev-{i}") == "w-1":
                again = client
                break
        assert again is not None, "no new connection reached the restarted worker"
        reach(b, again.device_id, {"n": 3})
        assert again.receive(10).payload == {"n": 3}
    finally:
        for client in clients["w-1"] + clients["w-2"]:
            client.close()

    monitor.stop()
    assert gone(second) and all(gone(pid) for pid in workers.pids("w-2")), \
        "the monitor stops its workers before it exits"


def test_a_node_found_dead_is_forgotten_unless_it_registered_again(redis) -> None:
    """A worker restarted under its id registers while another node forgets its last run."""
    keys = ("hypertcp:node:w-1", "hypertcp:nodes", "hypertcp:devices:w-1")
    redis.cli("SADD", "hypertcp:nodes", "w-1")
    redis.cli("HSET", "hypertcp:devices:w-1", "lamp 127.0.0.1:5000", "1")
    redis.cli("SET", "hypertcp:node:w-1", "{}")
    assert redis.cli("EVAL", FORGET, "3", *keys, "w-1").strip() == "0"
    assert redis.cli("SMEMBERS", "hypertcp:nodes").split() == ["w-1"]
    assert redis.cli("HLEN", "hypertcp:devices:w-1").strip() == "1"
    redis.cli("DEL", "hypertcp:node:w-1")
    assert redis.cli("EVAL", FORGET, "3", *keys, "w-1").strip() == "1"
    assert redis.cli("SMEMBERS", "hypertcp:nodes").split() == []
    assert redis.cli("EXISTS", "hypertcp:devices:w-1").strip() == "0"
