"""End-to-end acknowledgements a session waits for from its peer."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from hypertcp.protocol.commands import Status

TIMEOUT = Status.TIMEOUT


class AckTracker:
    """
    The delivered frames whose acknowledgement someone awaits, by msg_id.
    Each wait ends with the status the peer's RESPONSE carries, or TIMEOUT
    when none comes in time or the connection ends first.

    One reactor timer serves every wait of the connection, armed for the
    earliest deadline: a timer per delivery would cost a DelayedCall, its
    place in the reactor's heap and its cancellation for every message
    (most are acknowledged within a round trip, long before any deadline).
    """

    __slots__ = ("clock", "_pending", "_timer", "_due")

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        #: msg_id -> (deadline, wait), in the order sent.
        self._pending: dict[int, tuple[float, Deferred]] = {}
        self._timer: Any = None
        self._due = 0.0  # when the timer fires

    def __len__(self) -> int:
        return len(self._pending)

    def expect(self, msg_id: int, timeout: float) -> Deferred:
        """A Deferred of the status the peer acknowledges frame C{msg_id} with."""
        pending = self._pending
        # 65,535 frames later the id comes round again: an older wait still
        # holding it can never be told apart, so it ends now.
        older = pending.pop(msg_id, None)
        if older is not None:
            _end(older[1], TIMEOUT)
        d: Deferred = Deferred()
        deadline = self.clock.seconds() + timeout
        pending[msg_id] = (deadline, d)
        self._arm(deadline)
        return d

    def acknowledged(self, msg_id: int, status: int) -> None:
        entry = self._pending.pop(msg_id, None)
        if entry is not None:
            _end(entry[1], status)

    def end(self) -> None:
        """The connection is gone: every wait ends with TIMEOUT."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, {}
        for _, d in pending.values():
            _end(d, TIMEOUT)

    def _arm(self, deadline: float) -> None:
        """Have the timer fire by C{deadline}."""
        timer = self._timer
        if timer is None:
            self._due = deadline
            self._timer = self.clock.callLater(max(0.0, deadline - self.clock.seconds()),
                                               self._expire)
        elif deadline < self._due:  # a shorter timeout than those before it
            self._due = deadline
            timer.reset(max(0.0, deadline - self.clock.seconds()))

    def _expire(self) -> None:
        """End the waits whose deadline has passed; arm for the next."""
        self._timer = None
        now = self.clock.seconds()
        pending = self._pending
        expired = [(msg_id, entry) for msg_id, entry in pending.items() if entry[0] <= now]
        for msg_id, entry in expired:
            # A callback may have ended or replaced a later one meanwhile.
            if pending.get(msg_id) is entry:
                del pending[msg_id]
                _end(entry[1], TIMEOUT)
        if pending:
            self._arm(min(deadline for deadline, _ in pending.values()))


def _end(d: Deferred, status: int) -> None:
    # Whoever holds the wait may have cancelled it: it has its answer then.
    if not d.called:
        d.callback(status)

