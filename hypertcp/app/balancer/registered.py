"""
The nodes a balancer knows from the cluster's registry, with no C{--backend}
list: every node that registers in the cluster's Redis is a candidate.

The balancer's own L{ClusterNode} reads the registry every C{[cluster]
refresh}; each look gives every node's registration -- its address, session
count and draining flag -- and this module turns them into candidates.  A
node whose registration runs out (it died) or that leaves is dropped; one
that registers is picked from its next login on.  Draining is a command
sent to the node's inbox: the node drains itself and says so in its
registration, so every balancer on the cluster stops choosing it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from zope.interface import implementer

from hypertcp.app.balancer.interfaces import INode
from hypertcp.protocol.commands import Status, status_name

if TYPE_CHECKING:
    from hypertcp.cluster.node import ClusterNode

#: connect(host, port, tls) -> a function connecting a protocol there (a Deferred of it).
Connect = Callable[[str, int, bool], Callable[[Protocol], Deferred]]


def parse_address(text: Any) -> Optional[tuple[str, int]]:
    """A registration's C{"HOST:PORT"} (an IPv6 host unbracketed) as (host, port), or None."""
    if not isinstance(text, str):
        return None
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host.strip("[]"), int(port)


@implementer(INode)
class RegisteredNode:
    """One node, as its registration in the cluster's Redis shows it."""

    log = Logger()
    host: Optional[str] = None
    port = 0
    tls = False
    sessions = 0
    #: Drained through this balancer, until its registration says it is draining.
    draining = False
    #: Its registration says it is draining (through any balancer, or directly).
    node_draining = False

    def __init__(self, node_id: str, cluster: "ClusterNode", connect: Connect) -> None:
        self.name = node_id
        self.cluster = cluster
        self.connect = connect
        self.assigned = 0
        self._counted = 0
        self._at_last_look = 0
        self._beat: Any = None
        self._registration: Optional[dict] = None

    def update(self, registration: dict) -> None:
        """Take its registration from the latest look at the registry."""
        if registration is self._registration:
            return  # no new look (another node left): nothing new of this one
        self._registration = registration
        address = parse_address(registration.get("address"))
        self.host, self.port = address if address is not None else (None, 0)
        self.tls = registration.get("tls") is True
        sessions = registration.get("sessions")
        self.sessions = sessions if type(sessions) is int else 0
        self.node_draining = registration.get("draining") is True
        if self.node_draining:
            # The registry says so now, for every balancer: from here on it
            # decides, so an undrain through another balancer counts here.
            self.draining = False
        beat = registration.get("beat")
        if beat != self._beat:
            # Renewed since the previous look: the devices sent before that
            # look have logged in there and are in this count; those sent
            # since may not be yet, so they are still added.
            self._beat = beat
            self._counted = self._at_last_look
        self._at_last_look = self.assigned

    @property
    def address(self) -> Optional[str]:
        return None if self.host is None else f"{self.host}:{self.port}"

    @property
    def load(self) -> int:
        """The published session count, with the devices sent since it could count them."""
        return self.sessions + self.assigned - self._counted

    @property
    def available(self) -> bool:
        return self.host is not None and not self.draining and not self.node_draining

    def link(self, protocol: Protocol) -> Deferred:
        """Connect C{protocol} to the node where its registration says it is."""
        assert self.host is not None, "a node with no address is never picked"
        return self.connect(self.host, self.port, self.tls)(protocol)

    def state(self) -> dict:
        return {"backend": self.name, "address": self.address, "up": self.host is not None,
                "draining": self.draining or self.node_draining, "sessions": self.sessions,
                "load": self.load}

    def drain(self, host: str, port: int, tls: bool) -> Deferred:
        """Mark it draining, and send it the drain command through its inbox."""
        self.draining = True
        return self.cluster.command_node(
            self.name, {"op": "drain", "server": host, "port": port, "tls": tls}
        ).addCallback(self._drain_sent)

    def _drain_sent(self, status: int) -> int:
        if status != Status.SUCCESS:
            self.log.error("balancer: node {name} did not get the drain command: {status}",
                           name=self.name, status=status_name(status))
        return status

    def undrain(self) -> None:
        self.draining = False
        self.node_draining = False  # until its next registration says otherwise
        self.cluster.command_node(self.name, {"op": "undrain"})


class Registry:
    """
    The registered nodes as candidates, kept in step with what the cluster
    node last read; this process's own node among them when it has an
    address (a balancer that is also a node).  It calls C{changed()} when
    nodes came or went (the sticky ring is rebuilt then).
    """

    log = Logger()

    def __init__(self, cluster: "ClusterNode", changed: Callable[[], None],
                 connect: Connect) -> None:
        self.cluster = cluster
        self.changed = changed
        self.connect = connect
        self.nodes: dict[str, RegisteredNode] = {}
        self._unreachable: set[str] = set()
        cluster.watchers.append(self.refresh)

    def candidates(self) -> list[RegisteredNode]:
        return [self.nodes[name] for name in sorted(self.nodes)]

    def refresh(self) -> None:
        """Take the registrations the cluster node has just read."""
        registrations: dict[str, Any] = dict(self.cluster.nodes)
        mine = self.cluster.registration()
        if mine["address"] is not None:  # a balancer that is also a node
            registrations[self.cluster.id] = mine
        before = set(self.nodes)
        for name in before - set(registrations):
            del self.nodes[name]
            self._unreachable.discard(name)
            self.log.info("balancer: node {name} is out: it left the registry", name=name)
        for name, registration in registrations.items():
            if not isinstance(registration, dict):
                self.log.warn("balancer: node {name}'s registration is not a JSON object; "
                              "skipped", name=name)
                continue
            node = self.nodes.get(name)
            if node is None:
                node = self.nodes[name] = RegisteredNode(name, self.cluster, self.connect)
            node.update(registration)
            self._said(node, name not in before)
        if set(self.nodes) != before:
            self.changed()

    def _said(self, node: RegisteredNode, new: bool) -> None:
        """Log a node's arrival once, and once that it gives no address devices can reach."""
        if node.host is None:
            if node.name not in self._unreachable:
                self._unreachable.add(node.name)
                self.log.warn("balancer: node {name} registers no address devices can reach "
                              "(set its [cluster] advertise); it gets no devices", name=node.name)
            return
        if new or node.name in self._unreachable:
            self._unreachable.discard(node.name)
            self.log.info("balancer: node {name} at {address} is up ({count} sessions)",
                          name=node.name, address=node.address, count=node.sessions)
