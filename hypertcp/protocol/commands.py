"""
The numbers on the wire: frame types and RESPONSE statuses, with the words
that explain each status to a person.

Everything that sends or reads a frame names these, so a command number or
a status byte is written here and nowhere else; a test pins the ESP32
library's constants to them.
"""

from __future__ import annotations

import enum
from typing import Union


class Command(enum.IntEnum):
    RESPONSE = 0
    PING = 6
    LOGIN = 29
    JSON_MESSAGE = 30
    REDIRECT = 41
    BROADCAST = 50


class Status(enum.IntEnum):
    SUCCESS = 200
    #: Opt-in (a message sent with "qos": 1): the target is away and the
    #: message waits for it.  A client that never asks for qos never sees it.
    STORED = 202
    QUOTA_LIMIT = 1
    ILLEGAL_COMMAND = 2
    NOT_AUTHENTICATED = 5
    NOT_ALLOWED = 6
    DEVICE_NOT_IN_NETWORK = 7
    INVALID_TOKEN = 9
    ILLEGAL_COMMAND_BODY = 11
    TIMEOUT = 16
    SERVER_EXCEPTION = 19


#: What each status means, in words a person at a command line understands.
MEANING: dict[int, str] = {
    Status.SUCCESS: "done",
    Status.STORED: "the target is offline; the message is stored for it",
    Status.QUOTA_LIMIT: "over the message rate or a quota; the message was dropped",
    Status.ILLEGAL_COMMAND: "the server does not take that command now",
    Status.NOT_AUTHENTICATED: "log in first",
    Status.NOT_ALLOWED: "the token may not do that (use that id, reach that target, run that command)",
    Status.DEVICE_NOT_IN_NETWORK: "the target is not connected",
    Status.INVALID_TOKEN: "the token is unknown or revoked",
    Status.ILLEGAL_COMMAND_BODY: "the payload is too large, not JSON, or missing fields",
    Status.TIMEOUT: "no acknowledgement in time",
    Status.SERVER_EXCEPTION: "the server failed internally",
}


def status(code: int) -> Union[Status, int]:
    """A status code as a L{Status} when it is one we know, so it prints by name."""
    try:
        return Status(code)
    except ValueError:
        return code


def status_name(code: int) -> str:
    known = status(code)
    return known.name if isinstance(known, Status) else f"status {code}"


def describe(code: int) -> str:
    """C{NAME (code): meaning}, for error messages."""
    meaning = MEANING.get(code)
    return f"{status_name(code)} ({int(code)})" + (f": {meaning}" if meaning else "")
