"""
Small holes closed (issue 15, item 12): device ids that forge log lines,
bytes that are not frames keeping a connection alive, and TLS suites
without authenticated encryption.
"""

from __future__ import annotations

import json
import ssl
import warnings
from pathlib import Path

import pytest
from OpenSSL import SSL

from hypertcp.app.tls import ServerCertificate
from hypertcp.cli.certs import issue
from hypertcp.protocol.bodies import BadBody, parse_login
from hypertcp.protocol.commands import Command, Status
from hypertcp.protocol.frames import encode
from tests.inprocess import Server


@pytest.mark.parametrize("device_id", [
    "lamp\nforged log line", "lamp\r", "bell\x07", "esc\x1b[31m", "nul\x00", "del\x7f",
    "line\u2028sep", "tab\tbed",
])
def test_device_ids_with_control_characters_are_refused(tmp_path, device_id):
    with pytest.raises(BadBody, match="device_id"):
        parse_login(json.dumps({"token": "t", "device_id": device_id}).encode())
    server = Server(tmp_path)
    peer = server.connect()
    assert peer.login(server.token("fleet", "fleet"), device_id) == Status.ILLEGAL_COMMAND_BODY
    assert not peer.closing, "the connection may try again"
    assert device_id not in server.hub.devices


def test_printable_ids_in_any_script_are_accepted(tmp_path):
    server = Server(tmp_path)
    peer = server.connect()
    assert peer.login(server.token("fleet", "fleet"), "Küche lamp-2 温度") == Status.SUCCESS


def test_bytes_that_never_make_a_frame_do_not_keep_a_connection_alive(tmp_path):
    server = Server(tmp_path, idle_timeout=60)
    peer = server.online("dribbler")
    frame = encode(Command.PING, 7)
    for i in range(4):  # a byte every 20 s: never a whole frame
        server.clock.advance(20)
        if peer.closing:
            break
        peer.session.dataReceived(frame[i:i + 1])
    assert peer.closing, "closed at the idle timeout: partial frames are not life"


def test_whole_frames_keep_a_connection_alive(tmp_path):
    server = Server(tmp_path, idle_timeout=60)
    peer = server.online("talker")
    for _ in range(6):
        server.clock.advance(20)
        peer.send(Command.PING)
    assert not peer.closing


# -- TLS: authenticated encryption only ---------------------------------------

@pytest.fixture(scope="module")
def server_certificate(tmp_path_factory) -> ServerCertificate:
    out = tmp_path_factory.mktemp("certs")
    cert, key = issue(Path(out), "localhost", ["localhost"], client=False)
    return ServerCertificate(str(cert), str(key))


def handshake(server: ServerCertificate, context: ssl.SSLContext) -> str:
    """A TLS handshake in memory against the listener's settings; the suite agreed."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    listener = server.serverConnectionForTLS(None)
    listener.set_accept_state()
    for _ in range(20):
        try:
            client.do_handshake()
            return client.cipher()[0]
        except ssl.SSLWantReadError:
            pass
        listener.bio_write(outgoing.read())
        try:
            listener.do_handshake()
        except SSL.WantReadError:
            pass
        try:
            incoming.write(listener.bio_read(65536))
        except SSL.WantReadError:
            pass
    raise AssertionError("the handshake went on and on")


def client_context(ciphers: str) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.maximum_version = ssl.TLSVersion.TLSv1_2  # 1.3 suites are all AEAD
    context.set_ciphers(ciphers)
    return context


@pytest.mark.parametrize("suite", ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384",
                                   "ECDHE-ECDSA-AES128-SHA256"])
def test_tls_listeners_refuse_cbc_suites(server_certificate, suite):
    with pytest.raises((ssl.SSLError, SSL.Error)):
        handshake(server_certificate, client_context(suite))


@pytest.mark.parametrize("suite", ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                                   "ECDHE-ECDSA-CHACHA20-POLY1305"])
def test_tls_listeners_offer_aead_suites(server_certificate, suite):
    assert handshake(server_certificate, client_context(suite)) == suite


def test_the_certificate_is_loaded_without_deprecated_pyopenssl_objects(server_certificate):
    # pyOpenSSL deprecates its X509 and PKey objects where a context takes a
    # certificate and key: passing them warns today and will fail once they go.
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        ServerCertificate(server_certificate.certificate, server_certificate.key,
                          ca=server_certificate.certificate)


def test_a_cipher_string_that_selects_nothing_stops_start_up(server_certificate):
    with pytest.raises(ValueError, match=r"\[tls\] ciphers 'NO-SUCH-SUITE'"):
        ServerCertificate(server_certificate.certificate, server_certificate.key,
                          ciphers="NO-SUCH-SUITE")
