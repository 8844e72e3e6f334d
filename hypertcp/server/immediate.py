"""
Writes that reach the socket at once when nothing is queued ahead of them.

Twisted's TCP transport only buffers a write: the bytes go out on a later
reactor turn, after an C{epoll_ctl} asking for writability, one more
C{epoll_wait} and C{doWrite}, and another C{epoll_ctl} once the buffer is
empty.  For a broker that answers a read with a small frame or two, that
doubles the reactor's work per message and adds a turn to its latency.
asyncio's transports try C{send()} first and buffer only what the kernel
did not take; L{send_now} does the same for Twisted's, and hands the rest
of a partial send, and every error, to Twisted's own buffered path, so
ordering, backpressure (the producer is paused when the buffer fills) and
the handling of a broken connection stay Twisted's.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

from twisted.internet.tcp import Server


def send_now(transport: Server, data: bytes) -> None:
    """
    Write C{data} to C{transport}: straight to its socket if nothing is
    queued there, whatever the kernel did not take through Twisted's buffer.
    """
    # dataBuffer and _tempDataLen are what FileDescriptor.doWrite has still
    # to send; both empty means a send now cannot overtake anything.
    if transport.connected and not (transport.dataBuffer or transport._tempDataLen):
        try:
            sent = transport.socket.send(data)
        except OSError:
            # EAGAIN (the kernel's buffer is full) or a broken connection:
            # Twisted's doWrite meets the same and handles it its own way.
            sent = 0
        if sent == len(data):
            return
        if sent:
            data = data[sent:]
    transport.write(data)


def writer(transport: Any) -> Callable[[bytes], None]:
    """
    How to write to C{transport}, chosen once per connection: L{send_now}
    for Twisted's server-side TCP connection, the only one it knows; the
    transport's own C{write} for the others (TLS, the tests' StringTransport).
    """
    if type(transport) is Server:
        return partial(send_now, transport)
    return transport.write
