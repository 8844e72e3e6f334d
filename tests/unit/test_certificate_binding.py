"""
[tls] bind_certificate_to_id (issue 15, item 13): with mutual TLS, a valid
device certificate plus any token used to log in as any id the token
allowed.  Bound, the certificate must name the id.  In-process, the
session's transport answers getPeerCertificate as TLSMemoryBIOProtocol
does; tests/test_security.py checks it through the real TLS listener.
"""

from __future__ import annotations

import datetime
from typing import Optional

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import crypto
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from hypertcp.app.config import ConfigError, load
from hypertcp.protocol.commands import Status
from hypertcp.server.certificates import peer_names
from tests.inprocess import Peer, Server


def certificate(common_name: str, alternative: tuple[str, ...] = ()) -> crypto.X509:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key()).serial_number(1)
               .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1)))
    if alternative:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(a) for a in alternative]), critical=False)
    return crypto.X509.from_cryptography(builder.sign(key, hashes.SHA256()))


class TLSTransport(StringTransport):
    """A transport that, like TLSMemoryBIOProtocol, tells the peer's certificate."""

    def __init__(self, peer_certificate: Optional[crypto.X509], **kwargs) -> None:
        super().__init__(**kwargs)
        self.peer_certificate = peer_certificate

    def getPeerCertificate(self) -> Optional[crypto.X509]:
        return self.peer_certificate


def connect(server: Server, cert: Optional[crypto.X509], tls: bool = True) -> Peer:
    addr = IPv4Address("TCP", "192.0.2.20", 41000)
    session = server.factory.buildProtocol(addr)
    transport = TLSTransport(cert, peerAddress=addr) if tls else StringTransport(peerAddress=addr)
    session.makeConnection(transport)
    return Peer(server, session, transport)


@pytest.fixture
def server(tmp_path) -> Server:
    server = Server(tmp_path)
    server.factory.bind_certificates = True
    return server


def test_the_certificate_must_name_the_device_id(server):
    fleet = server.token("fleet", "fleet")
    dev1 = certificate("dev-1")
    assert connect(server, dev1).login(server.token("dev-1")) == Status.SUCCESS
    assert connect(server, dev1).login(fleet, "dev-2") == Status.NOT_ALLOWED
    assert connect(server, dev1).login(fleet, "dev-1a") == Status.NOT_ALLOWED
    assert "dev-2" not in server.hub.devices


def test_a_subject_alternative_name_counts(server):
    fleet = server.token("fleet", "fleet")
    cert = certificate("Sensor 9 (kitchen)", ("sensor-9", "sensor-9.example"))
    assert connect(server, cert).login(fleet, "sensor-9") == Status.SUCCESS
    assert peer_names(TLSTransport(cert)) == {"Sensor 9 (kitchen)", "sensor-9",
                                              "sensor-9.example"}


def test_a_bound_login_must_name_an_id_and_present_a_certificate(server):
    fleet = server.token("fleet", "fleet")
    assert connect(server, certificate("dev-1")).login(fleet) == Status.NOT_ALLOWED
    assert connect(server, None).login(server.token("dev-1")) == Status.NOT_ALLOWED


def test_without_binding_any_certificate_goes_with_any_allowed_id(tmp_path):
    server = Server(tmp_path)
    assert connect(server, certificate("dev-1")).login(server.token("fleet", "fleet"),
                                                       "dev-2") == Status.SUCCESS


def test_plain_listeners_are_not_bound(server):
    assert peer_names(StringTransport()) is None
    assert connect(server, None, tls=False).login(server.token("dev-1")) == Status.SUCCESS


def test_binding_needs_client_certificates_required():
    with pytest.raises(ConfigError, match="bind_certificate_to_id needs .tls. require_client_cert"):
        load(None, {("tls", "bind_certificate_to_id"): "yes"})
