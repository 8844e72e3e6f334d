"""
The load generator's sockets: enough file descriptors for them, opening and
logging in thousands at once (over TLS when asked), and what is half-read or
unsent on each.
"""

from __future__ import annotations

import errno
import os
import resource
import select
import socket
import ssl
import time
from typing import Any, Callable, Optional

from hypertcp.bench.errors import BenchError
from hypertcp.bench.pair import Pair
from hypertcp.bench.tls import TLSClient

RECV_SIZE = 256 * 1024


def require_epoll() -> None:
    """
    Fail with a clear reason where there is no epoll (macOS, BSD).  The
    event bits are read where they are used, never at import, so importing
    the bench never fails for it.
    """
    if not hasattr(select, "epoll"):
        raise BenchError("the load generator needs epoll, which only Linux has")


class Conn:
    """One socket of the load generator and what is half-read or unsent on it."""

    __slots__ = ("sock", "fd", "pair", "receiver", "inbuf", "outbuf", "open", "tls")

    def __init__(self, sock: socket.socket, pair: Optional[Pair], receiver: bool,
                 inbuf: bytes = b"", tls: Optional[TLSClient] = None) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.fd = sock.fileno()
        self.pair = pair
        self.receiver = receiver
        self.inbuf = inbuf
        self.outbuf = b""
        self.open = True
        self.tls = tls

    def read(self, ep: Any) -> Optional[bytes]:
        """
        What has come in, after what was half-read before it: None when
        nothing has yet, b"" when the peer has gone (then it is marked
        closed and no longer polled).
        """
        try:
            data = self.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        if data and self.tls is not None:
            data = self.tls.decrypt(data)
            if self.tls.closed:
                data = b""
            elif not data:
                return None  # no whole record yet
        if not data:
            self.open = False
            ep.unregister(self.fd)
            return b""
        return self.inbuf + data if self.inbuf else data

    def seal(self, data: bytes) -> bytes:
        """What goes on the wire for C{data}: itself, or its TLS records."""
        return data if self.tls is None else self.tls.encrypt(data)


def raise_nofile(needed: int = 0) -> int:
    """
    Raise the open-file limit to the hard limit (children and the servers we
    start inherit it); fail early if even that is too low for C{needed}.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard != resource.RLIM_INFINITY and needed > hard:
        raise BenchError(f"{needed} file descriptors needed, the hard limit is {hard}; "
                         "raise it (ulimit -Hn, or LimitNOFILE= for a service)")
    return hard


# The stages of a connection being dialled.
_CONNECTING, _HANDSHAKE, _WELCOME = range(3)


def dial(address: tuple[str, int], greetings: list[tuple[bytes, bytes]], *,
         concurrency: int, timeout: float, tls: Optional[ssl.SSLContext],
         online: Callable[[int, socket.socket, bytes, Optional[TLSClient]], None],
         failed: Callable[[int, str], None]) -> None:
    """
    Connect one socket per (hello, welcome): TCP, then the TLS handshake
    when C{tls} is given, then send C{hello} and wait for exactly
    C{welcome}.  At most C{concurrency} are in progress at once.  Each ends
    in C{online(index, sock, what came after the welcome, its TLS)} or in
    C{failed(index, why)} (its socket closed); what is still on its way
    after C{timeout} seconds fails as timed out.
    """
    IN, OUT = select.EPOLLIN, select.EPOLLOUT
    ep = select.epoll()
    pending: dict[int, list] = {}
    started = 0
    deadline = time.monotonic() + timeout
    where = f"{address[0]}:{address[1]}"

    def fail(fd: int, why: str) -> None:
        index, sock = pending.pop(fd)[:2]
        ep.unregister(fd)
        sock.close()
        failed(index, why)

    try:
        while started < len(greetings) or pending:
            while started < len(greetings) and len(pending) < concurrency:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setblocking(False)
                err = sock.connect_ex(address)
                started += 1
                if err not in (0, errno.EINPROGRESS):
                    sock.close()
                    failed(started - 1, f"cannot connect to {where}: {os.strerror(err)}")
                    continue
                pending[sock.fileno()] = [started - 1, sock, _CONNECTING, b"", None]
                ep.register(sock.fileno(), OUT)
            left = deadline - time.monotonic()
            if left <= 0:
                for fd in list(pending):
                    fail(fd, f"timed out after {timeout:g} s")
                break
            for fd, event in ep.poll(min(left, 1.0)):
                entry = pending[fd]
                index, sock, stage, got, session = entry
                hello, welcome = greetings[index]
                try:
                    if stage == _CONNECTING:
                        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        if err:
                            fail(fd, f"cannot connect to {where}: {os.strerror(err)}")
                            continue
                        if tls is not None:
                            session = entry[4] = TLSClient(tls, address[0])
                            sock.send(session.handshake()[1])
                            entry[2] = _HANDSHAKE
                        else:
                            sock.send(hello)
                            entry[2] = _WELCOME
                        ep.modify(fd, IN)
                        continue
                    try:
                        data = sock.recv(65536)
                    except BlockingIOError:
                        continue
                    if not data:
                        fail(fd, "the server closed the connection while logging in"
                                 + (f"; it said {got!r}" if got else ""))
                        continue
                    if stage == _HANDSHAKE:
                        done, records = session.handshake(data)
                        if done:
                            records += session.encrypt(hello)
                            entry[2] = _WELCOME
                        if records:
                            sock.send(records)
                        if not done:
                            continue
                        data = session.decrypt(b"")
                    elif session is not None:
                        data = session.decrypt(data)
                except ssl.SSLError as e:
                    fail(fd, f"TLS failed: {e.reason or e}")
                    continue
                except OSError as e:
                    fail(fd, f"connection failed while logging in: {e.strerror or e}")
                    continue
                got += data
                entry[3] = got
                if len(got) >= len(welcome) or (session is not None and session.closed):
                    del pending[fd]
                    ep.unregister(fd)
                    if got.startswith(welcome):
                        online(index, sock, got[len(welcome):], session)
                    else:
                        sock.close()
                        failed(index, f"login refused: expected {welcome!r}, got {got!r}")
    except BaseException:
        for entry in pending.values():
            entry[1].close()
        raise
    finally:
        ep.close()


def open_many(address: tuple[str, int], greetings: list[tuple[bytes, bytes]],
              concurrency: int = 200, timeout: float = 300.0,
              tls: Optional[ssl.SSLContext] = None) -> list[tuple[socket.socket, bytes, Any]]:
    """
    Log one connection in per (hello, welcome), at most C{concurrency} at
    once, so a 10,000-connection fleet does not overflow the server's listen
    backlog.  Returns each socket with whatever came after its welcome and
    its TLS; any failure stops the run.
    """
    results: list[Any] = [None] * len(greetings)
    done = 0

    def online(index: int, sock: socket.socket, rest: bytes, session: Any) -> None:
        nonlocal done
        results[index] = (sock, rest, session)
        done += 1

    def failed(index: int, why: str) -> None:
        raise BenchError(f"{why} (after {done} of {len(greetings)} connections)")

    try:
        dial(address, greetings, concurrency=concurrency, timeout=timeout, tls=tls,
             online=online, failed=failed)
    except BaseException:
        for result in results:
            if result is not None:
                result[0].close()
        raise
    return results


def socket_pairs(count: int) -> list[tuple[socket.socket, socket.socket]]:
    """C{count} loopback TCP connections, both ends ours: the sink."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    pairs = []
    try:
        for _ in range(count):
            near = socket.create_connection(listener.getsockname())
            far, _ = listener.accept()
            for sock in (near, far):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pairs.append((near, far))
    finally:
        listener.close()
    return pairs
