"""
One device at the balancer: PING is answered, LOGIN sent to a node -- by
REDIRECT, or for devices that cannot follow one, by relaying the connection
(L{hypertcp.app.balancer.relay}) -- and the rest refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger

from hypertcp.framing import FrameReceiver
from hypertcp.protocol import server as rules
from hypertcp.app.balancer.relay import NodeLink
from hypertcp.protocol.bodies import PROTOCOL_LEVEL, BadBody, parse_login, redirect_body
from hypertcp.protocol.commands import Command, Status
from hypertcp.protocol.frames import Frame, Oversize, encode, response
from hypertcp.server.admission import Admission
from hypertcp.server.auth import LoginRefused
from hypertcp.server.factory import HyperTCPFactory

if TYPE_CHECKING:
    from hypertcp.app.balancer.service import Balancer

# Seconds the balancer keeps a redirected connection open, as a node does.
CLOSE_AFTER = 1.0


class BalancerSession(FrameReceiver):
    """One device at the balancer: PING is answered, LOGIN sent on, the rest refused."""

    log = Logger()
    factory: "BalancerFactory"
    redirected = False
    #: Relaying to a node: bytes pass through untouched from now on.
    relaying = False
    _link: Optional[NodeLink] = None

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
        if self._link is not None:
            self._link.transport.loseConnection()

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
        if not self.redirected:
            self.transport.write(response(1, Status.TIMEOUT, login=True))
        self.transport.loseConnection()

    def oversizeReceived(self, event: Oversize) -> None:
        if self.relaying:
            # Its payload is gone, so the node cannot be given the stream as
            # sent.  An original device waits for its login answer before it
            # sends anything more, so this is no device worth relaying.
            self.log.warn("balancer: {peer}: an oversize frame right after LOGIN; closing",
                          peer=self.peer)
            self.transport.abortConnection()
            return
        refusal = rules.oversize(event, self.max_payload)
        if refusal is not None:
            self.transport.write(response(event.msg_id, refusal.status))

    def frameReceived(self, frame: Frame) -> None:
        if self.relaying:  # frames that followed the LOGIN in the same read
            self._relay(encode(frame.command, frame.msg_id, frame.payload))
            return
        action = rules.action(frame.command, self.redirected)
        if action == rules.PING:
            self.transport.write(response(frame.msg_id))
        elif action == rules.LOGIN:
            self._login(frame)
        elif action == rules.MESSAGE:
            # Sent on to a node: messages belong there, not here.
            self.transport.write(response(frame.msg_id, Status.NOT_AUTHENTICATED))
        elif isinstance(action, rules.Refusal):
            self.transport.write(response(frame.msg_id, action.status))
        # rules.ACK: nothing here awaits an acknowledgement.

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
            login = parse_login(frame.payload)
            _, device_id = node.authenticate(login)
        except BadBody as e:
            self._refuse(frame, Status.ILLEGAL_COMMAND_BODY, str(e))
            return
        except LoginRefused as e:
            self._refuse(frame, e.status, str(e), close=e.status == Status.INVALID_TOKEN)
            return
        # A login that names no device is kept on one node by its address.
        backend = self.factory.balancer.pick(device_id or self.host)
        if backend is None:
            self._refuse(frame, Status.SERVER_EXCEPTION, "no node is up", close=True)
            return
        backend.assigned += 1
        self._timer.cancel()
        if login.proto < PROTOCOL_LEVEL:
            self._relay_to(backend, frame, device_id)
            return
        self.redirected = True
        node.count("balancer_redirects")
        redirect = redirect_body(backend.host, backend.port, backend.tls)
        self.transport.write(encode(Command.REDIRECT, self._ids.next(), redirect)
                             + response(frame.msg_id, Status.SUCCESS, login=True))
        self.log.info("balancer: {peer} ({device}) sent to {node}", peer=self.peer,
                      device=device_id or "no id", node=backend.name)
        self._timer = node.clock.callLater(CLOSE_AFTER, self.transport.loseConnection)

    def _relay_to(self, backend: Any, frame: Frame, device_id: Optional[str]) -> None:
        """Connect to C{backend} and pass it this connection, its LOGIN first."""
        self.relaying = True
        self._held = [encode(frame.command, frame.msg_id, frame.payload)]
        # Read nothing more until the node can take it.
        self.transport.pauseProducing()
        self.factory.node.count("balancer_relays")
        self.log.info("balancer: {peer} ({device}) relayed to {node}: it cannot follow a "
                      "REDIRECT", peer=self.peer, device=device_id or "no id", node=backend.name)
        backend.link(NodeLink(self)).addErrback(self._link_failed, frame.msg_id, backend.name)

    def _link_failed(self, failure: Any, msg_id: int, name: str) -> None:
        self.log.warn("balancer: {peer}: node {node} did not take the relay: {error}",
                      peer=self.peer, node=name, error=failure.getErrorMessage())
        self.transport.write(response(msg_id, Status.SERVER_EXCEPTION, login=True))
        self.transport.loseConnection()
        self.transport.resumeProducing()


class BalancerFactory(ServerFactory):
    """The balancer's listeners' factory: it shares the node's tokens, limits and counters."""

    protocol = BalancerSession
    noisy = False

    def __init__(self, balancer: "Balancer", node: HyperTCPFactory) -> None:
        self.balancer = balancer
        self.node = node
        self.open = 0
        # The node's cap counts the balancer's connections on their own.
        self.admission = Admission(node.limits, node.clock, node.count)

    def buildProtocol(self, addr: Any) -> Optional[BalancerSession]:
        return super().buildProtocol(addr) if self.admission.admit(addr, self.open) else None
