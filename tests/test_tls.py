"""
The TLS listener against real clients: certificates made by `hypertcp certs`,
verification of the server's name and CA, mutual TLS, minimum version, and
certificate reload on SIGHUP and on file change.
"""

from __future__ import annotations

import os
import shutil
import signal
import ssl
from pathlib import Path

import pytest

from hypertcp.client import Client
from hypertcp.app.options import Options
from tests.daemon import hypertcp, make_certs


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    """A development CA with a server certificate for localhost and a device certificate."""
    return make_certs(tmp_path / "certs", "--host", "localhost", "--host", "127.0.0.1",
                      "--client", "dev-1")


def tls_daemon(start_daemon, certs: Path, *args: str):
    return start_daemon("--tls", "tcp:0:interface=127.0.0.1",
                        "--tls-cert", str(certs / "server.pem"),
                        "--tls-key", str(certs / "server.key"), *args,
                        expect=("tcp", "tls"))


def trusting(ca: Path, certificate: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if certificate is not None:
        context.load_cert_chain(str(certificate), str(certificate.with_suffix(".key")))
    return context


def login(port: int, token: str, context: ssl.SSLContext, hostname: str = "localhost",
          device_id: str = "dev-1") -> Client:
    return Client("127.0.0.1", port, token, device_id, timeout=10, ssl_context=context,
                  server_hostname=hostname).connect()


@pytest.mark.integration
def test_certs_command_makes_a_ca_and_reuses_it(tmp_path: Path) -> None:
    out = make_certs(tmp_path / "c", "--host", "broker.example")
    ca = (out / "ca.pem").read_bytes()
    assert oct((out / "ca.key").stat().st_mode & 0o777) == "0o600"
    assert oct((out / "server.key").stat().st_mode & 0o777) == "0o600"
    make_certs(out, "--client", "sensor-7")
    assert (out / "ca.pem").read_bytes() == ca, "a second run signs with the same CA"
    assert (out / "client-sensor-7.pem").exists()
    refused = hypertcp("certs", "--out", str(out))
    assert refused.returncode == 2 and "--host" in refused.stderr


@pytest.mark.integration
def test_a_client_with_the_ca_connects_and_a_wrong_name_or_ca_is_refused(
        start_daemon, token, certs: Path, tmp_path: Path) -> None:
    daemon = tls_daemon(start_daemon, certs)
    secret = token("dev-1")
    port = daemon.ports["tls"]
    with login(port, secret, trusting(certs / "ca.pem")) as client:
        assert client.ping() < 5
        assert client.send_to_server({"command": "ping", "timestamp": 7}) == 200
        assert client.receive(10).payload == {"command": "pong", "timestamp": 7}
    # The certificate names localhost and 127.0.0.1, nothing else.
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        login(port, secret, trusting(certs / "ca.pem"), hostname="wrong.example")
    # The system's CAs do not know our development CA, nor does another one.
    with pytest.raises(ssl.SSLCertVerificationError):
        login(port, secret, ssl.create_default_context())
    other = make_certs(tmp_path / "other", "--host", "localhost")
    with pytest.raises(ssl.SSLCertVerificationError):
        login(port, secret, trusting(other / "ca.pem"))
    # Plain TCP sessions on the same daemon are untouched.
    with Client("127.0.0.1", daemon.port, secret, timeout=10).connect() as plain:
        assert plain.ping() < 5
    assert maps_cryptography(daemon), "a server with a TLS listener loads pyOpenSSL"


def maps_cryptography(daemon) -> bool:
    """Has the daemon's process loaded cryptography's native module (pyOpenSSL's base)?"""
    with open(f"/proc/{daemon.proc.pid}/maps") as f:
        return "/cryptography/" in f.read()


@pytest.mark.integration
def test_a_server_without_tls_leaves_pyopenssl_out(start_daemon, token) -> None:
    daemon = start_daemon()
    with Client("127.0.0.1", daemon.port, token("dev-1"), timeout=10).connect() as plain:
        assert plain.ping() < 5
    assert not maps_cryptography(daemon), "13 MB a plain server does not need"


@pytest.mark.integration
def test_mutual_tls_refuses_a_device_without_a_certificate(
        start_daemon, token, certs: Path, tmp_path: Path) -> None:
    daemon = tls_daemon(start_daemon, certs, "--tls-ca", str(certs / "ca.pem"),
                        "--set", "tls.require_client_cert=yes")
    secret = token("dev-1")
    port = daemon.ports["tls"]
    with login(port, secret, trusting(certs / "ca.pem", certs / "client-dev-1.pem")) as client:
        assert client.ping() < 5
    with pytest.raises(OSError):  # the handshake fails: ssl.SSLError or a reset
        login(port, secret, trusting(certs / "ca.pem"))
    # A certificate from a CA the server does not trust is no better.
    stranger = make_certs(tmp_path / "stranger", "--client", "dev-1")
    with pytest.raises(OSError):
        login(port, secret, trusting(certs / "ca.pem", stranger / "client-dev-1.pem"))


@pytest.mark.integration
def test_tls_1_2_is_the_minimum_and_1_3_can_be_required(start_daemon, token, certs: Path) -> None:
    secret = token("dev-1")
    only_12 = trusting(certs / "ca.pem")
    only_12.maximum_version = ssl.TLSVersion.TLSv1_2
    daemon = tls_daemon(start_daemon, certs)
    with login(daemon.ports["tls"], secret, only_12) as client:
        assert client._sock.version() == "TLSv1.2"
    strict = tls_daemon(start_daemon, certs, "--set", "tls.min_version=1.3")
    with pytest.raises(ssl.SSLError):
        login(strict.ports["tls"], secret, only_12)
    with login(strict.ports["tls"], secret, trusting(certs / "ca.pem")) as client:
        assert client._sock.version() == "TLSv1.3"


@pytest.mark.integration
def test_the_certificate_is_reloaded_on_sighup_and_on_change(
        start_daemon, token, tmp_path: Path) -> None:
    first = make_certs(tmp_path / "first", "--host", "localhost")
    second = make_certs(tmp_path / "second", "--host", "localhost")
    live = tmp_path / "live"
    live.mkdir()

    def install(source: Path) -> None:
        # Key first, then certificate, each replaced whole, as a renewal does.
        for name in ("server.key", "server.pem"):
            shutil.copy(source / name, live / f".{name}")
            os.replace(live / f".{name}", live / name)

    install(first)
    daemon = tls_daemon(start_daemon, live, "--set", "tls.reload=0")
    secret = token("dev-1")
    port = daemon.ports["tls"]
    login(port, secret, trusting(first / "ca.pem")).close()

    install(second)
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_for_log("TLS certificate reloaded")
    login(port, secret, trusting(second / "ca.pem")).close()
    with pytest.raises(ssl.SSLCertVerificationError):
        login(port, secret, trusting(first / "ca.pem"))

    # With polling on, a changed file is picked up with no signal at all.
    polled = tls_daemon(start_daemon, live, "--set", "tls.reload=0.2")
    login(polled.ports["tls"], secret, trusting(second / "ca.pem")).close()
    install(first)
    polled.wait_for(lambda: polled.output.count("TLS certificate reloaded") >= 1, 10, "a reload")
    login(polled.ports["tls"], secret, trusting(first / "ca.pem")).close()

    # A broken renewal keeps the old certificate in service.
    (live / "server.pem").write_text("not a certificate\n")
    polled.wait_for_log("TLS certificate not reloaded, the old one stays in use")
    login(polled.ports["tls"], secret, trusting(first / "ca.pem")).close()


@pytest.mark.parametrize("args, complaint", [
    (["--tls", "tcp:0"], "[tls] certificate"),
    (["--tls-cert", "c.pem", "--set", "tls.require_client_cert=yes"], "[tls] ca"),
    (["--set", "tls.min_version=1.1"], "min_version"),
])
def test_tls_configuration_mistakes_are_named(args: list[str], complaint: str) -> None:
    with pytest.raises(SystemExit, match=complaint.replace("[", r"\[").replace("]", r"\]")):
        Options().parseOptions(args)


@pytest.mark.integration
def test_a_bad_certificate_file_stops_the_daemon_with_its_name(start_daemon, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    with pytest.raises(AssertionError, match="bad.pem"):
        start_daemon("--tls", "tcp:0:interface=127.0.0.1", "--tls-cert", str(bad),
                     expect=("tcp", "tls"))


@pytest.mark.integration
def test_the_command_line_speaks_tls_with_a_ca(start_daemon, token, certs: Path) -> None:
    daemon = tls_daemon(start_daemon, certs)
    common = ("--host", "localhost", "--port", str(daemon.ports["tls"]), f"--token={token('dev-1')}")
    ok = hypertcp("ping", *common, "--ca", str(certs / "ca.pem"))
    assert ok.returncode == 0, ok.stderr
    assert "ms from localhost" in ok.stdout
    # The system's CAs do not know the development CA.
    refused = hypertcp("ping", *common, "--tls")
    assert refused.returncode == 1
    assert "certificate" in refused.stderr.lower()
    assert "use --ca FILE to verify the server against your CA" in refused.stderr


@pytest.mark.integration
def test_reissuing_over_a_readable_key_makes_it_private_again(tmp_path: Path) -> None:
    out = make_certs(tmp_path / "c", "--host", "broker.example")
    (out / "server.key").chmod(0o644)
    make_certs(out, "--host", "broker.example")
    assert oct((out / "server.key").stat().st_mode & 0o777) == "0o600"
