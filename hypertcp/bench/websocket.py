"""
C{hypertcp bench --transport ws}: the same load through the WebSocket
gateway, beside TCP in the same command.  Each pair has a WebSocket end and
a TCP end on one server: WS->TCP (browsers sending to devices) and TCP->WS
(devices sending to browsers).

The WebSocket side speaks the gateway's JSON (L{hypertcp.protocol.web})
as the JavaScript client does: every send carries an id and is answered,
every delivery is acknowledged by its ref.  Client frames are masked with
a zero key (RFC 6455 allows any key; this one leaves the bytes as they
are), so each message is a %-template filled in one operation, as the TCP
side's are.
"""

from __future__ import annotations

import base64
import os
import re
import socket
import struct
import time
from typing import Any, Optional

from hypertcp.bench.errors import BenchError
from hypertcp.bench.frames import HyperTCP
from hypertcp.bench.message import count, literal
from hypertcp.bench.peers import Broker, start_hypertcp
from hypertcp.bench.sockets import Conn

WEB_LISTENING = re.compile(r"HyperTCP web listening on ([\d.]+):(\d+)")
#: Ids of sends start here, so every id has the same width and so does every frame.
ID_BASE = 1_000_000_000
_KEY = b"\x00\x00\x00\x00"
_STATUS_OK = b'"status":200,'
_REF = b'"ref":'


def client_frame(payload: bytes, opcode: int = 1) -> bytes:
    """A client's frame (masked, with the zero key)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + _KEY + payload


def frames(buf: bytes) -> tuple[list[tuple[int, int, int]], int]:
    """The whole server frames at the front of C{buf} as (opcode, start, stop), and bytes used."""
    found = []
    off, end = 0, len(buf)
    while end - off >= 2:
        opcode, length = buf[off] & 0x0F, buf[off + 1]
        start = off + 2
        if length == 126:
            if end - off < 4:
                break
            length = (buf[off + 2] << 8) | buf[off + 3]
            start = off + 4
        elif length == 127:
            if end - off < 10:
                break
            length = struct.unpack_from("!Q", buf, off + 2)[0]
            start = off + 10
        stop = start + length
        if stop > end:
            break
        found.append((opcode, start, stop))
        off = stop
    return found, off


_PONG = client_frame(b"", opcode=10)


def ack_frame(ref: bytes) -> bytes:
    """The acknowledgement of delivery C{ref} (its digits as they arrived)."""
    body = b'{"action":"ack","ref":' + ref + b"}"
    return bytes((0x81, 0x80 | len(body))) + _KEY + body


class WebSocketSide:
    """The WebSocket end of a pair: its frames, and how it reads the server's."""

    @staticmethod
    def template(receiver: str, inner: bytes) -> bytes:
        body = (literal(b'{"action":"send","id":') + b"%d"
                + literal(b',"targetId":"%s","payload":' % receiver.encode()) + inner + b"}")
        length = len(body % (ID_BASE, 0, 0))
        return literal(client_frame(b"\x00" * length)[:-length]) + body

    @staticmethod
    def batch(template: bytes, seq: int, count_: int, ts: int, step: int) -> bytes:
        return b"".join([template % (ID_BASE + s, s, ts + (s - seq) * step)
                         for s in range(seq, seq + count_)])

    @staticmethod
    def receive(pair: Any, buf: bytes, now: int, lat: Any, out: list, ack: bool) -> int:
        """Count the deliveries on a receiver's stream and queue their acks."""
        found, used = frames(buf)
        spans = []
        find = buf.find
        for opcode, start, stop in found:
            if opcode == 1:
                if buf[start + 9:start + 16] == b'message':
                    spans.append((start, stop))
                    if ack:
                        at = find(_REF, start, stop) + 6
                        out.append(ack_frame(buf[at:find(b",", at, stop)]))
            elif opcode == 9:
                out.append(_PONG)
        count(pair, buf, spans, now, lat)
        return used

    @staticmethod
    def answers(pair: Optional[Any], buf: bytes, out: list) -> tuple[int, int]:
        """Read the statuses a sender is answered with; count the refusals."""
        found, used = frames(buf)
        answered = refused = 0
        find = buf.find
        for opcode, start, stop in found:
            if opcode == 1:
                answered += 1
                if find(_STATUS_OK, start, stop) < 0:
                    refused += 1
            elif opcode == 9:
                out.append(_PONG)
        if pair is not None:
            pair.refused += refused
        return used, answered


class Mixed:
    """
    Pairs with one end on WebSocket and the other on TCP, through one
    server: C{ws_sends} puts the WebSocket end on the sending side.
    """

    def __init__(self, token: str, web: tuple[str, int], ws_sends: bool) -> None:
        self.token = token
        self.web = web
        self.ws_sends = ws_sends
        self.name = "ws-tcp" if ws_sends else "tcp-ws"
        tcp = HyperTCP(token)
        self.tcp = tcp
        if ws_sends:
            self.batch, self.answers, self.receive = (
                WebSocketSide.batch, WebSocketSide.answers, tcp.receive)
        else:
            self.batch, self.answers, self.receive = (
                tcp.batch, tcp.answers, WebSocketSide.receive)

    def template(self, sender: str, receiver: str, inner: bytes) -> bytes:
        if self.ws_sends:
            return WebSocketSide.template(receiver, inner)
        return self.tcp.template(sender, receiver, inner)

    def connect_pairs(self, address: tuple[str, int], pairs: list[Any]) -> None:
        """Log each pair's ends in, receivers first, and put them on the pairs."""
        for receiver in (True, False):
            for pair in pairs:
                name = f"bench-{'r' if receiver else 's'}-{pair.index}"
                on_ws = receiver != self.ws_sends
                sock, rest = (self._websocket(name) if on_ws
                              else self._tcp(address, name, receiver))
                conn = Conn(sock, pair, receiver, rest)
                if receiver:
                    pair.receiver = conn
                else:
                    pair.sender = conn

    def _tcp(self, address: tuple[str, int], name: str, receiver: bool
             ) -> tuple[socket.socket, bytes]:
        sock = _connect(address)
        sock.sendall(self.tcp.hello(name, receiver))
        welcome = self.tcp.welcome(receiver)
        got = _read(sock, lambda data: len(data) >= len(welcome))
        if not got.startswith(welcome):
            raise BenchError(f"TCP login of {name} refused: {got!r}")
        return sock, got[len(welcome):]

    def _websocket(self, name: str) -> tuple[socket.socket, bytes]:
        host, port = self.web
        sock = _connect(self.web)
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall((f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        got = _read(sock, lambda data: b"\r\n\r\n" in data)
        head, _, rest = got.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise BenchError(f"WebSocket upgrade of {name} refused: {got!r}")
        sock.sendall(client_frame(b'{"action":"login","id":1,"token":"%s","device_id":"%s"}'
                                  % (self.token.encode(), name.encode())))
        while True:
            found, used = frames(rest)
            if found:
                opcode, start, stop = found[0]
                if b'"status":200,' not in rest[start:stop]:
                    raise BenchError(f"WebSocket login of {name} refused: {rest[start:stop]!r}")
                return sock, rest[stop:]
            rest += _read(sock, lambda data: bool(data))


def _connect(address: tuple[str, int]) -> socket.socket:
    try:
        sock = socket.create_connection(address, timeout=30)
    except OSError as e:
        raise BenchError(f"cannot connect to {address[0]}:{address[1]}: {e}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read(sock: socket.socket, enough: Any) -> bytes:
    got = b""
    while not enough(got):
        data = sock.recv(65536)
        if not data:
            raise BenchError(f"the server closed a connection while logging in; it said {got!r}")
        got += data
    return got


def start(extra: list[str], ws_sends: bool, backlog: Optional[int] = None) -> Broker:
    """Our server with a web listener, and a pair protocol with one WebSocket end."""
    broker = start_hypertcp([*extra, "--web", "tcp:0:interface=127.0.0.1"], backlog=backlog)
    deadline = time.monotonic() + 30
    web = None
    while web is None:
        for line in list(broker.lines):
            found = WEB_LISTENING.search(line)
            if found:
                web = (found.group(1), int(found.group(2)))
        if web is None:
            broker.check()
            if time.monotonic() > deadline:
                broker.stop()
                raise BenchError("the server's web listener did not start:\n"
                                 + "".join(broker.lines[-30:]))
            time.sleep(0.05)
    broker.proto = Mixed(broker.proto.token, web, ws_sends)
    broker.name = "WS->TCP" if ws_sends else "TCP->WS"
    return broker
