"""
The load balancer with real node daemons: a device that cannot follow a
REDIRECT relayed to a node, a node dying and coming back, draining a node
while its clients follow, TLS all the way, and the ESP32 library sent on.
Picking, the balancer session's answers, health, draining state and the
balancer's commands are tested in-process (tests/unit/test_balancer.py).
"""

from __future__ import annotations

import signal
import ssl
import time
from pathlib import Path

import pytest

from hypertcp.client import Client
from hypertcp.protocol.commands import Command, Status
from tests.daemon import Daemon, make_certs
from tests.raw import Raw

LOOPBACK = "tcp:0:interface=127.0.0.1"

pytestmark = pytest.mark.integration


@pytest.fixture
def start_balancer(start_daemon, token, tmp_path: Path):
    """Factory: start_balancer(node_ports, *args) -> a balancer daemon with every node up."""
    token_file = tmp_path / "balancer.token"
    token_file.write_text(token("balancer", "--role", "fleet", "--grant", "stats", "drain") + "\n")

    def start(ports: list[int], *args: str, expect: tuple[str, ...] = ("tcp", "balancer"),
              wait_up: bool = True) -> Daemon:
        backends = [arg for port in ports for arg in ("--backend", f"127.0.0.1:{port}")]
        daemon = start_daemon("--balancer", LOOPBACK, *backends,
                              "--set", f"balancer.token_file={token_file}",
                              "--set", "balancer.health_interval=0.3",
                              "--set", "balancer.health_timeout=3", *args, expect=expect)
        if wait_up:
            for port in ports:
                daemon.wait_for_log(f"node 127.0.0.1:{port} is up")
        return daemon

    return start


def through(balancer: Daemon, token: str, device_id: str, **options) -> Client:
    """A client that logged in at the balancer and has followed its REDIRECT."""
    client = Client("127.0.0.1", balancer.ports["balancer"], token, device_id, timeout=10,
                    **options).connect()
    assert client.ping() < 5  # the first request follows the REDIRECT that came with SUCCESS
    assert client.port != balancer.ports["balancer"]
    return client


def back_up(balancer: Daemon, port: int) -> None:
    """Wait for the balancer to put the node on C{port} back, after taking it out."""
    balancer.wait_for(lambda: balancer.output.count(f"node 127.0.0.1:{port} is up") >= 2,
                      15, f"node {port} back up")


def follow(client: Client, port: int, timeout: float = 15) -> None:
    """Read until the client, redirected, has logged in at C{port}."""
    deadline = time.monotonic() + timeout
    while client.port != port:
        assert time.monotonic() < deadline, f"{client.device_id} is still on {client.port}"
        client.receive(0.1)


def settle(condition, timeout: float = 10) -> None:
    """Wait until C{condition()} holds, checking again and again until a deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"


def talks_to_server(client: Client, n: int) -> None:
    assert client.ping() < 5
    assert client.send_to_server({"command": "ping", "timestamp": n}) == Status.SUCCESS
    message = client.receive(10)
    assert message is not None and message.sender == "server"
    assert message.payload == {"command": "pong", "timestamp": n}


def ask(port: int, token: str, payload: dict) -> dict:
    """Send a server command with an admin token and return the server's reply."""
    with Client("127.0.0.1", port, token, timeout=10).connect() as admin:
        assert admin.send_to_server(payload) == Status.SUCCESS
        reply = admin.receive(10)
        while reply.payload.get("event"):  # presence events come to observers too
            reply = admin.receive(10)
        return reply.payload


def test_a_device_that_cannot_follow_a_redirect_is_relayed_to_a_node(
        start_daemon, start_balancer, token) -> None:
    """
    The original sketch logs in with the raw token, reads one frame as its
    login answer and never reconnects: through the balancer it must reach a
    node on the same connection.
    """
    node = start_daemon()
    balancer = start_balancer([node.port])
    device = token("esp32-1")
    app = Client("127.0.0.1", node.port, token("app", "--role", "fleet"), "app").connect()
    with app, Raw(balancer.ports["balancer"]) as raw:
        login = raw.send(Command.LOGIN, device.encode())
        first = raw.expect(lambda f: True)
        assert (first.command, first.msg_id, first.payload) == (
            Command.RESPONSE, login, bytes((Status.SUCCESS,)))
        node.wait_for_log("logged in as esp32-1")
        # Both ways, through the one connection the device holds.
        assert app.send("esp32-1", {"relay": 1}) == Status.SUCCESS
        assert raw.message() == {"from": "app", "payload": {"relay": 1}}
        sent = raw.send_json(Command.JSON_MESSAGE, {"targetId": "app", "payload": {"t": 21}})
        assert raw.answer_to(sent) == Status.SUCCESS
        message = app.receive(10)
        assert (message.sender, message.payload) == ("esp32-1", {"t": 21})
        # An offline target: the node answers as to any original device, with no status byte.
        lost = raw.send_json(Command.JSON_MESSAGE, {"targetId": "nobody", "payload": {}})
        assert raw.expect(lambda f: f.msg_id == lost).payload == b""
    balancer.wait_for_log("relayed to 127.0.0.1:")
    node.wait_for_log("(esp32-1) disconnected")


def test_a_dead_node_is_taken_out_and_put_back(start_daemon, start_balancer, token) -> None:
    a, b = start_daemon(), start_daemon()
    balancer = start_balancer([a.port, b.port])
    fleet = token("fleet", "--role", "fleet")
    before = [through(balancer, fleet, f"early-{i}") for i in range(6)]
    assert {client.port for client in before} == {a.port, b.port}

    b.proc.kill()
    b.proc.wait()
    balancer.wait_for_log(f"node 127.0.0.1:{b.port} is down")
    after = [through(balancer, fleet, f"late-{i}") for i in range(10)]
    assert {client.port for client in after} == {a.port}

    # Back on the same port, it is put back, and as the emptiest node it gets the next ones.
    start_daemon("--listen", f"tcp:{b.port}:interface=127.0.0.1")
    back_up(balancer, b.port)
    again = [through(balancer, fleet, f"again-{i}") for i in range(4)]
    assert {client.port for client in again} == {b.port}
    for client in before + after + again:
        client.close()


def test_draining_a_node_moves_its_clients_to_the_other(start_daemon, start_balancer,
                                                        token) -> None:
    a, b = start_daemon(), start_daemon()
    balancer = start_balancer([a.port, b.port])
    fleet = token("fleet", "--role", "fleet")
    admin = token("admin", "--role", "observer", "--grant", "stats", "drain")
    clients = [through(balancer, fleet, f"dev-{i}") for i in range(20)]
    on_a = [client for client in clients if client.port == a.port]
    assert on_a and len(on_a) < 20
    try:
        reply = ask(balancer.port, admin,
                    {"command": "drain_backend", "backend": f"127.0.0.1:{a.port}"})
        assert reply == {"command": "drain_backend", "backend": f"127.0.0.1:{a.port}"}
        balancer.wait_for_log(f"node 127.0.0.1:{a.port} drained: {len(on_a)} sessions redirected")
        for i, client in enumerate(on_a):
            follow(client, b.port)
            talks_to_server(client, i)
        # The node keeps only the balancer's health connection (and the one asking).
        settle(lambda: ask(a.port, admin, {"command": "stats"})["sessions"] == 2)
        assert ask(b.port, admin, {"command": "stats"})["sessions"] == 20 + 2
        newcomer = through(balancer, fleet, "newcomer")
        assert newcomer.port == b.port, "a draining node gets no one new"
        state = ask(balancer.port, admin, {"command": "backends"})
        assert [(s["backend"], s["draining"]) for s in state["backends"]] == [
            (f"127.0.0.1:{a.port}", True), (f"127.0.0.1:{b.port}", False)]

        ask(balancer.port, admin, {"command": "undrain_backend", "backend": f"127.0.0.1:{a.port}"})
        balancer.wait_for(lambda: "takes devices again" in balancer.output)
        returning = through(balancer, fleet, "returning")
        assert returning.port == a.port, "undrained and emptiest, it is picked again"
        returning.close()
        newcomer.close()
    finally:
        for client in clients:
            client.close()


def test_a_balancer_alone_with_tls_everywhere(start_daemon, start_balancer, token,
                                             tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs", "--host", "localhost", "--host", "127.0.0.1")
    tls = ("--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "server.key"))
    nodes = [start_daemon("--tls", LOOPBACK, *tls, expect=("tcp", "tls")) for _ in range(2)]
    tls_ports = [node.ports["tls"] for node in nodes]
    # No plain listener of its own: only the balancer, over TLS, sending devices to TLS ports.
    balancer = start_balancer(tls_ports, "--listen=", *tls, "--set", "balancer.tls=yes",
                              "--set", "balancer.backend_tls=yes",
                              "--set", f"balancer.ca={certs / 'ca.pem'}", expect=("balancer",))
    assert "tcp" not in balancer.ports
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    fleet = token("fleet", "--role", "fleet")
    clients = [through(balancer, fleet, f"dev-{i}", ssl_context=context) for i in range(4)]
    assert {client.port for client in clients} == set(tls_ports)
    for i, client in enumerate(clients):
        assert client._sock.version() in ("TLSv1.2", "TLSv1.3")
        talks_to_server(client, i)
        client.close()


def test_a_plain_balancer_sends_a_client_on_to_a_tls_node(start_daemon, start_balancer, token,
                                                         tmp_path: Path) -> None:
    """The blocking client follows each REDIRECT's "tls" flag, verifying with its own CA."""
    certs = make_certs(tmp_path / "certs", "--host", "localhost", "--host", "127.0.0.1")
    tls = ("--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "server.key"))
    node = start_daemon("--tls", LOOPBACK, *tls, expect=("tcp", "tls"))
    balancer = start_balancer([node.ports["tls"]], "--set", "balancer.backend_tls=yes",
                              "--set", f"balancer.ca={certs / 'ca.pem'}")
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    with through(balancer, token("fleet", "--role", "fleet"), "dev-1", ssl_context=context,
                 tls=False) as client:
        assert client.port == node.ports["tls"]
        assert client._sock.version() in ("TLSv1.2", "TLSv1.3")
        talks_to_server(client, 0)


def test_the_esp32_library_follows_the_balancer(start_daemon, start_balancer, token,
                                                device) -> None:
    a, b = start_daemon(), start_daemon()
    balancer = start_balancer([a.port, b.port], "--set", "balancer.policy=sticky")
    d = device(token("esp32-1"), balancer.ports["balancer"])
    port = int(d.expect(r"redirect 127\.0\.0\.1 (\d+) 0").group(1))
    assert port in (a.port, b.port)
    d.expect("connected")
    # Sent on before it believed itself online at the balancer: no connected/disconnected pair.
    assert d.history.index("connected") > d.history.index(f"redirect 127.0.0.1 {port} 0")
    assert "disconnected" not in d.history
    with Client("127.0.0.1", port, token("app")) as app:
        d.send("send", "app", '{"via":"balancer"}')
        message = app.receive(timeout=10)
        assert message is not None
        assert (message.sender, message.payload) == ("esp32-1", {"via": "balancer"})


def test_sighup_gives_the_balancer_a_rotated_health_token(start_daemon, start_balancer, token,
                                                          tmp_path) -> None:
    node = start_daemon()
    balancer = start_balancer([node.port])
    node.wait_for_log("(fleet token balancer)")
    rotated = token("balancer-2", "--role", "fleet", "--grant", "stats", "drain")
    node.proc.send_signal(signal.SIGHUP)  # the node learns the new token
    node.wait_for_log("SIGHUP: reloaded")
    (tmp_path / "balancer.token").write_text(rotated + "\n")
    balancer.proc.send_signal(signal.SIGHUP)
    balancer.wait_for_log("a new health token, 1 nodes logging in with it")
    # Its health connection logs in again at once, with the new token, and the node is up.
    node.wait_for_log("(fleet token balancer-2)")
    back_up(balancer, node.port)
    fleet = token("fleet", "--role", "fleet")
    with through(balancer, fleet, "after-rotation") as client:
        assert client.port == node.port
    balancer.proc.send_signal(signal.SIGHUP)
    balancer.wait_for_log("balancer.token unchanged")
