"""
Who is online and where messages go.

The hub maps device ids to their live sessions (a device may hold several),
delivers targeted messages, broadcasts, answers messages addressed to
C{"server"} through a registry of commands, and tells observer sessions who
comes and goes.  It sees sessions only through the few methods they offer
(L{deliver}, L{deliver_acked}, L{redirect}, L{close}), so routing policy
lives here and nowhere else.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Union

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from hypertcp import jsoncodec
from hypertcp.wire import Command, Status

if TYPE_CHECKING:
    from hypertcp.session import Session

#: deviceStatus events sent to a new observer per reactor turn.
SNAPSHOT_BATCH = 256

# A server command handler gets the hub, the sending session and the payload;
# it returns a payload to answer with (sent from "server"), or None.
Handler = Callable[["Hub", "Session", dict], Optional[dict]]
# Bound once: on Python 3.11 an enum member lookup costs about 60 ns.
JSON_MESSAGE, SUCCESS = Command.JSON_MESSAGE, Status.SUCCESS


class CommandError(Exception):
    """Raised by a server command handler to answer with a status."""

    def __init__(self, status: int, why: str = "") -> None:
        super().__init__(why)
        self.status = status


_dumps = jsoncodec.dumps


class Hub:
    log = Logger()

    def __init__(self, clock: Any, ack_timeout: float = 10.0) -> None:
        self.clock = clock
        self.ack_timeout = ack_timeout
        self.devices: dict[str, list["Session"]] = {}
        self.sessions: set["Session"] = set()
        self.observers: set["Session"] = set()
        self.commands: dict[str, Handler] = {}
        self.delivered = 0
        #: Where L{drain} sent this node's sessions, until undrained.
        self.draining: Optional[tuple[str, int, bool]] = None
        for name, handler in BUILTIN_COMMANDS.items():
            self.register_command(name, handler)

    def register_command(self, name: str, handler: Handler) -> None:
        """Answer C{{"command": name}} messages to "server" with C{handler}."""
        self.commands[name] = handler

    # -- presence --

    def attach(self, session: "Session") -> None:
        self.devices.setdefault(session.device_id, []).append(session)
        self.sessions.add(session)
        self._presence("deviceConnected", session)
        if session.token.observer:
            self.observers.add(session)
            others = [other for other in self.sessions if other is not session]
            # After the login's own answer, outside the read that carried it.
            self.clock.callLater(0, self._snapshot, session, iter(others))

    def _snapshot(self, observer: "Session", others: Iterator["Session"]) -> None:
        """
        A deviceStatus for each session online when C{observer} logged in,
        paced by the observer's reading: sent in one go, a large fleet's
        snapshot would trip the observer's own slow-reader cap.
        """
        if observer not in self.observers:
            return
        for count, other in enumerate(others, 1):
            if other in self.sessions:  # it may have left since; its event went out
                self._event_to(observer, "deviceStatus", other, online=True)
            if observer.paused or count == SNAPSHOT_BATCH:
                observer.when_drained(
                    lambda: self.clock.callLater(0, self._snapshot, observer, others))
                return

    def detach(self, session: "Session") -> None:
        self.sessions.discard(session)
        self.observers.discard(session)
        live = self.devices.get(session.device_id)
        if live is not None:
            if session in live:
                live.remove(session)
            if not live:
                del self.devices[session.device_id]
        self._presence("deviceDisconnected", session)

    def _event(self, event: str, session: "Session", **extra: Any) -> bytes:
        return _dumps({"from": "server", "payload": {
            "event": event, "deviceId": session.device_id, "clientId": session.peer,
            "timestamp": int(time.time() * 1000), **extra}})

    def _presence(self, event: str, session: "Session") -> None:
        if self.observers:
            self._to_observers(self._event(event, session), session)

    def _to_observers(self, body: bytes, skip: "Session") -> None:
        for observer in self.observers:
            if observer is not skip:
                observer.deliver(Command.JSON_MESSAGE, body)

    def _event_to(self, observer: "Session", event: str, session: "Session", **extra: Any) -> None:
        observer.deliver(Command.JSON_MESSAGE, self._event(event, session, **extra))

    # -- routing --

    def route(self, sender: "Session", target: str, payload: dict,
              ack: bool = False) -> Union[int, Deferred]:
        """
        Deliver C{payload} from C{sender} to C{target} and return the status
        for the sender, or a Deferred of it when C{ack} asks to wait for the
        receivers' acknowledgement.
        """
        if not sender.token.may_reach(target):
            return Status.NOT_ALLOWED
        if target == "broadcast":
            return self.broadcast(sender, payload)
        if target == "server":
            return self.to_server(sender, payload)
        live = self.devices.get(target)
        if not live:
            return Status.DEVICE_NOT_IN_NETWORK
        body = _dumps({"from": sender.device_id, "payload": payload})
        self.delivered += len(live)
        if not ack:
            for session in live:
                session.deliver(JSON_MESSAGE, body)
            return SUCCESS
        return self._acked(live, body)

    def _acked(self, live: list["Session"], body: bytes) -> Deferred:
        """The first receiver's acknowledgement, or TIMEOUT when none comes."""
        result: Deferred = Deferred()
        waiting = len(live)

        def one(status: int) -> None:
            nonlocal waiting
            waiting -= 1
            if not result.called and (status != Status.TIMEOUT or not waiting):
                result.callback(status)

        for session in live:
            session.deliver_acked(Command.JSON_MESSAGE, body, self.ack_timeout).addCallback(one)
        return result

    def broadcast(self, sender: Optional["Session"], payload: dict) -> int:
        """Deliver a BROADCAST to every authenticated session but the sender."""
        body = _dumps({"from": sender.device_id if sender else "server", "payload": payload})
        for session in self.sessions:
            if session is not sender:
                session.deliver(Command.BROADCAST, body)
        self.delivered += len(self.sessions) - (sender is not None)
        return Status.SUCCESS

    def to_server(self, sender: "Session", payload: dict) -> int:
        """
        A message for the server itself: a registered command answers it;
        anything else (telemetry) goes to the observers, so a back end holding
        an observer token sees what devices report to "server".
        """
        name = payload.get("command")
        handler = self.commands.get(name) if isinstance(name, str) else None
        if handler is None:
            if self.observers:
                self._to_observers(
                    _dumps({"from": sender.device_id, "to": "server", "payload": payload}), sender)
            return Status.SUCCESS
        try:
            reply = handler(self, sender, payload)
        except CommandError as e:
            self.log.warn("{device}: server command {name!r} refused: {why}",
                          device=sender.device_id, name=name, why=str(e))
            return e.status
        if reply is not None:
            sender.deliver(Command.JSON_MESSAGE, _dumps({"from": "server", "payload": reply}))
        return Status.SUCCESS

    def send(self, target: str, payload: dict) -> int:
        """Send C{payload} from "server" to every live session of C{target}."""
        live = self.devices.get(target)
        if not live:
            return Status.DEVICE_NOT_IN_NETWORK
        body = _dumps({"from": "server", "payload": payload})
        for session in live:
            session.deliver(Command.JSON_MESSAGE, body)
        return Status.SUCCESS

    # -- administration --

    def redirect(self, device_id: Optional[str], host: str, port: int, tls: bool = False) -> int:
        """Redirect one device's sessions (or all, with C{None}); return how many."""
        sessions = list(self.sessions if device_id is None else self.devices.get(device_id, ()))
        for session in sessions:
            session.redirect(host, port, tls)
        return len(sessions)

    def kick(self, device_id: str, reason: str = "kicked by an operator") -> int:
        sessions = list(self.devices.get(device_id, ()))
        for session in sessions:
            session.close(reason)
        return len(sessions)

    def drain(self, host: str, port: int, tls: bool = False,
              keep: Optional["Session"] = None) -> int:
        """
        Redirect every session but C{keep} (the one asking) and mark this node
        draining, so a load balancer reading its stats sends no one new.
        """
        self.draining = (host, port, tls)
        sessions = [session for session in self.sessions if session is not keep]
        for session in sessions:
            session.redirect(host, port, tls)
        self.log.info("draining: {count} sessions sent to {host}:{port}",
                      count=len(sessions), host=host, port=port)
        return len(sessions)

    def stats(self) -> dict:
        return {"sessions": len(self.sessions), "devices": len(self.devices),
                "observers": len(self.observers), "delivered": self.delivered,
                "draining": self.draining is not None}


def _ping(hub: Hub, sender: "Session", payload: dict) -> dict:
    return {"command": "pong", "timestamp": payload.get("timestamp")}


def _whoami(hub: Hub, sender: "Session", payload: dict) -> dict:
    """Tell a client the id it was given: device tokens and assigned ids are not chosen."""
    return {"command": "whoami", "deviceId": sender.device_id, "role": sender.token.role}


def require_observer(sender: "Session", name: str) -> None:
    if not sender.token.observer:
        raise CommandError(Status.NOT_ALLOWED, f"{name} needs an observer token")


def _redirect(hub: Hub, sender: "Session", payload: dict) -> dict:
    require_observer(sender, "redirect")
    host, port, device = payload.get("server"), payload.get("port"), payload.get("deviceId")
    if not isinstance(host, str) or not isinstance(port, int) or not 0 < port < 65536 \
            or (device is not None and not isinstance(device, str)):
        raise CommandError(Status.ILLEGAL_COMMAND_BODY, "redirect needs server, port, deviceId")
    count = hub.redirect(device, host, port, bool(payload.get("tls")))
    if device is not None and not count:
        raise CommandError(Status.DEVICE_NOT_IN_NETWORK, f"{device} is not connected")
    return {"command": "redirected", "sessions": count}


def _kick(hub: Hub, sender: "Session", payload: dict) -> dict:
    require_observer(sender, "kick")
    device = payload.get("deviceId")
    if not isinstance(device, str):
        raise CommandError(Status.ILLEGAL_COMMAND_BODY, "kick needs deviceId")
    count = hub.kick(device)
    if not count:
        raise CommandError(Status.DEVICE_NOT_IN_NETWORK, f"{device} is not connected")
    return {"command": "kicked", "sessions": count}


def _stats(hub: Hub, sender: "Session", payload: dict) -> dict:
    require_observer(sender, "stats")
    return {"command": "stats", **hub.stats()}


def _drain(hub: Hub, sender: "Session", payload: dict) -> dict:
    require_observer(sender, "drain")
    host, port = payload.get("server"), payload.get("port")
    if not isinstance(host, str) or not isinstance(port, int) or not 0 < port < 65536:
        raise CommandError(Status.ILLEGAL_COMMAND_BODY, "drain needs server and port")
    return {"command": "drained",
            "sessions": hub.drain(host, port, bool(payload.get("tls")), keep=sender)}


def _undrain(hub: Hub, sender: "Session", payload: dict) -> dict:
    require_observer(sender, "undrain")
    hub.draining = None
    return {"command": "undrained"}


BUILTIN_COMMANDS: dict[str, Handler] = {
    "ping": _ping, "whoami": _whoami, "redirect": _redirect, "kick": _kick,
    "stats": _stats, "drain": _drain, "undrain": _undrain}
