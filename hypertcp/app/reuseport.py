"""
Listening with SO_REUSEPORT, so several processes on one host share a port
and the kernel spreads new connections over them (C{[server] reuse_port},
which C{--workers} sets for its workers).

Twisted's C{tcp:} endpoints cannot set the option, so this endpoint makes
the socket itself -- SO_REUSEADDR and SO_REUSEPORT, bind, listen with the
configured backlog -- and hands it to the reactor (C{adoptStreamPort}).  It
reads the same C{tcp:PORT:interface=HOST:backlog=N} descriptions as the
plain listeners.
"""

from __future__ import annotations

import socket
from typing import Any, NamedTuple

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IProtocolFactory, IStreamServerEndpoint
from zope.interface import implementer

#: Twisted's own default for tcp: endpoints.
DEFAULT_BACKLOG = 50


class Address(NamedTuple):
    port: int
    interface: str
    backlog: int


def supported() -> bool:
    """Does this platform's socket module have SO_REUSEPORT (Linux, the BSDs, macOS do)?"""
    return getattr(socket, "SO_REUSEPORT", None) is not None


def _fields(description: str) -> list[str]:
    """Split at colons, as Twisted's endpoint descriptions do: a backslash escapes the next character."""
    fields, current, escaped = [], [], False
    for char in description:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            fields.append("".join(current))
            current = []
        else:
            current.append(char)
    fields.append("".join(current))
    return fields


def parse(description: str) -> Address:
    """
    The port, interface and backlog of a C{tcp:} or C{tcp6:} description;
    ValueError, saying why, for any other kind or a bad value.
    """
    kind, *args = _fields(description.strip())
    if kind not in ("tcp", "tcp6"):
        raise ValueError(f"{description!r}: reuse_port works with tcp: listeners only")
    positional, keywords = [], {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep:
            keywords[key] = value
        else:
            positional.append(arg)
    unknown = set(keywords) - {"port", "interface", "backlog"}
    if unknown or len(positional) > 1 or ("port" in keywords and positional):
        raise ValueError(f"{description!r}: expected tcp:PORT[:interface=HOST][:backlog=N]")
    port = positional[0] if positional else keywords.get("port", "")
    backlog = keywords.get("backlog", str(DEFAULT_BACKLOG))
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{description!r}: the port must be a number 0..65535")
    if not backlog.isdigit() or not int(backlog):
        raise ValueError(f"{description!r}: the backlog must be a positive number")
    interface = keywords.get("interface", "::" if kind == "tcp6" else "0.0.0.0")
    return Address(int(port), interface, int(backlog))


@implementer(IStreamServerEndpoint)
class ReusePortEndpoint:
    """A TCP server endpoint whose socket has SO_REUSEPORT set."""

    def __init__(self, reactor: Any, address: Address) -> None:
        self.reactor = reactor
        self.address = address

    def listen(self, factory: IProtocolFactory) -> Deferred:
        port, interface, backlog = self.address
        family = socket.AF_INET6 if ":" in interface else socket.AF_INET
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.bind((interface, port))
                sock.listen(backlog)
                sock.setblocking(False)
                # The reactor takes a duplicate of the descriptor; ours is closed below.
                return succeed(self.reactor.adoptStreamPort(sock.fileno(), family, factory))
            finally:
                sock.close()
        except OSError as e:
            return fail(CannotListenError(interface, port, e))


def endpoint(reactor: Any, description: str) -> ReusePortEndpoint:
    """The SO_REUSEPORT endpoint for C{description}; ValueError if it cannot be one."""
    if not supported():
        raise ValueError("this platform's sockets have no SO_REUSEPORT: run one node per port")
    return ReusePortEndpoint(reactor, parse(description))
