"""What every session on one server shares: limits, tokens, hub, counters."""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger

from hypertcp.protocol.bodies import Login
from hypertcp.protocol.commands import Status
from hypertcp.server.admission import Admission
from hypertcp.server.auth import LoginRefused, authenticate
from hypertcp.server.batch import WriteBatch
from hypertcp.server.budget import BroadcastBudget
from hypertcp.server.deadlines import Deadlines
from hypertcp.server.hub import Hub
from hypertcp.server.limits import Limits
from hypertcp.server.session import Session
from hypertcp.server.tokens import TokenRecord, TokenStore


class HyperTCPFactory(ServerFactory):
    """
    Builds a L{Session} for each connection and holds what they share: the
    L{Limits}, the L{TokenStore}, the L{Hub}, the L{WriteBatch}, the
    L{Deadlines} and the counters of what was refused and dropped.
    """

    protocol = Session
    noisy = False
    log = Logger()

    def __init__(self, limits: Limits, tokens: TokenStore, hub: Hub, clock: Any = None, *,
                 require_challenge: bool = False, bind_certificates: bool = False) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.limits = limits
        #: [auth] require_challenge: token logins are refused, challenge logins taken.
        self.require_challenge = require_challenge
        #: [tls] bind_certificate_to_id: a TLS login's certificate must name its id.
        self.bind_certificates = bind_certificates
        self.tokens = tokens
        self.hub = hub
        self.clock = clock
        self.batch = WriteBatch()
        #: Every session's login deadline and idle checks, under one timer.
        self.deadlines = Deadlines(clock)
        self.sessions: set[Session] = set()
        self.counters: dict[str, int] = {}
        #: Which connections may open: the cap, and those not logged in yet.
        self.admission = Admission(self, clock, self.count)
        hub.broadcast_budget = BroadcastBudget(limits.broadcast_rate,
                                               limits.broadcast_rate_total, clock)
        # Frames received on, and sent to, connections since closed: with the
        # live ones' figures, totals (the manhole's rates, the metrics).
        self.closed_messages_in = self.closed_messages_out = 0
        #: Frames received from clients (acknowledgements too), and frames the
        #: server sent on its own (answers aside), by command byte: a list, so
        #: counting one on the message path is an index increment.
        self.received_by_command = [0] * 256
        self.sent_by_command = [0] * 256

    def count(self, what: str) -> None:
        self.counters[what] = self.counters.get(what, 0) + 1

    def buildProtocol(self, addr: Any) -> Optional[Session]:
        # Returning None makes Twisted close the connection at once.
        if not self.admission.admit(addr, len(self.sessions)):
            return None
        return super().buildProtocol(addr)

    def connection_opened(self, session: Session) -> None:
        self.sessions.add(session)
        self.admission.opened(session)
        self.count("connections")

    def logged_in(self, session: Session) -> None:
        """C{session} has logged in: it joins the hub and no longer counts as pending."""
        self.admission.logged_in(session)
        self.hub.attach(session)

    def connection_closed(self, session: Session) -> None:
        self.sessions.discard(session)
        self.admission.closed(session)
        self.closed_messages_in += session.messages_in
        self.closed_messages_out += session.messages_out
        if session.device_id is not None:
            self.hub.detach(session)

    def authenticate(self, login: Login) -> tuple[TokenRecord, Optional[str]]:
        """
        The token record a LOGIN presents and the device id it may use (None:
        assign one).  Raises L{LoginRefused}.
        """
        try:
            return authenticate(self.tokens, login)
        except LoginRefused as e:
            if e.status != Status.INVALID_TOKEN:
                raise
        # Perhaps the token was added a moment ago: a stat() is cheap.
        self.reload_tokens()
        return authenticate(self.tokens, login)

    def set_limits(self, limits: Limits) -> None:
        """
        Limits from a reloaded config: connections opened from now on get
        them; live ones keep those they copied when they opened.
        """
        self.limits = limits
        self.hub.ack_timeout = limits.ack_timeout
        budget = self.hub.broadcast_budget
        if budget is None or (budget.per_token, budget.total) != (limits.broadcast_rate,
                                                                  limits.broadcast_rate_total):
            self.hub.broadcast_budget = BroadcastBudget(limits.broadcast_rate,
                                                        limits.broadcast_rate_total, self.clock)

    def reload_tokens(self, force: bool = False) -> bool:
        """
        Pick up token file changes (C{force}: read it whether or not it
        looks changed) and close the sessions of revoked tokens.  False if
        the file is unreadable and the old tokens stay.
        """
        try:
            changed = self.tokens.reload(force)
        except (OSError, ValueError, TypeError) as e:
            self.log.error("token file {path} unreadable, keeping the old tokens: {e}",
                           path=self.tokens.path, e=e)
            return False
        if not changed:
            return True
        self.log.info("token file {path} reloaded", path=self.tokens.path)
        self.tokens_changed()

    def tokens_changed(self) -> None:
        """
        The tokens changed: close the sessions of revoked tokens, and make
        the others follow their token's new record.
        """
        # Live sessions follow their token's record: an edit that narrows
        # what it may do applies now, not at the device's next login.
        for session in list(self.sessions):
            if session.token is None:
                continue
            fresh = self.tokens.live(session.token.hash)
            if fresh is None:
                session.close(f"token {session.token.name} revoked")
            elif (fresh.role != session.token.role
                  or not self.tokens.allows(fresh, session.device_id)):
                session.close(f"token {fresh.name} changed: log in again")
            else:
                session.token = fresh
        return True
