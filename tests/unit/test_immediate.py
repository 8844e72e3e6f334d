"""
Writes straight to the socket (L{hypertcp.server.immediate}): a session on
Twisted's real TCP transport, whose socket is a stand-in for the kernel's
side that takes all, part or none of each send, or fails.  What the kernel
does not take must wait in Twisted's buffer, in order, and the slow-reader
cap and the producer's pause must hold as before.
"""

from __future__ import annotations

import errno
from typing import Optional

from twisted.internet import main, tcp
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from hypertcp.protocol.commands import Command, Status
from hypertcp.protocol.frames import Decoder
from hypertcp.server.immediate import send_now
from tests.inprocess import Peer, Server


class Socket:
    """
    The kernel's side of one connection: each send takes up to C{room} bytes
    (None: all of them; 0: none, EAGAIN), or raises C{error}.
    """

    def __init__(self) -> None:
        self.sent = bytearray()
        self.sends = 0
        self.room: Optional[int] = None
        self.error: Optional[OSError] = None

    def send(self, data: bytes) -> int:
        self.sends += 1
        if self.error is not None:
            raise self.error
        taken = len(data) if self.room is None else min(self.room, len(data))
        if data and not taken:
            raise BlockingIOError(errno.EAGAIN, "the send buffer is full")
        if self.room is not None:
            self.room -= taken
        self.sent += bytes(data[:taken])
        return taken

    def setblocking(self, flag: bool) -> None:
        pass

    def fileno(self) -> int:
        return 99

    def setsockopt(self, *args: object) -> None:
        pass

    def shutdown(self, how: int) -> None:
        pass

    def close(self) -> None:
        pass


class TCPPeer(Peer):
    """A connection on Twisted's TCP transport: the peer reads what reached the socket."""

    def __init__(self, server: Server, reactor: MemoryReactorClock) -> None:
        addr = IPv4Address("TCP", "192.0.2.30", 4000)
        session = server.factory.buildProtocol(addr)
        self.socket = Socket()
        transport = tcp.Server(self.socket, session, ("192.0.2.30", 4000), None, 1, reactor)
        session.makeConnection(transport)
        super().__init__(server, session, transport)
        self._read_so_far = 0

    def _read(self) -> None:
        data = bytes(self.socket.sent[self._read_so_far:])
        self._read_so_far = len(self.socket.sent)
        self._unread.extend(self._decoder.feed(data))

    def writing(self) -> bool:
        """Has the transport asked the reactor to tell it when it may write?"""
        return self.transport in self.transport.reactor.getWriters()

    def reactor_writes(self) -> Optional[BaseException]:
        """The reactor's turn for a writable socket: Twisted's doWrite."""
        return self.transport.doWrite()


def tcp_online(server: Server, name: str) -> TCPPeer:
    peer = TCPPeer(server, MemoryReactorClock())
    assert peer.login(server.token(name)) == Status.SUCCESS
    peer.frames()
    return peer


def sent_frames(data: bytes) -> list:
    return Decoder().feed(data)


def test_a_frame_reaches_the_socket_in_the_read_that_makes_it(server):
    receiver = tcp_online(server, "receiver")
    sender = server.online("sender")
    msg_id = sender.message("receiver", {"n": 1})
    assert sender.answer(msg_id) == Status.SUCCESS
    [(command, body)] = receiver.delivered()
    assert (command, body) == (Command.JSON_MESSAGE, {"from": "sender", "payload": {"n": 1}})
    assert not receiver.writing(), "no reactor turn asked for: it went out already"
    assert receiver.transport.dataBuffer == b"" and receiver.transport._tempDataLen == 0


def test_what_the_kernel_does_not_take_waits_in_order_in_twisteds_buffer(server):
    receiver = tcp_online(server, "receiver")
    sock = receiver.socket
    before = len(sock.sent)
    sock.room = 3
    server.hub.send("receiver", {"n": 1})
    assert len(sock.sent) == before + 3, "a partial send"
    assert receiver.writing(), "the rest waits for the socket to be writable"
    sends = sock.sends
    server.hub.send("receiver", {"n": 2})
    assert sock.sends == sends, "nothing overtakes what waits"
    sock.room = None
    assert receiver.reactor_writes() is None
    assert [body["payload"] for _, body in receiver.delivered()] == [{"n": 1}, {"n": 2}]
    assert not receiver.writing()
    server.hub.send("receiver", {"n": 3})
    assert [body["payload"] for _, body in receiver.delivered()] == [{"n": 3}], \
        "straight to the socket again once the buffer is empty"
    assert not receiver.writing()


def test_a_full_kernel_buffer_leaves_the_whole_frame_to_twisted(server):
    receiver = tcp_online(server, "receiver")
    receiver.socket.room = 0
    server.hub.send("receiver", {"n": 1})
    server.hub.send("receiver", {"n": 2})
    assert receiver.delivered() == []
    assert receiver.writing()
    receiver.socket.room = None
    receiver.reactor_writes()
    assert [body["payload"] for _, body in receiver.delivered()] == [{"n": 1}, {"n": 2}]


def test_a_broken_connection_is_left_to_twisted_to_end(server, log):
    receiver = tcp_online(server, "receiver")
    receiver.socket.error = ConnectionResetError(errno.ECONNRESET, "reset by peer")
    server.hub.send("receiver", {"n": 1})
    assert receiver.writing(), "the send failed: Twisted's write path has the frame"
    why = receiver.reactor_writes()
    assert why is main.CONNECTION_LOST, "Twisted's doWrite meets the error itself"
    receiver.transport.connectionLost(Failure(why))  # what the reactor does with it
    assert receiver.session not in server.factory.sessions
    assert "receiver" not in server.hub.devices
    assert "(receiver) disconnected" in log


def test_a_peer_that_stops_reading_pauses_the_session_then_is_dropped(tmp_path, log):
    server = Server(tmp_path, max_outbound_buffer=4096)
    sink = tcp_online(server, "sink")
    sender = server.online("sender")
    sink.socket.room = 0  # its kernel buffer is full: nothing more is taken
    body = {"blob": "x" * 900}
    statuses = []
    while not sink.session.paused and len(statuses) < 200:
        statuses.append(sender.answer(sender.message("sink", body)))
    assert sink.session.paused, "Twisted's buffer filled and paused its producer"
    assert len(statuses) > 60, "about 64 KB buffered before the pause"
    while not sink.session.dropped and len(statuses) < 300:
        statuses.append(sender.answer(sender.message("sink", body)))
    assert sink.session.dropped, "then the cap counts what is queued and drops it"
    assert set(statuses) == {Status.SUCCESS}, "the sender is never held up"
    assert server.factory.counters["slow_receiver"] == 1
    assert "dropping: slow receiver: outbound buffer over 4096 bytes" in log
    sends = sink.socket.sends
    sink.socket.room = None
    server.hub.send("sink", {"more": 1})
    assert sink.socket.sends == sends, "nothing is sent to a dropped connection"


def test_a_peer_that_reads_again_is_resumed_and_written_to_directly(server):
    reader = tcp_online(server, "reader")
    reader.socket.room = 0
    for _ in range(80):  # 80 KB: past Twisted's 64 KB buffer
        server.hub.send("reader", {"blob": "x" * 1000})
    assert reader.session.paused
    reader.socket.room = None
    reader.reactor_writes()
    assert not reader.session.paused, "the emptied buffer resumes the producer"
    assert len(reader.delivered()) == 80
    sends = reader.socket.sends
    server.hub.send("reader", {"n": 81})
    assert reader.socket.sends == sends + 1 and not reader.writing()


def test_a_close_sends_what_was_held_before_the_connection_ends(server):
    peer = tcp_online(server, "peer")
    peer.session.deliver(Command.JSON_MESSAGE, b'{"last": 1}')
    peer.session.close("test over")
    assert peer.transport.disconnecting
    assert peer.reactor_writes() is main.CONNECTION_DONE, "closed once the buffer is empty"
    assert [frame.payload for frame in peer.frames()] == [b'{"last": 1}']


def test_send_now_writes_through_twisted_once_the_connection_is_gone():
    reactor = MemoryReactorClock()
    sock = Socket()
    transport = tcp.Server(sock, Protocol(), ("192.0.2.30", 1), None, 1, reactor)
    transport.connected = 0
    send_now(transport, b"late")
    assert sock.sends == 0 and transport.dataBuffer == b"" and not transport._tempDataBuffer
