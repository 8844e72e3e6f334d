"""
HyperTCP as the load generator speaks it: logging in, the frames it writes
and how it reads what comes back, through our server or through the sink.
"""

from __future__ import annotations

import json
import struct
from typing import TYPE_CHECKING, Any, Optional

from hypertcp.bench.message import count, literal
from hypertcp.protocol.commands import Command, Status
from hypertcp.protocol.frames import HEADER, encode, response

if TYPE_CHECKING:
    from hypertcp.bench.load import Pair

_pack = HEADER.pack
_unpack_from = HEADER.unpack_from


def _frame_template(command: int, body: bytes) -> bytes:
    """
    A whole HyperTCP frame as one %-template: C{%c%c} for the msg_id, then
    C{body}'s own holes.  Filling it is one operation per message.
    """
    length = len(body % (0, 0))
    return literal(bytes((command,))) + b"%c%c" + literal(struct.pack("!H", length)) + body


class HyperTCP:
    """Our protocol: a fleet token lets every connection name its device id."""

    name = "hypertcp"

    def __init__(self, token: str) -> None:
        self.token = token

    def hello(self, device: str, receiver: bool) -> bytes:
        body = json.dumps({"token": self.token, "device_id": device}).encode()
        return encode(Command.LOGIN, 1, body)

    def welcome(self, receiver: bool) -> bytes:
        return response(1, Status.SUCCESS, login=True)

    def template(self, sender: str, receiver: str, inner: bytes) -> bytes:
        prefix = literal(b'{"targetId":"%s","payload":' % receiver.encode())
        return _frame_template(Command.JSON_MESSAGE, prefix + inner + b"}")

    @staticmethod
    def batch(template: bytes, seq: int, count: int, ts: int, step: int) -> bytes:
        return b"".join([template % (*divmod(s % 0xFFFF + 1, 256), s, ts + (s - seq) * step)
                         for s in range(seq, seq + count)])

    def heartbeat(self, msg_id: int) -> bytes:
        return _pack(Command.PING, msg_id, 0)

    @staticmethod
    def receive(pair: Pair, buf: bytes, now: int, lat: Any, out: list, ack: bool) -> int:
        """
        Read delivered frames off a receiver's stream: count them, note their
        latency (C{lat} is None outside the measured window) and queue the
        acknowledgements.  Returns the bytes consumed.
        """
        off, end = 0, len(buf)
        spans = []
        while end - off >= 5:
            command, msg_id, length = _unpack_from(buf, off)
            start = off + 5
            stop = start + length
            if stop > end:
                break
            if command == 30 or command == 50:
                spans.append((start, stop))
                if ack:
                    out.append(_pack(0, msg_id, 0))
            elif command == 6:
                out.append(_pack(0, msg_id, 0))
            off = stop
        count(pair, buf, spans, now, lat)
        return off

    @staticmethod
    def answers(pair: Optional[Pair], buf: bytes, out: list) -> tuple[int, int]:
        """
        Read the server's answers to a sender (or to a heartbeating device),
        answer its pings; return the bytes consumed and the answers read.
        """
        off, end = 0, len(buf)
        refused = answered = 0
        while end - off >= 5:
            command, msg_id, length = _unpack_from(buf, off)
            stop = off + 5 + length
            if stop > end:
                break
            if command == 0:
                answered += 1
                if length and buf[off + 5] != Status.SUCCESS:
                    refused += 1
            elif command == 6:
                out.append(_pack(0, msg_id, 0))
            off = stop
        if pair is not None:
            pair.refused += refused
        return off, answered


class Sink(HyperTCP):
    """
    No broker at all: a sender's socket is connected to its receiver's, and
    it writes frames already in the delivered form.  The load generator's
    work per message is the same as through a broker, so this run is its
    own ceiling.
    """

    name = "sink"

    def template(self, sender: str, receiver: str, inner: bytes) -> bytes:
        prefix = literal(b'{"from":"%s","payload":' % sender.encode())
        return _frame_template(Command.JSON_MESSAGE, prefix + inner + b"}")
