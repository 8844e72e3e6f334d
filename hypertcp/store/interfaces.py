"""What the server needs of a message store, whichever holds the messages."""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IMessageStore(Interface):
    """
    Each device's queue of stored messages, in the order they were accepted.
    Every method returns a Deferred; a store that cannot be reached fails
    it, and the server answers SERVER_EXCEPTION.  Bounds (messages and bytes
    per device) are the store's to keep, so that they hold however many
    nodes write.
    """

    expired = Attribute("Messages this store deleted because they expired, since it started.")
    restarts = Attribute("Times the store's writer was started again after it died (a store "
                         "with no writer process of its own: always 0).")

    def put(device_id: str, sender: str, payload: bytes, queued_at: int,
            expires_at: int) -> object:
        """
        Append a message to C{device_id}'s queue: a Deferred of STORED once
        it is durable as the store promises, or QUOTA_LIMIT when the queue
        is full (messages already expired do not count).
        """

    def put_then(device_id: str, sender: str, payload: bytes, queued_at: int, expires_at: int,
                 then: object, *args: object) -> None:
        """
        L{put}, answered without a Deferred: C{then(result, *args)} once it
        would fire, C{result} being its status or, when it fails, the
        L{Failure}.  The server's path for every stored message.
        """

    def fetch(device_id: str, after: object, limit: int) -> object:
        """
        A Deferred of up to C{limit} L{Stored} messages of C{device_id}
        after the one whose key is C{after} (None: from the first), in
        order.  Fewer than C{limit} means there are no more.  Expired
        messages may be among them; the caller never delivers those.
        """

    def remove(device_id: str, key: object) -> object:
        """A Deferred of whether the message was there: it was delivered, it goes."""

    def queues() -> object:
        """A Deferred of the L{Queue} of every device that has messages, by device id."""

    def messages(device_id: str, limit: int) -> object:
        """A Deferred of the first C{limit} L{Stored} messages of C{device_id}, expired or not."""

    def purge(device_id: str) -> object:
        """Delete every message of C{device_id}: a Deferred of how many."""

    def sweep(now: int) -> object:
        """Delete the messages that expired at or before C{now} (ms): a Deferred of how many."""

    def start() -> None:
        """Begin serving: called once, when the server starts."""

    def close() -> object:
        """Finish what was accepted and let go of the store: a Deferred, or None."""


class IBatchWriter(Interface):
    """
    Where the embedded store's batches run: the one writer of its file
    (L{hypertcp.store.sqlitefile.Writer}), away from the reactor.
    """

    expired = Attribute("Messages the writer deleted because they expired, since it started.")
    restarts = Attribute("Times it was started again after it died.")
    pipelined = Attribute(
        "True if a batch may be handed over before the last one has committed (the writer "
        "then commits whatever waits for it together); False if it takes one at a time.")

    def start() -> None:
        """Begin taking batches."""

    def run(operations: list) -> object:
        """
        A Deferred of the results of C{operations} -- each C{(f, args)}, run
        as C{f(writer, *args)} -- once they have committed, in one
        transaction with nothing else of the caller's in between.
        """

    def stop() -> object:
        """Let go of the file once what was handed over is done: a Deferred."""
