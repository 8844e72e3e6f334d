"""A sender and its receiver: the unit of load, and the counts kept for it."""

from __future__ import annotations

from typing import Any


class Pair:
    """
    A sender and its receiver, and the count of what went between them.
    Its own module, so the protocols, the sockets and the loop that drives
    them all name it without importing one another.
    """

    __slots__ = ("index", "sender", "receiver", "template", "sent", "expected", "unique",
                 "dups", "bad", "refused", "read_at")

    def __init__(self, index: int, template: bytes) -> None:
        self.index = index
        self.template = template
        self.sender: Any = None
        self.receiver: Any = None
        self.sent = self.expected = self.unique = 0
        self.dups = self.bad = self.refused = 0
        self.read_at = 0  # messages sent when the sender's answers were last read
