"""
The web side in-process, as tests/inprocess.py has the TCP side: the real
site (gateway, HTTP API, metrics) on the real factory and hub, on a Clock;
each request a real twisted.web channel on a StringTransport.  After the
upgrade, WebSocket frames are built and read here (RFC 6455 from the
client's side: masked out, plain in), so tests send exactly the bytes a
browser would, good or bad.
"""

from __future__ import annotations

import base64
import json
import os
import struct
from pathlib import Path
from typing import Any, NamedTuple, Optional, Union

from twisted.application.service import MultiService
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from hypertcp.app.config import WebConfig
from hypertcp.app.web.service import site
from tests.inprocess import Server

TEXT, BINARY, CLOSE, PING, PONG = 1, 2, 8, 9, 10


def client_frame(opcode: int, payload: bytes, fin: bool = True,
                 key: bytes = b"\x1f\x2e\x3d\x4c") -> bytes:
    """A masked frame, as every client must send."""
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    if n < 126:
        head = struct.pack("!BB", first, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, n)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + masked


def server_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The whole (opcode, payload) frames at the front of C{data}, and what is left."""
    frames = []
    while len(data) >= 2:
        opcode, length, at = data[0] & 0x0F, data[1] & 0x7F, 2
        assert not data[1] & 0x80, "a server must not mask its frames"
        if length == 126:
            if len(data) < 4:
                break
            length, at = struct.unpack("!H", data[2:4])[0], 4
        elif length == 127:
            if len(data) < 10:
                break
            length, at = struct.unpack("!Q", data[2:10])[0], 10
        if len(data) < at + length:
            break
        frames.append((opcode, data[at:at + length]))
        data = data[at + length:]
    return frames, data


class Response(NamedTuple):
    code: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        assert self.headers.get("content-type", "").startswith("application/json"), self
        return json.loads(self.body)


def parse_response(data: bytes) -> Response:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Response(int(lines[0].split()[1]), headers, body)


class WebSocket:
    """One WebSocket client connection, held by the test."""

    def __init__(self, server: "WebServer", transport: StringTransport, rest: bytes) -> None:
        self.server = server
        self.transport = transport
        self.session = transport.protocol
        self._buffer = rest
        self._unread: list[tuple[int, bytes]] = []
        self._ids = 100

    # -- what the client sends --

    def send_frame(self, opcode: int, payload: bytes, fin: bool = True) -> None:
        self.session.dataReceived(client_frame(opcode, payload, fin))

    def send_text(self, text: Union[str, bytes]) -> None:
        self.send_frame(TEXT, text.encode() if isinstance(text, str) else text)

    def send_json(self, value: Any) -> None:
        self.send_text(json.dumps(value))

    def action(self, action: str, **fields: Any) -> int:
        """Send an action with a fresh id; return the id."""
        self._ids += 1
        self.send_json({"action": action, "id": self._ids, **fields})
        return self._ids

    def login(self, token: str, device_id: Optional[str] = None) -> dict:
        fields = {"token": token}
        if device_id is not None:
            fields["device_id"] = device_id
        return self.status(self.action("login", **fields))

    def send(self, target: str, payload: dict, **extra: Any) -> int:
        return self.action("send", targetId=target, payload=payload, **extra)

    # -- what the server sent --

    def frames(self) -> list[tuple[int, bytes]]:
        """Every frame the server has written since the last call (and not yet taken)."""
        frames, self._buffer = server_frames(self._buffer + self.transport.value())
        self.transport.clear()
        taken, self._unread = self._unread + frames, []
        return taken

    def messages(self) -> list[dict]:
        """The JSON text frames received; other frames stay."""
        out, rest = [], []
        for opcode, payload in self.frames():
            if opcode == TEXT:
                out.append(json.loads(payload))
            else:
                rest.append((opcode, payload))
        self._unread = rest
        return out

    def status(self, msg_id: Optional[int]) -> Optional[dict]:
        """The status answering C{msg_id}, if one came; other messages stay."""
        found = None
        frames = self.frames()
        for i, (opcode, payload) in enumerate(frames):
            if opcode == TEXT:
                value = json.loads(payload)
                if value.get("type") == "status" and value.get("id") == msg_id:
                    found = value
                    del frames[i]
                    break
        self._unread = frames
        return found

    def of_type(self, kind: str) -> list[dict]:
        """The JSON messages of C{kind} received; others stay."""
        taken, rest = [], []
        for opcode, payload in self.frames():
            value = json.loads(payload) if opcode == TEXT else None
            if value is not None and value.get("type") == kind:
                taken.append(value)
            else:
                rest.append((opcode, payload))
        self._unread = rest
        return taken

    def close_frame(self) -> Optional[tuple[int, str]]:
        """The code and reason of the close frame the server sent, if it did."""
        for opcode, payload in self.frames():
            if opcode == CLOSE:
                return struct.unpack("!H", payload[:2])[0], payload[2:].decode()
        return None

    @property
    def closing(self) -> bool:
        return bool(self.transport.disconnecting)

    @property
    def open(self) -> bool:
        return self.session in self.server.factory.sessions

    def lose(self) -> None:
        """The connection ends (the client went away)."""
        if self.open:
            self.session.connectionLost(Failure(ConnectionDone()))


class WebServer(Server):
    """L{Server} with the web site on the same factory and hub."""

    def __init__(self, tmp_path: Path, allowed_origins: tuple[str, ...] = (),
                 metrics_token: str = "", **limits: Any) -> None:
        super().__init__(tmp_path, **limits)
        self.top = MultiService()
        self.site = site(WebConfig([], False, list(allowed_origins), metrics_token),
                         self.factory, self.top, self.clock)
        self._web_port = 50000

    def channel(self, host: str = "192.0.2.20") -> StringTransport:
        self._web_port += 1
        addr = IPv4Address("TCP", host, self._web_port)
        channel = self.site.buildProtocol(addr)
        transport = StringTransport(peerAddress=addr,
                                    hostAddress=IPv4Address("TCP", "127.0.0.1", 8081))
        transport.protocol = channel  # Autobahn finds the protocol it replaces here
        channel.makeConnection(transport)
        return transport

    def request(self, method: str, path: str, body: bytes = b"",
                headers: Optional[dict[str, str]] = None, token: Optional[str] = None
                ) -> Response:
        """One HTTP/1.0 request (the answer is never chunked) and its whole response."""
        headers = dict(headers or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if body:
            headers["Content-Length"] = str(len(body))
        lines = [f"{method} {path} HTTP/1.0", "Host: 127.0.0.1:8081"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        transport = self.channel()
        transport.protocol.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        return parse_response(transport.value())

    def upgrade(self, origin: Optional[str] = None, host: str = "127.0.0.1:8081",
                path: str = "/ws") -> tuple[StringTransport, Response]:
        """Ask for the WebSocket upgrade; the transport and the HTTP response."""
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Upgrade: websocket",
                 "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
        if origin is not None:
            lines.append(f"Origin: {origin}")
        transport = self.channel()
        transport.protocol.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode())
        return transport, parse_response(transport.value())

    def websocket(self, origin: Optional[str] = None, host: str = "127.0.0.1:8081") -> WebSocket:
        """A WebSocket connection, upgraded (the login timer is running)."""
        transport, response = self.upgrade(origin, host)
        assert response.code == 101, response
        rest = transport.value().partition(b"\r\n\r\n")[2]
        transport.clear()
        return WebSocket(self, transport, rest)

    def web_online(self, name: str, role: str = "device", device_id: Optional[str] = None,
                   **token: Any) -> WebSocket:
        """A WebSocket logged in with a new token called C{name}."""
        ws = self.websocket()
        answer = ws.login(self.token(name, role, **token), device_id)
        assert answer is not None and answer["status"] == 200, answer
        return ws
