"""
A balancer with no --backend list, over the nodes registered in the
cluster's Redis: three real nodes and a balancer on one real redis-server.
"""

from __future__ import annotations

import collections
import signal
import time

import pytest

from hypertcp.client import Client
from tests.ssh import Console, keygen, known_hosts
from tests.test_balancer import LOOPBACK, through

pytestmark = pytest.mark.integration

TTL, REFRESH = 2.0, 0.3
TIMING = ("--set", f"cluster.ttl={TTL}", "--set", f"cluster.refresh={REFRESH}")


def moved_off(client: Client, port: int, timeout: float = 15) -> None:
    """Read until the client, redirected, has logged in somewhere other than C{port}."""
    deadline = time.monotonic() + timeout
    while client.port == port:
        assert time.monotonic() < deadline, f"{client.device_id} is still on {port}"
        client.receive(0.1)


def test_the_balancer_sends_devices_to_the_registered_nodes(start_daemon, redis, token,
                                                            tmp_path) -> None:
    fleet = token("fleet", "--role", "fleet")
    key, host_key = keygen(tmp_path / "operator"), tmp_path / "host_key"
    nodes = [start_daemon("--cluster", redis.url, "--set", f"cluster.node_id=n{i}", *TIMING)
             for i in range(3)]
    port = {f"n{i}": node.port for i, node in enumerate(nodes)}
    name = {p: n for n, p in port.items()}
    # Only a balancer: no listener of its own, so it is no node devices are sent to.
    balancer = start_daemon("--cluster", redis.url, "--set", "cluster.node_id=lb", *TIMING,
                            "--listen=", "--balancer", LOOPBACK, "--manhole", LOOPBACK,
                            "--set", f"manhole.authorized_keys={key}.pub",
                            "--set", f"manhole.host_key={host_key}",
                            expect=("balancer", "manhole"))
    for node_id, node_port in port.items():
        balancer.wait_for_log(f"balancer: node {node_id} at 127.0.0.1:{node_port} is up")
    assert "node lb" not in balancer.output
    console_port = balancer.ports["manhole"]
    console = Console(console_port, key, known_hosts(tmp_path, console_port, host_key))

    # Least connections over the counts the nodes publish.
    clients = [through(balancer, fleet, f"dev-{i}") for i in range(12)]
    try:
        spread = collections.Counter(name[c.port] for c in clients)
        assert sorted(spread) == ["n0", "n1", "n2"], spread
        assert max(spread.values()) - min(spread.values()) <= 2, spread

        # Draining through the registry: n0 is told through its inbox, redirects
        # its devices to the balancer, which spreads them over the others.
        on_n0 = [c for c in clients if c.port == port["n0"]]
        console.run('drain_backend("n0")')
        nodes[0].wait_for_log(f"draining: {len(on_n0)} sessions sent to 127.0.0.1:"
                              f"{balancer.ports['balancer']}")
        for client in on_n0:
            moved_off(client, port["n0"])
            assert client.ping() < 5
        # Its registration says it is draining, for every balancer.
        assert '"draining":true' in redis.cli("GET", "hypertcp:node:n0").replace(" ", "")
        rows = [row.split() for row in console.run("backends()").splitlines()[1:4]]
        assert [row[:3] for row in rows] == [["n0", "yes", "yes"], ["n1", "yes", "no"],
                                             ["n2", "yes", "no"]]
        newcomer = through(balancer, fleet, "newcomer")
        assert newcomer.port != port["n0"], "a draining node gets no one new"
        newcomer.close()

        # A node killed drops out within the TTL: nobody is sent there after.
        nodes[2].proc.send_signal(signal.SIGKILL)
        nodes[2].proc.wait(10)
        killed = time.monotonic()
        balancer.wait_for_log("balancer: node n2 is out", timeout=10)
        assert time.monotonic() - killed < TTL + 4 * REFRESH
        late = [through(balancer, fleet, f"late-{i}") for i in range(3)]
        assert {name[c.port] for c in late} == {"n1"}
        for client in late:
            client.close()
    finally:
        console.close()
        for client in clients:
            client.close()
