"""
C{hypertcp bench --nodes N}: the pairs through a cluster -- Debian's
redis-server on a loopback port and N C{twistd hypertcp --cluster} nodes --
once with each pair's sender and receiver on the same node, once with them
on two different nodes, so that what the bus costs is the difference
between two runs through the same kind of cluster.

Each run starts its own Redis and nodes (as every other run starts its own
broker), and begins only once every node has found the others and knows
where every device of the run is: the bench asks each node's C{stats}
until the numbers agree, rather than waiting a fixed time.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from hypertcp.bench.errors import BenchError
from hypertcp.bench.peers import Broker, end, free_port, proc_cpu, proc_memory, start_hypertcp

REDIS = "/usr/bin/redis-server"
#: Seconds the cluster may take to form, and to learn where every device is.
SETTLE_TIMEOUT = 30.0
#: Seconds between two looks at the nodes' stats while they settle.
SETTLE_POLL = 0.05


class Redis:
    """A redis-server of our own, on a loopback port, persisting nothing."""

    def __init__(self) -> None:
        binary = REDIS if os.path.exists(REDIS) else shutil.which("redis-server")
        if binary is None:
            raise BenchError("--nodes needs Debian's redis-server, which is not installed "
                             "(apt-get install redis-server)")
        self.workdir = tempfile.TemporaryDirectory(prefix="hypertcp-bench-redis-")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.workdir.name],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    output = self.proc.stdout.read() if self.proc.stdout else ""
                    self.stop()
                    raise BenchError(f"redis-server did not start:\n{output}") from None
                time.sleep(0.02)  # a port that is not open yet: no event to wait on

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def cpu(self) -> float:
        return proc_cpu(self.proc.pid)

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(f"redis-server exited ({self.proc.returncode})")

    def stop(self) -> None:
        end(self.proc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.workdir.cleanup()


class Cluster(Broker):
    """
    N nodes on one Redis, which the load generator drives as one broker:
    L{place} puts pair i's sender on node i mod N and its receiver on the
    same node, or (C{cross}) on the next one.  Its CPU is the nodes', its
    peak memory the sum of theirs; Redis's CPU is a figure of its own.
    """

    def __init__(self, nodes: list[Broker], redis: Redis, cross: bool, admin: str) -> None:
        super().__init__("cross-node" if cross else "same-node", nodes[0].proto,
                         nodes[0].address)
        self.label = "cross_node" if cross else "same_node"
        self.nodes = nodes
        self.redis = redis
        self.cross = cross
        self.admin = admin
        self.addresses = [node.address for node in nodes]
        self._askers: list[Any] = []

    def place(self, index: int) -> tuple[tuple[str, int], tuple[str, int]]:
        nodes = self.addresses
        return nodes[index % len(nodes)], nodes[(index + self.cross) % len(nodes)]

    def cpu(self) -> Optional[float]:
        return sum(node.cpu() or 0.0 for node in self.nodes)

    def memory(self) -> dict[str, Optional[int]]:
        each = [proc_memory(node.pid) for node in self.nodes if node.pid]
        return {"rss_kb": sum(m["rss_kb"] for m in each),
                "peak_kb": sum(m["peak_kb"] for m in each)}

    def extra_cpu(self) -> dict[str, float]:
        return {"redis_cpu_s": self.redis.cpu()}

    def check(self) -> None:
        self.redis.check()
        for node in self.nodes:
            node.check()

    def stop(self) -> None:
        for asker in self._askers:
            asker.close()
        for node in self.nodes:
            node.stop()
        self.redis.stop()

    # -- waiting for the cluster to know itself --

    def _stats(self) -> list[dict]:
        """Every node's C{stats}, asked of it by a connection of the bench's own there."""
        from hypertcp.client.blocking import Client

        if not self._askers:
            # Kept open until the cluster stops: each is one more session,
            # and always the same, so the nodes' counts can be compared.
            for k, (host, port) in enumerate(self.addresses):
                self._askers.append(Client(host, port, self.admin, device_id=f"bench-stats-{k}",
                                           timeout=10).connect())
        found = []
        for k, asker in enumerate(self._askers):
            asker.send_to_server({"command": "stats"})
            for message in iter(lambda: asker.receive(10), None):
                if message.payload.get("command") == "stats":
                    found.append(message.payload)
                    break
            else:
                raise BenchError(f"node {k + 1} did not answer stats")
        return found

    def _until(self, ready: Any, what: str) -> None:
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
            self.check()
            stats = self._stats()
            if ready(stats):
                return
            if time.monotonic() > deadline:
                raise BenchError(f"the cluster's nodes did not {what} within "
                                 f"{SETTLE_TIMEOUT:g} s: {stats!r}")
            time.sleep(SETTLE_POLL)  # polling the nodes' own figures, with a deadline

    def formed(self) -> None:
        """Wait until every node has found every other in the registry."""
        count = len(self.nodes)
        self._until(lambda stats: all(s.get("cluster", {}).get("nodes") == count
                                      and s["cluster"].get("bus") == "up" for s in stats),
                    f"find each other ({count} nodes)")

    def settle(self) -> None:
        """
        Wait until every node knows every connection of the others, so that
        no message of the run finds its receiver missing from a directory:
        then a node's sessions and those it knows elsewhere are all of them.
        """
        def known(stats: list[dict]) -> bool:
            everyone = sum(s["sessions"] for s in stats)
            return all(s["sessions"] + s["cluster"]["elsewhere"]["sessions"] == everyone
                       for s in stats)
        self._until(known, "learn where every device is")


def start_cluster(count: int, cross: bool, extra: list[str],
                  backlog: Optional[int] = None) -> Cluster:
    """
    Redis and C{count} nodes, each C{twistd -n hypertcp --cluster} on a
    loopback port of its own, sharing one token file (a copy each: a node
    rewrites its file from the cluster's tokens).
    """
    from hypertcp.server.tokens import TokenStore

    if count < 2:
        raise BenchError("--nodes needs at least 2 nodes")
    redis = Redis()
    nodes: list[Broker] = []
    tokens_dir = tempfile.TemporaryDirectory(prefix="hypertcp-bench-tokens-")
    try:
        tokens = Path(tokens_dir.name) / "tokens.json"
        store = TokenStore(tokens)
        secret = store.add("bench", role="fleet")
        admin = store.add("bench-admin", role="fleet", grants=["stats"])
        for k in range(count):
            nodes.append(start_hypertcp(
                ["--cluster", redis.url, "--set", f"cluster.node_id=bench-{k + 1}", *extra],
                backlog=backlog, tokens=(tokens, secret)))
        cluster = Cluster(nodes, redis, cross, admin)
        cluster.formed()
        return cluster
    except BaseException:
        for node in nodes:
            node.stop()
        redis.stop()
        raise
    finally:
        tokens_dir.cleanup()
