"""What a message store keeps for each message, and for each device's queue."""

from __future__ import annotations

import time
from typing import Any, NamedTuple, Optional


class Stored(NamedTuple):
    """
    One stored message.  C{key} is the store's own id for it and orders a
    device's queue (SQLite's row number, a Redis stream entry id); the times
    are milliseconds since the epoch.
    """

    key: Any
    sender: str
    payload: bytes  # the payload object, JSON-encoded
    queued_at: int
    expires_at: int


class Bounds(NamedTuple):
    """How much a store keeps: messages and bytes per device, and bytes in all."""

    max_count: int
    max_bytes: int
    max_total_bytes: int


class Queue(NamedTuple):
    """One device's queue, as operators list them."""

    device: str
    count: int
    bytes: int
    oldest: Optional[int]  # queued_at of its first message, ms; None if it has none


def size(sender: str, payload: bytes) -> int:
    """What a message counts against C{max_queued_bytes}."""
    return len(payload) + len(sender.encode("utf-8"))


# -- as operators see them (the queue command and the manhole) -----------------

def _when(ms: Optional[int]) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) if ms else "-"


def queue_rows(queues: list[Queue]) -> list[tuple]:
    """A table of queues, its heading first."""
    return [("DEVICE", "MESSAGES", "BYTES", "OLDEST")] + [
        (q.device, q.count, q.bytes, _when(q.oldest)) for q in queues]


def message_rows(messages: list[Stored], now: int) -> list[tuple]:
    """A table of one device's messages, its heading first; C{now} in ms marks the expired."""
    rows: list[tuple] = [("KEY", "QUEUED", "EXPIRES", "FROM", "PAYLOAD")]
    for m in messages:
        rows.append((m.key, _when(m.queued_at),
                     _when(m.expires_at) + (" (expired)" if m.expires_at <= now else ""),
                     m.sender, m.payload.decode("utf-8", "replace")))
    return rows
