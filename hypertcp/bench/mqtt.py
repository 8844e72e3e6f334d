"""
MQTT 3.1.1, one topic per receiving device, as the load generator speaks it
to Mosquitto: the few packets needed, built and read here, so there is no
MQTT dependency.  QoS 0 by default; at QoS 1 each publish is answered with
a PUBACK and each delivery acknowledged with one, two packets in and two
out per message at the broker, as HyperTCP's answer and acknowledgement.
"""

from __future__ import annotations

import struct
from typing import Any, Optional

from hypertcp.bench.message import count, literal
from hypertcp.bench.pair import Pair


def _varint(n: int) -> bytes:
    """An MQTT remaining length."""
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


class MQTT:
    """
    CONNECT, SUBSCRIBE, PUBLISH, PUBACK and PINGREQ out; CONNACK, SUBACK,
    PUBLISH, PUBACK and PINGRESP in.
    """

    name = "mosquitto"
    CONNACK = b"\x20\x02\x00\x00"
    PINGREQ = b"\xc0\x00"

    def __init__(self, keepalive: int = 0, qos: int = 0) -> None:
        self.keepalive = keepalive
        self.qos = qos
        if qos:
            self.batch = self._batch_with_ids

    def hello(self, device: str, receiver: bool) -> bytes:
        body = (_string("MQTT") + bytes((4, 0x02)) + struct.pack("!H", self.keepalive)
                + _string(device))
        connect = b"\x10" + _varint(len(body)) + body
        if not receiver:
            return connect
        body = b"\x00\x01" + _string(f"bench/{device}") + bytes((self.qos,))
        return connect + b"\x82" + _varint(len(body)) + body

    def welcome(self, receiver: bool) -> bytes:
        suback = b"\x90\x03\x00\x01" + bytes((self.qos,))
        return self.CONNACK + suback if receiver else self.CONNACK

    def template(self, sender: str, receiver: str, inner: bytes) -> bytes:
        topic = _string(f"bench/{receiver}")
        length = len(topic) + len(inner % (0, 0))
        if not self.qos:
            return literal(b"\x30" + _varint(length) + topic) + inner
        # The packet identifier follows the topic: filled in per message.
        return literal(b"\x32" + _varint(length + 2) + topic) + b"%c%c" + inner

    @staticmethod
    def batch(template: bytes, seq: int, count: int, ts: int, step: int) -> bytes:
        return b"".join([template % (s, ts + (s - seq) * step) for s in range(seq, seq + count)])

    @staticmethod
    def _batch_with_ids(template: bytes, seq: int, count: int, ts: int, step: int) -> bytes:
        # Identifiers 1..65535 in turn: never two alike among a window's messages.
        return b"".join([template % (*divmod(s % 65535 + 1, 256), s, ts + (s - seq) * step)
                         for s in range(seq, seq + count)])

    def heartbeat(self, msg_id: int) -> bytes:
        return self.PINGREQ

    @staticmethod
    def receive(pair: Pair, buf: bytes, now: int, lat: Any, out: list, ack: bool) -> int:
        """
        Count the PUBLISH packets on a receiver's stream, and acknowledge
        those at QoS 1, as the protocol requires whatever C{ack} says.
        """
        off, end = 0, len(buf)
        spans = []
        while end - off >= 2:
            first = buf[off]
            length = buf[off + 1]
            i = off + 2
            if length & 0x80:
                length &= 0x7F
                shift = 7
                while True:
                    if i >= end:
                        length = -1
                        break
                    digit = buf[i]
                    i += 1
                    length |= (digit & 0x7F) << shift
                    if not digit & 0x80:
                        break
                    shift += 7
                if length < 0:
                    break
            stop = i + length
            if stop > end:
                break
            if first & 0xF0 == 0x30:
                spans.append((i, stop))
                if first & 0x06:
                    ident = i + 2 + (buf[i] << 8 | buf[i + 1])
                    out.append(b"\x40\x02" + buf[ident:ident + 2])
            off = stop
        count(pair, buf, spans, now, lat)
        return off

    @staticmethod
    def answers(pair: Optional[Pair], buf: bytes, out: list) -> tuple[int, int]:
        """Read PUBACKs (QoS 1) and PINGRESPs: return the bytes consumed and the packets read."""
        off, end = 0, len(buf)
        read = 0
        while end - off >= 2 and end - off >= 2 + buf[off + 1]:
            off += 2 + buf[off + 1]
            read += 1
        return off, read
