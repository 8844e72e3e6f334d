"""
The server commands built in: what a client gets for a message to
C{"server"} whose payload is C{{"command": NAME, ...}}.  Plug-ins add more
through L{Hub.register_command} (the C{[server] handlers} hook).
"""

from __future__ import annotations

from typing import Optional

from hypertcp.protocol.commands import Status
from hypertcp.server.hub import CommandError, Handler, Hub
from hypertcp.server.interfaces import IPeer


def require_observer(sender: IPeer, name: str) -> None:
    if not sender.token.observer:
        raise CommandError(Status.NOT_ALLOWED, f"{name} needs an observer token")


def _address(payload: dict, name: str) -> tuple[str, int, bool]:
    host, port = payload.get("server"), payload.get("port")
    if not isinstance(host, str) or type(port) is not int or not 0 < port < 65536:
        raise CommandError(Status.ILLEGAL_COMMAND_BODY, f"{name} needs server and port")
    return host, port, payload.get("tls") is True


def _device(payload: dict, name: str, required: bool = True) -> Optional[str]:
    device = payload.get("deviceId")
    if (device is None and required) or (device is not None and not isinstance(device, str)):
        raise CommandError(Status.ILLEGAL_COMMAND_BODY, f"{name} needs a deviceId string")
    return device


def ping(hub: Hub, sender: IPeer, payload: dict) -> dict:
    return {"command": "pong", "timestamp": payload.get("timestamp")}


def whoami(hub: Hub, sender: IPeer, payload: dict) -> dict:
    """Tell a client the id it was given: device tokens and assigned ids are not chosen."""
    return {"command": "whoami", "deviceId": sender.device_id, "role": sender.token.role}


def redirect(hub: Hub, sender: IPeer, payload: dict) -> dict:
    require_observer(sender, "redirect")
    host, port, tls = _address(payload, "redirect")
    device = _device(payload, "redirect", required=False)
    count = hub.redirect(device, host, port, tls)
    if device is not None and not count:
        raise CommandError(Status.DEVICE_NOT_IN_NETWORK, f"{device} is not connected")
    return {"command": "redirected", "sessions": count}


def kick(hub: Hub, sender: IPeer, payload: dict) -> dict:
    require_observer(sender, "kick")
    device = _device(payload, "kick")
    count = hub.kick(device)
    if not count:
        raise CommandError(Status.DEVICE_NOT_IN_NETWORK, f"{device} is not connected")
    return {"command": "kicked", "sessions": count}


def stats(hub: Hub, sender: IPeer, payload: dict) -> dict:
    require_observer(sender, "stats")
    return {"command": "stats", **hub.stats()}


def drain(hub: Hub, sender: IPeer, payload: dict) -> dict:
    require_observer(sender, "drain")
    host, port, tls = _address(payload, "drain")
    return {"command": "drained", "sessions": hub.drain(host, port, tls, keep=sender)}


def undrain(hub: Hub, sender: IPeer, payload: dict) -> dict:
    require_observer(sender, "undrain")
    hub.draining = None
    return {"command": "undrained"}


BUILTIN: dict[str, Handler] = {
    "ping": ping, "whoami": whoami, "redirect": redirect, "kick": kick,
    "stats": stats, "drain": drain, "undrain": undrain}


def install(hub: Hub) -> None:
    """Register the built-in commands on C{hub}."""
    for name, handler in BUILTIN.items():
        hub.register_command(name, handler)
