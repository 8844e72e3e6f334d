"""
One HyperTCP connection on the server: login, limits and timers.

The session enforces the contract's rules for a single peer -- the login
deadline, the rate limit, idle silence, the outbound buffer cap and the
statuses for bad input -- and hands every well-formed message to the hub.
Where a message goes is the hub's business, not the session's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from zope.interface import implementer

from hypertcp import jsoncodec
from hypertcp.framing import FrameReceiver
from hypertcp.wire import HEADER, Command, Frame, Oversize, Status, redirect_payload, response

if TYPE_CHECKING:
    from hypertcp.hub import Hub
    from hypertcp.tokens import TokenRecord, TokenStore

RESERVED_IDS = frozenset(("server", "broadcast"))
# The per-frame path compares against these names: on Python 3.11 every
# Command.X or Status.X lookup costs about 60 ns, ten of them per message.
RESPONSE, PING, LOGIN = Command.RESPONSE, Command.PING, Command.LOGIN
JSON_MESSAGE, BROADCAST, SUCCESS = Command.JSON_MESSAGE, Command.BROADCAST, Status.SUCCESS
MAX_DEVICE_ID = 128
STRIKE_WINDOW = 10.0
# RESPONSE frames a peer may send beyond the frames it was sent: acks are
# never answered or rate-limited, so past this they are a flood.
SPARE_RESPONSES = 1000


class LoginRefused(Exception):
    """A LOGIN that earns no session; C{status} is the answer's byte."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


class BadBody(ValueError):
    """A payload that is not the JSON the command needs (status 11)."""


def _object(data: Union[bytes, str]) -> dict:
    try:
        value = jsoncodec.loads(data)
    except jsoncodec.JSONDecodeError:
        raise BadBody("payload is not JSON") from None
    if not isinstance(value, dict):
        raise BadBody("payload is not a JSON object")
    return value


def parse_object(payload: bytes) -> dict:
    """Decode a JSON object payload, raising L{BadBody} for anything else."""
    try:
        return _object(payload)  # the codec checks UTF-8 as it parses
    except BadBody:
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            raise BadBody("payload is not UTF-8") from None
        raise


def parse_login(payload: bytes) -> tuple[str, Optional[str]]:
    """
    The token and requested device id of a LOGIN: the raw token the sketch
    sends, or the original Python client's JSON object.
    """
    try:
        text = payload.decode("utf-8").strip("\x00 \t\r\n")
    except UnicodeDecodeError:
        raise BadBody("login is not UTF-8") from None
    if not text.startswith("{"):
        if not text:
            raise BadBody("empty login")
        return text, None
    body = _object(text)
    token, device_id = body.get("token"), body.get("device_id")
    if not isinstance(token, str) or (device_id is not None and not isinstance(device_id, str)):
        raise BadBody("login needs a string token and an optional string device_id")
    return token, device_id or None


@implementer(IPushProducer)
class Session(FrameReceiver):
    """
    A server-side connection.  It is its transport's producer only so the
    transport tells it when the peer stops reading: from then on every byte
    queued for the peer is counted, and past C{max_outbound_buffer} the peer
    is dropped, so a stalled reader costs bounded memory and never slows the
    sender.
    """

    log = Logger()
    factory: "HyperTCPFactory"

    device_id: Optional[str] = None
    token: Optional["TokenRecord"] = None
    peer = "?"
    connected_at = 0.0
    closing_reason: Optional[str] = None
    _on_drained: Optional[Callable[[], None]] = None
    dropped = False  # aborted: the transport drops what it is given, so stop giving
    _out: Optional[list[bytes]] = None  # frames held until the read that made them ends

    def connectionMade(self) -> None:
        limits = self.factory.limits
        self.max_payload = limits.max_payload
        super().connectionMade()
        clock = self.factory.clock
        now = clock.seconds()
        addr = self.transport.getPeer()
        self.host = getattr(addr, "host", "?")
        self.port = getattr(addr, "port", 0)
        self.peer = f"{self.host}:{self.port}"
        self.connected_at = self.last_seen = now
        self.messages_in = self.messages_out = 0
        self._pending_acks: dict[int, Deferred] = {}
        self._rate = limits.rate_limit
        self._burst = float(limits.rate_burst or max(limits.rate_limit, 1))
        self._allowance = self._burst
        self._refilled = now
        self._strikes = 0
        self._strike_window = now
        self._responses = 0
        self._refusals_logged_at = now - STRIKE_WINDOW
        self._refusals_unlogged = 0
        self._paused = False
        self._queued = 0
        self.transport.registerProducer(self, True)
        self._login_timer = clock.callLater(limits.login_timeout, self._login_expired)
        self._idle_timer = clock.callLater(limits.idle_timeout / 2, self._idle_check)
        self.factory.connection_opened(self)

    def connectionLost(self, reason: Any = None) -> None:
        for timer in (self._login_timer, self._idle_timer):
            if timer.active():
                timer.cancel()
        pending, self._pending_acks = self._pending_acks, {}
        for d in pending.values():
            d.callback(Status.TIMEOUT)
        self.factory.connection_closed(self)
        why = self.closing_reason
        if why is None:
            unclean = reason is not None and not reason.check(ConnectionDone)
            why = reason.getErrorMessage() if unclean else "closed by peer"
        self.log.info("{peer} ({device}) disconnected: {why}", peer=self.peer,
                      device=self.device_id or "not logged in", why=why)

    # -- IPushProducer: the transport's view of whether the peer reads --

    def pauseProducing(self) -> None:
        # Called on every write while the transport's buffer is full.
        if not self._paused:
            self._paused = True
            self._queued = 0

    def resumeProducing(self) -> None:
        self._paused = False
        self._queued = 0
        if self._on_drained is not None:
            callback, self._on_drained = self._on_drained, None
            callback()

    @property
    def paused(self) -> bool:
        """Has the peer stopped reading what it is sent?"""
        return self._paused

    def when_drained(self, callback: Callable[[], None]) -> None:
        """
        Call C{callback} once the peer is reading again (now, if it is), so
        bulk output can be paced by the peer instead of tripping the cap.
        """
        if self._paused:
            self._on_drained = callback
        else:
            callback()

    def stopProducing(self) -> None:
        pass

    # -- sending --

    def write(self, data: bytes) -> None:
        """Queue bytes for the peer, dropping the peer if it has stopped reading."""
        transport = self.transport
        if transport.disconnecting or self.dropped:
            return
        if self._paused:
            self._queued += len(data)
            if self._queued > self.factory.limits.max_outbound_buffer:
                self.factory.count("slow_receiver")
                self.abort("slow receiver: outbound buffer over "
                           f"{self.factory.limits.max_outbound_buffer} bytes")
                return
        if not self.factory.batching:
            transport.write(data)
        elif self._out is None:
            self._out = [data]
            self.factory.dirty.append(self)
        else:
            self._out.append(data)

    def flush(self) -> None:
        """Hand the frames held during a read to the transport, in one write."""
        out, self._out = self._out, None
        if out:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def respond(self, msg_id: int, status: int = Status.SUCCESS) -> None:
        self.write(response(msg_id, status))

    def deliver(self, command: int, body: bytes) -> int:
        """Send a server-originated frame; return its msg_id."""
        msg_id = self._ids.next()
        self.messages_out += 1
        self.write(HEADER.pack(command, msg_id, len(body)) + body)
        return msg_id

    def deliver_acked(self, command: int, body: bytes, timeout: float) -> Deferred:
        """
        Send a frame and return a Deferred of the status the peer acknowledges
        it with: TIMEOUT if no acknowledgement comes within C{timeout} or the
        peer goes away first.
        """
        d: Deferred = Deferred()
        if self.transport.disconnecting:
            d.callback(Status.TIMEOUT)
            return d
        msg_id = self.deliver(command, body)
        # 65,535 frames later the id comes round again: an older wait still
        # holding it can never be told apart, so it ends now.
        older = self._pending_acks.get(msg_id)
        if older is not None:
            older.callback(Status.TIMEOUT)
        self._pending_acks[msg_id] = d
        d.addTimeout(timeout, self.factory.clock, onTimeoutCancel=lambda *_: Status.TIMEOUT)
        d.addBoth(self._forget_ack, msg_id, d)
        return d

    def _forget_ack(self, result: Any, msg_id: int, d: Deferred) -> Any:
        if self._pending_acks.get(msg_id) is d:
            del self._pending_acks[msg_id]
        return result

    def redirect(self, host: str, port: int, tls: bool = False) -> None:
        """Tell the peer to log in at another server, then close shortly after."""
        if self.closing_reason is not None or self.transport.disconnecting:
            return
        self.deliver(Command.REDIRECT, redirect_payload(host, port, tls))
        self.closing_reason = f"redirected to {host}:{port}"
        self.factory.clock.callLater(1.0, self.transport.loseConnection)

    def close(self, reason: str) -> None:
        """Close after what is queued has been sent, and say why in the log."""
        if self.closing_reason is None:
            self.closing_reason = reason
            self.log.info("{peer} ({device}): closing: {why}", peer=self.peer,
                          device=self.device_id or "not logged in", why=reason)
        self.flush()
        self.transport.loseConnection()

    def abort(self, reason: str) -> None:
        """Drop the connection now, discarding what is queued."""
        self.dropped = True
        self.closing_reason = reason
        self.log.warn("{peer} ({device}): dropping: {why}", peer=self.peer,
                      device=self.device_id or "not logged in", why=reason)
        self.transport.abortConnection()

    # -- receiving --

    def dataReceived(self, data: bytes) -> None:
        # Every frame this read produces, for this peer or any other, is held
        # and written when the read is done: a read carrying fifty messages
        # makes one transport.write to each peer it touches, not fifty.
        factory = self.factory
        self.last_seen = factory.clock.seconds()
        factory.batching = True
        try:
            super().dataReceived(data)
        finally:
            factory.batching = False
            dirty, factory.dirty = factory.dirty, []
            for session in dirty:
                session.flush()

    def oversizeReceived(self, event: Oversize) -> None:
        self.factory.count("oversize")
        self.log.warn("{peer}: {length}-byte payload over the {limit}-byte limit skipped",
                      peer=self.peer, length=event.length, limit=self.max_payload)
        if event.command != Command.RESPONSE:
            self.respond(event.msg_id, Status.ILLEGAL_COMMAND_BODY)

    def frameReceived(self, frame: Frame) -> None:
        if self.dropped:  # aborting does not mark the transport disconnecting
            return
        command = frame.command
        if command == RESPONSE:
            # An acknowledgement of something we delivered; never answered.
            self._responses += 1
            if self._responses > self.messages_out + SPARE_RESPONSES:
                self.factory.count("flood")
                self.close(f"flood: {self._responses} RESPONSE frames for "
                           f"{self.messages_out} frames sent to it")
                return
            if self._pending_acks:
                d = self._pending_acks.get(frame.msg_id)
                if d is not None:
                    d.callback(frame.payload[0] if frame.payload else Status.SUCCESS)
            return
        if self._rate and not self._within_quota(frame):
            return
        self.messages_in += 1
        if command == PING:
            self.respond(frame.msg_id)
        elif command == LOGIN:
            if self.device_id is not None:
                self._refuse(frame, Status.ILLEGAL_COMMAND, "LOGIN on a logged-in connection")
            else:
                self._login(frame)
        elif self.device_id is None:
            self._refuse(frame, Status.NOT_AUTHENTICATED, f"command {command} before login")
        elif command == JSON_MESSAGE or command == BROADCAST:
            self._message(frame)
        else:
            self._refuse(frame, Status.ILLEGAL_COMMAND, f"unknown command {command}")

    def _within_quota(self, frame: Frame) -> bool:
        now = self.last_seen
        allowance = self._allowance + (now - self._refilled) * self._rate
        self._refilled = now
        if allowance > self._burst:
            allowance = self._burst
        if allowance >= 1.0:
            self._allowance = allowance - 1.0
            return True
        self._allowance = allowance
        if now - self._strike_window > STRIKE_WINDOW:
            self._strike_window = now
            self._strikes = 0
        self._strikes += 1
        self.factory.count("quota")
        if self._strikes == 1:
            self.log.warn("{peer} ({device}): over the rate limit of {rate}/s",
                          peer=self.peer, device=self.device_id or "not logged in",
                          rate=self._rate)
        self.respond(frame.msg_id, Status.QUOTA_LIMIT)
        if self._strikes > self.factory.limits.quota_strikes:
            self.factory.count("flood")
            self.close(f"flood: {self._strikes} frames over the rate limit within "
                       f"{STRIKE_WINDOW:.0f} s")
        return False

    def _refuse(self, frame: Frame, status: int, why: str) -> None:
        self.factory.count(Status(status).name.lower())
        # One line per peer per window, so a peer sending nothing but bad
        # frames cannot turn the log into its flood.
        if self.last_seen - self._refusals_logged_at >= STRIKE_WINDOW:
            more = self._refusals_unlogged
            self.log.warn("{peer} ({device}): {why}: {status}{more}", peer=self.peer,
                          device=self.device_id or "not logged in", why=why,
                          status=Status(status).name,
                          more=f" ({more} more refusals unlogged since the last)" if more else "")
            self._refusals_logged_at = self.last_seen
            self._refusals_unlogged = 0
        else:
            self._refusals_unlogged += 1
        self.respond(frame.msg_id, status)

    def _login(self, frame: Frame) -> None:
        try:
            record, device_id = self.factory.authenticate(frame.payload)
        except LoginRefused as e:
            self._refuse(frame, e.status, str(e))
            if e.status == Status.INVALID_TOKEN:
                self.close(str(e))
            return
        if device_id is None:
            device_id = f"{record.prefix or ''}device_{self.host}_{self.port}"
        self._login_timer.cancel()
        self.token = record
        self.device_id = device_id
        self.write(response(frame.msg_id, Status.SUCCESS, login=True))
        self.log.info("{peer} logged in as {device} ({role} token {name})", peer=self.peer,
                      device=device_id, role=record.role, name=record.name)
        self.factory.hub.attach(self)

    def _message(self, frame: Frame) -> None:
        try:
            body = parse_object(frame.payload)
            payload = body.get("payload")
            if not isinstance(payload, dict):
                raise BadBody("missing a \"payload\" object")
            if frame.command == BROADCAST:
                target = "broadcast"
            else:
                target = body.get("targetId")
                if not isinstance(target, str) or not target:
                    raise BadBody("missing a \"targetId\" string")
        except BadBody as e:
            self._refuse(frame, Status.ILLEGAL_COMMAND_BODY, str(e))
            return
        try:
            result = self.factory.hub.route(self, target, payload, bool(body.get("ack")))
        except jsoncodec.JSONEncodeError as e:
            # It parsed, but cannot be written again (nested too deeply): bad input.
            self._refuse(frame, Status.ILLEGAL_COMMAND_BODY, f"payload cannot be relayed: {e}")
            return
        except Exception:
            self.log.failure("{peer} ({device}): routing failed", peer=self.peer,
                             device=self.device_id)
            self.factory.count("server_exception")
            self.respond(frame.msg_id, Status.SERVER_EXCEPTION)
            return
        if isinstance(result, int):  # a cheaper test than Deferred's ABC isinstance
            self._answer(result, frame.msg_id)
        else:
            result.addCallback(self._answer, frame.msg_id)

    def _answer(self, status: int, msg_id: int) -> None:
        if status != SUCCESS:
            self.factory.count(Status(status).name.lower())
        self.respond(msg_id, status)

    # -- timers --

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
        self._idle_timer = clock.callLater(delay, self._idle_check)


class HyperTCPFactory(ServerFactory):
    """Shared state of every session on one server: limits, tokens, hub, counters."""

    protocol = Session
    noisy = False
    log = Logger()

    def __init__(self, limits: Any, tokens: "TokenStore", hub: "Hub", clock: Any = None) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.limits = limits
        self.tokens = tokens
        self.hub = hub
        self.clock = clock
        self.sessions: set[Session] = set()
        self.counters: dict[str, int] = {}
        # Inside a Session.dataReceived: writes are held in Session._out and
        # the sessions holding some listed here.
        self.batching = False
        self.dirty: list[Session] = []
        # Frames received on connections since closed: with the live ones'
        # messages_in, a total the manhole turns into messages per second.
        self.closed_messages_in = 0

    def count(self, what: str) -> None:
        self.counters[what] = self.counters.get(what, 0) + 1

    def admit(self, addr: Any, open_now: int) -> bool:
        """May one more connection open, with C{open_now} open on its listener?"""
        limit = self.limits.max_connections
        if limit and open_now >= limit:
            self.count("max_connections")
            self.log.warn("{addr}: refused: {limit} connections already open",
                          addr=getattr(addr, "host", addr), limit=limit)
            return False
        return True

    def buildProtocol(self, addr: Any) -> Optional[Session]:
        # Returning None makes Twisted close the connection at once.
        return super().buildProtocol(addr) if self.admit(addr, len(self.sessions)) else None

    def connection_opened(self, session: Session) -> None:
        self.sessions.add(session)
        self.count("connections")

    def connection_closed(self, session: Session) -> None:
        self.sessions.discard(session)
        self.closed_messages_in += session.messages_in
        if session.device_id is not None:
            self.hub.detach(session)

    def authenticate(self, payload: bytes) -> tuple["TokenRecord", Optional[str]]:
        """
        The token record a LOGIN payload presents and the device id it may
        use: the one it names or its token binds, None for "assign one".
        Raises L{LoginRefused}.
        """
        try:
            secret, wanted = parse_login(payload)
        except BadBody as e:
            raise LoginRefused(Status.ILLEGAL_COMMAND_BODY, str(e)) from None
        record = self.tokens.lookup(secret)
        if record is None:
            # Perhaps the token was added a moment ago: a stat() is cheap.
            self.reload_tokens()
            record = self.tokens.lookup(secret)
        if record is None:
            raise LoginRefused(Status.INVALID_TOKEN, "login with an unknown or revoked token")
        device_id = wanted or record.device_id
        if device_id is not None and (device_id in RESERVED_IDS or len(device_id) > MAX_DEVICE_ID
                                      or not record.may_use(device_id)):
            raise LoginRefused(Status.NOT_ALLOWED,
                               f"token {record.name} may not log in as {device_id!r}")
        return record, device_id

    def reload_tokens(self) -> None:
        """Pick up token file changes and close the sessions of revoked tokens."""
        try:
            changed = self.tokens.reload()
        except (OSError, ValueError, TypeError) as e:
            self.log.error("token file {path} unreadable, keeping the old tokens: {e}",
                           path=self.tokens.path, e=e)
            return
        if not changed:
            return
        self.log.info("token file {path} reloaded", path=self.tokens.path)
        # Live sessions follow their token's record: an edit that narrows
        # what it may do applies now, not at the device's next login.
        for session in list(self.sessions):
            if session.token is None:
                continue
            fresh = self.tokens.live(session.token.hash)
            if fresh is None:
                session.close(f"token {session.token.name} revoked")
            elif fresh.role != session.token.role or not fresh.may_use(session.device_id):
                session.close(f"token {fresh.name} changed: log in again")
            else:
                session.token = fresh
