"""
The server commands built in: what a client gets for a message to
C{"server"} whose payload is C{{"command": NAME, ...}}.  Plug-ins add more
through L{Hub.register_command} (the C{[server] handlers} hook).

The admin commands (redirect, kick, drain, undrain, stats) each need their
grant on the sender's token (C{hypertcp token add --grant}), act only on
devices within its prefix and reach, and send sessions only to the
C{[server] redirect_targets}, when those are set.
"""

from __future__ import annotations

from typing import Iterable, Optional

from hypertcp.protocol.commands import Status
from hypertcp.server.hub import CommandError, Handler, Hub
from hypertcp.server.interfaces import IPeer


def require_grant(sender: IPeer, grant: str, name: str) -> None:
    """Refuse C{name} unless the sender's token was granted C{grant}."""
    if grant not in sender.token.grants:
        raise CommandError(Status.NOT_ALLOWED, f"{name} needs a token granted {grant!r}")


def _bounded(sender: IPeer, device: Optional[str], name: str) -> None:
    """The token's prefix and reach bound the devices its grants act on (None: every one)."""
    token = sender.token
    if device is None:
        if not token.unbounded:
            raise CommandError(Status.NOT_ALLOWED, f"{name} of every session needs a token "
                                                   "with no prefix and reach *")
    elif not token.may_manage(device):
        raise CommandError(Status.NOT_ALLOWED,
                           f"{device!r} is outside the token's prefix or reach")


def _address(hub: Hub, payload: dict, name: str) -> tuple[str, int, bool]:
    host, port = payload.get("server"), payload.get("port")
    if not isinstance(host, str) or type(port) is not int or not 0 < port < 65536:
        raise CommandError(Status.ILLEGAL_COMMAND_BODY, f"{name} needs server and port")
    if hub.redirect_targets and (host, port) not in hub.redirect_targets:
        raise CommandError(Status.NOT_ALLOWED,
                           f"{host}:{port} is not one of [server] redirect_targets")
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
    require_grant(sender, "redirect", "redirect")
    device = _device(payload, "redirect", required=False)
    _bounded(sender, device, "redirect")
    host, port, tls = _address(hub, payload, "redirect")
    count = hub.redirect(device, host, port, tls)
    if device is not None and not count:
        raise CommandError(Status.DEVICE_NOT_IN_NETWORK, f"{device} is not connected")
    return {"command": "redirected", "sessions": count}


def kick(hub: Hub, sender: IPeer, payload: dict) -> dict:
    require_grant(sender, "kick", "kick")
    device = _device(payload, "kick")
    _bounded(sender, device, "kick")
    count = hub.kick(device)
    if not count:
        raise CommandError(Status.DEVICE_NOT_IN_NETWORK, f"{device} is not connected")
    return {"command": "kicked", "sessions": count}


def stats(hub: Hub, sender: IPeer, payload: dict) -> dict:
    require_grant(sender, "stats", "stats")
    return {"command": "stats", **hub.stats()}


def drain(hub: Hub, sender: IPeer, payload: dict) -> dict:
    require_grant(sender, "drain", "drain")
    _bounded(sender, None, "drain")
    host, port, tls = _address(hub, payload, "drain")
    return {"command": "drained", "sessions": hub.drain(host, port, tls, keep=sender)}


def undrain(hub: Hub, sender: IPeer, payload: dict) -> dict:
    require_grant(sender, "drain", "undrain")
    _bounded(sender, None, "undrain")
    hub.draining = None
    return {"command": "undrained"}


BUILTIN: dict[str, Handler] = {
    "ping": ping, "whoami": whoami, "redirect": redirect, "kick": kick,
    "stats": stats, "drain": drain, "undrain": undrain}


def install(hub: Hub, redirect_targets: Iterable[tuple[str, int]] = ()) -> None:
    """
    Register the built-in commands on C{hub}; C{redirect_targets}, if any,
    are the only (host, port) pairs redirect and drain may send sessions to.
    """
    hub.redirect_targets = frozenset(redirect_targets)
    for name, handler in BUILTIN.items():
        hub.register_command(name, handler)
