"""What the hub needs of a connection, whatever carries it."""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IPeer(Interface):
    """
    A logged-in client as the hub sees it: a TCP session here, a WebSocket
    session, or a test's stand-in.  The hub routes to peers through these
    methods only, so routing policy never depends on the transport.
    """

    device_id = Attribute("The id the peer logged in as.")
    token = Attribute("The L{hypertcp.server.tokens.TokenRecord} it logged in with.")
    peer = Attribute("Its address, HOST:PORT, for logs and presence events.")
    paused = Attribute("True while the peer has stopped reading what it is sent.")

    def deliver(command: int, body: bytes) -> int:
        """Send a server-originated frame; return its msg_id."""

    def deliver_acked(command: int, body: bytes, timeout: float) -> object:
        """
        Send a frame and return a Deferred of the status the peer
        acknowledges it with (TIMEOUT when none comes in C{timeout} seconds).
        """

    def when_drained(callback: object) -> None:
        """Call C{callback} once the peer reads again (now, if it does)."""

    def redirect(host: str, port: int, tls: bool) -> None:
        """Tell the peer to log in at another server, then close."""

    def close(reason: str) -> None:
        """Close after what is queued is sent; C{reason} goes to the log."""
