"""One device at the balancer: PING is answered, LOGIN sent to a node, the rest refused."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger

from hypertcp.framing import FrameReceiver
from hypertcp.protocol import server as rules
from hypertcp.protocol.bodies import BadBody, parse_login, redirect_body
from hypertcp.protocol.commands import Command, Status
from hypertcp.protocol.frames import Frame, Oversize, encode, response
from hypertcp.server.auth import LoginRefused
from hypertcp.server.factory import HyperTCPFactory

if TYPE_CHECKING:
    from hypertcp.app.balancer.service import Balancer

# Seconds the balancer keeps a redirected connection open, as a node does.
CLOSE_AFTER = 1.0


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
        refusal = rules.oversize(event, self.max_payload)
        if refusal is not None:
            self.transport.write(response(event.msg_id, refusal.status))

    def frameReceived(self, frame: Frame) -> None:
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
            _, device_id = node.authenticate(parse_login(frame.payload))
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
        self.redirected = True
        node.count("balancer_redirects")
        redirect = redirect_body(backend.host, backend.port, backend.tls)
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

    def __init__(self, balancer: "Balancer", node: HyperTCPFactory) -> None:
        self.balancer = balancer
        self.node = node
        self.open = 0

    def buildProtocol(self, addr: Any) -> Optional[BalancerSession]:
        # The node's cap counts the balancer's connections on their own.
        return super().buildProtocol(addr) if self.node.admit(addr, self.open) else None
