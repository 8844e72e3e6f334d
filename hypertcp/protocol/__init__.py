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

from hypertcp.protocol.bodies import BadBody, Message
from hypertcp.protocol.commands import Command, Status, describe, status_name
from hypertcp.protocol.frames import Decoder, Frame, Oversize, encode, response

__all__ = ["BadBody", "Command", "Decoder", "Frame", "Message", "Oversize", "Status",
           "describe", "encode", "response", "status_name"]
