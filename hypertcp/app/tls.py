"""
TLS for HyperTCP: the server's certificate, kept fresh without a restart,
and client options that verify a server.

The TLS listener is the plain session factory wrapped in
L{twisted.protocols.tls.TLSMemoryBIOFactory}: sessions never know whether
their bytes were encrypted, so every rule of the plain listener holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from OpenSSL import SSL, crypto
from twisted.application.service import Service
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator, IOpenSSLServerConnectionCreator,
)
from twisted.internet.ssl import (
    AcceptableCiphers, Certificate, CertificateOptions, PrivateCertificate, TLSVersion, optionsForClientTLS,
    platformTrust, trustRootFromCertificates,
)
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from hypertcp.app.config import DEFAULT_CIPHERS, ConfigError, TLSConfig
from hypertcp.app.listeners import DEFAULT_BACKLOG, Listener

VERSIONS = {"1.2": TLSVersion.TLSv1_2, "1.3": TLSVersion.TLSv1_3}


def _pem_certificates(path: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(Path(path).read_bytes())
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    except ValueError:
        raise ValueError(f"{path} holds no PEM certificate") from None


def _pem_key(path: str) -> Any:
    try:
        return load_pem_private_key(Path(path).read_bytes(), None)
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    except (ValueError, TypeError):
        raise ValueError(f"{path} holds no unencrypted PEM private key") from None


@implementer(IOpenSSLServerConnectionCreator)
class ServerCertificate(Service):
    """
    The listener's TLS settings, built from PEM files and rebuilt when they
    change (checked every C{interval} seconds, and at once on SIGHUP through
    the L{hypertcp.app.reload.Reloader} C{reload_now} is registered with): new
    connections get the new certificate, live ones keep the one they have.
    A file that fails to load keeps the old certificate in service, so a
    half-finished renewal never takes the server down.
    """

    log = Logger()

    def __init__(self, certificate: str, key: str = "", ca: str = "",
                 require_client_cert: bool = False, min_version: str = "1.2",
                 interval: float = 0, reactor: Any = None,
                 ciphers: str = DEFAULT_CIPHERS) -> None:
        if reactor is None:
            from twisted.internet import reactor
        try:
            SSL.Context(SSL.TLS_METHOD).set_cipher_list(ciphers.encode("ascii"))
        except (SSL.Error, UnicodeEncodeError):
            raise ValueError(f"[tls] ciphers {ciphers!r} selects no cipher suite") from None
        self.ciphers = AcceptableCiphers.fromOpenSSLCipherString(ciphers)
        self.files = [p for p in (certificate, key, ca) if p]
        self.certificate, self.key, self.ca = certificate, key or certificate, ca
        self.require_client_cert = require_client_cert
        self.min_version = VERSIONS[min_version]
        self.interval = interval
        self.reactor = reactor
        self._stamp: Optional[tuple] = None
        self._context: Optional[SSL.Context] = None
        self._poll: Optional[LoopingCall] = None
        self.load()

    def _file_stamp(self) -> tuple:
        stamps = []
        for path in self.files:
            try:
                st = Path(path).stat()
                stamps.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                stamps.append(None)
        return tuple(stamps)

    def load(self) -> None:
        """Build the context from the files; ValueError, naming the file, if they make none."""
        self._stamp = self._file_stamp()
        chain = _pem_certificates(self.certificate)
        key = _pem_key(self.key)
        # The key and chain go to the context as cryptography's objects, which
        # pyOpenSSL wants there (its own are deprecated); the CAs go into an
        # X509Store, which still takes only its own.
        options = CertificateOptions(
            privateKey=key,
            certificate=chain[0],
            extraCertChain=chain[1:],
            verify=bool(self.ca),
            caCerts=[crypto.X509.from_cryptography(c) for c in _pem_certificates(self.ca)]
            if self.ca else None,
            requireCertificate=self.require_client_cert,
            raiseMinimumTo=self.min_version,
            acceptableCiphers=self.ciphers,
        )
        try:
            self._context = options.getContext()
        except SSL.Error:
            raise ValueError(f"the key in {self.key} does not belong to the certificate "
                             f"in {self.certificate}") from None
        leaf = chain[0]
        self.log.info("TLS certificate {subject} from {path}, valid until {until}",
                      subject=leaf.subject.rfc4514_string(), path=self.certificate,
                      until=leaf.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC"))

    def reload(self, force: bool = False) -> bool:
        """Load the files again if they changed (or C{force}); return whether that worked."""
        if not force and self._file_stamp() == self._stamp:
            return False
        try:
            self.load()
        except ValueError as e:
            self.log.error("TLS certificate not reloaded, the old one stays in use: {error}",
                           error=e)
            return False
        self.log.info("TLS certificate reloaded")
        return True

    def reload_now(self) -> str:
        """SIGHUP's reload: load the files whether or not they look changed."""
        if self.reload(force=True):
            return f"loaded {self.certificate}"
        return "not reloaded, the old certificate stays in use"

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        return SSL.Connection(self._context, None)

    # -- keeping it fresh --

    def startService(self) -> None:
        super().startService()
        if self.interval:
            self._poll = LoopingCall(self.reload)
            self._poll.clock = self.reactor
            self._poll.start(self.interval, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._poll is not None and self._poll.running:
            self._poll.stop()


def certificate_service(config: TLSConfig, reactor: Any = None) -> ServerCertificate:
    """The server certificate of C{[tls]}, kept fresh; L{ConfigError} if the files make none."""
    try:
        return ServerCertificate(config.certificate, config.key, config.ca,
                                 config.require_client_cert, config.min_version,
                                 config.reload, reactor, config.ciphers)
    except ValueError as e:
        raise ConfigError(f"TLS: {e}") from None


def listeners(config: TLSConfig, certificate: ServerCertificate, factory: Any,
              reactor: Any = None, backlog: int = DEFAULT_BACKLOG,
              reuse_port: bool = False) -> list[Listener]:
    """A TLS listener for each C{[tls] listen} endpoint, serving C{factory}."""
    tls_factory = TLSMemoryBIOFactory(certificate, False, factory)
    return [Listener("tls", description, tls_factory, reactor, backlog, reuse_port)
            for description in config.listen]


# -- clients --

def client_options(host: str, ca: Optional[str] = None, certificate: Optional[str] = None,
                   key: Optional[str] = None) -> IOpenSSLClientConnectionCreator:
    """
    TLS options for a Twisted client (C{clientService(..., tls=)}): the
    server's certificate is checked against C{ca} (a PEM file of one or more
    CA certificates, e.g. the one C{hypertcp certs} made) or else the
    system's CAs, and its name against C{host} with service-identity; TLS 1.2
    at least.  With C{certificate} (and C{key}, unless it is in the same
    file) it presents a device certificate for mutual TLS.  (The blocking
    client takes C{ssl.create_default_context(cafile=ca)}, which checks the
    same.)
    """
    trust = (trustRootFromCertificates([Certificate(crypto.X509.from_cryptography(c))
                                        for c in _pem_certificates(ca)])
             if ca else platformTrust())
    client = None
    if certificate:
        pem = Path(certificate).read_bytes()
        if key:
            pem += b"\n" + Path(key).read_bytes()
        client = PrivateCertificate.loadPEM(pem)
    return optionsForClientTLS(host, trustRoot=trust, clientCertificate=client,
                               extraCertificateOptions={"raiseMinimumTo": TLSVersion.TLSv1_2})
