"""
TLS for the load generator (C{--tls}): a throwaway certificate for the
servers the bench starts, and each connection's TLS done in memory.

The sockets stay the plain non-blocking sockets the epoll loop already
drives; an C{ssl.SSLObject} over two memory BIOs turns what is sent into
records and what is read back into plaintext.  So the loop never meets an
SSL socket's own buffering (data decrypted but not signalled by epoll, or a
write that must be retried with the same buffer).
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import NamedTuple, Optional

RECORDS = 256 * 1024  # read what a whole recv() can hold in one call


class Certificates(NamedTuple):
    """A server certificate for 127.0.0.1, its key, and the CA that signed it."""

    cert: Path
    key: Path
    ca: Path


def make_certificates(out: Path, host: str = "127.0.0.1") -> Certificates:
    """A development CA and a server certificate for C{host}, made by C{hypertcp certs}."""
    # Imported here: cryptography is needed only when a run asks for TLS.
    from hypertcp.cli.certs import issue

    cert, key = issue(out, host, [host], client=False)
    return Certificates(cert, key, out / "ca.pem")


def client_context(ca: Optional[Path]) -> ssl.SSLContext:
    """Verify the server against C{ca} (the system's roots when None), as a device would."""
    return ssl.create_default_context(cafile=str(ca) if ca else None)


class TLSClient:
    """One connection's TLS, in memory: records in and out, plaintext to and from the loop."""

    __slots__ = ("obj", "incoming", "outgoing", "closed")

    def __init__(self, context: ssl.SSLContext, hostname: str) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = context.wrap_bio(self.incoming, self.outgoing, server_hostname=hostname)
        self.closed = False

    def handshake(self, data: bytes = b"") -> tuple[bool, bytes]:
        """
        Feed the server's handshake bytes; return whether the handshake is
        done, and the records to send.  ssl.SSLError when it fails.
        """
        if data:
            self.incoming.write(data)
        try:
            self.obj.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            done = False
        return done, self.outgoing.read()

    def encrypt(self, data: bytes) -> bytes:
        """C{data} as records: a memory BIO takes all of it at once."""
        self.obj.write(data)
        return self.outgoing.read()

    def decrypt(self, data: bytes) -> bytes:
        """
        The plaintext of every whole record received so far (b"" when none
        is whole yet); sets C{closed} when the server ended the session.
        """
        self.incoming.write(data)
        read = self.obj.read
        chunks = []
        try:
            while True:
                chunk = read(RECORDS)
                if not chunk:
                    self.closed = True
                    break
                chunks.append(chunk)
        except ssl.SSLWantReadError:
            pass
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            self.closed = True
        return b"".join(chunks) if len(chunks) != 1 else chunks[0]
