"""
The Twisted side of the codec: a receiver in the style of
L{twisted.protocols.basic.IntNStringReceiver}, shared by the server session
and the Twisted client.
"""

from __future__ import annotations

from twisted.internet.protocol import Protocol

from hypertcp.protocol.frames import MAX_PAYLOAD, Decoder, Frame, MsgIds, Oversize, encode


class FrameReceiver(Protocol):
    """
    Turns the byte stream into calls to L{frameReceived} and
    L{oversizeReceived}, and sends each frame in a single write so header and
    payload never go out as two segments (with Nagle and delayed ACKs, two
    writes cost a round-trip stall).
    """

    max_payload = MAX_PAYLOAD
    _decoder: Decoder
    _ids: MsgIds

    def connectionMade(self) -> None:
        self._decoder = Decoder(self.max_payload)
        self._ids = MsgIds()
        no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if no_delay is not None:
            no_delay(True)

    def dataReceived(self, data: bytes) -> None:
        self.dispatch(self._decoder.feed(data))

    def dispatch(self, events: list) -> None:
        """Hand each decoded frame on, until the connection is closing."""
        transport = self.transport
        for event in events:
            if transport.disconnecting:
                return
            if type(event) is Frame:
                self.frameReceived(event)
            else:
                self.oversizeReceived(event)

    def frameReceived(self, frame: Frame) -> None:
        raise NotImplementedError

    def oversizeReceived(self, event: Oversize) -> None:
        """A frame over C{max_payload} is being skipped; by default, ignore it."""

    def sendFrame(self, command: int, payload: bytes = b"") -> int:
        """Send a frame with the next msg_id of this connection and return that id."""
        msg_id = self._ids.next()
        self.transport.write(encode(command, msg_id, payload))
        return msg_id
