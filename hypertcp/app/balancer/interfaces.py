"""What the balancer needs of a node it sends devices to, however it learns of the node."""

from __future__ import annotations

from zope.interface import Attribute, Interface


class INode(Interface):
    """
    A node the balancer can send devices to: a C{--backend} it checks
    through an observer connection (L{hypertcp.app.balancer.backends}), or
    a node it knows from the cluster's registry
    (L{hypertcp.app.balancer.registered}).  Picking reads C{available} and
    C{load}; the login is sent to C{host}, C{port} and C{tls}.
    """

    name = Attribute("What operators call it: HOST:PORT for a backend, the node id for a "
                     "registered node.")
    host = Attribute("Where devices are sent.")
    port = Attribute("Where devices are sent.")
    tls = Attribute("Whether that port speaks TLS (the REDIRECT says so).")
    available = Attribute("Up, and drained neither through a balancer nor directly.")
    load = Attribute("Its session count as last reported, plus the devices sent since.")
    assigned = Attribute("Devices sent there in all; the balancer adds one per login.")
    link = Attribute("link(protocol): connect C{protocol} to the node, a Deferred of it: how "
                     "the balancer relays a device that cannot follow a REDIRECT.")

    def drain(host: str, port: int, tls: bool) -> object:
        """
        Send no one new there, and have the node redirect every session it
        holds to C{host}:C{port}: a Deferred of the status of the request.
        """

    def undrain() -> None:
        """Let the node take new devices again."""

    def state() -> dict:
        """What the C{backends} command and the manhole show of it."""
