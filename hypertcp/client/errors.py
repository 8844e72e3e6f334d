"""What the clients raise when the server says no."""

from __future__ import annotations

from hypertcp.protocol.commands import describe


class HyperTCPError(Exception):
    """The server answered with a status other than SUCCESS."""

    def __init__(self, status: int, message: str = "") -> None:
        self.status = status
        described = describe(status)
        super().__init__(f"{message}: {described}" if message else described)
