"""
The timed checks of every session of one server -- the login deadline and
the idle check -- in one heap under a single reactor timer.

A DelayedCall per session and check costs about 450 bytes (the call, its
instance dictionary, its keyword dictionary and a bound method), and the
reactor's heap keeps a cancelled one until it next rebuilds: ten thousand
idle devices held two each.  Here a check is a (when, seq, session, what)
tuple, and the timer is armed for the earliest.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Any, Optional

from twisted.internet.interfaces import IDelayedCall

#: What a check is for (the session says which of its checks is still due).
LOGIN, IDLE = 0, 1


class Deadlines:
    """
    Calls C{session.deadline(what)} when C{when} comes, for each check
    added, unless the session no longer has that check due then
    (C{session.due(what) != when}: it logged in, checked in later, or went
    away).  Such stale entries are dropped as they come up, or all at once
    when they are half the heap, so sessions that have gone are not kept.
    """

    __slots__ = ("clock", "_heap", "_seq", "_timer", "_due", "_stale")

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, Any, int]] = []
        self._seq = itertools.count()
        self._timer: Optional[IDelayedCall] = None
        self._due = 0.0
        self._stale = 0

    def __len__(self) -> int:
        """Checks still due."""
        return len(self._heap) - self._stale

    def add(self, when: float, session: Any, what: int) -> None:
        """Have C{session.deadline(what)} called at C{when}."""
        heapq.heappush(self._heap, (when, next(self._seq), session, what))
        timer = self._timer
        if timer is None:
            self._due = when
            self._timer = self.clock.callLater(max(0.0, when - self.clock.seconds()), self._fire)
        elif when < self._due:
            self._due = when
            timer.reset(max(0.0, when - self.clock.seconds()))

    def drop(self, count: int = 1) -> None:
        """C{count} checks added before will not be wanted when they come up."""
        self._stale += count
        if self._stale * 2 >= len(self._heap):
            heap = self._heap = [entry for entry in self._heap if _live(entry)]
            heapq.heapify(heap)
            self._stale = 0
            if not heap and self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _fire(self) -> None:
        self._timer = None
        now = self.clock.seconds()
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if _live(entry):
                entry[2].deadline(entry[3])
            else:
                self._stale -= 1
            heap = self._heap  # a session's check may have rebuilt it
        if heap:
            # A check added meanwhile may have armed the timer for itself,
            # later than the earliest left.
            first = heap[0][0]
            if self._timer is None:
                self._due = first
                self._timer = self.clock.callLater(max(0.0, first - now), self._fire)
            elif first < self._due:
                self._due = first
                self._timer.reset(max(0.0, first - now))


def _live(entry: tuple[float, int, Any, int]) -> bool:
    return entry[2].due(entry[3]) == entry[0]
