"""
L{hypertcp.app.reactor}: the epoll reactor without the per-event log
context still hands every event to its handler, and an exception there is
logged and ends only that connection, as Twisted's own reactor does.
"""

from __future__ import annotations

import socket
import sys

import pytest
from twisted.internet import error, main
from twisted.internet.interfaces import IReadDescriptor
from twisted.logger import globalLogPublisher
from zope.interface import implementer

from hypertcp.app import reactor as lean_reactor

pytestmark = pytest.mark.skipif(lean_reactor.EPollReactor is None, reason="no epoll here")


@implementer(IReadDescriptor)
class Reader:
    """A socket's reading end for the reactor: keeps what it reads, or fails as told."""

    def __init__(self, sock: socket.socket, fail: bool = False) -> None:
        self.sock = sock
        self.fail = fail
        self.gone = False
        self.read: list[bytes] = []
        self.lost: list = []

    def fileno(self) -> int:
        return self.sock.fileno()

    def doRead(self) -> None:
        data = self.sock.recv(100)
        if self.fail:
            raise RuntimeError("handler broke")
        if not data:
            self.gone = True
            return main.CONNECTION_DONE  # as Twisted's doRead says the peer closed
        self.read.append(data)
        return None

    def connectionLost(self, reason) -> None:
        self.lost.append(reason)

    def logPrefix(self) -> str:
        return "Reader"


@pytest.fixture
def reactor():
    r = lean_reactor.LeanEPollReactor()
    yield r
    r._poller.close()
    r.waker.connectionLost(None)  # closes its pipe


def pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(False)
    return a, b


def test_a_read_reaches_its_handler(reactor) -> None:
    a, b = pair()
    with a, b:
        reader = Reader(a)
        reactor.addReader(reader)
        b.send(b"frame")
        reactor.doIteration(1)
        assert reader.read == [b"frame"] and reader.lost == []


def test_a_connection_its_handler_says_is_gone_is_ended(reactor) -> None:
    a, b = pair()
    with a:
        reader = Reader(a)
        reactor.addReader(reader)
        b.close()
        reactor.doIteration(1)
        assert reader.gone
        assert len(reader.lost) == 1 and reader.lost[0].check(error.ConnectionDone)
        assert reader not in reactor.getReaders()


def test_a_failing_handler_is_logged_and_ends_only_its_connection(reactor) -> None:
    logged: list[dict] = []
    globalLogPublisher.addObserver(logged.append)
    a, b = pair()
    c, d = pair()
    try:
        broken, healthy = Reader(a, fail=True), Reader(c)
        reactor.addReader(broken)
        reactor.addReader(healthy)
        b.send(b"x")
        d.send(b"y")
        reactor.doIteration(1)
    finally:
        globalLogPublisher.removeObserver(logged.append)
        for s in (a, b, c, d):
            s.close()
    assert len(broken.lost) == 1 and broken.lost[0].check(RuntimeError)
    assert broken not in reactor.getReaders()
    assert healthy.read == [b"y"] and healthy.lost == []
    failures = [e.get("log_failure") or e.get("failure") for e in logged]
    assert any(f is not None and f.check(RuntimeError) for f in failures), logged


def test_an_installed_reactor_is_left_in_place(monkeypatch) -> None:
    installed = object()
    monkeypatch.setitem(sys.modules, "twisted.internet.reactor", installed)
    assert lean_reactor.install_default() is False
    assert sys.modules["twisted.internet.reactor"] is installed
