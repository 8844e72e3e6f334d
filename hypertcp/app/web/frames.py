"""
WebSocket frames as the gateway reads and writes them (RFC 6455 5): the
common case only -- Autobahn has the general reader and writer.
"""

from __future__ import annotations

import struct

_SHORT, _MEDIUM, _LONG = struct.Struct("!BB"), struct.Struct("!BBH"), struct.Struct("!BBQ")


def unmask(payload: bytes, key: bytes) -> bytes:
    """A client frame's payload with its 4-byte masking C{key} undone (RFC 6455 5.3)."""
    n = len(payload)
    keys = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(keys, "little")).to_bytes(
        n, "little")


def text_frame(payload: bytes) -> bytes:
    """
    One unfragmented, unmasked text frame (RFC 6455 5.2), as a server sends
    it.  Built here rather than through Autobahn's sendMessage so that the
    frames a read produces can be held and written together, as the TCP
    sessions' are.
    """
    n = len(payload)
    if n < 126:
        return _SHORT.pack(0x81, n) + payload
    if n < 65536:
        return _MEDIUM.pack(0x81, 126, n) + payload
    return _LONG.pack(0x81, 127, n) + payload
