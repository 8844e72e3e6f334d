"""
Store and forward: where a message sent with C{"qos": 1} goes, and how a
device gets what was stored for it.

A qos-1 message to a device that is online nowhere is stored and answered
STORED (202) once the store has it.  To a device that is online it is
delivered as any message, but the delivery waits for the device's
acknowledgement; if none comes within the ack timeout (or the device goes
first), the message is stored for redelivery.  The sender's answer is what
it would be without qos -- SUCCESS on delivery -- unless it also asked for
C{"ack"}, when it is the device's acknowledgement or, once stored, STORED.
When a device logs in, its stored messages are delivered through a
L{Backlog}; while one runs, new qos-1 messages for the device queue behind
it, so they arrive in the order accepted (they are answered STORED while
the store is still being read, as they are stored then).

Messages without qos never come here: their path does not touch the store.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from hypertcp.protocol.bodies import BadBody, Send, delivery_body
from hypertcp.protocol.commands import Command, Status
from hypertcp.protocol.jsoncodec import dumps
from hypertcp.server.backlog import Backlog, Held
from hypertcp.server.hub import Hub, first_delivery
from hypertcp.server.interfaces import IPeer
from hypertcp.store.records import Stored

JSON_MESSAGE, SUCCESS, STORED = Command.JSON_MESSAGE, Status.SUCCESS, Status.STORED
#: A live delivery that ended with one of these did not reach the device: store it.
UNDELIVERED = frozenset((Status.TIMEOUT, Status.DEVICE_NOT_IN_NETWORK, Status.SERVER_EXCEPTION))
#: Seconds between log lines about a failing store.
FAILURE_LOG_INTERVAL = 10.0


class Offline:
    """
    One node's store and forward, around an L{IMessageStore}.  It hooks
    itself into C{hub} (C{hub.offline}), which tells it of logins and
    departures; the session hands it every message that asks for qos.
    """

    log = Logger()

    def __init__(self, hub: Hub, store: Any, clock: Any, default_ttl: float, max_ttl: float,
                 window: int = 8) -> None:
        self.hub = hub
        self.store = store
        self.clock = clock
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl
        self.window = window
        #: The backlog being delivered to each device (to its newest connection).
        self.backlogs: dict[str, Backlog] = {}
        self.counts = {"stored": 0, "refused": 0, "failed": 0, "delivered": 0,
                       "undelivered": 0}
        self._failure_logged = float("-inf")
        hub.offline = self

    # -- messages that ask for qos --

    def route(self, sender: IPeer, send: Send, answer: Callable[[int, int], None],
              msg_id: int) -> Union[int, Deferred, None]:
        """
        The sender's status for a qos-1 message, or a Deferred of it; or None
        when the message goes to the store, which answers C{answer(status,
        msg_id)} once it has committed (a Deferred per stored message cost
        more than the rest of its way).
        """
        hub = self.hub
        target = send.target
        if target == "server" or not sender.token.may_reach(target):
            # The server is always there; and a refusal is the same with or without qos.
            return hub.route(sender, target, send.payload, send.ack)
        ttl = self.default_ttl if send.ttl is None else send.ttl
        if ttl > self.max_ttl:
            raise BadBody(f'"ttl" is {ttl:g} s; messages are kept {self.max_ttl:g} s at most')
        payload = dumps(send.payload)
        backlog = self.backlogs.get(target)
        if backlog is not None:
            if backlog.reading:
                self._store(sender.device_id, target, payload, ttl, answer, msg_id)
                backlog.stored()
                return None
            return self._hold(backlog, sender.device_id, send, payload, ttl)
        live = hub.devices.get(target)
        remote = hub.remote
        far = remote is not None and remote.holds(target)
        if not (live or far):
            self._store(sender.device_id, target, payload, ttl, answer, msg_id)
            return None
        body = delivery_body(sender.device_id, send.payload)
        waits: list[Deferred] = []
        if live:
            hub.delivered += len(live)
            waits = [peer.deliver_acked(JSON_MESSAGE, body, hub.ack_timeout) for peer in live]
        if far:
            there = remote.route(sender.device_id, target, body, True)
            if there is not None:
                waits.append(there)
        if not waits:
            return self.put(sender.device_id, target, payload, ttl)
        outcome = waits[0] if len(waits) == 1 else first_delivery(waits)
        outcome.addCallback(self._delivered, sender.device_id, target, payload, ttl)
        return outcome if send.ack else SUCCESS

    def _delivered(self, status: int, sender_id: str, target: str, payload: bytes,
                   ttl: float) -> Union[int, Deferred]:
        if status in UNDELIVERED:
            self.counts["undelivered"] += 1
            return self.put(sender_id, target, payload, ttl)
        return status

    def _hold(self, backlog: Backlog, sender_id: str, send: Send, payload: bytes,
              ttl: float) -> Union[int, Deferred]:
        """Queue behind a backlog that has read the store: in memory, answered as delivered live."""
        now = self.clock.seconds()
        outcome: Optional[Deferred] = Deferred() if send.ack else None
        self.hub.delivered += 1
        backlog.hold(Held(sender_id, payload, delivery_body(sender_id, send.payload),
                          int(now * 1000), int((now + ttl) * 1000), outcome))
        return outcome if outcome is not None else SUCCESS

    def _unsent(self, backlog: Backlog, held: list[Held]) -> None:
        """Held messages the device did not take: stored now, in order."""
        for message in held:
            self.counts["undelivered"] += 1
            d = self._put(backlog.device_id, message.sender, message.payload, message.queued_at,
                          message.expires_at)
            if message.outcome is not None:
                d.chainDeferred(message.outcome)

    def _store(self, sender_id: str, target: str, payload: bytes, ttl: float,
               answer: Callable[[int, int], None], msg_id: int) -> None:
        """L{put}, answered by C{answer(status, msg_id)} (the caller tells a backlog)."""
        now = self.clock.seconds()
        self.store.put_then(target, sender_id, payload, int(now * 1000), int((now + ttl) * 1000),
                            self._stored, answer, msg_id)

    def _stored(self, result: Any, answer: Callable[[int, int], None], msg_id: int) -> None:
        # _counted, inline: this runs for every stored message.
        if result == STORED:
            self.counts["stored"] += 1
        elif type(result) is Failure:
            result = self._put_failed(result)
        else:
            self.counts["refused"] += 1
        answer(result, msg_id)

    def put(self, sender_id: str, target: str, payload: bytes, ttl: float) -> Deferred:
        """Store a message for C{target}: a Deferred of STORED, QUOTA_LIMIT or SERVER_EXCEPTION."""
        now = self.clock.seconds()
        return self._put(target, sender_id, payload, int(now * 1000), int((now + ttl) * 1000))

    def _put(self, target: str, sender_id: str, payload: bytes, queued_at: int,
             expires_at: int) -> Deferred:
        d = self.store.put(target, sender_id, payload, queued_at, expires_at)
        backlog = self.backlogs.get(target)
        if backlog is not None:
            backlog.stored()
        return d.addCallbacks(self._counted, self._put_failed)

    def _counted(self, status: int) -> int:
        self.counts["stored" if status == STORED else "refused"] += 1
        return status

    def _put_failed(self, failure: Any) -> int:
        self.counts["failed"] += 1
        self._failed("storing a message", failure)
        return Status.SERVER_EXCEPTION

    def _failed(self, what: str, failure: Any) -> None:
        if failure.check(ConnectionError):
            return  # a store that cannot be reached (Redis away): its link says so, once
        now = self.clock.seconds()
        if now - self._failure_logged >= FAILURE_LOG_INTERVAL:
            self._failure_logged = now
            self.log.error("message store: {what} failed: {error}", what=what,
                           error=failure.getErrorMessage())

    # -- logins and departures (the hub calls these) --

    def attached(self, peer: IPeer) -> None:
        """A connection logged in: deliver what waits for its device."""
        old = self.backlogs.get(peer.device_id)
        if old is not None:
            # The newest connection takes over: the old one is most likely
            # half-open, left behind by a device that reconnected.
            old.stop(f"{peer.device_id} logged in again from {peer.peer}")
        backlog = Backlog(peer, self.store, self.clock, self.window, self.hub.ack_timeout,
                          self._acknowledged, self._ended, self._unsent)
        self.backlogs[peer.device_id] = backlog
        backlog.start()

    def detached(self, peer: IPeer) -> None:
        """
        A connection left: what its device has stored goes to the device's
        newest other connection, unless one is already being served.
        """
        backlog = self.backlogs.get(peer.device_id)
        if backlog is not None:
            if backlog.peer is not peer:
                return
            backlog.stop("the connection closed")
        others = self.hub.devices.get(peer.device_id)
        if others:
            self.attached(others[-1])

    def _acknowledged(self, backlog: Backlog, message: Stored, status: int) -> None:
        # Any answer means the device has the frame: one it refuses (too
        # large for its buffer, say) would be refused again, so it goes too.
        self.counts["delivered"] += 1
        if status != SUCCESS:
            self.log.warn("{device} answered a stored message from {sender} with status "
                          "{status}; it is removed", device=backlog.device_id,
                          sender=message.sender, status=status)
        self.store.remove(backlog.device_id, message.key).addErrback(
            lambda failure: self._failed("removing a delivered message", failure))

    def _ended(self, backlog: Backlog, why: Optional[str]) -> None:
        if self.backlogs.get(backlog.device_id) is backlog:
            del self.backlogs[backlog.device_id]
        if backlog.failure is not None:
            self._failed(f"reading {backlog.device_id}'s stored messages", backlog.failure)
        elif why is not None:
            self.log.info("{device}: stored messages paused after {sent} sent: {why}; the rest "
                          "at its next login", device=backlog.device_id, sent=backlog.sent,
                          why=why)
        elif backlog.sent:
            self.log.info("{device}: stored messages delivered: {sent}",
                          device=backlog.device_id, sent=backlog.sent)

    # -- upkeep --

    def sweep(self) -> Deferred:
        """Delete the expired messages: a Deferred of how many went."""
        return self.store.sweep(int(self.clock.seconds() * 1000)).addErrback(
            lambda failure: self._failed("the expiry sweep", failure))

    def stats(self) -> dict:
        """This node's counts, for the stats command."""
        return {**self.counts, "expired": self.store.expired, "backlogs": len(self.backlogs),
                "writer_restarts": self.store.restarts}
