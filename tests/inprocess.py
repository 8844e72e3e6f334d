"""
The server core in-process, the way Twisted tests its own protocols: a real
L{HyperTCPFactory} and L{Hub} on a L{Clock}, each connection a real
L{Session} on a L{StringTransport}; bytes in, frames out, no sockets and no
waiting.  End-to-end tests (tests/daemon.py) prove the real process; these
prove the rules, fast.

L{Server} holds the core and its clock; L{Peer} is a connection the test
drives; L{Link} joins a client protocol (the Twisted client, a balancer's
health connection) to a session; L{captured_log} collects what is logged.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, capturedLogs, formatEvent
from twisted.python.failure import Failure

from hypertcp.protocol.bodies import login_body
from hypertcp.protocol.commands import Command, Status
from hypertcp.protocol.frames import Decoder, Frame, MsgIds, encode
from hypertcp.server import commands
from hypertcp.server.factory import HyperTCPFactory
from hypertcp.server.hub import Hub
from hypertcp.server.limits import Limits
from hypertcp.server.session import Session
from hypertcp.server.tokens import TokenStore


class Transport(StringTransport):
    """
    A L{StringTransport} that counts its C{write} calls (the write batch
    promises one per peer per read) and, given a C{buffer_size}, behaves like
    a socket's transport for a peer that reads only when the test reads: past
    that many unread bytes it pauses its producer, the session, on every
    write, and L{drain} resumes it.
    """

    writes = 0
    buffer_size: Optional[int] = None
    _full = False

    def write(self, data: bytes) -> None:
        self.writes += 1
        super().write(data)
        if self.buffer_size is not None and self.io.tell() > self.buffer_size:
            self._full = True
            self.producer.pauseProducing()

    def drain(self) -> bytes:
        """The peer reads everything written so far; a transport it had filled resumes."""
        data = self.value()
        self.clear()
        if self._full:
            self._full = False
            self.producer.resumeProducing()
        return data


def taken(transport: StringTransport) -> bytes:
    """What the peer reads off C{transport}: all written so far (a L{Transport} resumes)."""
    if isinstance(transport, Transport):
        return transport.drain()
    data = transport.value()
    transport.clear()
    return data


class Peer:
    """One client connection, held by the test: it writes frames and reads the server's."""

    def __init__(self, server: Optional["Server"], session: Session,
                 transport: StringTransport) -> None:
        self.server = server
        self.session = session
        self.transport = transport
        self._ids = MsgIds()
        self._decoder = Decoder()
        self._unread: list[Frame] = []
        self.lost = False

    # -- what the client sends --

    def send(self, command: int, payload: bytes = b"", msg_id: Optional[int] = None) -> int:
        msg_id = self._ids.next() if msg_id is None else msg_id
        self.session.dataReceived(encode(command, msg_id, payload))
        return msg_id

    def send_json(self, command: int, body: Any) -> int:
        return self.send(command, json.dumps(body).encode())

    def message(self, target: str, payload: dict, **extra: Any) -> int:
        return self.send_json(Command.JSON_MESSAGE, {"targetId": target, "payload": payload,
                                                     **extra})

    def login(self, token: str, device_id: Optional[str] = None, proto: Optional[int] = 2) -> int:
        """Log in (JSON, at protocol level C{proto}; None: a raw-token login) and return the status."""
        body = token.encode() if proto is None else login_body(token, device_id, proto)
        msg_id = self.send(Command.LOGIN, body)
        return self.answer(msg_id)

    def ack(self, frame: Frame, status: Optional[int] = None) -> None:
        payload = b"" if status is None else bytes((status,))
        self.send(Command.RESPONSE, payload, msg_id=frame.msg_id)

    def ping(self) -> Optional[int]:
        """A PING's answer: SUCCESS while the connection is served."""
        return self.answer(self.send(Command.PING))

    def to_server(self, payload: dict) -> tuple[Optional[int], list[dict]]:
        """
        A message to "server": its status and the payloads "server" sent back
        (a command's reply and the RESPONSE come in either order).  Presence
        events, which observers also get from "server", are read and left out.
        """
        status = self.answer(self.message("server", payload))
        replies = [body["payload"] for _, body in self.delivered()
                   if body.get("from") == "server" and "event" not in body["payload"]]
        return status, replies

    # -- the peer's reading, as the transport sees it --

    def stop_reading(self) -> None:
        """
        The peer stops reading: its socket buffer fills and the transport
        pauses its producer, the session, as a real one does.
        """
        self.transport.producer.pauseProducing()

    def resume_reading(self) -> None:
        """The peer reads again: the transport drains and resumes the session."""
        self.transport.producer.resumeProducing()

    # -- what the server sent --

    def frames(self) -> list[Frame]:
        """Every frame the server has written since the last call (and not yet taken)."""
        self._read()
        frames, self._unread = self._unread, []
        return frames

    def _read(self) -> None:
        self._unread.extend(self._decoder.feed(taken(self.transport)))

    def answer(self, msg_id: int) -> Optional[int]:
        """The status of the RESPONSE to C{msg_id} (None if there is none); other frames stay."""
        self._read()
        for i, frame in enumerate(self._unread):
            if frame.command == Command.RESPONSE and frame.msg_id == msg_id:
                del self._unread[i]
                return frame.payload[0] if frame.payload else Status.SUCCESS
        return None

    def response_payload(self, msg_id: int) -> Optional[bytes]:
        """The raw payload of the RESPONSE to C{msg_id}: what a reader of the bytes sees."""
        self._read()
        for i, frame in enumerate(self._unread):
            if frame.command == Command.RESPONSE and frame.msg_id == msg_id:
                del self._unread[i]
                return frame.payload
        return None

    def delivered(self) -> list[tuple[int, dict]]:
        """The JSON_MESSAGE/BROADCAST frames received, as (command, body); other frames stay."""
        self._read()
        out, rest = [], []
        for frame in self._unread:
            if frame.command in (Command.JSON_MESSAGE, Command.BROADCAST):
                out.append((frame.command, json.loads(frame.payload)))
            else:
                rest.append(frame)
        self._unread = rest
        return out

    # -- the connection --

    @property
    def closing(self) -> bool:
        """The server closed (or dropped) this connection."""
        return bool(self.transport.disconnecting)

    @property
    def dropped(self) -> bool:
        """The server aborted it, discarding what was queued."""
        return bool(self.transport.disconnected)

    def lose(self, reason: Optional[Failure] = None) -> None:
        """The connection ends (the peer left, or the transport closed); once."""
        if not self.lost:
            self.lost = True
            self.session.connectionLost(reason or Failure(ConnectionDone()))


class Server:
    """
    A factory and hub on a fake clock, with a token file in C{tmp_path}.
    Servers that must share time (a balancer and its nodes) share C{clock}.
    """

    def __init__(self, tmp_path: Path, clock: Optional[Clock] = None, **limits: Any) -> None:
        self.clock = clock or Clock()
        self.tokens = TokenStore(tmp_path / "tokens.json")
        self.hub = Hub(self.clock, limits.get("ack_timeout", Limits.ack_timeout))
        commands.install(self.hub)
        self.limits = Limits(**limits)
        self.factory = HyperTCPFactory(self.limits, self.tokens, self.hub, self.clock)
        self.peers: list[Peer] = []
        self._port = 40000

    def token(self, name: str, role: str = "device", prefix: Optional[str] = None,
              reach: Optional[list[str]] = None, **options: Any) -> str:
        return self.tokens.add(name, role=role, prefix=prefix, reach=reach, **options)

    def build(self, host: str = "192.0.2.10", factory: Any = None) -> Optional[Peer]:
        """
        A new connection from C{host}, already made (the login timer is
        running); None if the factory refused it (Twisted then closes it).
        C{factory} is another listener's, such as the balancer's.
        """
        self._port += 1
        addr = IPv4Address("TCP", host, self._port)
        session = (factory or self.factory).buildProtocol(addr)
        if session is None:
            return None
        transport = Transport(peerAddress=addr)
        session.makeConnection(transport)
        peer = Peer(self, session, transport)
        self.peers.append(peer)
        return peer

    def connect(self, host: str = "192.0.2.10", factory: Any = None) -> Peer:
        """A new connection from C{host}; the factory must accept it."""
        peer = self.build(host, factory)
        assert peer is not None, "the factory refused the connection"
        return peer

    def turn(self) -> None:
        """
        One reactor iteration: the calls due now run, and what they schedule
        for now waits for the next turn (C{clock.advance(0)} would run it too).
        """
        now = self.clock.seconds()
        for call in [c for c in self.clock.getDelayedCalls() if c.getTime() <= now]:
            if call.active():
                func, args, kw = call.func, call.args, call.kw
                call.cancel()
                func(*args, **kw)

    def reap(self) -> int:
        """
        Finish the closes the server began, as the reactor does once a closing
        transport's buffer is written: connectionLost for each.  Returns how many.
        """
        closing = [p for p in self.peers if p.closing and not p.lost]
        for peer in closing:
            peer.lose()
        return len(closing)

    def link(self, client: IProtocol, host: str = "192.0.2.20") -> "Link":
        """A client protocol (the Twisted client, say) connected to a new session."""
        return Link(self.connect(host), client)

    def with_store(self, max_queued: int = 1000, default_ttl: float = 3600,
                   max_ttl: float = 86400) -> Any:
        """Store and forward on this server: SQLite in memory, its batches run inline."""
        from twisted.internet.defer import maybeDeferred

        from hypertcp.server.offline import Offline
        from hypertcp.store.records import Bounds
        from hypertcp.store.sqlite import SQLiteStore
        from hypertcp.store.sqlitefile import open_writer
        from hypertcp.store.writers import ThreadWriter

        writer = ThreadWriter(open_writer(":memory:"), self.clock, run=maybeDeferred)
        store = SQLiteStore(writer, Bounds(max_queued, 1 << 20, 1 << 28), self.clock, ":memory:")
        return Offline(self.hub, store, self.clock, default_ttl, max_ttl)

    def online(self, name: str, role: str = "device", device_id: Optional[str] = None,
               **token: Any) -> Peer:
        """A connection logged in with a new token called C{name}."""
        peer = self.connect()
        assert peer.login(self.token(name, role, **token), device_id) == Status.SUCCESS
        peer.frames()
        return peer


class Link:
    """
    A client protocol and a server session joined by two StringTransports:
    L{pump} carries the bytes each side wrote to the other until both are
    quiet, then passes a close on, as a loopback connection would.
    """

    def __init__(self, peer: Peer, client: IProtocol) -> None:
        self.peer = peer
        self.client = client
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 8080))
        client.makeConnection(self.transport)
        self.closed = False
        self.pump()

    def pump(self) -> None:
        for _ in range(1000):  # bounded: two protocols that answer each other forever fail here
            if self.closed:
                return
            down, up = taken(self.peer.transport), taken(self.transport)
            if down:
                self.client.dataReceived(down)
            if up:
                self.peer.session.dataReceived(up)
            if not down and not up:
                # What was written before a close is delivered; then the close.
                if self.peer.transport.disconnecting or self.transport.disconnecting:
                    self.close()
                return
        raise AssertionError("the two sides never went quiet")

    def close(self) -> None:
        """The connection ends: both sides are told."""
        if not self.closed:
            self.closed = True
            self.peer.lose()
            self.client.connectionLost(Failure(ConnectionDone()))


class Log:
    """What the server logged while a test ran, as formatted lines."""

    def __init__(self, events: Sequence[LogEvent]) -> None:
        self.events = events

    @property
    def lines(self) -> list[str]:
        return [formatEvent(event) or "" for event in self.events]

    def count(self, text: str) -> int:
        """How many lines contain C{text}."""
        return sum(text in line for line in self.lines)

    def __contains__(self, text: str) -> bool:
        return self.count(text) > 0


@contextmanager
def captured_log() -> Iterator[Log]:
    """A L{Log} of what is logged inside the C{with} block."""
    with capturedLogs() as events:
        yield Log(events)
