"""
HyperTCP clients: L{Client}, a blocking one for scripts and web back ends,
and in L{hypertcp.client.txclient} a Twisted one that keeps its connection.

The Twisted names are importable from here too, but only load Twisted when
asked for, so a blocking script never pays for (or installs) a reactor.
"""

from hypertcp.client.blocking import Client
from hypertcp.client.errors import HyperTCPError
from hypertcp.protocol.bodies import Message
from hypertcp.protocol.commands import Status

__all__ = ["Client", "Message", "HyperTCPError", "Status",
           "HyperTCPClientProtocol", "HyperTCPClientFactory", "clientService"]

_TWISTED = ("HyperTCPClientProtocol", "HyperTCPClientFactory", "clientService")


def __getattr__(name: str) -> object:
    if name in _TWISTED:
        from hypertcp.client import txclient
        return getattr(txclient, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
