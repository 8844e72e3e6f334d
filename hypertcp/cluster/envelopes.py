"""
What nodes send each other, as bytes: a batch of items from one node.

A node collects what it has for each other node during a reactor turn and
publishes it as one batch, so cross-node traffic costs one PUBLISH per
destination per turn, not one per message.  Bodies are the frames' JSON as
the receiving sessions will send it, so a node relays them without
parsing or encoding them again.  Nothing here does I/O.

    batch = origin_len:u8 origin item*
    item  = kind:u8 ref:u32 target_len:u16 target body_len:u32 body
"""

from __future__ import annotations

import struct
from typing import NamedTuple

#: A message for the target's sessions; the body is its JSON_MESSAGE payload.
DELIVER = 1
#: The same, and the sender waits: answer with ACK carrying C{ref}.
DELIVER_ACKED = 2
#: The receiving device's acknowledgement of DELIVER_ACKED C{ref}: body is the status byte.
ACK = 3
#: A BROADCAST from the device C{target} (to everyone on the receiving node).
BROADCAST = 4
#: A presence change: C{target} connected (ref 1) or disconnected (ref 0); body is the event.
PRESENCE = 5
#: A message to "server" that no command handled, for the observers; body as they get it.
TELEMETRY = 6
#: An operator's command about the device C{target}; body is JSON {"op": ...}.
COMMAND = 7
#: The origin node is leaving: forget its devices now.
GONE = 8
#: The tokens changed: reload them.
TOKENS = 9
#: The origin node has (re)written its list of connections: read it again.
JOINED = 10

_ITEM = struct.Struct("!BIH")
_LENGTH = struct.Struct("!I")
MAX_REF = 0xFFFFFFFF
assert _ITEM.size == 7 and _LENGTH.size == 4


class Item(NamedTuple):
    kind: int
    ref: int
    target: str
    body: bytes


def encode_item(kind: int, ref: int, target: str, body: bytes) -> bytes:
    name = target.encode("utf-8")
    return _ITEM.pack(kind, ref, len(name)) + name + _LENGTH.pack(len(body)) + body


def encode_batch(origin: str, items: list[bytes]) -> bytes:
    """A batch from C{origin} of items made by L{encode_item}."""
    name = origin.encode("utf-8")
    return bytes((len(name),)) + name + b"".join(items)


#: Items are made as plain tuples are: a NamedTuple's generated __new__ costs
#: more than the rest of an item's decoding.
_new = tuple.__new__
_unpack_item, _unpack_length = _ITEM.unpack_from, _LENGTH.unpack_from


def decode_batch(data: bytes) -> tuple[str, list[Item]]:
    """The origin and items of a batch; ValueError for bytes that are not one."""
    try:
        size = data[0]
        origin = data[1:1 + size].decode("utf-8")
        offset = 1 + size
        items: list[Item] = []
        end = len(data)
        while offset < end:
            kind, ref, length = _unpack_item(data, offset)
            offset += 7  # _ITEM.size
            target = data[offset:offset + length].decode("utf-8")
            offset += length
            (body_length,) = _unpack_length(data, offset)
            offset += 4  # _LENGTH.size
            body = data[offset:offset + body_length]
            if len(body) != body_length:
                raise ValueError("truncated item")
            offset += body_length
            items.append(_new(Item, (kind, ref, target, body)))
    except (IndexError, struct.error, UnicodeDecodeError) as e:
        raise ValueError(f"not a cluster batch: {e}") from None
    return origin, items
