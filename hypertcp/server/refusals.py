"""Refusals logged once per window, so a peer's bad frames cannot flood the log."""

from __future__ import annotations

from hypertcp.server.ratelimit import STRIKE_WINDOW


class RefusalLog:
    """
    Decides which refusals of one peer reach the log: the first, then at
    most one per L{STRIKE_WINDOW} seconds, each saying how many were left
    out since the one before.
    """

    __slots__ = ("_logged_at", "_unlogged")

    def __init__(self, now: float) -> None:
        self._logged_at = now - STRIKE_WINDOW
        self._unlogged = 0

    def admit(self, now: float) -> "int | None":
        """None to stay quiet; otherwise log now, with this many left out before."""
        if now - self._logged_at < STRIKE_WINDOW:
            self._unlogged += 1
            return None
        unlogged, self._unlogged = self._unlogged, 0
        self._logged_at = now
        return unlogged
