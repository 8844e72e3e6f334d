"""
The load generator's sockets: enough file descriptors for them, opening and
logging in thousands at once, and what is half-read or unsent on each.
"""

from __future__ import annotations

import errno
import os
import resource
import select
import socket
import time
from typing import Any, Optional

from hypertcp.bench.errors import BenchError
from hypertcp.bench.pair import Pair

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

    __slots__ = ("sock", "fd", "pair", "receiver", "inbuf", "outbuf", "open")

    def __init__(self, sock: socket.socket, pair: Optional[Pair], receiver: bool,
                 inbuf: bytes = b"") -> None:
        sock.setblocking(False)
        self.sock = sock
        self.fd = sock.fileno()
        self.pair = pair
        self.receiver = receiver
        self.inbuf = inbuf
        self.outbuf = b""
        self.open = True

    def read(self, ep: select.epoll) -> Optional[bytes]:
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
        if not data:
            self.open = False
            ep.unregister(self.fd)
            return b""
        return self.inbuf + data if self.inbuf else data


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


def open_many(address: tuple[str, int], greetings: list[tuple[bytes, bytes]],
              concurrency: int = 200, timeout: float = 300.0) -> list[tuple[socket.socket, bytes]]:
    """
    Connect one socket per (hello, welcome), send C{hello} and wait for
    exactly C{welcome}.  At most C{concurrency} are in progress at once, so a
    10,000-connection fleet does not overflow the server's listen backlog.
    Returns each socket with whatever came after its welcome.
    """
    results: list[Any] = [None] * len(greetings)
    IN, OUT = select.EPOLLIN, select.EPOLLOUT
    ep = select.epoll()
    pending: dict[int, list] = {}
    started = done = 0
    deadline = time.monotonic() + timeout
    try:
        while done < len(greetings):
            while started < len(greetings) and len(pending) < concurrency:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setblocking(False)
                err = sock.connect_ex(address)
                if err not in (0, errno.EINPROGRESS):
                    raise BenchError(f"cannot connect to {address[0]}:{address[1]}: "
                                     f"{os.strerror(err)}")
                pending[sock.fileno()] = [started, sock, None]
                ep.register(sock.fileno(), OUT)
                started += 1
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"timed out: {done} of {len(greetings)} connections logged in")
            for fd, event in ep.poll(min(left, 1.0)):
                entry = pending[fd]
                index, sock, got = entry
                hello, welcome = greetings[index]
                if got is None:
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise BenchError(f"cannot connect to {address[0]}:{address[1]}: "
                                         f"{os.strerror(err)} (after {done} connections)")
                    sock.send(hello)
                    entry[2] = b""
                    ep.modify(fd, IN)
                    continue
                try:
                    data = sock.recv(4096)
                except ConnectionError as e:
                    raise BenchError(f"login failed: {e}") from None
                if not data:
                    raise BenchError(f"the server closed a connection while logging in "
                                     f"(after {done}); it said {got!r}")
                got += data
                entry[2] = got
                if len(got) >= len(welcome):
                    if not got.startswith(welcome):
                        raise BenchError(f"login refused: expected {welcome!r}, got {got!r}")
                    ep.unregister(fd)
                    del pending[fd]
                    results[index] = (sock, got[len(welcome):])
                    done += 1
    except BaseException:
        for entry in pending.values():
            entry[1].close()
        for result in results:
            if result is not None:
                result[0].close()
        raise
    finally:
        ep.close()
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
