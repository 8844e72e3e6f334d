"""
One device at the balancer: PING is answered, LOGIN sent to a node -- by
REDIRECT, or for devices that cannot follow one, by relaying the connection
(L{hypertcp.app.balancer.relay}) -- and the rest refused.

A balancer's connection is bounded as a node's is: admission (a cap per
source, slots yielded by connections that never log in), the rate limit,
the slow-reader cap, the login deadline and a deadline on every close, and
the same login (token or challenge) through L{LoginGate}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger

from hypertcp.framing import FrameReceiver
from hypertcp.protocol import server as rules
from hypertcp.app.balancer.relay import NodeLink
from hypertcp.protocol.bodies import (
    PROTOCOL_LEVEL, BadBody, challenge_body, parse_login, redirect_body,
)
from hypertcp.protocol.commands import Command, Status
from hypertcp.protocol.frames import Frame, Oversize, encode, response
from hypertcp.server.admission import Admission
from hypertcp.server.auth import LoginRefused
from hypertcp.server.bounded import BoundedConnection
from hypertcp.server.factory import HyperTCPFactory
from hypertcp.server.limits import Limits
from hypertcp.server.login import Challenge, LoginGate
from hypertcp.server.ratelimit import STRIKE_WINDOW, RateLimiter
from hypertcp.server.refusals import RefusalLog
from hypertcp.server.session import SPARE_RESPONSES

if TYPE_CHECKING:
    from hypertcp.app.balancer.service import Balancer

# Seconds the balancer keeps a redirected connection open, as a node does.
CLOSE_AFTER = 1.0
RESPONSE = Command.RESPONSE


class BalancerSession(BoundedConnection, FrameReceiver):
    """One device at the balancer: PING is answered, LOGIN sent on, the rest refused."""

    log = Logger()
    log_prefix = "balancer: "
    factory: "BalancerFactory"
    redirected = False
    #: Relaying to a node: bytes pass through untouched from now on.
    relaying = False
    _link: Optional[NodeLink] = None
    _rate: Optional[RateLimiter] = None
    _gate: Optional[LoginGate] = None

    def connectionMade(self) -> None:
        factory = self.factory
        limits = factory.limits
        self.max_payload = limits.max_payload
        super().connectionMade()
        addr = self.transport.getPeer()
        self.host = getattr(addr, "host", "?")
        self.peer = f"{self.host}:{getattr(addr, 'port', 0)}"
        now = factory.clock.seconds()
        if limits.rate_limit:
            self._rate = RateLimiter(limits.rate_limit, limits.burst, limits.quota_strikes, now)
        self._refusals = RefusalLog(now)
        self._responses = 0
        self.watch()
        self._timer = factory.clock.callLater(limits.login_timeout, self._expired)
        factory.connection_opened(self)

    def connectionLost(self, reason: Any = None) -> None:
        self.factory.connection_closed(self)
        self.stop_timers(self._timer)
        if self._link is not None:
            self._link.transport.loseConnection()

    def leaving(self) -> None:
        if self._link is not None and self._link.producing:
            # The node's connection is this one's producer: TLS would hold the close for it.
            self._link.producing = False
            self.transport.unregisterProducer()

    def write(self, data: bytes) -> None:
        """Queue bytes for the peer, dropping it once too much waits for a peer not reading."""
        if self.transport.disconnecting or self.dropped or self.over_cap(len(data)):
            return
        self.transport.write(data)

    def dataReceived(self, data: bytes) -> None:
        if not self.relaying:
            super().dataReceived(data)
            if self.relaying:  # the LOGIN in this read began the relay
                self._relay(self._decoder.take_buffered())
        else:
            self._relay(data)

    def _relay(self, data: bytes) -> None:
        if not data:
            return
        if self._link is None:
            self._held.append(data)
        else:
            self._link.transport.write(data)

    def handover(self) -> bytes:
        """The bytes received since the relay began, for the node's connection."""
        held, self._held = self._held, []
        return b"".join(held)

    def linked(self, link: NodeLink) -> None:
        """The node's connection is up and has the device's bytes so far."""
        self._link = link
        self.transport.resumeProducing()

    def _expired(self) -> None:
        if self.redirected:
            self.close(f"redirected {CLOSE_AFTER:g} s ago")
            return
        self.factory.count("balancer_login_timeout")
        self.write(response(1, Status.TIMEOUT, login=True))
        self.close(f"no login within {self.factory.limits.login_timeout:g} s")

    def oversizeReceived(self, event: Oversize) -> None:
        if self.relaying:
            # Its payload is gone, so the node cannot be given the stream as
            # sent.  An original device waits for its login answer before it
            # sends anything more, so this is no device worth relaying.
            self.abort("an oversize frame right after LOGIN")
            return
        refusal = rules.oversize(event, self.max_payload)
        if refusal is not None:
            self._refuse(event, refusal.status, refusal.why)

    def frameReceived(self, frame: Frame) -> None:
        if self.relaying:  # frames that followed the LOGIN in the same read
            self._relay(encode(frame.command, frame.msg_id, frame.payload))
            return
        if self.dropped:
            return
        if frame.command == RESPONSE:
            # Nothing here awaits an acknowledgement but the REDIRECT's.
            self._responses += 1
            if self._responses > SPARE_RESPONSES:
                self.factory.count("flood")
                self.close(f"flood: {self._responses} RESPONSE frames")
            return
        rate = self._rate
        if rate is not None and not rate.allow(self.factory.clock.seconds()):
            self._over_rate(frame, rate)
            return
        action = rules.action(frame.command, self.redirected)
        if action == rules.PING:
            self.write(response(frame.msg_id))
        elif action == rules.LOGIN:
            self._login(frame)
        elif action == rules.MESSAGE:
            # Sent on to a node: messages belong there, not here.
            self._refuse(frame, Status.NOT_AUTHENTICATED, "a message at the balancer")
        elif isinstance(action, rules.Refusal):
            self._refuse(frame, *action)

    def _over_rate(self, frame: Frame, rate: RateLimiter) -> None:
        self.factory.count("quota")
        self.write(response(frame.msg_id, Status.QUOTA_LIMIT))
        if rate.flooding:
            self.factory.count("flood")
            self.close(f"flood: {rate.strikes} frames over the rate limit within "
                       f"{STRIKE_WINDOW:.0f} s")

    def _refuse(self, frame: Any, status: int, why: str, close: bool = False,
                login: bool = False) -> None:
        self.factory.count(f"balancer_{Status(status).name.lower()}")
        # One line per peer per window, so bad frames cannot flood the log.
        unlogged = self._refusals.admit(self.factory.clock.seconds())
        if unlogged is not None:
            self.log.warn("balancer: {peer}: {why}: {status}{more}", peer=self.peer, why=why,
                          status=Status(status).name,
                          more=f" ({unlogged} more refusals unlogged since the last)"
                          if unlogged else "")
        self.write(response(frame.msg_id, status, login=login))
        if close:
            self.close(why)

    def _login(self, frame: Frame) -> None:
        node = self.factory.node
        gate = self._gate
        if gate is None:
            gate = self._gate = LoginGate(node)
        try:
            login = parse_login(frame.payload)
            result = gate.login(login, self.transport)
        except BadBody as e:
            self._refuse(frame, Status.ILLEGAL_COMMAND_BODY, str(e), login=True)
            return
        except LoginRefused as e:
            self._refuse(frame, e.status, str(e), close=e.status == Status.INVALID_TOKEN,
                         login=True)
            return
        if type(result) is Challenge:
            self.write(encode(Command.LOGIN, frame.msg_id, challenge_body(result.nonce)))
            return
        device_id = result.device_id
        # A login that names no device is kept on one node by its address.
        backend = self.factory.balancer.pick(device_id or self.host)
        if backend is None:
            self._refuse(frame, Status.SERVER_EXCEPTION, "no node is up", close=True, login=True)
            return
        backend.assigned += 1
        self._timer.cancel()
        self._gate = None
        self.device_id = device_id
        # Sent on: no longer a connection that has not logged in.
        self.factory.admission.logged_in(self)
        if login.proto < PROTOCOL_LEVEL:
            self._relay_to(backend, frame, device_id)
            return
        self.redirected = True
        node.count("balancer_redirects")
        redirect = redirect_body(backend.host, backend.port, backend.tls)
        self.write(encode(Command.REDIRECT, self._ids.next(), redirect)
                   + response(frame.msg_id, Status.SUCCESS, login=True))
        self.log.info("balancer: {peer} ({device}) sent to {node}", peer=self.peer,
                      device=device_id or "no id", node=backend.name)
        self._timer = node.clock.callLater(CLOSE_AFTER, self._expired)

    def _relay_to(self, backend: Any, frame: Frame, device_id: Optional[str]) -> None:
        """Connect to C{backend} and pass it this connection, its LOGIN first."""
        self.relaying = True
        self._held = [encode(frame.command, frame.msg_id, frame.payload)]
        # The node's connection becomes this one's producer, and the other way round.
        self.unwatch()
        # Read nothing more until the node can take it.
        self.transport.pauseProducing()
        self.factory.node.count("balancer_relays")
        self.log.info("balancer: {peer} ({device}) relayed to {node}: it cannot follow a "
                      "REDIRECT", peer=self.peer, device=device_id or "no id", node=backend.name)
        backend.link(NodeLink(self)).addErrback(self._link_failed, frame.msg_id, backend.name)

    def _link_failed(self, failure: Any, msg_id: int, name: str) -> None:
        self.log.warn("balancer: {peer}: node {node} did not take the relay: {error}",
                      peer=self.peer, node=name, error=failure.getErrorMessage())
        # Reading again first: the relay paused it, and a closing transport takes no resume.
        self.transport.resumeProducing()
        self.write(response(msg_id, Status.SERVER_EXCEPTION, login=True))
        self.close(f"node {name} did not take the relay")


class BalancerFactory(ServerFactory):
    """
    The balancer's listeners' factory: it shares the node's tokens, limits
    and counters, and admits its own connections (the node's cap counts the
    balancer's on their own).
    """

    protocol = BalancerSession
    noisy = False

    def __init__(self, balancer: "Balancer", node: HyperTCPFactory) -> None:
        self.balancer = balancer
        self.node = node
        self.clock = node.clock
        self.count = node.count
        self.open = 0
        self.admission = Admission(self, node.clock, node.count)

    @property
    def limits(self) -> Limits:
        """The node's, as reloaded on SIGHUP."""
        return self.node.limits

    def buildProtocol(self, addr: Any) -> Optional[BalancerSession]:
        return super().buildProtocol(addr) if self.admission.admit(addr, self.open) else None

    def connection_opened(self, session: BalancerSession) -> None:
        self.open += 1
        self.admission.opened(session)

    def connection_closed(self, session: BalancerSession) -> None:
        self.open -= 1
        self.admission.closed(session)
