"""
How every server-side connection ends, whatever it speaks: it watches
whether its peer reads, so what is queued for a peer that stopped is
bounded, and each close has a deadline after which the connection is
aborted.  The node's session and the balancer's are both one of these, as
a WebSocket gateway's would be.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.internet.interfaces import IDelayedCall, IPushProducer
from zope.interface import implementer


@implementer(IPushProducer)
class PacedByPeer:
    """
    A mixin for a protocol registered as its transport's streaming producer
    only so the transport says when the peer stops reading (and when it
    reads again): it then counts what is queued for the peer, against a cap
    the protocol applies, and keeps the callbacks waiting for the peer.
    The TCP, balancer and WebSocket sessions share it.
    """

    _paused = False
    _queued = 0
    _on_drained: Optional[list[Callable[[], None]]] = None

    def pauseProducing(self) -> None:
        # Called on every write while the transport's buffer is full.
        if not self._paused:
            self._paused = True
            self._queued = 0

    def resumeProducing(self) -> None:
        self._paused = False
        self._queued = 0
        if self._on_drained:
            callbacks, self._on_drained = self._on_drained, None
            for callback in callbacks:
                callback()

    def stopProducing(self) -> None:
        pass

    @property
    def paused(self) -> bool:
        """Has the peer stopped reading what it is sent?"""
        return self._paused

    def when_drained(self, callback: Callable[[], None]) -> None:
        """
        Call C{callback} once the peer is reading again (now, if it is), so
        bulk output can be paced by the peer instead of tripping the cap.
        """
        if not self._paused:
            callback()
        elif self._on_drained is None:
            self._on_drained = [callback]
        else:
            # An observer's snapshot and its stored messages may both be waiting.
            self._on_drained.append(callback)

    def queued_past(self, size: int, cap: int) -> bool:
        """Count C{size} bytes about to be queued: do they take a stopped peer past C{cap}?"""
        if not self._paused:
            return False
        self._queued += size
        return self._queued > cap


class BoundedConnection(PacedByPeer):
    """
    A mixin for a protocol whose factory has C{limits} (L{Limits}) and
    C{clock}.  It is its transport's producer only so the transport tells it
    when the peer stops reading: from then on every byte queued for the
    peer is counted, and past C{max_outbound_buffer} the peer is dropped.
    The protocol sets C{peer} and C{log}, calls L{watch} when the
    connection is made and L{stop_timers} when it is lost.
    """

    #: Goes before each log line, saying which listener the connection is on.
    log_prefix = ""
    device_id: Optional[str] = None
    peer = "?"
    closing_reason: Optional[str] = None
    dropped = False  # aborted: the transport drops what it is given, so stop giving
    _quiet = False  # its end is logged elsewhere, once per window
    _close_timer: Optional[IDelayedCall] = None
    _producing = False  # registered as the transport's producer

    def watch(self) -> None:
        """Become the transport's producer, to learn when the peer stops reading."""
        self.transport.registerProducer(self, True)
        self._producing = True

    def unwatch(self) -> None:
        """Stop being the transport's producer (a close, or someone else's turn)."""
        if self._producing:
            self._producing = False
            self.transport.unregisterProducer()

    def over_cap(self, size: int) -> bool:
        """
        Count C{size} bytes about to be queued; if the peer has stopped
        reading and they take it past the cap, drop it and say so.
        """
        cap = self.factory.limits.max_outbound_buffer
        if not self.queued_past(size, cap):
            return False
        self.factory.count("slow_receiver")
        self.abort(f"slow receiver: outbound buffer over {cap} bytes")
        return True

    # -- ending --

    def closing(self, reason: str) -> None:
        """Called once, as the first close begins: a last word to the peer, if any."""

    def leaving(self) -> None:
        """Called as the close begins: stop being anyone's destination, send what is held."""

    def close(self, reason: str) -> None:
        """
        Close after what is queued has been sent, and say why in the log.

        L{closing} and L{leaving} run now, not when the peer has taken the last byte, and
        the close has a deadline: a peer that stops reading, or a TLS
        handshake left half done (TLS holds its close until queued data can
        go out), is aborted when C{close_timeout} passes.
        """
        if self.closing_reason is None:
            self.closing(reason)
            self.closing_reason = reason
            self.log.info("{prefix}{peer} ({device}): closing: {why}", prefix=self.log_prefix,
                          peer=self.peer, device=self.device_id or "not logged in", why=reason)
        self.leaving()
        if self.dropped:
            return
        if self._close_timer is None:
            self._close_timer = self.factory.clock.callLater(
                self.factory.limits.close_timeout, self._close_expired)
        # A TLS transport with a producer registered never starts its close.
        self.unwatch()
        self.transport.loseConnection()

    def _close_expired(self) -> None:
        self.abort(f"close not finished within {self.factory.limits.close_timeout:g} s "
                   f"({self.closing_reason})")

    def abort(self, reason: str, quiet: bool = False) -> None:
        """
        Drop the connection now, discarding what is queued.  C{quiet} leaves
        the log to the caller (admission logs its evictions once per window).
        """
        self.dropped = True
        self.closing_reason = reason
        self._quiet = quiet
        if not quiet:
            self.log.warn("{prefix}{peer} ({device}): dropping: {why}", prefix=self.log_prefix,
                          peer=self.peer, device=self.device_id or "not logged in", why=reason)
        self.transport.abortConnection()

    def stop_timers(self, *timers: Any) -> None:
        """Cancel C{timers} and the close deadline: the connection is gone."""
        for timer in (*timers, self._close_timer):
            if timer is not None and timer.active():
                timer.cancel()
