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
    Waits are kept in the order sent, which is deadline order while they
    share a timeout (the server's ack timeout), so a firing looks only at
    the waits that are due: a peer that never acknowledges must not make
    every firing walk all of its waits.  A shorter timeout than those
    before it breaks the order, and the next firing sorts them again.
    """

    __slots__ = ("clock", "_pending", "_timer", "_due", "_last", "_ordered")

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        #: msg_id -> (deadline, wait), in the order sent.
        self._pending: dict[int, tuple[float, Deferred]] = {}
        self._timer: Any = None
        self._due = 0.0  # when the timer fires
        self._last = float("-inf")  # the latest deadline so far
        self._ordered = True  # deadlines rise in the order of _pending

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
        if deadline >= self._last:
            self._last = deadline
        else:
            self._ordered = False
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
        self._last, self._ordered = float("-inf"), True
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
        if not self._ordered:
            self._pending = pending = dict(sorted(pending.items(), key=lambda item: item[1][0]))
            self._ordered = True
        expired = []
        for msg_id, entry in pending.items():
            if entry[0] > now:
                break
            expired.append((msg_id, entry))
        for msg_id, entry in expired:
            # A callback may have ended or replaced a later one meanwhile.
            if pending.get(msg_id) is entry:
                del pending[msg_id]
                _end(entry[1], TIMEOUT)
        pending = self._pending  # a callback may have ended the connection: then it is empty
        if pending:
            self._arm(next(iter(pending.values()))[0])
        else:
            self._last = float("-inf")


def _end(d: Deferred, status: int) -> None:
    # Whoever holds the wait may have cancelled it: it has its answer then.
    if not d.called:
        d.callback(status)

