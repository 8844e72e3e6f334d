"""
HyperTCP over WebSocket: the JSON a browser and the gateway exchange, one
object per text frame, built and parsed in one place (docs/protocol.rst,
"WebSocket").

A client sends actions, C{{"action": A, "id": N, ...}}; each A stands for
the frame a TCP client would send, so the server's rules for a connection
(L{hypertcp.protocol.server}) hold unchanged.  Every action that carries an
C{"id"}, but C{"ack"}, is answered with one C{{"type": "status", "id": N,
...}}.  The server sends deliveries (C{"message"}, C{"broadcast"},
C{"redirect"}) each with a C{"ref"} the client acknowledges, and
C{{"type": "error", ...}} for input it could not tie to an id.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

from hypertcp.protocol.commands import MEANING, Command, status_name
from hypertcp.protocol.jsoncodec import dumps, loads

#: Each action and the command it stands for.
ACTIONS: dict[str, int] = {
    "login": Command.LOGIN, "send": Command.JSON_MESSAGE, "broadcast": Command.BROADCAST,
    "ping": Command.PING, "ack": Command.RESPONSE,
}
#: The action each command is sent as, for messages that name it.
NAMES: dict[int, str] = {command: name for name, command in ACTIONS.items()}
#: The largest id a JavaScript number holds exactly.
MAX_ID = 2 ** 53 - 1
_ILLEGAL_COMMAND, _ILLEGAL_COMMAND_BODY = 2, 11
_new = tuple.__new__


class Action(NamedTuple):
    """An action from a client: the command it stands for, its id (if any), and the object."""

    command: int
    id: Optional[int]
    body: dict


class BadAction(ValueError):
    """Text that is no action; C{status} and the message say why, C{id} where one was read."""

    def __init__(self, status: int, why: str, msg_id: Optional[int] = None) -> None:
        super().__init__(why)
        self.status = status
        self.id = msg_id


def parse_action(text: bytes) -> Action:
    """The action a text frame holds; L{BadAction} naming what is wrong with it."""
    try:
        body = loads(text)
    except ValueError:
        raise BadAction(_ILLEGAL_COMMAND_BODY, "text is not JSON") from None
    if type(body) is not dict:
        raise BadAction(_ILLEGAL_COMMAND_BODY, "text is not a JSON object")
    msg_id = body.get("id")
    if msg_id is not None and (type(msg_id) is not int or not 0 <= msg_id <= MAX_ID):
        raise BadAction(_ILLEGAL_COMMAND_BODY, '"id" must be a whole number from 0')
    name = body.get("action")
    command = ACTIONS.get(name) if type(name) is str else None
    if command is None:
        why = (f"unknown action {name!r}; known: {', '.join(ACTIONS)}" if name is not None
               else 'missing "action"')
        raise BadAction(_ILLEGAL_COMMAND, why, msg_id)
    return _new(Action, (command, msg_id, body))  # a NamedTuple's own __new__ costs more


def status_body(msg_id: Optional[int], status: int, reason: Optional[str] = None,
                **extra: Any) -> bytes:
    """The answer to action C{msg_id}: its status by number and name, and why in words."""
    return dumps({"type": "status", "id": msg_id, "status": status, "name": status_name(status),
                  "reason": reason or MEANING.get(status, ""), **extra})


_SUCCESS = b'{"type":"status","id":%d,"status":200,"name":"SUCCESS","reason":"done"}'
# Unmasked, unfragmented text frames of it, by the id's digits: under 126
# bytes, so the second header byte is the length.
_SUCCESS_FRAMES = [b"\x81%c" % len(_SUCCESS % (10 ** (digits - 1))) + _SUCCESS
                   for digits in range(1, 17)]


def success_body(msg_id: int) -> bytes:
    """C{status_body(msg_id, SUCCESS)}, for the answer sent most, without the encoder."""
    return _SUCCESS % msg_id


def success_frame(msg_id: int) -> bytes:
    """The WebSocket text frame of L{success_body}: the answer sent most, in one operation."""
    return _SUCCESS_FRAMES[len(str(msg_id)) - 1] % msg_id


def challenge_body(msg_id: Optional[int], nonce: str) -> bytes:
    """
    The answer to a login asking for a challenge: the nonce to prove the
    token with (L{hypertcp.protocol.challenge}), in the next login.
    """
    return dumps({"type": "challenge", "id": msg_id, "nonce": nonce})


def error_body(status: int, why: str) -> bytes:
    """Input the server could not tie to an action id; the connection lives on."""
    return dumps({"type": "error", "status": status, "name": status_name(status), "error": why})


_DELIVERIES = {
    Command.JSON_MESSAGE: b'{"type":"message","ref":%d,',
    Command.BROADCAST: b'{"type":"broadcast","ref":%d,',
    Command.REDIRECT: b'{"type":"redirect","ref":%d,',
}


def delivery(command: int, body: bytes, ref: int) -> bytes:
    """
    A frame the hub delivers, as the browser gets it: the hub's body (a
    non-empty JSON object, C{{"from", "payload"}} or a REDIRECT's) with the
    type and C{ref} put in front, without parsing it again.  KeyError for a
    command that carries no such body.
    """
    return _DELIVERIES[command] % ref + body[1:]
