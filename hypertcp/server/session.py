"""
One HyperTCP connection on the server: login, limits and timers.

The session enforces the contract's rules for a single peer -- the login
deadline, the rate limit, idle silence, the outbound buffer cap and the
statuses for bad input (the rules themselves are L{hypertcp.protocol.server}'s)
-- and hands every well-formed message to the hub.  Where a message goes is
the hub's business, not the session's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from hypertcp.framing import FrameReceiver
from hypertcp.protocol import server as rules
from hypertcp.protocol.bodies import (
    PROTOCOL_LEVEL, BadBody, challenge_body, closing_body, parse_login, parse_send,
    redirect_body, refusal_body,
)
from hypertcp.protocol.commands import Command, Status, describe
from hypertcp.protocol.frames import HEADER, Frame, Oversize, encode, response
from hypertcp.protocol.jsoncodec import JSONEncodeError
from hypertcp.server.acks import AckTracker
from hypertcp.server.auth import LoginRefused
from hypertcp.server.bounded import BoundedConnection
from hypertcp.server.deadlines import IDLE, LOGIN
from hypertcp.server.immediate import writer
from hypertcp.server.interfaces import IPeer
from hypertcp.server.login import Challenge, LoginGate
from hypertcp.server.ratelimit import STRIKE_WINDOW, RateLimiter
from hypertcp.server.refusals import RefusalLog

if TYPE_CHECKING:
    from hypertcp.server.factory import HyperTCPFactory
    from hypertcp.server.tokens import TokenRecord

# The per-frame path compares against these names: on Python 3.11 every
# Command.X or Status.X lookup costs about 60 ns, ten of them per message.
RESPONSE, SUCCESS, STORED = Command.RESPONSE, Status.SUCCESS, Status.STORED
_pack = HEADER.pack
_Refusal = rules.Refusal
# Reasons told to one client: a burst, then one a second (a client that
# keeps failing must not double what it costs to refuse it).
REASONS_BURST, REASONS_PER_S = 10, 1.0
# Seconds a redirected connection stays open, so the REDIRECT reaches the peer.
REDIRECT_GRACE = 1.0
# RESPONSE frames a peer may send beyond the frames it was sent: acks are
# never answered or rate-limited, so past this they are a flood.
SPARE_RESPONSES = 1000


@implementer(IPushProducer, IPeer)
class Session(BoundedConnection, FrameReceiver):
    """
    A server-side connection.  As a L{BoundedConnection} it drops a peer
    that stops reading once C{max_outbound_buffer} bytes are queued for it,
    so a stalled reader costs bounded memory and never slows the sender,
    and each of its closes has a deadline.
    """

    log = Logger()
    factory: "HyperTCPFactory"

    device_id: Optional[str] = None
    token: Optional["TokenRecord"] = None
    #: The protocol level the peer announced at login (1: the original sketch).
    proto = 1
    connected_at = 0.0
    #: The client's login asked to be told why it is refused or closed.
    reasons = False
    _reasons_budget: Optional[RateLimiter] = None
    #: Frames held by the factory's write batch until the read that made them ends.
    out: Optional[list[bytes]] = None
    _acks: Optional[AckTracker] = None
    _rate: Optional[RateLimiter] = None
    #: Writes to the transport (hypertcp.server.immediate.writer), chosen when it connects.
    _emit: Callable[[bytes], None]
    _gate: Optional[LoginGate] = None  # while logging in
    _refusals: Optional[RefusalLog] = None
    host = "?"
    port = 0
    #: When the login deadline and the next idle check are due (None: not).
    _login_due: Optional[float] = None
    _idle_due: Optional[float] = None

    @property
    def peer(self) -> str:  # type: ignore[override]
        """The peer's address, for the log: made when asked, not kept by every session."""
        return f"{self.host}:{self.port}"

    def connectionMade(self) -> None:
        factory = self.factory
        limits = factory.limits
        self.max_payload = limits.max_payload
        super().connectionMade()
        clock = factory.clock
        now = clock.seconds()
        self._emit = writer(self.transport)
        addr = self.transport.getPeer()
        self.host = getattr(addr, "host", "?")
        self.port = getattr(addr, "port", 0)
        self.connected_at = self.last_seen = now
        self.messages_in = self.messages_out = 0
        self._handlers = _BEFORE_LOGIN
        if limits.rate_limit:
            self._rate = RateLimiter(limits.rate_limit, limits.burst, limits.quota_strikes, now)
        self._responses = 0
        self.watch()
        deadlines = factory.deadlines
        self._login_due = now + limits.login_timeout
        deadlines.add(self._login_due, self, LOGIN)
        self._idle_due = now + limits.idle_timeout / 2
        deadlines.add(self._idle_due, self, IDLE)
        factory.connection_opened(self)

    def connectionLost(self, reason: Any = None) -> None:
        due = (self._login_due is not None) + (self._idle_due is not None)
        self._login_due = self._idle_due = None
        self.factory.deadlines.drop(due)
        self.stop_timers()
        if self._acks is not None:
            self._acks.end()
        self.factory.connection_closed(self)
        if self._quiet:
            return
        why = self.closing_reason
        if why is None:
            unclean = reason is not None and not reason.check(ConnectionDone)
            why = reason.getErrorMessage() if unclean else "closed by peer"
        self.log.info("{peer} ({device}) disconnected: {why}", peer=self.peer,
                      device=self.device_id or "not logged in", why=why)

    # -- sending --

    def write(self, data: bytes) -> None:
        """Queue bytes for the peer, dropping the peer if it has stopped reading."""
        transport = self.transport
        if transport.disconnecting or self.dropped:
            return
        if self._paused and self.over_cap(len(data)):
            return
        batch = self.factory.batch
        if not batch.active:
            self._emit(data)
        elif self.out is None:
            # WriteBatch.hold, inline: this runs for every frame a read makes.
            self.out = [data]
            batch.held.append(self)
        else:
            self.out.append(data)

    def flush(self) -> None:
        """Hand the frames held during a read to the transport, in one write."""
        out, self.out = self.out, None
        if out and not self.dropped:
            self._emit(out[0] if len(out) == 1 else b"".join(out))

    def respond(self, msg_id: int, status: int = SUCCESS) -> None:
        """Answer a frame: after login, as the peer's protocol level can read it."""
        if status == SUCCESS:  # empty for everyone: the answer to nearly every frame
            self.write(_pack(RESPONSE, msg_id, 0))
        elif self.device_id is None:
            self.write(response(msg_id, status))
        else:
            self.write(rules.answer(msg_id, status, self.proto))

    def deliver(self, command: int, body: bytes) -> int:
        """Send a server-originated frame; return its msg_id."""
        msg_id = self._ids.next()
        self.messages_out += 1
        self.factory.sent_by_command[command] += 1
        self.write(_pack(command, msg_id, len(body)) + body)
        return msg_id

    def deliver_acked(self, command: int, body: bytes, timeout: float) -> Deferred:
        """
        Send a frame and return a Deferred of the status the peer acknowledges
        it with: TIMEOUT if no acknowledgement comes within C{timeout} or the
        peer goes away first.
        """
        if self.transport.disconnecting or self.dropped:
            return succeed(Status.TIMEOUT)
        if self._acks is None:
            self._acks = AckTracker(self.factory.clock)
        return self._acks.expect(self.deliver(command, body), timeout)

    def redirect(self, host: str, port: int, tls: bool = False) -> None:
        """
        Tell the peer to log in at another server, then close shortly after.
        It leaves the hub now: what is sent to its id from here on belongs
        where it is going.
        """
        if self.closing_reason is not None or self.transport.disconnecting:
            return
        self.deliver(Command.REDIRECT, redirect_body(host, port, tls))
        self.closing_reason = reason = f"redirected to {host}:{port}"
        self.factory.hub.detach(self)
        self.factory.clock.callLater(REDIRECT_GRACE, self.close, reason)

    def tell(self, msg_id: int, status: int, why: str) -> None:
        """Say why frame C{msg_id} is refused, before its RESPONSE, if the client asked."""
        if not self.reasons:
            return
        budget = self._reasons_budget
        if budget is None:
            budget = self._reasons_budget = RateLimiter(
                REASONS_PER_S, REASONS_BURST, 1 << 30, self.factory.clock.seconds())
        if budget.allow(self.factory.clock.seconds()):
            self.deliver(Command.JSON_MESSAGE, refusal_body(msg_id, status, why))

    def closing(self, reason: str) -> None:
        if self.reasons:
            self.deliver(Command.JSON_MESSAGE, closing_body(reason))

    def leaving(self) -> None:
        # Closing: no longer a delivery target, and whoever awaits its
        # acknowledgements learns now that it is gone.
        self.factory.hub.detach(self)
        if self._acks is not None:
            self._acks.end()
        self.flush()

    # -- receiving --

    def dataReceived(self, data: bytes) -> None:
        # FrameReceiver.dataReceived's loop, inline, for a read that
        # completes at least one frame: only whole frames are signs of life,
        # so a peer dribbling bytes that never finish one is silent to the
        # idle timeout.
        events = self._decoder.feed(data)
        if not events:
            return
        factory = self.factory
        self.last_seen = factory.clock.seconds()
        if len(events) == 1:
            # A read of one frame (every read, at a moderate rate) writes to
            # each peer once anyway -- the delivery to one, the answer to
            # the other -- so holding its writes would only cost time.
            self.dispatch(events)
            return
        batch = factory.batch
        batch.begin()
        try:
            self.dispatch(events)
        finally:
            batch.end()

    def oversizeReceived(self, event: Oversize) -> None:
        self.factory.count("oversize")
        refusal = rules.oversize(event, self.max_payload)
        self.log.warn("{peer}: payload of {length:,} bytes over the {limit:,}-byte limit skipped",
                      peer=self.peer, length=event.length, limit=self.max_payload)
        if refusal is not None:
            self.tell(event.msg_id, refusal.status, refusal.why)
            self.respond(event.msg_id, refusal.status)

    def frameReceived(self, frame: Frame) -> None:
        if self.dropped:  # aborting does not mark the transport disconnecting
            return
        command = frame.command
        self.factory.received_by_command[command] += 1
        if command == RESPONSE:
            # Half the frames under load are acknowledgements: served here,
            # without a dispatch.
            self._responses += 1
            if self._responses > self.messages_out + SPARE_RESPONSES:
                self._response_flood()
            elif self._acks:
                self._acks.acknowledged(frame.msg_id,
                                        frame.payload[0] if frame.payload else SUCCESS)
            return
        rate = self._rate
        if rate is not None and not rate.allow(self.last_seen):
            self._over_rate(frame)
            return
        self.messages_in += 1
        handler = self._handlers.get(command)
        if handler is None:
            self._refuse(frame, *rules.action(command, self.device_id is not None))
        elif type(handler) is _Refusal:
            self._refuse(frame, *handler)
        else:
            handler(self, frame)

    def _over_rate(self, frame: Frame) -> None:
        rate = self._rate
        self.factory.count("quota")
        if rate.strikes == 1:
            self.log.warn("{peer} ({device}): over the rate limit of {rate}/s",
                          peer=self.peer, device=self.device_id or "not logged in",
                          rate=rate.rate)
        self.tell(frame.msg_id, Status.QUOTA_LIMIT,
                  f"over the rate limit of {rate.rate:g} messages a second")
        self.respond(frame.msg_id, Status.QUOTA_LIMIT)
        if rate.flooding:
            self.factory.count("flood")
            self.close(f"flood: {rate.strikes} frames over the rate limit within "
                       f"{STRIKE_WINDOW:.0f} s")

    def _refuse(self, frame: Frame, status: int, why: str) -> None:
        self.factory.count(Status(status).name.lower())
        # One line per peer per window, so a peer sending nothing but bad
        # frames cannot turn the log into its flood.
        self._log_refusal(why, status)
        self.tell(frame.msg_id, status, why)
        self.respond(frame.msg_id, status)

    def _log_refusal(self, why: str, status: int) -> None:
        refusals = self._refusals
        if refusals is None:  # made at the first refusal: most sessions never have one
            refusals = self._refusals = RefusalLog(self.last_seen)
        unlogged = refusals.admit(self.last_seen)
        if unlogged is not None:
            self.log.warn("{peer} ({device}): {why}: {status}{more}", peer=self.peer,
                          device=self.device_id or "not logged in", why=why,
                          status=Status(status).name,
                          more=f" ({unlogged} more refusals unlogged since the last)"
                          if unlogged else "")

    # -- the frames the rules serve --

    def _response_flood(self) -> None:
        """RESPONSE frames are never answered or rate-limited: past a margin they are a flood."""
        self.factory.count("flood")
        self.close(f"flood: {self._responses} RESPONSE frames for "
                   f"{self.messages_out} frames sent to it")

    def _ping(self, frame: Frame) -> None:
        self.respond(frame.msg_id)

    def _login(self, frame: Frame) -> None:
        gate = self._gate
        if gate is None:
            gate = self._gate = LoginGate(self.factory)
        try:
            login = parse_login(frame.payload)
            result = gate.login(login, self.transport)
        except BadBody as e:
            self._refuse(frame, Status.ILLEGAL_COMMAND_BODY, str(e))
            return
        except LoginRefused as e:
            self.reasons = login.reasons
            self._refuse(frame, e.status, str(e))
            if e.status == Status.INVALID_TOKEN:
                self.close(str(e))
            return
        if type(result) is Challenge:
            # The nonce goes back in a LOGIN frame that echoes the request's msg_id.
            self.write(encode(Command.LOGIN, frame.msg_id, challenge_body(result.nonce)))
            return
        record, device_id = result
        if device_id is None:
            device_id = f"{record.prefix or ''}device_{self.host}_{self.port}"
        elif not self.factory.hub.may_join(device_id, record):
            self.reasons = login.reasons
            self._refuse(frame, Status.NOT_ALLOWED,
                         f"{device_id!r} is online under another token")
            return
        self._login_due = self._gate = None
        self.factory.deadlines.drop()
        self.token = record
        self.device_id = device_id
        self.proto = login.proto
        self.reasons = login.reasons
        self._handlers = _AFTER_LOGIN
        self.write(response(frame.msg_id, Status.SUCCESS, login=True))
        self.log.info("{peer} logged in as {device} ({role} token {name})", peer=self.peer,
                      device=device_id, role=record.role, name=record.name)
        self.factory.logged_in(self)

    def _message(self, frame: Frame) -> None:
        try:
            send = parse_send(frame.command, frame.payload)
        except BadBody as e:
            self._refuse(frame, Status.ILLEGAL_COMMAND_BODY, str(e))
            return
        # Unpacked as a tuple: a NamedTuple's attributes cost more, per message.
        target, payload, ack, qos, _ = send
        hub = self.factory.hub
        try:
            # Hub.route_send, inline: this runs for every message.
            if qos and hub.offline is not None:
                result = hub.offline.route(self, send, self._answer, frame.msg_id)
                if result is None:
                    return  # the store answers once it has committed
            else:
                result = hub.route(self, target, payload, ack)
        except JSONEncodeError as e:
            # It parsed, but cannot be written again (nested too deeply): bad input.
            self._refuse(frame, Status.ILLEGAL_COMMAND_BODY, f"payload cannot be relayed: {e}")
            return
        except BadBody as e:  # a qos envelope this server will not keep (ttl over the maximum)
            self._refuse(frame, Status.ILLEGAL_COMMAND_BODY, str(e))
            return
        except Exception:
            self.log.failure("{peer} ({device}): routing failed", peer=self.peer,
                             device=self.device_id)
            self.factory.count("server_exception")
            self.tell(frame.msg_id, Status.SERVER_EXCEPTION,
                      "the server failed to route the message; its log says why")
            self.respond(frame.msg_id, Status.SERVER_EXCEPTION)
            return
        if result is SUCCESS:  # nearly every message: the empty answer, at once
            self.write(_pack(RESPONSE, frame.msg_id, 0))
        elif isinstance(result, int):  # a cheaper test than Deferred's ABC isinstance
            self._answer(result, frame.msg_id)
        else:
            result.addCallback(self._answer, frame.msg_id)

    def _answer(self, status: int, msg_id: int) -> None:
        if status == STORED:  # each stored message's answer: nothing to count, tell or log
            self.write(rules.answer(msg_id, STORED, self.proto))
            return
        if status != SUCCESS:
            self.factory.count(Status(status).name.lower())
            if self.proto < PROTOCOL_LEVEL:
                # It will read an empty RESPONSE: the log is where the status goes.
                self._log_refusal(f"message {msg_id} answered", status)
            if self.reasons:
                self.tell(msg_id, status, self._why(status))
        self.respond(msg_id, status)

    def _why(self, status: int) -> str:
        why = getattr(status, "why", None)
        if why is not None:
            return why
        if status == Status.TIMEOUT:
            return (f"not acknowledged within {self.factory.hub.ack_timeout:g} s "
                    "(or the receiver left)")
        return describe(status)

    # -- timers --

    def due(self, what: int) -> Optional[float]:
        """When check C{what} (L{LOGIN}, L{IDLE}) is due for this session, if it is."""
        return self._login_due if what == LOGIN else self._idle_due

    def deadline(self, what: int) -> None:
        """Check C{what} is due now (L{Deadlines} calls this)."""
        if what == LOGIN:
            self._login_due = None
            self._login_expired()
        else:
            self._idle_due = None
            self._idle_check()

    def _login_expired(self) -> None:
        self.factory.count("login_timeout")
        # The contract: TIMEOUT with the login's msg_id (1) just before closing.
        self.write(response(1, Status.TIMEOUT, login=True))
        self.close(f"no login within {self.factory.limits.login_timeout:g} s")

    def _idle_check(self) -> None:
        limit = self.factory.limits.idle_timeout
        clock = self.factory.clock
        silent = clock.seconds() - self.last_seen
        if silent >= limit:
            self.factory.count("idle")
            self.close(f"silent for {silent:.0f} s")
            return
        if silent >= limit / 2:
            self.deliver(Command.PING, b"")
            delay = limit - silent
        else:
            delay = limit / 2 - silent
        self._idle_due = clock.seconds() + delay
        self.factory.deadlines.add(self._idle_due, self, IDLE)


def _table(actions: dict) -> dict:
    """The protocol's rules table with each action's Session method in its place."""
    methods = {rules.PING: Session._ping,
               rules.LOGIN: Session._login, rules.MESSAGE: Session._message}
    # RESPONSE (the ACK action) is served before the table is consulted.
    return {command: methods[action] if isinstance(action, str) else action
            for command, action in actions.items() if action != rules.ACK}


_BEFORE_LOGIN = _table(rules.BEFORE_LOGIN)
_AFTER_LOGIN = _table(rules.AFTER_LOGIN)
