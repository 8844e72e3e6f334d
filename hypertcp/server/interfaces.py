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
    proto = Attribute("The protocol level it announced at login: below 2, no additions "
                      "to the contract are sent to it.")

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


class IRemote(Interface):
    """
    The other nodes of a cluster, as the hub sees them: where a device that
    is not connected here may be, and how what is for it gets there.  A
    single node has none (the hub's C{remote} is None).
    """

    def holds(device_id: str) -> bool:
        """Does another node hold a connection of C{device_id}, as far as this node knows?"""

    def route(sender_id: str, target: str, body: bytes, ack: bool) -> object:
        """
        Deliver a JSON_MESSAGE body to C{target}'s connections on other
        nodes: a Deferred of the status for the sender -- or, for a delivery
        without C{ack}, an object whose C{addCallback(f, *args)} calls
        C{f(status, *args)} once, shared by the deliveries sent together --
        or None when no other node holds C{target}.
        """

    def broadcast(body: bytes) -> None:
        """Deliver a BROADCAST body to every connection on every other node."""

    def presence(event: str, peer: IPeer, body: bytes) -> None:
        """A connection here logged in or left; C{body} is the observers' event."""

    def telemetry(body: bytes) -> None:
        """Pass a telemetry body to the observers on every other node."""

    def peers() -> object:
        """The connections on other nodes, each with C{device_id} and C{peer}, for snapshots."""

    def owner(device_id: str) -> object:
        """Whose id C{device_id} is on other nodes (a TokenRecord.owner), or None."""

    def elsewhere() -> int:
        """How many connections the other nodes hold."""

    def command(device_id: str, op: dict) -> int:
        """Ask the nodes holding C{device_id} to run C{op}; return how many connections it reaches."""

    def stats() -> dict:
        """What the cluster adds to the stats: nodes, devices and sessions elsewhere."""
