"""
The load balancer: a listener that logs devices in, picks a node for each
and sends it there with REDIRECT.

A login at the balancer is answered with two frames in one write: first
REDIRECT C{{"server", "port", "tls"}}, then the LOGIN's RESPONSE with
SUCCESS.  REDIRECT comes first so that a client which follows it the moment
it arrives (the ESP32 library, the Twisted client, a Blynk-style sketch)
leaves before it ever believes it is online at the balancer; a client that
waits for its LOGIN answer first (the blocking client) gets SUCCESS with the
REDIRECT already in hand and follows it before its next request.  Either way
the LOGIN is answered with its status byte, as the contract requires.  The
connection is closed a second later.

The balancer knows its nodes through one logged-in observer connection to
each (the Twisted client, reconnecting on its own): a node whose connection
drops or whose PING goes unanswered is out; it is back in once it logs the
balancer in again.  Every C{health_interval} each node is asked for its
C{"stats"}, whose session count is what least-connections compares (plus the
devices sent there since, which the count cannot show yet).
"""

from __future__ import annotations

import bisect
import hashlib
from typing import Any, Optional

from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger

from hypertcp.client import HyperTCPClientFactory, Message, clientService
from hypertcp.client._common import status_name
from hypertcp.framing import FrameReceiver
from hypertcp.hub import CommandError, Hub, require_observer
from hypertcp.service import Listener
from hypertcp.session import HyperTCPFactory, LoginRefused
from hypertcp.wire import Command, Frame, Oversize, Status, encode, redirect_payload, response

# Points per node on the consistent-hash ring: enough for an even split of
# devices, few enough that the ring is built in a moment.
RING_POINTS = 160
# Seconds the balancer keeps a redirected connection open, as a node does.
CLOSE_AFTER = 1.0


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def _name(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Backend(HyperTCPClientFactory):
    """
    One node, as the balancer sees it through its observer connection there:
    whether it is up, how many sessions it holds, whether it is draining.
    """

    up = False
    #: Drained through this balancer: no one new is sent here until undrained.
    draining = False
    #: The node says it is draining (someone drained it directly).
    node_draining = False
    sessions = 0

    def __init__(self, host: str, port: int, token: str, tls: bool,
                 timeout: float, heartbeat: float, clock: Any) -> None:
        super().__init__(token, onMessage=self._message, heartbeat=heartbeat,
                         responseTimeout=timeout, clock=clock)
        self.host, self.port, self.tls = host, port, tls
        self.name = _name(host, port)
        #: Devices sent here in all, and how many of them the last stats
        #: could already count.
        self.assigned = 0
        self._counted = 0
        self._asked = 0

    @property
    def load(self) -> int:
        """The node's session count, with the devices sent since it was taken."""
        return self.sessions + self.assigned - self._counted

    @property
    def available(self) -> bool:
        return self.up and not self.draining and not self.node_draining

    def state(self) -> dict:
        return {"backend": self.name, "up": self.up, "draining": self.draining or self.node_draining,
                "sessions": self.sessions, "load": self.load}

    # -- the health connection --

    def loggedIn(self, protocol: Any) -> None:
        super().loggedIn(protocol)
        # Up once its first stats arrive: until then its count is unknown.
        self.ask()

    def loggedOut(self, protocol: Any) -> None:
        super().loggedOut(protocol)
        if self.up:
            self.up = False
            self.log.warn("balancer: node {name} is down: its connection was lost "
                          "or its PING went unanswered", name=self.name)

    def loginRefused(self, protocol: Any, answer: int) -> None:
        self.log.error("balancer: node {name} refused the health token ({status}); "
                       "it stays out: check [balancer] token_file", name=self.name,
                       status=status_name(answer))
        super().loginRefused(protocol, answer)

    def redirect(self, host: str, port: int, tls: bool) -> None:
        # A health connection watches this node and no other: after a REDIRECT
        # (someone drained the node) it simply reconnects here.
        self.log.info("balancer: node {name} redirected its health connection; staying",
                      name=self.name)

    def ask(self) -> None:
        """Ask the node for its stats; the answer arrives as a message."""
        protocol = self.current
        if protocol is None:
            return
        self._asked = self.assigned
        protocol.send_to_server({"command": "stats"}).addCallbacks(self._stats_answered,
                                                                   lambda _: None)

    def _stats_answered(self, answer: int) -> None:
        if answer != Status.SUCCESS:
            self.log.error("balancer: node {name} refused its stats ({status}); it stays out: "
                           "is the token in [balancer] token_file an observer's?",
                           name=self.name, status=status_name(answer))

    def _message(self, message: Message) -> None:
        payload = message.payload
        if message.sender != "server" or not isinstance(payload, dict):
            return
        command = payload.get("command")
        if command == "stats" and isinstance(payload.get("sessions"), int):
            self.sessions = payload["sessions"]
            self._counted = self._asked
            self.node_draining = bool(payload.get("draining"))
            if not self.up and self.current is not None:
                self.up = True
                self.log.info("balancer: node {name} is up ({count} sessions)", name=self.name,
                              count=self.sessions)
        elif command == "drained":
            self.log.info("balancer: node {name} drained: {count} sessions redirected",
                          name=self.name, count=payload.get("sessions"))
        # Presence events (the token is an observer's) are of no use here.


class Balancer(MultiService):
    """The nodes, their health, and the choice of a node for each login."""

    log = Logger()

    def __init__(self, config: Any, node: HyperTCPFactory, reactor: Any = None) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.config = config
        self.node = node
        self.policy = config.policy
        self.tls = config.tls
        self.listeners: list[Any] = []
        with open(config.token_file, encoding="utf-8") as f:
            token = f.read().strip()
        if not token:
            raise ValueError(f"{config.token_file} is empty; it should hold an observer token")
        self.backends: list[Backend] = []
        for host, port in config.backends:
            backend = Backend(host, port, token, config.backend_tls, config.health_timeout,
                              config.health_interval, reactor)
            tls: Any = False
            if config.backend_tls:
                from hypertcp.tls import client_options
                tls = client_options(host, config.ca or None)
            clientService(backend, host, port, tls=tls, reactor=reactor,
                          initialDelay=config.health_interval,
                          maxDelay=config.health_interval).setServiceParent(self)
            self.backends.append(backend)
        self._ring = sorted(((_hash(f"{b.name}#{i}"), b) for b in self.backends
                             for i in range(RING_POINTS)), key=lambda point: point[0])
        self._points = [point for point, _ in self._ring]
        TimerService(config.health_interval, self._ask_all).setServiceParent(self)
        self.factory = BalancerFactory(self, node)

    def _ask_all(self) -> None:
        for backend in self.backends:
            backend.ask()

    def pick(self, key: Optional[str]) -> Optional[Backend]:
        """The node for a login keyed by C{key} (its device id), or None if none is up."""
        if self.policy == "sticky" and key is not None and self._ring:
            start = bisect.bisect(self._points, _hash(key))
            for i in range(len(self._ring)):
                backend = self._ring[(start + i) % len(self._ring)][1]
                if backend.available:
                    return backend
            return None
        live = [b for b in self.backends if b.available]
        return min(live, key=lambda b: b.load) if live else None

    def backend(self, name: str) -> Backend:
        for backend in self.backends:
            if backend.name == name:
                return backend
        raise KeyError(f"no backend {name!r}; the backends are "
                       + ", ".join(b.name for b in self.backends))

    def address(self) -> tuple[str, int]:
        """Where drained devices are sent: [balancer] advertise, else our own listener."""
        if self.config.advertise is not None:
            return self.config.advertise
        for listener in self.listeners:
            if listener.port is not None:
                bound = listener.port.getHost()
                if bound.host not in ("0.0.0.0", "::", ""):
                    return bound.host, bound.port
        raise ValueError("the balancer listens on every interface (or not yet): "
                         "set [balancer] advertise to the address devices reach it at")

    def drain(self, name: str) -> Deferred:
        """
        Send no one new to the node C{name}, and have it redirect every session
        it holds here, to be spread over the others: a Deferred of the node's
        status for the request.  A node that is down is only marked.
        """
        backend = self.backend(name)
        host, port = self.address()
        backend.draining = True
        self.log.info("balancer: draining node {name} through {host}:{port}",
                      name=name, host=host, port=port)
        protocol = backend.current
        if protocol is None:
            return succeed(Status.SUCCESS)
        request = {"command": "drain", "server": host, "port": port}
        if self.tls:
            request["tls"] = True
        return protocol.send_to_server(request).addCallbacks(self._drain_answered, self._drain_failed,
                                                             (name,), None, (name,))

    def _drain_answered(self, answer: int, name: str) -> int:
        if answer != Status.SUCCESS:
            self.log.error("balancer: node {name} refused to drain: {status}",
                           name=name, status=status_name(answer))
        return answer

    def _drain_failed(self, failure: Any, name: str) -> Any:
        self.log.error("balancer: node {name} did not take the drain request: {error}",
                       name=name, error=failure.getErrorMessage())
        return failure

    def undrain(self, name: str) -> None:
        """Let the node C{name} take new devices again."""
        backend = self.backend(name)
        backend.draining = False
        backend.node_draining = False
        self.log.info("balancer: node {name} takes devices again", name=name)
        if backend.current is not None:
            backend.current.send_to_server({"command": "undrain"}).addErrback(lambda _: None)

    def status(self) -> dict:
        return {"policy": self.policy, "backends": [b.state() for b in self.backends]}

    def register_commands(self, hub: Hub) -> None:
        """Let observers of this process run the balancer with messages to "server"."""
        hub.register_command("backends", self._backends_command)
        hub.register_command("drain_backend", self._drain_command)
        hub.register_command("undrain_backend", self._undrain_command)

    def _named(self, sender: Any, payload: dict, command: str) -> str:
        require_observer(sender, command)
        name = payload.get("backend")
        if not isinstance(name, str):
            raise CommandError(Status.ILLEGAL_COMMAND_BODY, f"{command} needs backend HOST:PORT")
        try:
            self.backend(name)
        except KeyError as e:
            raise CommandError(Status.DEVICE_NOT_IN_NETWORK, str(e)) from None
        return name

    def _backends_command(self, hub: Hub, sender: Any, payload: dict) -> dict:
        require_observer(sender, "backends")
        return {"command": "backends", **self.status()}

    def _drain_command(self, hub: Hub, sender: Any, payload: dict) -> dict:
        name = self._named(sender, payload, "drain_backend")
        try:
            self.drain(name).addErrback(lambda _: None)  # drain() logs a failure
        except ValueError as e:
            raise CommandError(Status.SERVER_EXCEPTION, str(e)) from None
        return {"command": "drain_backend", "backend": name}

    def _undrain_command(self, hub: Hub, sender: Any, payload: dict) -> dict:
        name = self._named(sender, payload, "undrain_backend")
        self.undrain(name)
        return {"command": "undrain_backend", "backend": name}


class BalancerSession(FrameReceiver):
    """One device at the balancer: PING is answered, LOGIN redirected, the rest refused."""

    log = Logger()
    factory: "BalancerFactory"
    redirected = False

    def connectionMade(self) -> None:
        node = self.factory.node
        self.max_payload = node.limits.max_payload
        super().connectionMade()
        addr = self.transport.getPeer()
        self.host = getattr(addr, "host", "?")
        self.peer = f"{self.host}:{getattr(addr, 'port', 0)}"
        self._timer = node.clock.callLater(node.limits.login_timeout, self._expired)
        self.factory.open += 1

    def connectionLost(self, reason: Any = None) -> None:
        self.factory.open -= 1
        if self._timer.active():
            self._timer.cancel()

    def _expired(self) -> None:
        if not self.redirected:
            self.transport.write(response(1, Status.TIMEOUT, login=True))
        self.transport.loseConnection()

    def oversizeReceived(self, event: Oversize) -> None:
        if event.command != Command.RESPONSE:
            self.transport.write(response(event.msg_id, Status.ILLEGAL_COMMAND_BODY))

    def frameReceived(self, frame: Frame) -> None:
        command = frame.command
        if command == Command.RESPONSE:
            return
        if command == Command.PING:
            self.transport.write(response(frame.msg_id))
        elif command == Command.LOGIN and not self.redirected:
            self._login(frame)
        else:
            refusal = Status.ILLEGAL_COMMAND if command == Command.LOGIN else Status.NOT_AUTHENTICATED
            self.transport.write(response(frame.msg_id, refusal))

    def _refuse(self, frame: Frame, status: int, why: str, close: bool = False) -> None:
        self.factory.node.count(f"balancer_{Status(status).name.lower()}")
        self.log.warn("balancer: {peer}: {why}: {status}", peer=self.peer, why=why,
                      status=Status(status).name)
        self.transport.write(response(frame.msg_id, status, login=True))
        if close:
            self.transport.loseConnection()

    def _login(self, frame: Frame) -> None:
        node = self.factory.node
        try:
            _, device_id = node.authenticate(frame.payload)
        except LoginRefused as e:
            self._refuse(frame, e.status, str(e), close=e.status == Status.INVALID_TOKEN)
            return
        # A login that names no device is kept on one node by its address.
        backend = self.factory.balancer.pick(device_id or self.host)
        if backend is None:
            self._refuse(frame, Status.SERVER_EXCEPTION, "no node is up", close=True)
            return
        backend.assigned += 1
        self.redirected = True
        node.count("balancer_redirects")
        redirect = redirect_payload(backend.host, backend.port, backend.tls)
        self.transport.write(encode(Command.REDIRECT, self._ids.next(), redirect)
                             + response(frame.msg_id, Status.SUCCESS, login=True))
        self.log.info("balancer: {peer} ({device}) sent to {node}", peer=self.peer,
                      device=device_id or "no id", node=backend.name)
        self._timer.cancel()
        self._timer = node.clock.callLater(CLOSE_AFTER, self.transport.loseConnection)


class BalancerFactory(ServerFactory):
    """The balancer's listeners' factory: it shares the node's tokens, limits and counters."""

    protocol = BalancerSession
    noisy = False

    def __init__(self, balancer: Balancer, node: HyperTCPFactory) -> None:
        self.balancer = balancer
        self.node = node
        self.open = 0

    def buildProtocol(self, addr: Any) -> Optional[BalancerSession]:
        # The node's cap counts the balancer's connections on their own.
        return super().buildProtocol(addr) if self.node.admit(addr, self.open) else None


def makeService(config: Any, node: HyperTCPFactory, certificate: Any = None,
                reactor: Any = None) -> Balancer:
    """The balancer, its health checks and its listeners, for C{[balancer]} in C{config}."""
    try:
        balancer = Balancer(config, node, reactor)
    except (OSError, ValueError) as e:
        raise SystemExit(f"HyperTCP: balancer: {e}") from None
    factory: Any = balancer.factory
    if config.tls:
        from twisted.protocols.tls import TLSMemoryBIOFactory
        factory = TLSMemoryBIOFactory(certificate, False, factory)
    for description in config.listen:
        listener = Listener("balancer", description, factory, reactor)
        listener.setServiceParent(balancer)
        balancer.listeners.append(listener)
    balancer.register_commands(node.hub)
    return balancer
