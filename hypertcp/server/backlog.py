"""
One device's stored messages on their way to one of its connections.

When a device logs in, L{Backlog} reads its queue from the store a page at
a time and delivers it in the order accepted, paced by the device: at most
C{window} frames unacknowledged at once, and none while its connection has
stopped reading, so a device with a 1 KB receive buffer is never flooded
and a backlog of thousands costs the server a page of memory.  A message
leaves the store when the device acknowledges its frame.  A frame that is
not acknowledged in time ends the backlog: that message and the rest stay
stored, to be delivered again, in order, at the device's next login.

New qos-1 messages for the device queue behind the backlog, so they too
arrive in the order accepted: in the store while it is still being read,
and in memory (L{Held}) once it has all been read -- a device that is sent
messages faster than the store is read would otherwise never leave it.
What is held and not acknowledged when the backlog ends is stored then.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, NamedTuple, Optional, Union

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from hypertcp.protocol.bodies import PROTOCOL_LEVEL, stored_body
from hypertcp.protocol.commands import Command, Status
from hypertcp.server.interfaces import IPeer
from hypertcp.store.records import Stored

JSON_MESSAGE, TIMEOUT, SUCCESS = Command.JSON_MESSAGE, Status.TIMEOUT, Status.SUCCESS
#: Messages read from the store at a time.
PAGE = 64


class Held(NamedTuple):
    """A qos-1 message that came once the store was read: in memory, in its turn."""

    sender: str
    payload: bytes  # JSON, as it is stored if it must be
    frame: bytes  # the JSON_MESSAGE body, as any live delivery
    queued_at: int
    expires_at: int
    outcome: Optional[Deferred]  # the sender's answer, when it asked for "ack"


class Backlog:
    """
    Delivers C{peer}'s device's stored messages to C{peer}.  C{acknowledged(
    backlog, message, status)} is called for each frame the device answers;
    C{ended(backlog, why)} once, when the queue is empty (C{why} None) or
    the backlog stops; C{unsent(backlog, held)} with the L{Held} messages
    that must be stored after all, in order.
    """

    log = Logger()

    def __init__(self, peer: IPeer, store: Any, clock: Any, window: int, timeout: float,
                 acknowledged: Callable[["Backlog", Stored, int], None],
                 ended: Callable[["Backlog", Optional[str]], None],
                 unsent: Callable[["Backlog", list[Held]], None], page: int = PAGE) -> None:
        self.peer = peer
        self.device_id = peer.device_id
        self.store = store
        self.clock = clock
        self.window = window
        self.timeout = timeout
        self.page = page
        self._acknowledged = acknowledged
        self._ended = ended
        self._unsent = unsent
        # "queued_at" is an addition to the contract: only for peers that announced level 2.
        self.queued_at = peer.proto >= PROTOCOL_LEVEL
        self.pending: deque[Union[Stored, Held]] = deque()
        self._held_out: list[Held] = []  # sent and not yet answered, in order
        self.after: Any = None  # the key of the last message read
        self.in_flight = 0
        self.sent = 0
        self.done = False
        #: Why the store could not be read, when that ended the backlog.
        self.failure: Any = None
        self._fetching = False
        self._exhausted = False  # the last page came back short
        # Messages stored for the device while this runs, and how many the
        # last read can have seen: a put after the last read means read again.
        self._puts = self._puts_read = 0
        self._waiting = False
        self._pumping = False

    def start(self) -> None:
        self._fetch()

    @property
    def reading(self) -> bool:
        """Is the store still being read?  Then what comes for the device is stored behind it."""
        return self._fetching or not self._exhausted or self._puts != self._puts_read

    def stored(self) -> None:
        """A message was just stored for this device: it goes out in its turn."""
        self._puts += 1
        self._pump()

    def hold(self, message: Held) -> None:
        """Deliver C{message} after everything before it (the store has all been read)."""
        self.pending.append(message)
        self._pump()

    def stop(self, why: str) -> None:
        """Deliver nothing more; frames already out may still be acknowledged."""
        self._end(why)

    # -- reading the queue --

    def _fetch(self) -> None:
        self._fetching = True
        self._puts_read = self._puts
        self.store.fetch(self.device_id, self.after, self.page).addCallbacks(
            self._fetched, self._failed)

    def _fetched(self, messages: list[Stored]) -> None:
        self._fetching = False
        if self.done:
            return
        if messages:
            self.after = messages[-1].key
            self.pending.extend(messages)
        self._exhausted = len(messages) < self.page
        self._pump()

    def _failed(self, failure: Any) -> None:
        self._fetching = False
        self.failure = failure
        self._end("the message store could not be read")

    # -- sending --

    def _pump(self) -> None:
        if self.done or self._pumping:
            return
        self._pumping = True
        try:
            self._send()
            if self.done:
                return
            if not self._fetching and len(self.pending) < self.window and (
                    not self._exhausted or self._puts != self._puts_read):
                self._fetch()
            elif not self._fetching and not self.pending and not self.in_flight:
                self._end(None)
        finally:
            self._pumping = False

    def _send(self) -> None:
        peer = self.peer
        now = int(self.clock.seconds() * 1000)
        while self.pending and self.in_flight < self.window and not self.done:
            if peer.paused:
                if not self._waiting:
                    self._waiting = True
                    peer.when_drained(self._drained)
                return
            message = self.pending.popleft()
            if message.expires_at <= now:
                # Never delivered; the sweep deletes it from the store.
                if type(message) is Held and message.outcome is not None:
                    message.outcome.callback(TIMEOUT)
                continue
            self.in_flight += 1
            self.sent += 1
            if type(message) is Held:
                self._held_out.append(message)
                body = message.frame
            else:
                body = stored_body(message.sender, message.payload,
                                   message.queued_at if self.queued_at else None)
            wait: Deferred = peer.deliver_acked(JSON_MESSAGE, body, self.timeout)
            wait.addCallback(self._answered, message)

    def _drained(self) -> None:
        self._waiting = False
        self._pump()

    def _answered(self, status: int, message: Union[Stored, Held]) -> None:
        self.in_flight -= 1
        held = type(message) is Held
        if held:
            out = self._held_out
            for i, sent in enumerate(out):
                if sent is message:
                    break
            else:
                return  # stored when the backlog ended: it comes again at the next login
        if status == TIMEOUT:
            # Not acknowledged in time, or the connection went: a stored
            # message stays stored; held ones are stored as the backlog ends.
            self._end(f"a frame was not acknowledged within {self.timeout:g} s")
            return
        if held:
            del out[i]
        if held:
            if message.outcome is not None:
                message.outcome.callback(status)
        else:
            self._acknowledged(self, message, status)
        self._pump()

    def _end(self, why: Optional[str]) -> None:
        if self.done:
            return
        self.done = True
        # Those sent and unanswered first: they were accepted before those waiting.
        held = self._held_out + [message for message in self.pending if type(message) is Held]
        self._held_out = []
        self.pending.clear()
        if held:
            self._unsent(self, held)
        self._ended(self, why)
