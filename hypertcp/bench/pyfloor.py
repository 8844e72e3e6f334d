"""
The contract's floor in Python: C{floor.c}'s server on Python's own
C{epoll}, with the project's JSON codec and no framework.  Beside the C
floor, what it costs over it is the interpreter's price for the least a
Python server must do per message -- read, parse, route, write -- before
any framework, rule or limit; C{hypertcp bench --peer pyfloor} runs it.

Like the C floor it checks no token and keeps no limits: a benchmark's
yardstick, not a server.  Run as C{python -m hypertcp.bench.pyfloor PORT}
(0: any free port); it prints C{pyfloor listening on 127.0.0.1:PORT}.
"""

from __future__ import annotations

import select
import socket
import sys

from hypertcp.protocol.commands import Command, Status
from hypertcp.protocol.frames import HEADER, HEADER_SIZE, encode, response
from hypertcp.protocol.jsoncodec import dumps, loads

# Plain ints: compared once or more per frame.
_RESPONSE, _PING, _LOGIN, _JSON = map(int, (Command.RESPONSE, Command.PING, Command.LOGIN,
                                            Command.JSON_MESSAGE))
_SUCCESS, _NOT_IN_NETWORK, _BAD_BODY = map(int, (Status.SUCCESS, Status.DEVICE_NOT_IN_NETWORK,
                                                 Status.ILLEGAL_COMMAND_BODY))


class _Peer:
    __slots__ = ("sock", "held", "unsent", "device_id", "msg_id")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.held = b""  # the start of a frame not yet whole
        self.unsent = b""  # what the kernel did not take, sent when writable
        self.device_id: str | None = None
        self.msg_id = 0


def serve(port: int) -> None:
    """Serve on 127.0.0.1:C{port} until killed."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(4096)
    listener.setblocking(False)
    poller = select.epoll()
    poller.register(listener.fileno(), select.EPOLLIN)
    peers: dict[int, _Peer] = {}
    online: dict[str, _Peer] = {}
    print(f"pyfloor listening on 127.0.0.1:{listener.getsockname()[1]}", flush=True)

    def write(peer: _Peer, data: bytes) -> None:
        # At once unless something is queued ahead, as the server's writes are.
        if not peer.unsent:
            try:
                sent = peer.sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                return  # its read will find it closed
            data = data[sent:]
            if not data:
                return
            poller.modify(peer.sock.fileno(), select.EPOLLIN | select.EPOLLOUT)
        peer.unsent += data

    def frames(peer: _Peer, data: bytes, out: dict[_Peer, list[bytes]]) -> bytes:
        end, at = len(data), 0
        while end - at >= HEADER_SIZE:
            command, msg_id, length = HEADER.unpack_from(data, at)
            start = at + HEADER_SIZE
            if end - start < length:
                break
            payload = data[start:start + length]
            at = start + length
            if command == _RESPONSE:
                continue  # a receiver's acknowledgement: read and dropped
            status = _SUCCESS
            if command == _LOGIN:
                try:
                    body = loads(payload) if payload[:1] == b"{" else {}
                    peer.device_id = body.get("device_id") or "device_%s_%d" % (
                        peer.sock.getpeername())
                    online[peer.device_id] = peer
                except (ValueError, AttributeError):
                    status = _BAD_BODY
            elif command == _JSON:
                try:
                    body = loads(payload)
                    target = online.get(body["targetId"])
                    if target is None:
                        status = _NOT_IN_NETWORK
                    else:
                        delivery = dumps({"from": peer.device_id, "payload": body["payload"]})
                        target.msg_id = target.msg_id % 65535 + 1
                        out.setdefault(target, []).append(
                            encode(_JSON, target.msg_id, delivery))
                except (ValueError, KeyError, TypeError):
                    status = _BAD_BODY
            elif command != _PING:
                continue
            out.setdefault(peer, []).append(response(msg_id, status, login=command == _LOGIN))
        return data[at:]

    while True:
        for fd, event in poller.poll():
            if fd == listener.fileno():
                while True:
                    try:
                        sock, _ = listener.accept()
                    except BlockingIOError:
                        break
                    sock.setblocking(False)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    peers[sock.fileno()] = _Peer(sock)
                    poller.register(sock.fileno(), select.EPOLLIN)
                continue
            peer = peers.get(fd)
            if peer is None:
                continue
            if event & select.EPOLLOUT and peer.unsent:
                pending, peer.unsent = peer.unsent, b""
                poller.modify(fd, select.EPOLLIN)
                write(peer, pending)
            if not event & (select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP):
                continue
            try:
                data = peer.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                poller.unregister(fd)
                peer.sock.close()
                del peers[fd]
                if peer.device_id is not None and online.get(peer.device_id) is peer:
                    del online[peer.device_id]
                continue
            # One send per peer per read: a read of one frame makes the
            # delivery and the answer, to two peers, each sent at once.
            out: dict[_Peer, list[bytes]] = {}
            peer.held = frames(peer, peer.held + data if peer.held else data, out)
            for to, pieces in out.items():
                write(to, pieces[0] if len(pieces) == 1 else b"".join(pieces))


if __name__ == "__main__":
    serve(int(sys.argv[1]))
