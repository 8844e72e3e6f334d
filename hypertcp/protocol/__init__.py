"""
The HyperTCP protocol, with no I/O: the frame codec (L{frames}), the
numbers on the wire (L{commands}), the JSON bodies of every frame
(L{bodies}), the server's per-connection rules (L{server}), a client's
connection state (L{client}), the challenge login (L{challenge}) and the
JSON backend (L{jsoncodec}).  Nothing here imports Twisted or touches a
socket: the server, the balancer, the clients and the benchmark all drive
these modules, so the wire format and its rules are written once.

docs/protocol.rst describes the protocol; the shared PROTOCOL.md is the
contract it keeps.
"""

from importlib import import_module
from typing import Any

#: What the package offers, and the module each comes from.  They are
#: imported when first asked for, so that a process that needs only the
#: numbers on the wire (the store's writer) does without the JSON backend.
_FROM = {"BadBody": "bodies", "Message": "bodies",
         "Command": "commands", "Status": "commands", "describe": "commands",
         "status_name": "commands",
         "Decoder": "frames", "Frame": "frames", "Oversize": "frames", "encode": "frames",
         "response": "frames"}

__all__ = sorted(_FROM)


def __getattr__(name: str) -> Any:
    module = _FROM.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{module}"), name)
