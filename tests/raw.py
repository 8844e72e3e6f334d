"""
A bare socket peer that speaks frames through hypertcp.protocol.frames and nothing else,
so tests can send exactly the bytes a device would, good or bad.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Callable, Optional

from hypertcp.protocol.commands import Command, Status
from hypertcp.protocol.frames import Decoder, Frame, MsgIds, encode, response


class Closed(Exception):
    pass


class Raw:
    def __init__(self, port: int, host: str = "127.0.0.1", max_payload: int = 65535) -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.decoder = Decoder(max_payload)
        self.ids = MsgIds()
        self.inbox: list[Frame] = []
        self.closed = False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Raw":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, command: int, payload: bytes = b"", msg_id: Optional[int] = None) -> int:
        msg_id = self.ids.next() if msg_id is None else msg_id
        self.sock.sendall(encode(command, msg_id, payload))
        return msg_id

    def send_json(self, command: int, body: object) -> int:
        return self.send(command, json.dumps(body).encode())

    def _pump(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no frame in time")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no frame in time") from None
        except ConnectionResetError:
            data = b""
        if not data:
            self.closed = True
            raise Closed("server closed the connection")
        self.inbox.extend(self.decoder.feed(data))

    def expect(self, match: Callable[[Frame], bool], timeout: float = 10) -> Frame:
        """The first frame (taken from the inbox) for which C{match} holds."""
        deadline = time.monotonic() + timeout
        while True:
            for i, frame in enumerate(self.inbox):
                if match(frame):
                    return self.inbox.pop(i)
            self._pump(deadline)

    def answer_to(self, msg_id: int, timeout: float = 10) -> int:
        """The status of the RESPONSE echoing C{msg_id}."""
        frame = self.expect(lambda f: f.command == Command.RESPONSE and f.msg_id == msg_id, timeout)
        return frame.payload[0] if frame.payload else Status.SUCCESS

    def request(self, command: int, payload: bytes = b"", timeout: float = 10) -> int:
        return self.answer_to(self.send(command, payload), timeout)

    def message(self, command: int = Command.JSON_MESSAGE, ack: bool = True,
                timeout: float = 10) -> dict:
        """The next delivered frame of C{command}, acknowledged as the sketch does."""
        frame = self.expect(lambda f: f.command == command, timeout)
        if ack:
            self.sock.sendall(response(frame.msg_id))
        return json.loads(frame.payload)

    def login(self, token: str, proto: Optional[int] = None) -> int:
        """
        Log in the sketch's way, the raw token (the server then sends no
        status byte after the login answer), or with C{proto}, as a JSON
        login at that protocol level; return the status byte.
        """
        payload = token.encode() if proto is None else json.dumps(
            {"token": token, "proto": proto}).encode()
        msg_id = self.send(Command.LOGIN, payload)
        frame = self.expect(lambda f: f.command == Command.RESPONSE and f.msg_id == msg_id)
        assert len(frame.payload) == 1, "the LOGIN answer always carries its status byte"
        return frame.payload[0]

    def login_json(self, token: str, device_id: Optional[str] = None,
                   proto: Optional[int] = 2) -> int:
        """Log in with JSON, at protocol level C{proto} (None: the original Python client's way)."""
        body: dict = {"token": token}
        if proto is not None:
            body["proto"] = proto
        if device_id is not None:
            body["device_id"] = device_id
        msg_id = self.send_json(Command.LOGIN, body)
        frame = self.expect(lambda f: f.command == Command.RESPONSE and f.msg_id == msg_id)
        assert len(frame.payload) == 1
        return frame.payload[0]

    def wait_closed(self, timeout: float = 10) -> bool:
        """Read (and keep) frames until the server closes; True if it did in time."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self._pump(deadline)
        except Closed:
            return True
        except TimeoutError:
            return False
