"""
A Twisted HyperTCP client that keeps its connection.

L{HyperTCPClientProtocol} logs in, keeps the heartbeat, acknowledges what
it is delivered and follows REDIRECT.  L{clientService} runs it under a
L{ClientService}, which reconnects with backoff after every drop; the
factory's L{HyperTCPClientFactory.whenLoggedIn} gives the protocol of the
current (or next) logged-in connection::

    factory = HyperTCPClientFactory(token, "sensor-1", onMessage=print)
    service = clientService(factory, "broker.example", 8080)
    service.startService()
    protocol = await factory.whenLoggedIn()
    status = await protocol.send("dashboard", {"temperature": 21.5})
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from hypertcp.client.errors import HyperTCPError
from hypertcp.protocol.bodies import Message
from hypertcp.protocol.client import (
    Answered, ClientConnection, Delivered, Ignored, LoginAnswered, Redirected,
)
from hypertcp.protocol.commands import Command, Status, status, status_name

# A refused login that retrying cannot fix: stop reconnecting.
FATAL_LOGIN = frozenset((Status.INVALID_TOKEN, Status.NOT_ALLOWED))


class HyperTCPClientProtocol(Protocol):
    """
    One client connection.  Override L{loggedIn}, L{messageReceived} and
    L{broadcastReceived}, or give the factory an C{onMessage} callback.

    Requests (L{send}, L{broadcast}, L{send_to_server}, L{ping}) return a
    Deferred of the server's answer; it fails with
    L{twisted.internet.defer.TimeoutError} after the factory's
    C{responseTimeout}, and with the reason when the connection is lost.
    """

    factory: "HyperTCPClientFactory"
    log = Logger()

    authenticated = False
    _heartbeat: Optional[LoopingCall] = None

    def connectionMade(self) -> None:
        no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if no_delay is not None:
            no_delay(True)
        factory = self.factory
        self._conn = ClientConnection(factory.token, factory.device_id,
                                      use_challenge=factory.challenge)
        self._pending: Optional[dict[int, Deferred]] = {}
        self._login: Deferred = Deferred()
        self._login.addTimeout(factory.responseTimeout, factory.clock)
        self._login.addCallbacks(self._loginAnswered, self._loginUnanswered)
        self.transport.write(self._conn.login())

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._heartbeat is not None and self._heartbeat.running:
            self._heartbeat.stop()
        pending, self._pending = self._pending, None
        for d in pending.values():
            d.errback(reason)
        if not self._login.called:
            self._login.errback(reason)
        if self.authenticated:
            self.authenticated = False
            self.factory.loggedOut(self)

    # -- login and heartbeat --

    def _loginAnswered(self, answer: int) -> None:
        if answer != Status.SUCCESS:
            self.log.warn("login to {peer} refused: {status}",
                          peer=self.transport.getPeer(), status=status_name(answer))
            self.transport.loseConnection()
            self.factory.loginRefused(self, answer)
            return
        self.authenticated = True
        self._heartbeat = LoopingCall(self._beat)
        self._heartbeat.clock = self.factory.clock
        self._heartbeat.start(self.factory.heartbeat, now=False)
        self.factory.loggedIn(self)
        self.loggedIn()

    def _loginUnanswered(self, failure: Failure) -> None:
        # Lost before the answer: ClientService retries.  No answer at all:
        # drop the connection, so it does.
        if failure.check(defer.TimeoutError):
            self.log.warn("no login answer from {peer}", peer=self.transport.getPeer())
            self.transport.abortConnection()

    def _beat(self) -> None:
        self.ping().addErrback(self._beatUnanswered)

    def _beatUnanswered(self, failure: Failure) -> None:
        # A heartbeat nobody answers means a half-open connection; TCP alone
        # may not notice for hours.  Drop it and let ClientService reconnect.
        if failure.check(defer.TimeoutError):
            self.log.warn("heartbeat unanswered by {peer}; reconnecting",
                          peer=self.transport.getPeer())
            self.transport.abortConnection()

    def loggedIn(self) -> None:
        """Called when the login succeeded; the connection is ready for requests."""

    # -- requests --

    def _request(self, frame: Callable[[], tuple[int, bytes]]) -> Deferred:
        """Send the frame C{frame()} makes; a Deferred of the status of its RESPONSE."""
        pending = self._pending
        if pending is None:
            return defer.fail(ConnectionError("the HyperTCP connection is closed"))
        msg_id, data = frame()
        self.transport.write(data)
        d = Deferred(lambda _: pending.pop(msg_id, None))
        pending[msg_id] = d
        return d.addTimeout(self.factory.responseTimeout, self.factory.clock)

    def send(self, target: str, payload: dict, ack: bool = False, *, qos: int = 0,
             ttl: Optional[float] = None) -> Deferred:
        """
        Send C{payload} to the device C{target}: a Deferred of the server's
        status.  With C{ack}, the server answers once the target acknowledged
        the message, or with TIMEOUT.  With C{qos=1}, a target that is
        offline gets the message when it next logs in (the status is then
        STORED); C{ttl} is how many seconds it may wait.
        """
        return self._request(lambda: self._conn.send(target, payload, ack, qos, ttl))

    def broadcast(self, payload: dict) -> Deferred:
        """Send C{payload} to every other logged-in client: a Deferred of the status."""
        return self._request(lambda: self._conn.broadcast(payload))

    def send_to_server(self, payload: dict) -> Deferred:
        return self.send("server", payload)

    def ping(self) -> Deferred:
        """A Deferred of the round trip of a PING, in seconds."""
        clock = self.factory.clock
        start = clock.seconds()
        return self._request(self._conn.ping).addCallback(lambda _: clock.seconds() - start)

    # -- incoming frames --

    def dataReceived(self, data: bytes) -> None:
        events, reply = self._conn.receive(data)
        if reply:
            # Acknowledgements first: the sender's end-to-end ack should not
            # wait on (or be lost to) the application's handler.
            self.transport.write(reply)
        for event in events:
            if self.transport.disconnecting:
                return  # redirected: what follows belongs to a connection we left
            kind = type(event)
            if kind is Answered:
                d = self._pending.pop(event.msg_id, None) if self._pending else None
                if d is not None:
                    d.callback(status(event.status))
            elif kind is Delivered:
                message = event.message
                self._handle(self.messageReceived if message.command == Command.JSON_MESSAGE
                             else self.broadcastReceived, message)
            elif kind is LoginAnswered:
                if not self._login.called:
                    self._login.callback(status(event.status))
            elif kind is Redirected:
                self._redirected(event)
            elif kind is Ignored:
                self.log.warn("ignoring a frame from {peer}: {why}",
                              peer=self.transport.getPeer(), why=event.why)

    def _handle(self, handler: Callable[[Message], Any], message: Message) -> None:
        # The application's bug is logged; it must not cost the connection
        # and every request still waiting on it.
        try:
            handler(message)
        except Exception:
            self.log.failure("the message handler raised on {message}", message=message)

    def _redirected(self, where: Redirected) -> None:
        self.log.info("redirected to {host}:{port}", host=where.host, port=where.port)
        self.transport.loseConnection()
        self.factory.redirect(where.host, where.port, where.tls)

    def messageReceived(self, message: Message) -> None:
        """A JSON_MESSAGE was delivered to us (already acknowledged)."""
        if self.factory.onMessage is not None:
            self.factory.onMessage(message)

    def broadcastReceived(self, message: Message) -> None:
        """A BROADCAST was delivered to us (already acknowledged)."""
        if self.factory.onMessage is not None:
            self.factory.onMessage(message)


@implementer(IStreamClientEndpoint)
class _RedirectableEndpoint:
    """
    The endpoint a ClientService connects through.  The service keeps one
    endpoint for life; a REDIRECT changes where this one leads.
    """

    def __init__(self, reactor: Any, host: str, port: int,
                 tls: Union[bool, IOpenSSLClientConnectionCreator] = False) -> None:
        self.reactor = reactor
        self.moveTo(host, port, tls)

    def moveTo(self, host: str, port: int,
               tls: Union[bool, IOpenSSLClientConnectionCreator] = False) -> None:
        endpoint: IStreamClientEndpoint = HostnameEndpoint(self.reactor, host, port)
        if tls:
            if tls is True:
                from twisted.internet.ssl import optionsForClientTLS
                tls = optionsForClientTLS(host)
            endpoint = wrapClientTLS(tls, endpoint)
        self.host, self.port, self._endpoint = host, port, endpoint

    def connect(self, protocolFactory: Any) -> Deferred:
        return self._endpoint.connect(protocolFactory)

    def __repr__(self) -> str:
        return f"<HyperTCP endpoint {self.host}:{self.port}>"


class HyperTCPClientFactory(Factory):
    """
    Builds client connections and tracks which one is logged in.

    @ivar onMessage: called with each delivered L{Message} (both kinds) by
        the default L{HyperTCPClientProtocol.messageReceived} and
        L{HyperTCPClientProtocol.broadcastReceived}.
    @ivar service: the L{ClientService} that L{clientService} made, if any.
    """

    protocol = HyperTCPClientProtocol
    noisy = False
    log = Logger()

    service: Optional[ClientService] = None
    endpoint: Optional[_RedirectableEndpoint] = None

    def __init__(self, token: str, device_id: Optional[str] = None, *,
                 onMessage: Optional[Callable[[Message], object]] = None,
                 heartbeat: float = 30.0, responseTimeout: float = 30.0,
                 challenge: bool = False, clock: Any = None) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.token = token
        self.device_id = device_id
        self.onMessage = onMessage
        self.heartbeat = heartbeat
        self.responseTimeout = responseTimeout
        #: Log in by challenge and response, so the token never crosses the wire.
        self.challenge = challenge
        self.clock = clock
        self.current: Optional[HyperTCPClientProtocol] = None
        self.loginFailure: Optional[Failure] = None
        self._waiting: list[Deferred] = []

    def whenLoggedIn(self) -> Deferred:
        """
        A Deferred of the logged-in protocol: the current one, or the next.
        It fails with L{HyperTCPError} if the server refused the token.
        """
        if self.current is not None:
            return defer.succeed(self.current)
        if self.loginFailure is not None:
            return defer.fail(self.loginFailure)
        d = Deferred(self._waiting.remove)
        self._waiting.append(d)
        return d

    def _fire(self, result: Union[HyperTCPClientProtocol, Failure]) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(result)

    def loggedIn(self, protocol: HyperTCPClientProtocol) -> None:
        self.current = protocol
        self.loginFailure = None
        self._fire(protocol)

    def loggedOut(self, protocol: HyperTCPClientProtocol) -> None:
        if self.current is protocol:
            self.current = None

    def loginRefused(self, protocol: HyperTCPClientProtocol, answer: int) -> None:
        """A refused token will be refused again: stop retrying, tell the waiters."""
        if answer not in FATAL_LOGIN:
            return
        self.loginFailure = Failure(HyperTCPError(answer, "login refused"))
        if self.service is not None and self.service.running:
            self.service.stopService()
        self._fire(self.loginFailure)

    def redirect(self, host: str, port: int, tls: bool) -> None:
        """Reconnect, at once, to where the server sent us."""
        if self.endpoint is None or self.service is None or not self.service.running:
            self.log.warn("REDIRECT to {host}:{port} not followed: not run by clientService()",
                          host=host, port=port)
            return
        self.endpoint.moveTo(host, port, tls)
        # Stopping drops the connection; starting again while it drops makes
        # the service reconnect as soon as it is gone, with no backoff delay.
        self.service.stopService()
        self.service.startService()


def clientService(factory: HyperTCPClientFactory, host: str = "127.0.0.1", port: int = 8080, *,
                  tls: Union[bool, IOpenSSLClientConnectionCreator] = False,
                  reactor: Any = None, initialDelay: float = 1.0,
                  maxDelay: float = 30.0) -> ClientService:
    """
    A L{ClientService} that keeps C{factory} connected to C{host}:C{port},
    reconnecting after each drop with exponential backoff capped at
    C{maxDelay} seconds, and following REDIRECTs.  Start it (or give it a
    parent service); then use C{factory.whenLoggedIn()}.
    """
    if reactor is None:
        from twisted.internet import reactor
    factory.endpoint = _RedirectableEndpoint(reactor, host, port, tls)
    factory.service = ClientService(
        factory.endpoint, factory, retryPolicy=backoffPolicy(initialDelay, maxDelay),
        clock=reactor)
    return factory.service
