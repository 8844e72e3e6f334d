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

from hypertcp.protocol.bodies import delivery_body, event_body, telemetry_body
from hypertcp.protocol.commands import Command, Status
from hypertcp.protocol.frames import HEADER_SIZE
from hypertcp.protocol.jsoncodec import dumps as _dumps
from hypertcp.server.budget import BroadcastBudget
from hypertcp.server.interfaces import IPeer

#: deviceStatus events sent to a new observer per reactor turn.
SNAPSHOT_BATCH = 256

# A server command handler gets the hub, the sending peer and the payload;
# it returns a payload to answer with (sent from "server"), or None.
Handler = Callable[["Hub", IPeer, dict], Optional[dict]]
# Bound once: on Python 3.11 an enum member lookup costs about 60 ns.
JSON_MESSAGE, BROADCAST, SUCCESS = Command.JSON_MESSAGE, Command.BROADCAST, Status.SUCCESS


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
        return not live or live[0].token.owner == token.owner

    def attach(self, peer: IPeer) -> None:
        self.devices.setdefault(peer.device_id, []).append(peer)
        self.sessions.add(peer)
        self._presence("deviceConnected", peer)
        if peer.token.observer:
            self.observers.add(peer)
            others = [other for other in self.sessions if other is not peer]
            # After the login's own answer, outside the read that carried it.
            self.clock.callLater(0, self._snapshot, peer, iter(others))

    def _snapshot(self, observer: IPeer, others: Iterator[IPeer]) -> None:
        """
        A deviceStatus for each peer online when C{observer} logged in, paced
        by the observer's reading: sent in one go, a large fleet's snapshot
        would trip the observer's own slow-reader cap.
        """
        if observer not in self.observers:
            return
        for count, other in enumerate(others, 1):
            if other in self.sessions:  # it may have left since; its event went out
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

    def _event(self, event: str, peer: IPeer, **extra: Any) -> bytes:
        return event_body(event, peer.device_id, peer.peer, int(time.time() * 1000), **extra)

    def _presence(self, event: str, peer: IPeer) -> None:
        if self.observers:
            self._to_observers(self._event(event, peer), peer)

    def _to_observers(self, body: bytes, skip: IPeer) -> None:
        for observer in self.observers:
            if observer is not skip:
                observer.deliver(JSON_MESSAGE, body)

    # -- routing --

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
        if not live:
            return Answer(Status.DEVICE_NOT_IN_NETWORK, f"{target!r} is not connected")
        body = _dumps({"from": sender.device_id, "payload": payload})  # delivery_body, inline
        self.delivered += len(live)
        if not ack:
            for peer in live:
                peer.deliver(JSON_MESSAGE, body)
            return SUCCESS
        return self._acked(live, body)

    def _acked(self, live: list[IPeer], body: bytes) -> Deferred:
        """The first receiver's acknowledgement, or TIMEOUT when none comes."""
        result: Deferred = Deferred()
        waiting = len(live)

        def one(status: int) -> None:
            nonlocal waiting
            waiting -= 1
            if not result.called and (status != Status.TIMEOUT or not waiting):
                result.callback(status)

        for peer in live:
            peer.deliver_acked(JSON_MESSAGE, body, self.ack_timeout).addCallback(one)
        return result

    def broadcast(self, sender: Optional[IPeer], payload: dict) -> int:
        """
        Deliver a BROADCAST to every logged-in peer but the sender, if the
        bytes it delivers fit its token's and the server's budgets (the
        server's own broadcasts, from operators, are not counted).
        """
        body = delivery_body(sender.device_id if sender else "server", payload)
        budget = self.broadcast_budget
        if budget is not None and sender is not None and not budget.allow(
                sender.token.owner, (len(body) + HEADER_SIZE) * (len(self.sessions) - 1)):
            return Status.QUOTA_LIMIT
        for peer in self.sessions:
            if peer is not sender:
                peer.deliver(BROADCAST, body)
        self.delivered += len(self.sessions) - (sender is not None)
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
            if self.observers:
                self._to_observers(telemetry_body(sender.device_id, payload), sender)
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

    def send(self, target: str, payload: dict) -> int:
        """Send C{payload} from "server" to every live peer of C{target}."""
        live = self.devices.get(target)
        if not live:
            return Status.DEVICE_NOT_IN_NETWORK
        body = delivery_body("server", payload)
        for peer in live:
            peer.deliver(JSON_MESSAGE, body)
        return SUCCESS

    # -- administration --

    def redirect(self, device_id: Optional[str], host: str, port: int, tls: bool = False) -> int:
        """Redirect one device's peers (or all, with C{None}); return how many."""
        peers = list(self.sessions if device_id is None else self.devices.get(device_id, ()))
        for peer in peers:
            peer.redirect(host, port, tls)
        return len(peers)

    def kick(self, device_id: str, reason: str = "kicked by an operator") -> int:
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
        return {"sessions": len(self.sessions), "devices": len(self.devices),
                "observers": len(self.observers), "delivered": self.delivered,
                "draining": self.draining is not None}
