"""
Security and resource bounds against the real daemon (issue 15).  The rules
themselves are proven in-process (tests/unit/test_closing.py and the other
tests/unit/test_*bounds*); these few prove that they hold on real sockets,
through the real TLS layer.
"""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path

import pytest

from hypertcp.client import Client, HyperTCPError
from hypertcp.protocol.commands import Command, Status
from hypertcp.protocol.frames import encode
from tests.daemon import hypertcp, make_certs
from tests.raw import Raw
from tests.ssh import Console, keygen, known_hosts


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    return make_certs(tmp_path / "certs", "--host", "localhost")


def client_hello() -> bytes:
    """The first flight of a real TLS client, as it would cross the wire."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    assert len(hello) > 100
    return hello


def closed_by_server(sock: socket.socket, timeout: float) -> str:
    """How the server ended the connection ("closed" or "reset"), waiting at most C{timeout}."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, "the server kept the connection open"
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return "reset"
        if not data:
            return "closed"


@pytest.mark.integration
def test_half_done_tls_handshakes_are_closed_and_plain_devices_get_in(
        start_daemon, token, certs: Path) -> None:
    cap = 12
    daemon = start_daemon("--tls", "tcp:0:interface=127.0.0.1",
                          "--tls-cert", str(certs / "server.pem"),
                          "--tls-key", str(certs / "server.key"),
                          "--login-timeout", "1", "--set", "limits.close_timeout=1",
                          "--set", f"limits.max_connections={cap}", expect=("tcp", "tls"))
    secret = token("dev")
    hello = client_hello()
    stalled = []
    try:
        # Enough half ClientHellos to fill the cap: no credentials needed.
        for _ in range(cap):
            sock = socket.create_connection(("127.0.0.1", daemon.ports["tls"]), timeout=10)
            sock.sendall(hello[:len(hello) // 2])
            stalled.append(sock)
        # Each is ended within the login deadline plus the close deadline.
        for sock in stalled:
            assert closed_by_server(sock, timeout=10) in ("closed", "reset")
        daemon.wait_for_log("close not finished within 1 s (no login within 1 s)")
        with Raw(daemon.port) as device:
            assert device.login(secret, proto=2) == Status.SUCCESS
            assert device.request(Command.PING) == Status.SUCCESS
    finally:
        for sock in stalled:
            sock.close()


@pytest.mark.integration
def test_a_tls_connection_the_server_closes_is_closed_cleanly(
        start_daemon, certs: Path) -> None:
    # TLS holds a close while the session is its producer: unregistered, it
    # closes at once with close_notify, long before the close deadline.
    daemon = start_daemon("--tls", "tcp:0:interface=127.0.0.1",
                          "--tls-cert", str(certs / "server.pem"),
                          "--tls-key", str(certs / "server.key"),
                          "--login-timeout", "1", "--set", "limits.close_timeout=30",
                          expect=("tcp", "tls"))
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    raw = socket.create_connection(("127.0.0.1", daemon.ports["tls"]), timeout=10)
    with context.wrap_socket(raw, server_hostname="localhost") as tls:
        started = time.monotonic()
        received = b""
        while True:
            try:
                data = tls.recv(65536)
            except ssl.SSLZeroReturnError:
                break
            if not data:
                break
            received += data
            assert time.monotonic() - started < 10, "the server kept the connection open"
        assert received == bytes((Command.RESPONSE, 0, 1, 0, 1, Status.TIMEOUT))
        assert time.monotonic() - started < 10


def held_from(address: str, port: int, count: int) -> list[socket.socket]:
    """C{count} connections from the loopback address C{address} that never log in."""
    held = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind((address, 0))
        sock.connect(("127.0.0.1", port))
        held.append(sock)
    return held


def still_open(sock: socket.socket, wait: float) -> bool:
    """Is the server keeping C{sock} open (nothing to read, no close) for C{wait} seconds?"""
    sock.settimeout(wait)
    try:
        return sock.recv(1) != b""
    except socket.timeout:
        return True
    except ConnectionResetError:
        return False


@pytest.mark.integration
def test_connections_without_a_token_cannot_lock_out_devices(start_daemon, token) -> None:
    daemon = start_daemon("--set", "limits.max_connections=12",
                          "--set", "limits.max_pending_per_source=5")
    secret = token("dev")
    held: list[socket.socket] = []
    devices: list[Raw] = []
    try:
        # One address (127.0.0.2 is loopback too) opens far more than its share:
        # five are kept, the rest closed at once, with one log line for them all.
        held = held_from("127.0.0.2", daemon.port, 40)
        kept = [sock for sock in held if still_open(sock, 0.3)]
        assert len(kept) == 5
        daemon.wait_for_log("refused: 5 connections from 127.0.0.2 not logged in yet")
        assert daemon.output.count("not logged in yet") == 1
        # Another address holds its five: ten of twelve slots without a token.
        held += held_from("127.0.0.3", daemon.port, 5)
        # Ten devices log in one after another: each past the cap takes the
        # slot of the oldest connection that never logged in.
        for _ in range(10):
            device = Raw(daemon.port)
            devices.append(device)
            assert device.login(secret, proto=2) == Status.SUCCESS
        assert all(device.request(Command.PING) == Status.SUCCESS for device in devices)
        daemon.wait_for_log("closed to make room: the server is full and it had not logged in")
    finally:
        for sock in held:
            sock.close()
        for device in devices:
            device.close()


@pytest.mark.integration
def test_a_node_that_requires_challenges_takes_them_from_the_clients_and_cli(
        start_daemon, token) -> None:
    daemon = start_daemon("--set", "auth.require_challenge=yes")
    secret = token("dev-1")
    with Raw(daemon.port) as sketch:
        assert sketch.login(secret) == Status.NOT_ALLOWED, "the raw token is refused"
    with pytest.raises(HyperTCPError) as refused:
        Client("127.0.0.1", daemon.port, secret, timeout=10).connect()
    assert refused.value.status == Status.NOT_ALLOWED
    with Client("127.0.0.1", daemon.port, secret, timeout=10, challenge=True) as client:
        assert client.send_to_server({"command": "whoami"}) == Status.SUCCESS
        assert client.receive(10).payload["deviceId"] == "dev-1"
    common = ("--port", str(daemon.port), f"--token={secret}")
    ok = hypertcp("ping", *common, "--challenge")
    assert ok.returncode == 0, ok.stderr
    plain = hypertcp("ping", *common)
    assert plain.returncode == 1 and "NOT_ALLOWED" in plain.stderr


@pytest.mark.integration
def test_a_bound_tls_listener_takes_only_the_id_the_certificate_names(
        start_daemon, token, tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "bound", "--host", "localhost", "--client", "dev-1")
    daemon = start_daemon("--listen=", "--tls", "tcp:0:interface=127.0.0.1",
                          "--tls-cert", str(certs / "server.pem"),
                          "--tls-key", str(certs / "server.key"),
                          "--tls-ca", str(certs / "ca.pem"),
                          "--set", "tls.require_client_cert=yes",
                          "--set", "tls.bind_certificate_to_id=yes", expect=("tls",))
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    context.load_cert_chain(str(certs / "client-dev-1.pem"), str(certs / "client-dev-1.key"))
    port = daemon.ports["tls"]
    with Client("127.0.0.1", port, token("dev-1"), ssl_context=context,
                server_hostname="localhost", timeout=10) as device:
        assert device.ping() < 5
    fleet = token("fleet", "--role", "fleet")
    with pytest.raises(HyperTCPError) as refused:
        Client("127.0.0.1", port, fleet, "dev-2", ssl_context=context,
               server_hostname="localhost", timeout=10).connect()
    assert refused.value.status == Status.NOT_ALLOWED
    daemon.wait_for_log("the client certificate (dev-1) does not name 'dev-2'")


@pytest.mark.integration
def test_bare_connections_to_the_manhole_are_capped_and_timed_out(
        start_daemon, tmp_path: Path) -> None:
    key = keygen(tmp_path / "operator")
    authorized = tmp_path / "authorized_keys"
    authorized.write_text(Path(f"{key}.pub").read_text())
    host_key = tmp_path / "host_key"
    daemon = start_daemon("--manhole", "tcp:0:interface=127.0.0.1",
                          "--set", f"manhole.authorized_keys={authorized}",
                          "--set", f"manhole.host_key={host_key}",
                          "--set", "manhole.login_timeout=2", "--set", "manhole.max_pending=3",
                          expect=("tcp", "manhole"))
    port = daemon.ports["manhole"]
    console = Console(port, key, known_hosts(tmp_path, port, host_key))
    bare: list[socket.socket] = []
    try:
        assert console.run("print(6 * 7)").strip() == "42"
        bare = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(4)]
        # Three wait for their deadline; the fourth is closed at once.
        assert [still_open(sock, 0.5) for sock in bare] == [True, True, True, False]
        for sock in bare[:3]:
            closed_by_server(sock, timeout=10)
        daemon.wait_for_log("manhole: refused 127.0.0.1: 3 connections have not authenticated yet")
        daemon.wait_for_log("did not authenticate within 2 s")
        # The operator, logged in before them, is neither counted nor timed out.
        assert console.run("print(6 * 8)").strip() == "48"
    finally:
        console.close()
        for sock in bare:
            sock.close()


@pytest.mark.integration
def test_a_balancer_drops_a_peer_that_sends_pings_and_never_reads(
        start_daemon, token, tmp_path: Path) -> None:
    node = start_daemon()
    token_file = tmp_path / "balancer.token"
    token_file.write_text(token("balancer", "--role", "fleet", "--grant", "stats", "drain"))
    balancer = start_daemon("--listen=", "--balancer", "tcp:0:interface=127.0.0.1",
                            "--backend", f"127.0.0.1:{node.port}",
                            "--set", f"balancer.token_file={token_file}", "--rate-limit", "0",
                            expect=("balancer",))
    flooder = socket.socket()
    flooder.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    flooder.connect(("127.0.0.1", balancer.ports["balancer"]))
    try:
        ping = b"".join(encode(Command.PING, i) for i in range(1, 10001))
        flooder.settimeout(10)
        try:
            for _ in range(100):  # 5 MB of PINGs; their answers are never read
                flooder.sendall(ping)
        except (ConnectionResetError, BrokenPipeError):
            pass
        balancer.wait_for_log("slow receiver: outbound buffer over 1048576 bytes")
        with Raw(balancer.ports["balancer"]) as polite:
            assert polite.request(Command.PING) == Status.SUCCESS
    finally:
        flooder.close()
