"""A connection's message rate: a token bucket, and strikes for frames over it."""

from __future__ import annotations

#: Seconds over which frames refused for the rate count as strikes.
STRIKE_WINDOW = 10.0


class RateLimiter:
    """
    C{rate} frames per second with bursts of C{burst}.  Each frame over the
    rate is a strike; past C{max_strikes} within L{STRIKE_WINDOW} seconds
    the connection is flooding, not just busy, and should be closed.
    """

    __slots__ = ("rate", "burst", "max_strikes", "_allowance", "_refilled", "strikes",
                 "_window")

    def __init__(self, rate: float, burst: float, max_strikes: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.max_strikes = max_strikes
        self._allowance = burst
        self._refilled = now
        self.strikes = 0
        self._window = now

    def allow(self, now: float) -> bool:
        """Take one frame's allowance; False (and a strike) if there is none."""
        allowance = self._allowance + (now - self._refilled) * self.rate
        self._refilled = now
        if allowance > self.burst:
            allowance = self.burst
        if allowance >= 1.0:
            self._allowance = allowance - 1.0
            return True
        self._allowance = allowance
        if now - self._window > STRIKE_WINDOW:
            self._window = now
            self.strikes = 0
        self.strikes += 1
        return False

    @property
    def flooding(self) -> bool:
        return self.strikes > self.max_strikes
