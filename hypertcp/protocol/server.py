"""
The server's rules for one connection, whatever carries it: which frames
it serves before and after login, and what each bad input is answered
with.  The TCP session, the balancer and the WebSocket gateway all ask
here, so the rules exist once.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Union

from hypertcp.protocol.bodies import PROTOCOL_LEVEL
from hypertcp.protocol.commands import Command, Status
from hypertcp.protocol.frames import HEADER, Oversize, response


class Refusal(NamedTuple):
    """Answer the frame with C{status}; C{why} is for the log."""

    status: int
    why: str


#: What a frame asks of the server (the session maps each to a handler).
ACK, PING, LOGIN, MESSAGE = "ack", "ping", "login", "message"

BEFORE_LOGIN: dict[int, Union[str, Refusal]] = {
    Command.RESPONSE: ACK, Command.PING: PING, Command.LOGIN: LOGIN,
}
AFTER_LOGIN: dict[int, Union[str, Refusal]] = {
    Command.RESPONSE: ACK, Command.PING: PING,
    Command.JSON_MESSAGE: MESSAGE, Command.BROADCAST: MESSAGE,
    Command.LOGIN: Refusal(Status.ILLEGAL_COMMAND, "LOGIN on a logged-in connection"),
}


def action(command: int, logged_in: bool) -> Union[str, Refusal]:
    """What to do with a frame of type C{command}, or why it is refused."""
    found = (AFTER_LOGIN if logged_in else BEFORE_LOGIN).get(command)
    if found is not None:
        return found
    if logged_in:
        return Refusal(Status.ILLEGAL_COMMAND, f"unknown command {command}")
    return Refusal(Status.NOT_AUTHENTICATED, f"command {command} before login")


def oversize(event: Oversize, limit: int) -> Optional[Refusal]:
    """A frame over the payload limit is refused, unless it is a RESPONSE (never answered)."""
    if event.command == Command.RESPONSE:
        return None
    return Refusal(Status.ILLEGAL_COMMAND_BODY,
                   f"payload of {event.length:,} bytes over the {limit:,}-byte limit")


def answer(msg_id: int, status: int, proto: int) -> bytes:
    """
    The RESPONSE to a frame after login.  A connection below protocol level
    2 -- the original sketch above all -- reads a RESPONSE's header and
    never its payload, so it gets the empty RESPONSE the original server
    always sent, whatever the status; the server logs the real one.
    """
    if proto < PROTOCOL_LEVEL:
        return HEADER.pack(Command.RESPONSE, msg_id, 0)
    return response(msg_id, status)
