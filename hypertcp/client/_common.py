"""
What the blocking and the Twisted client share: the message type, the error,
and the JSON bodies of the frames a client sends and receives.  No I/O.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Union


from hypertcp import jsoncodec
from hypertcp.wire import MAX_PAYLOAD, Command, Frame, Status


class Message(NamedTuple):
    """
    A message delivered to this client: a JSON_MESSAGE or a BROADCAST.

    C{sender} is the authenticated id of whoever sent it ("server" for the
    server itself); C{payload} is the JSON object they sent; C{raw} is the
    frame's payload as it arrived.
    """

    command: Command
    msg_id: int
    sender: Optional[str]
    payload: Any
    raw: bytes


class HyperTCPError(Exception):
    """The server answered with a status other than SUCCESS."""

    def __init__(self, status: int, message: str = "") -> None:
        self.status = status
        described = f"{status_name(status)} ({int(status)})"
        super().__init__(f"{message}: {described}" if message else described)


def status(code: int) -> Union[Status, int]:
    """A status code as a L{Status} when it is one we know, so it prints by name."""
    try:
        return Status(code)
    except ValueError:
        return code


def status_name(code: int) -> str:
    known = status(code)
    return known.name if isinstance(known, Status) else f"status {code}"


def _dumps(value: Any) -> bytes:
    body = jsoncodec.dumps(value)
    if len(body) > MAX_PAYLOAD:
        raise ValueError(f"message is {len(body)} bytes; a frame carries at most {MAX_PAYLOAD}")
    return body


def _object(payload: Any) -> dict:
    # The server refuses anything else with ILLEGAL_COMMAND_BODY; say so here, clearly.
    if not isinstance(payload, dict):
        raise TypeError(f"a payload must be a JSON object (a dict), not {type(payload).__name__}")
    return payload


def login_body(token: str, device_id: Optional[str] = None) -> bytes:
    """The original Python client's JSON LOGIN; the device id only when chosen."""
    body = {"token": token}
    if device_id is not None:
        body["device_id"] = device_id
    return _dumps(body)


def message_body(target: str, payload: dict, ack: bool = False) -> bytes:
    body: dict[str, Any] = {"targetId": target, "payload": _object(payload)}
    if ack:
        body["ack"] = True
    return _dumps(body)


def broadcast_body(payload: dict) -> bytes:
    return _dumps({"payload": _object(payload)})


def parse_delivery(frame: Frame) -> Message:
    """
    A delivered JSON_MESSAGE or BROADCAST as a L{Message}.  A body that is not
    the expected object still becomes a message (with no sender), so nothing
    a server sends is silently lost.
    """
    try:
        body = jsoncodec.loads(frame.payload)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {}
    return Message(Command(frame.command), frame.msg_id, body.get("from"),
                   body.get("payload"), frame.payload)


def parse_redirect(payload: bytes) -> tuple[str, int, bool]:
    """The (host, port, tls) a REDIRECT names; ValueError if it names none."""
    try:
        body = jsoncodec.loads(payload)
        host, port = body["server"], body["port"]
    except (ValueError, TypeError, KeyError):
        raise ValueError(f"malformed REDIRECT {payload!r}") from None
    if not isinstance(host, str) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"malformed REDIRECT {payload!r}")
    return host, port, bool(body.get("tls"))
