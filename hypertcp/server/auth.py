"""Who a LOGIN is: the token it presents and the device id it may use."""

from __future__ import annotations

from typing import Optional

from hypertcp.protocol.bodies import MAX_DEVICE_ID, RESERVED_IDS, Login
from hypertcp.protocol.commands import Status
from hypertcp.server.tokens import TokenRecord, TokenStore


class LoginRefused(Exception):
    """A LOGIN that earns no session; C{status} is the answer's byte."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


def identify(tokens: TokenStore, record: TokenRecord, wanted: Optional[str]) -> Optional[str]:
    """
    The device id a login with C{record} may use: the one it asks for or its
    token binds; None for "assign one".  Raises L{LoginRefused}.
    """
    device_id = wanted or record.device_id
    if device_id is not None and (device_id in RESERVED_IDS or len(device_id) > MAX_DEVICE_ID
                                  or not tokens.allows(record, device_id)):
        raise LoginRefused(Status.NOT_ALLOWED,
                           f"token {record.name} may not log in as {device_id!r}")
    return device_id


def authenticate(tokens: TokenStore, login: Login) -> tuple[TokenRecord, Optional[str]]:
    """The live token record a token LOGIN presents, and its device id; L{LoginRefused}."""
    record = tokens.lookup(login.token) if login.token is not None else None
    if record is None:
        raise LoginRefused(Status.INVALID_TOKEN, "login with an unknown or revoked token")
    return record, identify(tokens, record, login.device_id)
