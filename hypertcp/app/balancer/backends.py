"""
A node as the balancer sees it: one logged-in health connection there
(the Twisted client, reconnecting on its own) that answers C{stats}.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol

from twisted.internet.defer import succeed
from zope.interface import implementer

from hypertcp.app.balancer.interfaces import INode
from hypertcp.client.txclient import HyperTCPClientFactory
from hypertcp.protocol.bodies import Message
from hypertcp.protocol.commands import Status, status_name


def address_name(host: str, port: int) -> str:
    """HOST:PORT, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@implementer(INode)
class Backend(HyperTCPClientFactory):
    """
    One node, as the balancer sees it through its health connection there:
    whether it is up, how many sessions it holds, whether it is draining.
    """

    up = False
    #: Drained through this balancer: no one new is sent here until undrained.
    draining = False
    #: The node says it is draining (someone drained it directly).
    node_draining = False
    sessions = 0
    #: Connects a protocol to this node (set by the balancer): the relay's way in.
    link: Callable[[Protocol], Deferred]

    def __init__(self, host: str, port: int, token: str, tls: bool,
                 timeout: float, heartbeat: float, clock: Any) -> None:
        super().__init__(token, onMessage=self._message, heartbeat=heartbeat,
                         responseTimeout=timeout, clock=clock)
        self.host, self.port, self.tls = host, port, tls
        self.name = address_name(host, port)
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

    # -- draining, through the observer connection --

    def drain(self, host: str, port: int, tls: bool) -> Deferred:
        """Mark it draining and ask it (its C{drain} command) to send its sessions to us."""
        self.draining = True
        protocol = self.current
        if protocol is None:
            return succeed(Status.SUCCESS)  # down: only marked
        request: dict = {"command": "drain", "server": host, "port": port}
        if tls:
            request["tls"] = True
        return protocol.send_to_server(request).addCallbacks(self._drain_answered,
                                                             self._drain_failed)

    def _drain_answered(self, answer: int) -> int:
        if answer != Status.SUCCESS:
            self.log.error("balancer: node {name} refused to drain: {status}",
                           name=self.name, status=status_name(answer))
        return answer

    def _drain_failed(self, failure: Any) -> Any:
        self.log.error("balancer: node {name} did not take the drain request: {error}",
                       name=self.name, error=failure.getErrorMessage())
        return failure

    def undrain(self) -> None:
        self.draining = False
        self.node_draining = False
        if self.current is not None:
            self.current.send_to_server({"command": "undrain"}).addErrback(lambda _: None)

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
                           "the token in [balancer] token_file needs the stats and drain "
                           "grants (hypertcp token add balancer --role fleet --grant stats "
                           "drain)", name=self.name, status=status_name(answer))

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
        # Anything else (presence events, if the token is an observer's) is of no use here.
