"""
Who is online and where messages go.

The hub maps device ids to their live peers (a device may hold several),
delivers targeted messages and broadcasts, answers messages addressed to
C{"server"} through a registry of commands, and tells observers who comes
and goes.  It sees connections only as L{IPeer}s, so routing policy lives
here and nowhere else, and a WebSocket session is a peer like a TCP one.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator, Optional, Union

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from hypertcp.protocol.bodies import Send, delivery_body, event_body, telemetry_body
from hypertcp.protocol.commands import Command, Status
from hypertcp.protocol.frames import HEADER_SIZE
from hypertcp.protocol.jsoncodec import dumps as _dumps
from hypertcp.server.budget import BroadcastBudget
from hypertcp.server.interfaces import IPeer, IRemote

#: deviceStatus events sent to a new observer per reactor turn.
SNAPSHOT_BATCH = 256

# A server command handler gets the hub, the sending peer and the payload;
# it returns a payload to answer with (sent from "server"), or None.
Handler = Callable[["Hub", IPeer, dict], Optional[dict]]
# Bound once: on Python 3.11 an enum member lookup costs about 60 ns.
JSON_MESSAGE, BROADCAST, SUCCESS = Command.JSON_MESSAGE, Command.BROADCAST, Status.SUCCESS
# Answers that say "not delivered yet": another receiver may still do better.
_NOT_YET = frozenset((Status.TIMEOUT, Status.DEVICE_NOT_IN_NETWORK))


def first_delivery(waits: list[Deferred]) -> Deferred:
    """
    The status of the first wait that reports a delivery; when none does,
    the last answer (TIMEOUT, or DEVICE_NOT_IN_NETWORK if every receiver was
    gone).
    """
    result: Deferred = Deferred()
    waiting = len(waits)

    def one(status: int) -> None:
        nonlocal waiting
        waiting -= 1
        if not result.called and (status not in _NOT_YET or not waiting):
            result.callback(status)

    for wait in waits:
        wait.addCallback(one)
    return result


class Answer(int):
    """
    A status that is not SUCCESS, with the reason in words for the clients
    that asked for reasons; everywhere else it is just the status.
    """

    why: str

    def __new__(cls, status: int, why: str) -> "Answer":
        answer = int.__new__(cls, status)
        answer.why = why
        return answer


class CommandError(Exception):
    """Raised by a server command handler to answer with a status."""

    def __init__(self, status: int, why: str = "") -> None:
        super().__init__(why)
        self.status = status


class Hub:
    log = Logger()

    #: The other nodes of a cluster; None on a single node.
    remote: Optional[IRemote] = None
    #: Store and forward (L{hypertcp.server.offline.Offline}); None when there is no store.
    offline: Any = None

    def __init__(self, clock: Any, ack_timeout: float = 10.0) -> None:
        self.clock = clock
        self.ack_timeout = ack_timeout
        self.devices: dict[str, list[IPeer]] = {}
        self.sessions: set[IPeer] = set()
        self.observers: set[IPeer] = set()
        self.commands: dict[str, Handler] = {}
        self.delivered = 0
        #: Where L{drain} sent this node's sessions, until undrained.
        self.draining: Optional[tuple[str, int, bool]] = None
        #: The only (host, port) pairs clients' redirect and drain commands
        #: may send sessions to; empty: any (operators at the manhole: any).
        self.redirect_targets: frozenset[tuple[str, int]] = frozenset()
        #: What clients' broadcasts may deliver (the factory sets it from its limits).
        self.broadcast_budget: Optional[BroadcastBudget] = None

    def register_command(self, name: str, handler: Handler) -> None:
        """Answer C{{"command": name}} messages to "server" with C{handler}."""
        self.commands[name] = handler

    # -- presence --

    def may_join(self, device_id: str, token: Any) -> bool:
        """
        May a connection holding C{token} log in as C{device_id}?  An id
        online belongs to its token's owner: more connections of that owner
        share it (each receives its messages), any other is refused until
        it is offline, so no one can take over a live id to read its
        messages or answer for it.
        """
        live = self.devices.get(device_id)
        if live:
            return live[0].token.owner == token.owner
        # Across a cluster the rule is the same, as far as this node knows:
        # two logins on two nodes in the same millisecond can both pass.
        owner = self.remote.owner(device_id) if self.remote is not None else None
        return owner is None or owner == token.owner

    def attach(self, peer: IPeer) -> None:
        self.devices.setdefault(peer.device_id, []).append(peer)
        self.sessions.add(peer)
        self._presence("deviceConnected", peer)
        if peer.token.observer:
            self.observers.add(peer)
            others: list[Any] = [other for other in self.sessions if other is not peer]
            if self.remote is not None:
                others.extend(self.remote.peers())
            # After the login's own answer, outside the read that carried it.
            self.clock.callLater(0, self._snapshot, peer, iter(others))
        if self.offline is not None:
            self.offline.attached(peer)

    def _snapshot(self, observer: IPeer, others: Iterator[IPeer]) -> None:
        """
        A deviceStatus for each peer online when C{observer} logged in, paced
        by the observer's reading: sent in one go, a large fleet's snapshot
        would trip the observer's own slow-reader cap.
        """
        if observer not in self.observers:
            return
        remote = self.remote
        for count, other in enumerate(others, 1):
            # It may have left since (its event went out).
            if other in self.sessions or (remote is not None and remote.holds(other.device_id)):
                observer.deliver(JSON_MESSAGE, self._event("deviceStatus", other, online=True))
            if observer.paused or count == SNAPSHOT_BATCH:
                observer.when_drained(
                    lambda: self.clock.callLater(0, self._snapshot, observer, others))
                return

    def detach(self, peer: IPeer) -> None:
        if peer not in self.sessions:
            return
        self.sessions.discard(peer)
        self.observers.discard(peer)
        live = self.devices.get(peer.device_id)
        if live is not None:
            if peer in live:
                live.remove(peer)
            if not live:
                del self.devices[peer.device_id]
        self._presence("deviceDisconnected", peer)
        if self.offline is not None:
            self.offline.detached(peer)

    def _event(self, event: str, peer: IPeer, **extra: Any) -> bytes:
        return event_body(event, peer.device_id, peer.peer, int(time.time() * 1000), **extra)

    def _presence(self, event: str, peer: IPeer) -> None:
        if self.observers or self.remote is not None:
            body = self._event(event, peer)
            self.to_observers(body, peer)
            if self.remote is not None:
                self.remote.presence(event, peer, body)

    def to_observers(self, body: bytes, skip: Optional[IPeer] = None) -> None:
        """Deliver a JSON_MESSAGE body to every observer here (but C{skip})."""
        for observer in self.observers:
            if observer is not skip:
                observer.deliver(JSON_MESSAGE, body)

    # -- routing --

    def route_send(self, sender: IPeer, send: Send, answer: Callable[[int, Any], None],
                   msg_id: Any) -> Union[int, Deferred, None]:
        """
        A client's message (a L{Send}) on its way: through store and forward
        when it asks for qos and there is a store (None: the store answers
        C{answer(status, msg_id)} once it has committed), else L{route}.
        L{BadBody} for a qos envelope the store will not keep.
        """
        if send.qos and self.offline is not None:
            return self.offline.route(sender, send, answer, msg_id)
        return self.route(sender, send.target, send.payload, send.ack)

    def route(self, sender: IPeer, target: str, payload: dict,
              ack: bool = False) -> Union[int, Deferred]:
        """
        Deliver C{payload} from C{sender} to C{target} and return the status
        for the sender, or a Deferred of it when C{ack} asks to wait for the
        receivers' acknowledgement.
        """
        if not sender.token.may_reach(target):
            return Answer(Status.NOT_ALLOWED,
                          f"token {sender.token.name} may not send to {target!r}")
        if target == "broadcast":
            return self.broadcast(sender, payload)
        if target == "server":
            return self.to_server(sender, payload)
        live = self.devices.get(target)
        remote = self.remote
        if remote is not None and remote.holds(target):
            return self._route_far(remote, sender, target, payload, ack, live)
        if not live:
            return Answer(Status.DEVICE_NOT_IN_NETWORK, f"{target!r} is not connected")
        # delivery_body, inline: this runs for every message.
        return self._deliver(live, _dumps({"from": sender.device_id, "payload": payload}), ack)

    def _deliver(self, live: list[IPeer], body: bytes, ack: bool) -> Union[int, Deferred]:
        """To every connection in C{live}: SUCCESS, or with C{ack} the first acknowledgement."""
        self.delivered += len(live)
        if not ack:
            for peer in live:
                peer.deliver(JSON_MESSAGE, body)
            return SUCCESS
        return first_delivery([peer.deliver_acked(JSON_MESSAGE, body, self.ack_timeout)
                               for peer in live])

    def _route_far(self, remote: IRemote, sender: IPeer, target: str, payload: dict, ack: bool,
                   live: Optional[list[IPeer]]) -> Union[int, Deferred]:
        """C{target} is (also) on other nodes: there through the cluster, here directly."""
        body = delivery_body(sender.device_id, payload)
        far = remote.route(sender.device_id, target, body, ack)
        if not live:
            return far if far is not None else Status.DEVICE_NOT_IN_NETWORK
        here = self._deliver(live, body, ack)
        if not ack or far is None:
            return here  # delivered here: that is the sender's answer
        return first_delivery([here, far])

    # -- what other nodes send for the connections here --

    def deliver_here(self, target: str, command: int, body: bytes) -> int:
        """Hand a frame body to every connection of C{target} here; return how many."""
        live = self.devices.get(target, ())
        for peer in live:
            peer.deliver(command, body)
        self.delivered += len(live)
        return len(live)

    def deliver_here_acked(self, target: str, body: bytes) -> Optional[Deferred]:
        """The first acknowledgement of C{target}'s connections here; None if it has none."""
        live = self.devices.get(target)
        if not live:
            return None
        result = self._deliver(live, body, True)
        assert isinstance(result, Deferred)
        return result

    def broadcast_here(self, body: bytes) -> None:
        """A BROADCAST from another node, to every connection here."""
        for peer in self.sessions:
            peer.deliver(BROADCAST, body)
        self.delivered += len(self.sessions)

    def broadcast(self, sender: Optional[IPeer], payload: dict) -> int:
        """
        Deliver a BROADCAST to every logged-in peer but the sender, if the
        bytes it delivers fit its token's and the server's budgets (the
        server's own broadcasts, from operators, are not counted).
        """
        body = delivery_body(sender.device_id if sender else "server", payload)
        budget = self.broadcast_budget
        reached = len(self.sessions) - 1
        if self.remote is not None:
            reached += self.remote.elsewhere()
        if budget is not None and sender is not None and not budget.allow(
                sender.token.owner, (len(body) + HEADER_SIZE) * reached):
            return Status.QUOTA_LIMIT
        for peer in self.sessions:
            if peer is not sender:
                peer.deliver(BROADCAST, body)
        self.delivered += len(self.sessions) - (sender is not None)
        if self.remote is not None:
            self.remote.broadcast(body)
        return SUCCESS

    def to_server(self, sender: IPeer, payload: dict) -> int:
        """
        A message for the server itself: a registered command answers it;
        anything else (telemetry) goes to the observers, so a back end holding
        an observer token sees what devices report to "server".
        """
        name = payload.get("command")
        handler = self.commands.get(name) if isinstance(name, str) else None
        if handler is None:
            if self.observers or self.remote is not None:
                body = telemetry_body(sender.device_id, payload)
                self.to_observers(body, sender)
                if self.remote is not None:
                    self.remote.telemetry(body)
            return SUCCESS
        try:
            reply = handler(self, sender, payload)
        except CommandError as e:
            self.log.warn("{device}: server command {name!r} refused: {why}",
                          device=sender.device_id, name=name, why=str(e))
            return Answer(e.status, str(e)) if str(e) else e.status
        if reply is not None:
            sender.deliver(JSON_MESSAGE, delivery_body("server", reply))
        return SUCCESS

    def send(self, target: str, payload: dict) -> Union[int, Deferred]:
        """
        Send C{payload} from "server" to every live connection of C{target},
        on any node: the status, or a Deferred of it when other nodes hold it.
        """
        live = self.devices.get(target)
        body = delivery_body("server", payload)
        far = self.remote.route("server", target, body, False) if self.remote is not None else None
        if live:
            for peer in live:
                peer.deliver(JSON_MESSAGE, body)
            return SUCCESS
        if far is None:
            return Status.DEVICE_NOT_IN_NETWORK
        if isinstance(far, Deferred):
            return far
        # The cluster answers a batch's plain deliveries at once, with one
        # object for all; whoever called this (an operator) gets a Deferred.
        answer: Deferred = Deferred()
        far.addCallback(answer.callback)
        return answer

    # -- administration --

    def redirect(self, device_id: Optional[str], host: str, port: int, tls: bool = False) -> int:
        """
        Redirect one device's connections, on any node, or with C{None} every
        connection of this node; return how many.
        """
        far = 0
        if device_id is not None and self.remote is not None:
            far = self.remote.command(device_id, {"op": "redirect", "server": host, "port": port,
                                                  "tls": tls})
        return self.redirect_here(device_id, host, port, tls) + far

    def redirect_here(self, device_id: Optional[str], host: str, port: int, tls: bool) -> int:
        peers = list(self.sessions if device_id is None else self.devices.get(device_id, ()))
        for peer in peers:
            peer.redirect(host, port, tls)
        return len(peers)

    def kick(self, device_id: str, reason: str = "kicked by an operator") -> int:
        """Close every connection of C{device_id}, on any node; return how many."""
        far = self.remote.command(device_id, {"op": "kick", "reason": reason}) \
            if self.remote is not None else 0
        return self.kick_here(device_id, reason) + far

    def kick_here(self, device_id: str, reason: str) -> int:
        peers = list(self.devices.get(device_id, ()))
        for peer in peers:
            peer.close(reason)
        return len(peers)

    def drain(self, host: str, port: int, tls: bool = False,
              keep: Optional[IPeer] = None) -> int:
        """
        Redirect every peer but C{keep} (the one asking) and mark this node
        draining, so a load balancer reading its stats sends no one new.
        """
        self.draining = (host, port, tls)
        peers = [peer for peer in self.sessions if peer is not keep]
        for peer in peers:
            peer.redirect(host, port, tls)
        self.log.info("draining: {count} sessions sent to {host}:{port}",
                      count=len(peers), host=host, port=port)
        return len(peers)

    def stats(self) -> dict:
        """This node's figures, and the cluster's under "cluster" when there is one."""
        figures = {"sessions": len(self.sessions), "devices": len(self.devices),
                   "observers": len(self.observers), "delivered": self.delivered,
                   "draining": self.draining is not None}
        if self.remote is not None:
            figures["cluster"] = self.remote.stats()
        if self.offline is not None:
            figures["store"] = self.offline.stats()
        return figures
