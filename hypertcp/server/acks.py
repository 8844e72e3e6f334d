"""End-to-end acknowledgements a session waits for from its peer."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from hypertcp.protocol.commands import Status


class AckTracker:
    """
    The delivered frames whose acknowledgement someone awaits, by msg_id.
    Each wait ends with the status the peer's RESPONSE carries, or TIMEOUT
    when none comes in time or the connection ends first.
    """

    __slots__ = ("clock", "_pending")

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self._pending: dict[int, Deferred] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def expect(self, msg_id: int, timeout: float) -> Deferred:
        """A Deferred of the status the peer acknowledges frame C{msg_id} with."""
        # 65,535 frames later the id comes round again: an older wait still
        # holding it can never be told apart, so it ends now.
        older = self._pending.get(msg_id)
        if older is not None:
            older.callback(Status.TIMEOUT)
        d: Deferred = Deferred()
        self._pending[msg_id] = d
        d.addTimeout(timeout, self.clock, onTimeoutCancel=lambda *_: Status.TIMEOUT)
        d.addBoth(self._forget, msg_id, d)
        return d

    def _forget(self, result: Any, msg_id: int, d: Deferred) -> Any:
        if self._pending.get(msg_id) is d:
            del self._pending[msg_id]
        return result

    def acknowledged(self, msg_id: int, status: int) -> None:
        d = self._pending.get(msg_id)
        if d is not None:
            d.callback(status)

    def end(self) -> None:
        """The connection is gone: every wait ends with TIMEOUT."""
        pending, self._pending = self._pending, {}
        for d in pending.values():
            d.callback(Status.TIMEOUT)
