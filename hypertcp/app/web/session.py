"""
One WebSocket connection to the gateway: a browser, or any WebSocket
client, as a device like any other.

A L{WebSession} is a hub peer (L{IPeer}) as a TCP session is: it logs in
through the same C{factory.authenticate}, its actions go through the same
per-connection rules (L{hypertcp.protocol.server}), and it keeps the same
limits -- rate, payload size, slow reader, login deadline, idle timeout.
It also joins the factory's sessions, so the connection cap counts it, a
revoked token closes it and the manhole lists it.  Autobahn speaks
WebSocket; the JSON on it is L{hypertcp.protocol.web}'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from autobahn.twisted.websocket import WebSocketServerProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.logger import Logger
from zope.interface import implementer

from hypertcp.app.web.frames import text_frame, unmask
from hypertcp.protocol import server as rules
from hypertcp.protocol.bodies import (
    PROTOCOL_LEVEL, BadBody, parse_login, redirect_body, send_of,
)
from hypertcp.protocol.commands import Command, Status
from hypertcp.protocol.jsoncodec import JSONEncodeError
from hypertcp.protocol.web import (
    NAMES, Action, BadAction, challenge_body, delivery, error_body, parse_action, status_body,
    success_frame,
)
from hypertcp.server.acks import AckTracker
from hypertcp.server.auth import LoginRefused
from hypertcp.server.bounded import PacedByPeer
from hypertcp.server.interfaces import IPeer
from hypertcp.server.login import Challenge, LoginGate
from hypertcp.server.ratelimit import STRIKE_WINDOW, RateLimiter
from hypertcp.server.refusals import RefusalLog
from hypertcp.server.session import SPARE_RESPONSES

if TYPE_CHECKING:
    from hypertcp.app.web.gateway import WebGateway
    from hypertcp.server.tokens import TokenRecord

# Bound once: the per-message path compares against these (an enum lookup costs ~60 ns).
RESPONSE, SUCCESS, STORED = Command.RESPONSE, Status.SUCCESS, Status.STORED
_Refusal = rules.Refusal
_PLAIN_ACK = b'{"action":"ack","ref":'
_ACK_AT = len(_PLAIN_ACK)
OPEN = WebSocketProtocol.STATE_OPEN
CONNECTING = WebSocketProtocol.STATE_CONNECTING
# Close codes (RFC 6455 7.4.1).
NORMAL, GOING_AWAY, POLICY, TOO_BIG = 1000, 1001, 1008, 1009
#: A message over the payload limit is read and dropped up to this size;
#: a larger one ends the connection (1009) instead of being read.
SKIP_LIMIT = 1 << 20


@implementer(IPeer)
class WebSession(PacedByPeer, WebSocketServerProtocol):
    """
    One WebSocket connection.  Like the TCP session, it is its transport's
    producer only to learn when the peer stops reading; from then on what
    is queued for it is counted, and past C{max_outbound_buffer} it is
    dropped.
    """

    # Autobahn logs through C{self.log} (txaio's logger, quiet below info);
    # the gateway's own lines go to this one.
    logger = Logger()
    #: How the connection reached the server, in listings and metrics.
    kind = "ws"
    factory: "WebGateway"

    device_id: Optional[str] = None
    token: Optional["TokenRecord"] = None
    #: The gateway's JSON carries every status and every field: the current level.
    proto = PROTOCOL_LEVEL
    peer = "?"
    connected_at = last_seen = 0.0
    messages_in = messages_out = 0
    closing_reason: Optional[str] = None
    dropped = False
    #: Frames held by the factory's write batch until the read that made them ends.
    out: Optional[list[bytes]] = None
    _ref = 0
    _acked_back = 0
    _acks: Optional[AckTracker] = None
    _rate: Optional[RateLimiter] = None
    _close_timer: Any = None
    _gate: Optional[LoginGate] = None
    # The message being received: its size so far, its parts while within the limit.
    _binary = False
    _size = 0
    _parts: list[bytes]

    def connectionMade(self) -> None:
        super().connectionMade()
        node = self.node = self.factory.node
        # Its own copy, as a TCP session's: a SIGHUP's new limits are for new connections.
        limits = self.limits = node.limits
        clock = node.clock
        now = clock.seconds()
        addr = self.transport.getPeer()
        self.host = getattr(addr, "host", "?")
        self.port = getattr(addr, "port", 0)
        self.peer = f"{self.host}:{self.port}"
        self.connected_at = self.last_seen = now
        self._handlers = _BEFORE_LOGIN
        if limits.rate_limit:
            self._rate = RateLimiter(limits.rate_limit, limits.burst, limits.quota_strikes, now)
        self._refusals = RefusalLog(now)
        # The HTTP channel that carried the upgrade was the transport's
        # producer; this session takes its place.
        self.transport.unregisterProducer()
        self.transport.registerProducer(self, True)
        self._login_timer = clock.callLater(limits.login_timeout, self._login_expired)
        self._idle_timer = clock.callLater(limits.idle_timeout / 2, self._idle_check)
        node.connection_opened(self)

    def connectionLost(self, reason: Any = None) -> None:
        if reason is None:
            reason = ConnectionDone()
        super().connectionLost(reason)
        for timer in (self._login_timer, self._idle_timer, self._close_timer):
            if timer is not None and timer.active():
                timer.cancel()
        if self._acks is not None:
            self._acks.end()
        self.node.connection_closed(self)
        self.factory.closed(self)
        why = self.closing_reason
        if why is None:
            value = getattr(reason, "value", reason)
            why = "closed by peer" if isinstance(value, ConnectionDone) else str(value)
        self.logger.info("{peer} ({device}) WebSocket disconnected: {why}", peer=self.peer,
                         device=self.device_id or "not logged in", why=why)

    # -- sending --

    def write(self, data: bytes) -> None:
        """Queue a frame for the peer, dropping the peer if it has stopped reading."""
        if self.dropped or self.state != OPEN:
            return
        node = self.node
        if self._paused:
            cap = self.limits.max_outbound_buffer
            if self.queued_past(len(data), cap):
                node.count("slow_receiver")
                self.abort(f"slow receiver: outbound buffer over {cap} bytes")
                return
        batch = node.batch
        if batch.active:
            batch.hold(self, data)
        else:
            self.transport.write(data)

    def flush(self) -> None:
        """Hand the frames held during a read to the transport, in one write."""
        out, self.out = self.out, None
        if out and not self.dropped and self.state == OPEN:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _answer(self, msg_id: Optional[int], status: int, reason: Optional[str] = None,
                **extra: Any) -> None:
        """
        The status of an action; one without an id is answered only when
        refused.  A refusal the hub explains (an L{Answer}) says why.
        """
        if status == STORED:  # a success, counted by the store
            if msg_id is not None:
                self.write(text_frame(status_body(msg_id, status)))
            return
        if status != SUCCESS:
            self.node.count(Status(status).name.lower())
            reason = reason or getattr(status, "why", None)
        elif not extra and reason is None:
            if msg_id is not None:
                self.write(success_frame(msg_id))
            return
        self.write(text_frame(status_body(msg_id, status, reason, **extra)))

    def deliver(self, command: int, body: bytes) -> int:
        """Send a frame the hub delivers; return the ref the peer acknowledges it by."""
        self._ref = ref = self._ref + 1
        self.messages_out += 1
        self.factory.sent_by_command[command] += 1
        self.write(text_frame(delivery(command, body, ref)))
        return ref

    def deliver_acked(self, command: int, body: bytes, timeout: float) -> Deferred:
        """
        Send a frame and return a Deferred of the status the peer
        acknowledges it with: TIMEOUT if none comes within C{timeout} or the
        peer goes away first.
        """
        if self.dropped or self.state != OPEN or self.closing_reason is not None:
            return succeed(Status.TIMEOUT)
        if self._acks is None:
            self._acks = AckTracker(self.node.clock)
        return self._acks.expect(self.deliver(command, body), timeout)

    def redirect(self, host: str, port: int, tls: bool = False) -> None:
        """
        Tell the peer the node is sending its devices to C{host}:C{port}, and
        close.  A browser cannot follow it there (that is a TCP port): the
        JavaScript client reconnects to its own URL, which a web balancer
        sends elsewhere.
        """
        if self.closing_reason is not None or self.state != OPEN:
            return
        self.deliver(Command.REDIRECT, redirect_body(host, port, tls))
        self.close(f"redirected to {host}:{port}", GOING_AWAY)

    def close(self, reason: str, code: int = NORMAL) -> None:
        """
        Close after what is queued has been sent, and say why in the log and
        in the close frame.  The session stops being a delivery target now,
        and the close has a deadline: a peer that never answers the close
        frame is dropped.
        """
        self.node.hub.detach(self)
        if self._acks is not None:
            self._acks.end()
        if self.closing_reason is None:
            self.closing_reason = reason
            self.logger.info("{peer} ({device}): closing: {why}", peer=self.peer,
                             device=self.device_id or "not logged in", why=reason)
        self.flush()
        if self._close_timer is None:
            self._close_timer = self.node.clock.callLater(self.limits.close_timeout,
                                                          self._close_expired)
        if self.state == OPEN:
            # sendCloseFrame, not sendClose: that one keeps applications to
            # 1000 and 3000-4999, and the codes that say why are the RFC's.
            self.sendCloseFrame(code, reason.encode("utf-8")[:120].decode("utf-8", "ignore")
                                .encode("utf-8"))
        elif self.state == CONNECTING:
            self.dropConnection(abort=False)

    def _close_expired(self) -> None:
        self._close_timer = None
        self.abort(f"close not finished within {self.limits.close_timeout:g} s "
                   f"({self.closing_reason})")

    def abort(self, reason: str, quiet: bool = False) -> None:
        """
        Drop the connection now, discarding what is queued.  C{quiet} leaves
        the log to the caller (admission logs its evictions once per window).
        """
        self.dropped = True
        self.closing_reason = reason
        if not quiet:
            self.logger.warn("{peer} ({device}): dropping: {why}", peer=self.peer,
                             device=self.device_id or "not logged in", why=reason)
        # It leaves the hub when the connection is lost: a write aborts it
        # in the middle of the hub's broadcast loop over its peers.
        self.transport.abortConnection()

    # -- receiving: whole messages, the oversize skipped, text dispatched --

    def dataReceived(self, data: bytes) -> None:
        # Any frame is life, as on TCP: a pong, a message, even a refused one.
        node = self.node
        self.last_seen = node.clock.seconds()
        # What a read produces for any session goes out in one write each.
        batch = node.batch
        batch.begin()
        try:
            super().dataReceived(data)
        finally:
            batch.end()

    def processData(self) -> bool:
        """
        Read the frames nearly every message is -- whole, unfragmented,
        masked text frames under 64 KiB -- straight off the buffer, and
        leave anything else (control frames, fragments, partial frames,
        whatever breaks the rules) to Autobahn.  Autobahn's general reader
        costs a masker object and a copy of the rest of the buffer per
        frame, most of the gateway's time under load.
        """
        if self.current_frame is None and self.state == OPEN and not self.inside_message:
            data = self.data
            used = self._text_frames(data)
            if used:
                self.data = data = data[used:]
            if not data:
                return False
        return super().processData()

    def _text_frames(self, data: bytes) -> int:
        """Dispatch the plain text frames at the front of C{data}; return the bytes used."""
        off, end = 0, len(data)
        while end - off >= 6 and self.state == OPEN and not self.dropped:
            length = data[off + 1]
            if data[off] != 0x81 or length < 0x80:
                break  # not FIN + text, or not masked: Autobahn's to judge
            length &= 0x7F
            at = off + 2
            if length == 126:
                if end - at < 2:
                    break
                length = (data[at] << 8) | data[at + 1]
                if length < 126:
                    break
                at += 2
            elif length == 127:
                break
            stop = at + 4 + length
            if stop > end:
                break
            self._size = length
            if length > self.limits.max_payload:
                self._oversize()
            else:
                self._received(unmask(data[at + 4:stop], data[at:at + 4]))
            off = stop
        return off

    def onMessageBegin(self, isBinary: bool) -> None:
        self._binary = isBinary
        self._size = 0
        self._parts = []

    def onMessageFrameBegin(self, length: int) -> None:
        self._size += length
        if self._size > SKIP_LIMIT and not self.dropped:
            self.node.count("oversize")
            self.close(f"{self._size}-byte message over {SKIP_LIMIT} bytes", TOO_BIG)

    def onMessageFrameData(self, payload: bytes) -> None:
        if self._size <= self.limits.max_payload:
            self._parts.append(payload)

    def onMessageFrameEnd(self) -> None:
        pass

    def onMessageEnd(self) -> None:
        if self.closing_reason is not None or self.dropped:
            return
        if self._binary:
            self._refuse(None, Status.ILLEGAL_COMMAND_BODY,
                         "binary frames are not used: send JSON as text", error=True)
        elif self._size > self.limits.max_payload:
            self._oversize()
        else:
            self._received(self._parts[0] if len(self._parts) == 1 else b"".join(self._parts))
        self._parts = []

    def _oversize(self) -> None:
        """A text message of C{self._size} bytes, over the limit: read, dropped, refused."""
        self.node.count("oversize")
        self._refuse(None, Status.ILLEGAL_COMMAND_BODY,
                     f"{self._size}-byte message over the {self.limits.max_payload}-byte "
                     "limit skipped", error=True, count=False)

    def _received(self, text: bytes) -> None:
        """A whole text message within the limit: an action, to the connection's rules."""
        if text[:_ACK_AT] == _PLAIN_ACK:
            # Half of what a receiving browser sends is {"action":"ack","ref":N},
            # exactly as hypertcp.js writes it: read here without the parser.
            ref = text[_ACK_AT:-1]
            if (text[-1:] == b"}" and ref.isdigit() and len(ref) <= 16
                    and (ref[:1] != b"0" or len(ref) == 1)):
                self.factory.received_by_command[RESPONSE] += 1
                self._acknowledged(int(ref), SUCCESS)
                return
        try:
            action = parse_action(text)
        except BadAction as e:
            self._refuse(e.id, e.status, str(e), error=e.id is None)
            return
        command = action.command
        self.factory.received_by_command[command] += 1
        if command != RESPONSE:
            rate = self._rate
            if rate is not None and not rate.allow(self.last_seen):
                self._over_rate(action)
                return
            self.messages_in += 1
        handler = self._handlers.get(command)
        if handler is None:
            # The rules name the frame's command number; a browser knows the action.
            status, _ = rules.action(command, self.device_id is not None)
            self._refuse(action.id, status, f'"{NAMES[command]}" before login')
        elif type(handler) is _Refusal:
            self._refuse(action.id, *handler)
        else:
            handler(self, action, text)

    def _over_rate(self, action: Action) -> None:
        rate = self._rate
        self.node.count("quota")
        if rate.strikes == 1:
            self.logger.warn("{peer} ({device}): over the rate limit of {rate}/s",
                             peer=self.peer, device=self.device_id or "not logged in",
                             rate=rate.rate)
        self.write(text_frame(status_body(action.id, Status.QUOTA_LIMIT)))
        if rate.flooding:
            self.node.count("flood")
            self.close(f"flood: {rate.strikes} messages over the rate limit within "
                       f"{STRIKE_WINDOW:.0f} s", POLICY)

    def _refuse(self, msg_id: Optional[int], status: int, why: str, error: bool = False,
                count: bool = True) -> None:
        """Refuse an action (or text that is none, with C{error}), naming the problem."""
        if count:
            self.node.count(Status(status).name.lower())
        # One line per peer per window, so bad input cannot flood the log.
        unlogged = self._refusals.admit(self.last_seen)
        if unlogged is not None:
            self.logger.warn("{peer} ({device}): {why}: {status}{more}", peer=self.peer,
                             device=self.device_id or "not logged in", why=why,
                             status=Status(status).name,
                             more=f" ({unlogged} more refusals unlogged since the last)"
                             if unlogged else "")
        self.write(text_frame(error_body(status, why) if error
                              else status_body(msg_id, status, why)))

    # -- the actions the rules serve --

    def _ack(self, action: Action, text: bytes) -> None:
        """An acknowledgement of a delivery, by its ref; never answered."""
        body = action.body
        ref, status = body.get("ref"), body.get("status", 200)  # an int: not the IntEnum
        if type(ref) is not int or type(status) is not int or not 0 <= status <= 255:
            self._acked_back += 1  # counted towards a flood all the same
            self._refuse(action.id, Status.ILLEGAL_COMMAND_BODY,
                         'an ack needs a "ref" number, and a "status" from 0 to 255 if any',
                         error=action.id is None)
            return
        self._acknowledged(ref, status)

    def _acknowledged(self, ref: int, status: int) -> None:
        """Delivery C{ref} acknowledged with C{status}; past a margin, acks are a flood."""
        self._acked_back += 1
        if self._acked_back > self.messages_out + SPARE_RESPONSES:
            self.node.count("flood")
            self.close(f"flood: {self._acked_back} acks for {self.messages_out} deliveries",
                       POLICY)
            return
        if self._acks:
            self._acks.acknowledged(ref, status)

    def _ping(self, action: Action, text: bytes) -> None:
        self._answer(action.id, SUCCESS, None, pong=True)

    def _login(self, action: Action, text: bytes) -> None:
        """
        A token login, or a challenge login in its two steps, through the
        same gate as TCP's (so C{[auth] require_challenge} holds here too).
        """
        gate = self._gate
        if gate is None:
            gate = self._gate = LoginGate(self.node)
        try:
            login = parse_login(text)
            result = gate.login(login, self.transport)
        except BadBody as e:
            self._refuse(action.id, Status.ILLEGAL_COMMAND_BODY, str(e))
            return
        except LoginRefused as e:
            self._refuse(action.id, e.status, str(e))
            if e.status == Status.INVALID_TOKEN:
                self.close(str(e), POLICY)
            return
        if type(result) is Challenge:
            self.write(text_frame(challenge_body(action.id, result.nonce)))
            return
        record, device_id = result
        if device_id is None:
            device_id = f"{record.prefix or ''}web_{self.host}_{self.port}"
        elif not self.node.hub.may_join(device_id, record):
            self._refuse(action.id, Status.NOT_ALLOWED,
                         f"{device_id!r} is online under another token")
            return
        self._login_timer.cancel()
        self._gate = None
        self.token = record
        self.device_id = device_id
        self._handlers = _AFTER_LOGIN
        self._answer(action.id, SUCCESS, None, deviceId=device_id, role=record.role)
        self.logger.info("{peer} logged in over WebSocket as {device} ({role} token {name})",
                         peer=self.peer, device=device_id, role=record.role, name=record.name)
        self.node.logged_in(self)

    def _message(self, action: Action, text: bytes) -> None:
        msg_id = action[1]
        try:
            # The action is the TCP client's envelope, to the same rules.
            send = send_of(action[0], action[2])
        except BadBody as e:
            self._refuse(msg_id, Status.ILLEGAL_COMMAND_BODY, str(e))
            return
        try:
            result = self.node.hub.route_send(self, send, self._answered, msg_id)
            if result is None:
                return  # the store answers once it has committed
        except JSONEncodeError as e:
            self._refuse(msg_id, Status.ILLEGAL_COMMAND_BODY, f"payload cannot be relayed: {e}")
            return
        except BadBody as e:  # a qos envelope this server will not keep (ttl over the maximum)
            self._refuse(msg_id, Status.ILLEGAL_COMMAND_BODY, str(e))
            return
        except Exception:
            self.logger.failure("{peer} ({device}): routing failed", peer=self.peer,
                                device=self.device_id)
            self._answer(msg_id, Status.SERVER_EXCEPTION)
            return
        if result == SUCCESS:  # never a Deferred
            if msg_id is not None:  # the answer to nearly every message, without a call
                self.write(success_frame(msg_id))
        elif isinstance(result, int):
            self._answer(msg_id, result)
        else:
            result.addCallback(self._answered, msg_id)

    def _answered(self, status: int, msg_id: Optional[int]) -> None:
        # A status that came later (the store's, an acknowledgement): status first.
        self._answer(msg_id, status)

    # -- timers --

    def _login_expired(self) -> None:
        self.node.count("login_timeout")
        why = f"no login within {self.limits.login_timeout:g} s"
        self.write(text_frame(error_body(Status.TIMEOUT, why)))
        self.close(why, POLICY)

    def _idle_check(self) -> None:
        limit = self.limits.idle_timeout
        clock = self.node.clock
        silent = clock.seconds() - self.last_seen
        if silent >= limit:
            self.node.count("idle")
            self.close(f"silent for {silent:.0f} s", GOING_AWAY)
            return
        if silent >= limit / 2:
            if self.state == OPEN:
                self.sendPing()  # browsers answer by themselves
            delay = limit - silent
        else:
            delay = limit / 2 - silent
        self._idle_timer = clock.callLater(delay, self._idle_check)


def _table(actions: dict) -> dict:
    """The protocol's rules table with each action's WebSession method in its place."""
    methods = {rules.ACK: WebSession._ack, rules.PING: WebSession._ping,
               rules.LOGIN: WebSession._login, rules.MESSAGE: WebSession._message}
    return {command: methods.get(action, action) if isinstance(action, str) else action
            for command, action in actions.items()}


_BEFORE_LOGIN = _table(rules.BEFORE_LOGIN)
_AFTER_LOGIN = _table(rules.AFTER_LOGIN)
