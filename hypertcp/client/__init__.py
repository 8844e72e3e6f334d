"""
HyperTCP clients: L{Client}, a blocking one for scripts and web back ends;
L{AsyncClient}, the same in coroutines for asyncio programs; and in
L{hypertcp.client.txclient} a Twisted one that keeps its connection.

The asyncio and Twisted names are importable from here too, but load only
when asked for, so a blocking script never pays for (or installs) either.
"""

from hypertcp.client.blocking import Client
from hypertcp.client.errors import HyperTCPError
from hypertcp.protocol.bodies import Message
from hypertcp.protocol.commands import Status

__all__ = ["Client", "AsyncClient", "Message", "HyperTCPError", "Status",
           "HyperTCPClientProtocol", "HyperTCPClientFactory", "clientService"]

_TWISTED = ("HyperTCPClientProtocol", "HyperTCPClientFactory", "clientService")


def __getattr__(name: str) -> object:
    if name == "AsyncClient":
        from hypertcp.client.aioclient import AsyncClient
        return AsyncClient
    if name in _TWISTED:
        from hypertcp.client import txclient
        return getattr(txclient, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
