"""
Choosing a node for a login: least connections, or sticky by device id on a
consistent-hash ring (so a device keeps its node while the set of nodes
is unchanged, and only 1/N of the devices move when one comes or goes).
"""

from __future__ import annotations

import bisect
import hashlib
from typing import Optional, Protocol, Sequence, TypeVar

# Points per node on the consistent-hash ring: enough for an even split of
# devices, few enough that the ring is built in a moment.
RING_POINTS = 160


class Candidate(Protocol):
    name: str
    available: bool
    load: int


C = TypeVar("C", bound=Candidate)


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def least_loaded(candidates: Sequence[C]) -> Optional[C]:
    """The available node with the lowest load, or None."""
    live = [c for c in candidates if c.available]
    return min(live, key=lambda c: c.load) if live else None


class Ring:
    """A consistent-hash ring over nodes, by name."""

    def __init__(self, nodes: Sequence[C]) -> None:
        self._ring = sorted(((_hash(f"{n.name}#{i}"), n) for n in nodes
                             for i in range(RING_POINTS)), key=lambda point: point[0])
        self._points = [point for point, _ in self._ring]

    def pick(self, key: str) -> Optional[C]:
        """The first available node at or after C{key}'s place on the ring."""
        if not self._ring:
            return None
        start = bisect.bisect(self._points, _hash(key))
        for i in range(len(self._ring)):
            node = self._ring[(start + i) % len(self._ring)][1]
            if node.available:
                return node
        return None
