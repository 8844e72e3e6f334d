"""
The two connections a node keeps to Redis: one for commands, one
subscribed to its channels.

txredisapi speaks the protocol; this module keeps the connections, because
its own pool makes a command wait for ever while Redis is away.  Here a
command sent while Redis is down fails at once with L{BusDown}, and every
command has a reply timeout, so a node never stalls on Redis: it serves its
own devices and tells senders the bus is down.  Both connections reconnect
with backoff (ClientService); the subscriber subscribes again each time it
connects.  txredisapi runs on the reactor, with no threads, which is why it
was chosen over redis-py (whose asyncio client would force the asyncio
reactor on the whole server).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import MultiService
from twisted.internet import defer, endpoints
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from txredisapi import RedisProtocol, SubscriberProtocol

from hypertcp.cluster.url import RedisURL

#: Seconds a command waits for Redis's reply before the connection is dropped.
REPLY_TIMEOUT = 3.0


class BusDown(ConnectionError):
    """Redis cannot be reached now; the node keeps serving its own devices."""


class _Factory(Factory):
    """Builds txredisapi protocols for a ClientService: binary replies, our login."""

    noisy = False
    # txredisapi's protocols call these on a failed AUTH or SELECT.
    isLazy = True

    def __init__(self, link: "RedisLink", protocol: type) -> None:
        self.link = link
        self.protocol = protocol

    def buildProtocol(self, addr: Any) -> Any:
        url = self.link.url
        p = self.protocol(charset=None, replyTimeout=REPLY_TIMEOUT, password=url.password,
                          dbid=url.db or None, convertNumbers=False, username=url.username)
        p.factory = self
        p.link = self.link
        return p

    def stopTrying(self) -> None:
        """Redis refused our password or database: retrying will not help soon."""

    def connectionError(self, message: str) -> None:
        self.link.refused(message)


class _Subscriber(SubscriberProtocol):
    link: "RedisLink"

    def connectionMade(self) -> Any:
        d = super().connectionMade()
        (d or defer.succeed(None)).addCallback(lambda _: self._subscribe())
        return d

    def _subscribe(self) -> None:
        if self._ready:
            self.subscribe(self.link.channels).addCallbacks(
                lambda _: self.link.subscribed(self), lambda f: None)

    def messageReceived(self, pattern: Any, channel: bytes, message: bytes) -> None:
        self.link.on_message(channel, message)

    def connectionLost(self, why: Any) -> None:
        super().connectionLost(why)
        self.link.lost(self)


class _Commands(RedisProtocol):
    link: "RedisLink"

    def connectionMade(self) -> Any:
        d = super().connectionMade()
        (d or defer.succeed(None)).addCallback(lambda _: self._ready and self.link.ready(self))
        return d

    def connectionLost(self, why: Any) -> None:
        super().connectionLost(why)
        self.link.lost(self)


class _QuietClientService(ClientService):
    """ClientService without its line per retry: the link says once that Redis is away."""

    _log = Logger(observer=lambda event: None)


class RedisLink(MultiService):
    """
    A node's way to Redis.  C{on_message(channel, data)} gets what arrives on
    C{channels}; C{on_up()} is called each time both connections are usable
    again (subscribed, too), C{on_down()} once when either is lost.
    """

    log = Logger()

    def __init__(self, url: RedisURL, channels: list[str],
                 on_message: Callable[[bytes, bytes], None],
                 on_up: Callable[[], None], on_down: Callable[[], None],
                 tls: Any = None, reactor: Any = None) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.url = url
        self.channels = channels
        self.on_message = on_message
        self.on_up = on_up
        self.on_down = on_down
        self.commands: Optional[_Commands] = None
        self.subscriber: Optional[_Subscriber] = None
        self.up = False
        self._said_down = False
        backoff = backoffPolicy(initialDelay=0.5, maxDelay=5.0)

        def policy(attempt: int) -> float:
            self._unreachable()
            return backoff(attempt)

        for protocol in (_Commands, _Subscriber):
            endpoint: Any = endpoints.HostnameEndpoint(reactor, url.host, url.port, timeout=5)
            if url.tls:
                endpoint = endpoints.wrapClientTLS(tls, endpoint)
            _QuietClientService(endpoint, _Factory(self, protocol), retryPolicy=policy,
                                clock=reactor).setServiceParent(self)

    def startService(self) -> None:
        super().startService()
        # Said once, until Redis is back: a node that starts without Redis
        # serves its own devices and keeps trying.
        self.log.info("cluster: connecting to Redis at {url}", url=str(self.url))

    # -- the connections' news --

    def ready(self, commands: _Commands) -> None:
        self.commands = commands
        self._maybe_up()

    def subscribed(self, subscriber: _Subscriber) -> None:
        self.subscriber = subscriber
        self._maybe_up()

    def _maybe_up(self) -> None:
        if not self.up and self.commands is not None and self.subscriber is not None:
            self.up = True
            self._said_down = False
            self.log.info("cluster: Redis at {url} is up", url=str(self.url))
            self.on_up()

    def lost(self, protocol: Any) -> None:
        if protocol is self.commands:
            self.commands = None
        elif protocol is self.subscriber:
            self.subscriber = None
        else:
            return
        if self.up:
            self.up = False
            self.on_down()
        self._unreachable()

    def _unreachable(self) -> None:
        if not self._said_down:
            self._said_down = True
            self.log.warn("cluster: Redis at {url} is unreachable; serving this node's devices "
                          "alone and retrying", url=str(self.url))

    def refused(self, message: str) -> None:
        self.log.error("cluster: Redis at {url} refused us: {message}", url=str(self.url),
                       message=message.replace(self.url.password or "\0", "***"))

    # -- commands --

    def call(self, *args: Any) -> Deferred:
        """Run a command; fails at once with L{BusDown} while Redis is away."""
        commands = self.commands
        if commands is None or not self.up:
            return defer.fail(BusDown(f"Redis at {self.url} is unreachable"))
        try:
            return commands.execute_command(*args)
        except Exception as e:  # txredisapi raises synchronously when not connected
            return defer.fail(BusDown(str(e)))

    def publish(self, channel: str, data: bytes) -> Deferred:
        """
        Publish C{data}; a Deferred of how many subscribers received it.  The
        one command without a reply timer of its own (one per batch of
        messages, up to one per message at low rates): the heartbeat's
        commands, sent every refresh, have theirs, and txredisapi fails every
        reply still awaited when one of them times out.
        """
        commands = self.commands
        if commands is None or not self.up:
            return defer.fail(BusDown(f"Redis at {self.url} is unreachable"))
        try:
            return commands.execute_command("PUBLISH", channel, data, apply_timeout=False)
        except Exception as e:  # txredisapi raises synchronously when not connected
            return defer.fail(BusDown(str(e)))
