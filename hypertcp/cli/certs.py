"""
C{hypertcp certs}: a development certificate authority and the certificates
it signs, so TLS can be tried in a minute.

The CA is kept beside the certificates and reused on later runs, so client
certificates made tomorrow are trusted by the server set up today.  Keys are
ECDSA P-256: small, fast, and within what an ESP32's mbedTLS handles.  This
is for development and test fleets; production certificates come from a
real CA.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
from pathlib import Path
from typing import Any, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_NAME = "HyperTCP development CA"


def _write(path: Path, data: bytes, secret: bool = False) -> None:
    # Keys are created 0600 from the start, never world-readable for a moment.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    if secret:  # the mode above applies only to a file it creates
        os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _builder(subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey,
             days: int) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            # An hour of slack for clocks that are a little behind.
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False))


def load_or_make_ca(out: Path, days: int = 3650) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, bool]:
    """The CA in C{out} (ca.pem, ca.key), made there first if missing; and whether it was made."""
    cert_path, key_path = out / "ca.pem", out / "ca.key"
    if cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path} is not an ECDSA key made by hypertcp certs")
        return cert, key, False
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    cert = (_builder(CA_NAME, name, key, days)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    out.mkdir(parents=True, exist_ok=True)
    _write(key_path, _key_pem(key), secret=True)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert, key, True


def _alt_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def issue(out: Path, name: str, hosts: Sequence[str], client: bool, days: int = 825) -> tuple[Path, Path]:
    """
    Sign a server certificate for C{hosts} (DNS names or IP addresses) or,
    with C{client}, a device certificate for C{name}; write NAME.pem and
    NAME.key in C{out}, and return their paths.
    """
    ca_cert, ca_key, _ = load_or_make_ca(out)
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (_builder(name if client else hosts[0], ca_cert.subject, key, days)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(
                   digital_signature=True, content_commitment=False, key_encipherment=False,
                   data_encipherment=False, key_agreement=False, key_cert_sign=False,
                   crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca_key.public_key()), critical=False))
    if not client:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_alt_name(h) for h in hosts]), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    stem = f"client-{name}" if client else "server"
    cert_path, key_path = out / f"{stem}.pem", out / f"{stem}.key"
    _write(key_path, _key_pem(key), secret=True)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if not args.host and not args.client:
        parser.error("name at least one --host (for a server certificate) or --client")
    out = Path(args.out)
    _, _, made = load_or_make_ca(out)
    ca = out / "ca.pem"
    print(f"{'Made' if made else 'Reusing'} the development CA {ca} (key {out / 'ca.key'}: keep it private).")
    for name in args.client or ():
        cert, key = issue(out, name, (), client=True, days=args.days)
        print(f"Device certificate for {name}: {cert} (key {key}).")
    if args.host:
        cert, key = issue(out, args.host[0], args.host, client=False, days=args.days)
        print(f"Server certificate for {', '.join(args.host)}: {cert} (key {key}).")
        print("\nServe TLS with, in the config file:\n\n[tls]\nlisten = tcp:8443:interface=127.0.0.1\n"
              f"certificate = {cert}\nkey = {key}")
        if args.client:
            print(f"ca = {ca}\nrequire_client_cert = yes")
        print(f"\nClients verify the server against {ca}; in Python, "
              f"ssl.create_default_context(cafile=\"{ca}\").")
    return 0


def add_parser(subparsers: Any) -> None:
    """The C{certs} subcommand of the C{hypertcp} command line."""
    certs = subparsers.add_parser(
        "certs", help="make a development CA and TLS certificates",
        description="Make (or reuse) a development CA in DIR and sign a server certificate "
                    "for the given host names and/or device certificates for mutual TLS. "
                    "For trying TLS and for tests, not for production.")
    certs.add_argument("--host", metavar="NAME", action="append",
                       help="a DNS name or IP address the server certificate is valid for "
                            "(repeatable; the first is its common name)")
    certs.add_argument("--client", metavar="NAME", action="append",
                       help="also make a device certificate client-NAME.pem (repeatable)")
    certs.add_argument("--out", metavar="DIR", default="certs",
                       help="where the files go (default: %(default)s)")
    certs.add_argument("--days", type=int, default=825,
                       help="validity of the new certificates in days (default: %(default)s)")
    certs.set_defaults(run=lambda args: _run(args, certs))

