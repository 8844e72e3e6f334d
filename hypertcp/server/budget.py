"""
Budgets of bytes a broadcast may put on the wire: per token, and for the
whole server.

A connection's rate limit counts frames it sends; a broadcast is one frame
in and one frame out to every other session.  A handful of connections on
one token, each within its own rate, could so push hundreds of megabytes
at readers until the slow-reader cap dropped every one of them.  A
broadcast costs the bytes it delivers, and is refused with QUOTA_LIMIT
while its token's budget, or the server's, is spent.
"""

from __future__ import annotations

from typing import Any


class ByteBudget:
    """
    A token bucket of bytes: C{rate} per second, up to one second's worth
    saved.  A cost is taken whole whenever the bucket is not empty, even
    past what it holds (one broadcast to a large fleet may cost more than a
    second's worth); the debt is then repaid at the rate before the next.
    """

    __slots__ = ("rate", "_allowance", "_refilled")

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self._allowance = float(rate)
        self._refilled = now

    def available(self, now: float) -> bool:
        allowance = min(self._allowance + (now - self._refilled) * self.rate, self.rate)
        self._allowance, self._refilled = allowance, now
        return allowance > 0

    def spend(self, cost: int) -> None:
        self._allowance -= cost


class BroadcastBudget:
    """The server's broadcast budget and each token's (by its owner); a rate of 0 is none."""

    def __init__(self, per_token: float, total: float, clock: Any) -> None:
        self.per_token = per_token
        self.total = total
        self.clock = clock
        self._total = ByteBudget(total, clock.seconds()) if total else None
        self._tokens: dict[str, ByteBudget] = {}

    def allow(self, owner: str, cost: int) -> bool:
        """Spend C{cost} bytes for a broadcast by token C{owner}, if both budgets allow."""
        now = self.clock.seconds()
        mine = None
        if self.per_token:
            mine = self._tokens.get(owner)
            if mine is None:
                mine = self._tokens[owner] = ByteBudget(self.per_token, now)
            if not mine.available(now):
                return False
        total = self._total
        if total is not None:
            if not total.available(now):
                return False
            total.spend(cost)
        if mine is not None:
            mine.spend(cost)
        return True
