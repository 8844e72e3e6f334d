"""
The server core in-process, the way Twisted tests its own protocols: a real
L{HyperTCPFactory} and L{Hub} on a L{Clock}, each connection a real
L{Session} on a L{StringTransport}; bytes in, frames out, no sockets and no
waiting.  End-to-end tests (tests/daemon.py) prove the real process; these
prove the rules, fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
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


class Peer:
    """One client connection, held by the test: it writes frames and reads the server's."""

    def __init__(self, server: "Server", session: Session, transport: StringTransport) -> None:
        self.server = server
        self.session = session
        self.transport = transport
        self._ids = MsgIds()
        self._decoder = Decoder()
        self._unread: list[Frame] = []

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

    # -- what the server sent --

    def frames(self) -> list[Frame]:
        """Every frame the server has written since the last call (and not yet taken)."""
        data = self.transport.value()
        self.transport.clear()
        self._unread.extend(self._decoder.feed(data))
        frames, self._unread = self._unread, []
        return frames

    def answer(self, msg_id: int) -> Optional[int]:
        """The status of the RESPONSE to C{msg_id} (None if there is none); other frames stay."""
        self._unread.extend(self._decoder.feed(self.transport.value()))
        self.transport.clear()
        for i, frame in enumerate(self._unread):
            if frame.command == Command.RESPONSE and frame.msg_id == msg_id:
                del self._unread[i]
                return frame.payload[0] if frame.payload else Status.SUCCESS
        return None

    def response_payload(self, msg_id: int) -> Optional[bytes]:
        """The raw payload of the RESPONSE to C{msg_id}: what a reader of the bytes sees."""
        self._unread.extend(self._decoder.feed(self.transport.value()))
        self.transport.clear()
        for i, frame in enumerate(self._unread):
            if frame.command == Command.RESPONSE and frame.msg_id == msg_id:
                del self._unread[i]
                return frame.payload
        return None

    def delivered(self) -> list[tuple[int, dict]]:
        """The JSON_MESSAGE/BROADCAST frames received, as (command, body); other frames stay."""
        self._unread.extend(self._decoder.feed(self.transport.value()))
        self.transport.clear()
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
        return bool(self.transport.disconnecting)

    def lose(self, reason: Optional[Failure] = None) -> None:
        """The connection ends (the peer left, or the transport closed)."""
        if self.session in self.server.factory.sessions:
            self.session.connectionLost(reason or Failure(ConnectionDone()))


class Server:
    """A factory and hub on a fake clock, with a token file in C{tmp_path}."""

    def __init__(self, tmp_path: Path, **limits: Any) -> None:
        self.clock = Clock()
        self.tokens = TokenStore(tmp_path / "tokens.json")
        self.hub = Hub(self.clock, limits.get("ack_timeout", Limits.ack_timeout))
        commands.install(self.hub)
        self.limits = Limits(**limits)
        self.factory = HyperTCPFactory(self.limits, self.tokens, self.hub, self.clock)
        self._port = 40000

    def token(self, name: str, role: str = "device", prefix: Optional[str] = None,
              reach: Optional[list[str]] = None, **options: Any) -> str:
        return self.tokens.add(name, role=role, prefix=prefix, reach=reach, **options)

    def connect(self, host: str = "192.0.2.10") -> Peer:
        """A new connection from C{host}, already made (the login timer is running)."""
        self._port += 1
        addr = IPv4Address("TCP", host, self._port)
        session = self.factory.buildProtocol(addr)
        assert session is not None, "the factory refused the connection"
        transport = StringTransport(peerAddress=addr)
        session.makeConnection(transport)
        return Peer(self, session, transport)

    def online(self, name: str, role: str = "device", device_id: Optional[str] = None,
               **token: Any) -> Peer:
        """A connection logged in with a new token called C{name}."""
        peer = self.connect()
        assert peer.login(self.token(name, role, **token), device_id) == Status.SUCCESS
        peer.frames()
        return peer
