"""
HyperTCP as the load generator speaks it: logging in, the frames it writes
and how it reads what comes back, through our server or through the sink.

Every byte comes from L{hypertcp.protocol}: the login is the protocol's
login body, and each sender's message is the protocol's C{encode} of its
C{message_body}.  The hot loop cannot afford those calls per message, so
each is turned once into a %-template and checked against the protocol's
own output before it is used.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Optional

from hypertcp.bench.errors import BenchError
from hypertcp.bench.message import count, literal
from hypertcp.bench.pair import Pair
from hypertcp.protocol.bodies import delivery_body, login_body, message_body
from hypertcp.protocol.commands import Command, Status
from hypertcp.protocol.frames import (
    HEADER, HEADER_SIZE, MAX_MSG_ID, encode, response, response_status,
)

_unpack_from = HEADER.unpack_from
# Bound once: these are compared for every frame, and an enum lookup costs
# about 60 ns on Python 3.11.
_RESPONSE, _PING, _LOGIN = int(Command.RESPONSE), int(Command.PING), int(Command.LOGIN)
_DELIVERED = frozenset((int(Command.JSON_MESSAGE), int(Command.BROADCAST)))
_SUCCESS = int(Status.SUCCESS)
_SAMPLE = (0x1234, 123, 4567)  # (msg_id, seq, ts) a template is checked with
# The acknowledgement of every msg_id, made by the protocol once (about 10 ms
# and 3 MB): a list index costs a tenth of a call to response() per message.
_ACKS = [response(i) for i in range(MAX_MSG_ID + 1)]


def body_template(build: Callable[[dict], bytes], inner: bytes) -> bytes:
    """
    The body C{build} makes around the payload C{inner} (a %-template with
    holes for seq and ts), as a %-template itself.  The protocol writes a
    compact payload back byte for byte, so it is found in the built body
    and the template put in its place.
    """
    sample = inner % (0, 0)
    body = build(json.loads(sample))
    at = body.find(sample)
    if at < 0:
        raise BenchError("the protocol no longer writes a payload back byte for byte")
    template = literal(body[:at]) + inner + literal(body[at + len(sample):])
    _, seq, ts = _SAMPLE
    if template % (seq, ts) != build(json.loads(inner % (seq, ts))):
        raise BenchError("a message body template does not match the protocol's body")
    return template


def frame_template(command: int, body: bytes) -> bytes:
    """
    C{encode(command, msg_id, body % (seq, ts))} as one %-template whose
    holes are the msg_id's two bytes, then seq and ts: one operation per
    message.  Where the msg_id lies is read off two encodings that differ
    only in it.
    """
    sample = body % (0, 0)
    low, high = encode(command, 0, sample), encode(command, MAX_MSG_ID, sample)
    where = [i for i, (a, b) in enumerate(zip(low, high)) if a != b]
    if len(where) != 2 or where[1] != where[0] + 1:
        raise BenchError("the protocol's frame header no longer holds a 2-byte msg_id")
    at, head = where[0], len(low) - len(sample)
    template = literal(low[:at]) + b"%c%c" + literal(low[at + 2:head]) + body
    mid, seq, ts = _SAMPLE
    if template % (*divmod(mid, 256), seq, ts) != encode(command, mid, body % (seq, ts)):
        raise BenchError("a frame template does not match the protocol's encoding")
    return template


class HyperTCP:
    """Our protocol: a fleet token lets every connection name its device id."""

    name = "hypertcp"

    def __init__(self, token: str) -> None:
        self.token = token

    def hello(self, device: str, receiver: bool) -> bytes:
        return encode(_LOGIN, 1, login_body(self.token, device))

    def welcome(self, receiver: bool) -> bytes:
        return response(1, _SUCCESS, login=True)

    def template(self, sender: str, receiver: str, inner: bytes) -> bytes:
        return frame_template(Command.JSON_MESSAGE, body_template(
            lambda payload: message_body(receiver, payload), inner))

    @staticmethod
    def batch(template: bytes, seq: int, count: int, ts: int, step: int) -> bytes:
        return b"".join([template % (*divmod(s % MAX_MSG_ID + 1, 256), s, ts + (s - seq) * step)
                         for s in range(seq, seq + count)])

    def heartbeat(self, msg_id: int) -> bytes:
        return encode(_PING, msg_id)

    @staticmethod
    def receive(pair: Pair, buf: bytes, now: int, lat: Any, out: list, ack: bool) -> int:
        """
        Read delivered frames off a receiver's stream: count them, note their
        latency (C{lat} is None outside the measured window) and queue the
        acknowledgements.  Returns the bytes consumed.
        """
        off, end = 0, len(buf)
        spans = []
        acks = _ACKS
        while end - off >= HEADER_SIZE:
            command, msg_id, length = _unpack_from(buf, off)
            start = off + HEADER_SIZE
            stop = start + length
            if stop > end:
                break
            if command in _DELIVERED:
                spans.append((start, stop))
                if ack:
                    out.append(acks[msg_id])
            elif command == _PING:
                out.append(acks[msg_id])
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
        while end - off >= HEADER_SIZE:
            command, msg_id, length = _unpack_from(buf, off)
            start = off + HEADER_SIZE
            stop = start + length
            if stop > end:
                break
            if command == _RESPONSE:
                answered += 1
                if length and response_status(buf[start:stop]) != _SUCCESS:
                    refused += 1
            elif command == _PING:
                out.append(response(msg_id))
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
        return frame_template(Command.JSON_MESSAGE, body_template(
            lambda payload: delivery_body(sender, payload), inner))
