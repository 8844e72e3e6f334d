"""What the clients raise when the server says no."""

from __future__ import annotations

from typing import Optional

from hypertcp.protocol.commands import Status, describe, status_name

#: Answers that are not refusals: done, or stored for an offline target.
ACCEPTED = frozenset((Status.SUCCESS, Status.STORED))


class HyperTCPError(Exception):
    """
    The server answered with a status other than SUCCESS.  C{reason} is what
    the server said about it, when the client asked for reasons and the
    server gave one.
    """

    def __init__(self, status: int, message: str = "", reason: Optional[str] = None) -> None:
        self.status = status
        self.reason = reason
        if reason:
            described = f"{reason} ({status_name(status)}, {int(status)})"
        else:
            described = describe(status)
        super().__init__(f"{message}: {described}" if message else described)
