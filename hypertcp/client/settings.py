"""What a blocking and an asyncio client are told: one set of options, one meaning."""

from __future__ import annotations

import ssl
from typing import Any, Callable, Optional


class ClientSettings:
    """
    The options both the blocking L{Client} and the L{AsyncClient} take, so
    the two keep the same API shape: where the server is, how to log in,
    how to verify TLS, and how the client behaves when refused or dropped.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, token: Optional[str] = None,
                 device_id: Optional[str] = None, timeout: float = 10.0,
                 ssl_context: Optional[ssl.SSLContext] = None,
                 server_hostname: Optional[str] = None, heartbeat: float = 30.0,
                 tls: Optional[bool] = None, *, raise_on_error: bool = False,
                 reasons: bool = True, reconnect: bool = False,
                 on_reconnect: Optional[Callable[[Any], object]] = None,
                 challenge: bool = False) -> None:
        if not token:
            raise ValueError("a HyperTCP client needs a token")
        self.host = host
        self.port = port
        self.token = token
        #: The id this client is logged in as, when it chose one (otherwise
        #: the server derives it from the token or the address).
        self.device_id = device_id
        self.timeout = timeout
        #: How to verify servers (a CA, client certificates); whether to use
        #: TLS at all is L{tls}, which each REDIRECT's "tls" flag sets, so a
        #: plain balancer can send the client on to a TLS node and back.
        self.ssl_context = ssl_context
        self.tls = ssl_context is not None if tls is None else tls
        self.server_hostname = server_hostname
        #: Seconds of our silence after which a waiting call sends a PING, so
        #: the server's idle timeout never closes a client that is listening.
        self.heartbeat = heartbeat
        self.raise_on_error = raise_on_error
        self.reasons = reasons
        self.reconnect = reconnect
        #: Called with the client after each reconnection.
        self.on_reconnect = on_reconnect
        #: Log in by challenge and response: the token never crosses the wire,
        #: which matters most on plain TCP.
        self.challenge = challenge
        #: What the server said about the last refusal, if it said.
        self.last_reason: Optional[str] = None
        #: What the server said about closing the connection, if it said.
        self.closing_reason: Optional[str] = None
