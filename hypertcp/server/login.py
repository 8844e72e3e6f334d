"""
One connection's way through LOGIN, whatever carries it (the TCP session,
the balancer's, the WebSocket's): a token login, or a challenge and the
proof that answers it (L{hypertcp.protocol.challenge}), then the checks
every login passes -- the token's rules for the id, and, where the
deployment binds them, the client certificate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, Optional, Union

from hypertcp.protocol.bodies import Login
from hypertcp.protocol.challenge import new_nonce, verify
from hypertcp.protocol.commands import Status
from hypertcp.server.auth import LoginRefused, identify
from hypertcp.server.certificates import peer_names
from hypertcp.server.tokens import TokenRecord

if TYPE_CHECKING:
    from hypertcp.server.factory import HyperTCPFactory


class Challenge(NamedTuple):
    """Answer the LOGIN with a LOGIN frame carrying this nonce (same msg_id)."""

    nonce: str


class Accepted(NamedTuple):
    """The login succeeded: the token, and the id it asked for (None: assign one)."""

    record: TokenRecord
    device_id: Optional[str]


class LoginGate:
    """
    The LOGIN state of one connection until it has logged in: the nonce of
    the challenge it was sent, if any.  A nonce is good for one answer, right
    or wrong; asking again replaces it.
    """

    __slots__ = ("factory", "_nonce")

    def __init__(self, factory: "HyperTCPFactory") -> None:
        self.factory = factory
        self._nonce: Optional[str] = None

    def login(self, login: Login, transport: Any = None) -> Union[Challenge, Accepted]:
        """
        What to answer C{login}, on a connection carried by C{transport}.
        Raises L{LoginRefused}; INVALID_TOKEN means close.
        """
        factory = self.factory
        if login.challenge:
            self._nonce = new_nonce()
            return Challenge(self._nonce)
        if login.proof is not None:
            nonce, self._nonce = self._nonce, None
            record = self._proven(login, nonce)
            device_id = identify(factory.tokens, record, login.device_id)
        elif factory.require_challenge:
            raise LoginRefused(Status.NOT_ALLOWED, "token logins are refused here "
                               "([auth] require_challenge): log in by challenge")
        else:
            record, device_id = factory.authenticate(login)
        if factory.bind_certificates:
            _bound(transport, device_id)
        return Accepted(record, device_id)

    def _proven(self, login: Login, nonce: Optional[str]) -> TokenRecord:
        """The live token whose key the answer names, if the answer proves it."""
        if nonce is None:
            raise LoginRefused(Status.INVALID_TOKEN, "a challenge answer with no challenge sent")
        tokens = self.factory.tokens
        record = tokens.by_key(login.key or "")
        if record is None:
            self.factory.reload_tokens()  # perhaps added a moment ago
            record = tokens.by_key(login.key or "")
        if record is None:
            raise LoginRefused(Status.INVALID_TOKEN, "challenge answer for an unknown or "
                                                     "revoked token")
        if record.stored_key is None:
            raise LoginRefused(Status.INVALID_TOKEN, f"token {record.name} predates challenge "
                                                     "logins: issue a new one")
        if not verify(record.stored_key, nonce, login.device_id, login.proof or ""):
            raise LoginRefused(Status.INVALID_TOKEN, f"wrong challenge answer for token "
                                                     f"{record.name}")
        return record


def _bound(transport: Any, device_id: Optional[str]) -> None:
    """With [tls] bind_certificate_to_id: the client certificate must name the id."""
    names = peer_names(transport)
    if names is None:
        return  # a plain listener: nothing to bind (the docs say to close them)
    if device_id is None:
        raise LoginRefused(Status.NOT_ALLOWED, "a login over a bound TLS listener must name "
                                               "its device id")
    if device_id not in names:
        shown = ", ".join(sorted(names)) or "no certificate"
        raise LoginRefused(Status.NOT_ALLOWED, f"the client certificate ({shown}) does not "
                                               f"name {device_id!r}")
