"""
The frame codec: bytes in, frames out, and frames to bytes.

A 5-byte header (type, msg_id, length; big-endian) and a payload.  Nothing
here touches a socket, as in h11 and wsproto, so the server, both clients,
the balancer and the benchmark frame and unframe through the same code.
"""

from __future__ import annotations

import struct
from typing import NamedTuple, Union

from hypertcp.protocol.commands import Command, Status

HEADER = struct.Struct("!BHH")
HEADER_SIZE = HEADER.size  # 5: the seed says 4, its packed struct is 5
MAX_PAYLOAD = 0xFFFF
MAX_MSG_ID = 0xFFFF

# Sent for every message; on Python 3.11 an enum lookup costs about 60 ns.
_SUCCESS, _RESPONSE = Status.SUCCESS, Command.RESPONSE


class Frame(NamedTuple):
    command: int
    msg_id: int
    payload: bytes


class Oversize(NamedTuple):
    """
    A frame whose payload exceeded the receiver's limit.  Its payload is being
    skipped byte-exactly; the receiver should answer ILLEGAL_COMMAND_BODY.
    """

    command: int
    msg_id: int
    length: int


Event = Union[Frame, Oversize]


def encode(command: int, msg_id: int, payload: bytes = b"") -> bytes:
    """One whole frame as a single bytes object, so it goes out in one write."""
    return HEADER.pack(command, msg_id, len(payload)) + payload


def response(msg_id: int, status: int = Status.SUCCESS, *, login: bool = False) -> bytes:
    """
    A RESPONSE frame.  SUCCESS is an empty payload except for the answer to
    LOGIN, which always carries the status byte: the original sketch reads a
    status byte only there.
    """
    if status == _SUCCESS and not login:
        return HEADER.pack(_RESPONSE, msg_id, 0)
    return HEADER.pack(_RESPONSE, msg_id, 1) + bytes((status,))


def response_status(payload: bytes) -> int:
    """The status a RESPONSE payload carries: empty means SUCCESS."""
    return payload[0] if payload else _SUCCESS


class MsgIds:
    """Sender-side msg_id counter: 1..65535, wrapping to 1, never 0."""

    __slots__ = ("_last",)

    def __init__(self, start: int = 0) -> None:
        self._last = start

    def next(self) -> int:
        last = self._last + 1
        if last > MAX_MSG_ID:
            last = 1
        self._last = last
        return last


class Decoder:
    """
    Incremental frame decoder.

    Feed it chunks of any size; it returns the events completed so far.  A
    frame longer than C{max_payload} is reported as an L{Oversize} as soon as
    its header arrives, and its payload is then discarded as it streams in,
    so the stream stays in sync without ever buffering the oversize body.
    """

    __slots__ = ("max_payload", "_buf", "_skip")

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        if not 0 <= max_payload <= MAX_PAYLOAD:
            raise ValueError(f"max_payload must be 0..{MAX_PAYLOAD}")
        self.max_payload = max_payload
        self._buf = b""
        self._skip = 0

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a frame."""
        return len(self._buf)

    def take_buffered(self) -> bytes:
        """
        The bytes held waiting for the rest of a frame, handed over: for a
        receiver that stops decoding and passes the stream on as it is.
        """
        held, self._buf = self._buf, b""
        return held

    def feed(self, data: bytes) -> list[Event]:
        if self._skip:
            if len(data) <= self._skip:
                self._skip -= len(data)
                return []
            data = data[self._skip :]
            self._skip = 0
        buf = self._buf + data if self._buf else data
        events: list[Event] = []
        append = events.append
        unpack_from = HEADER.unpack_from
        limit = self.max_payload
        # tuple.__new__ makes the same Frame as Frame(...) without a Python call.
        new_frame = tuple.__new__
        offset = 0
        end = len(buf)
        while end - offset >= HEADER_SIZE:
            command, msg_id, length = unpack_from(buf, offset)
            start = offset + HEADER_SIZE
            if length > limit:
                append(Oversize(command, msg_id, length))
                available = end - start
                if available < length:
                    self._skip = length - available
                    offset = end
                    break
                offset = start + length
                continue
            stop = start + length
            if stop > end:
                break
            append(new_frame(Frame, (command, msg_id, buf[start:stop])))
            offset = stop
        self._buf = buf[offset:] if offset < end else b""
        return events
