"""
A blocking HyperTCP client for scripts and web back ends.

One socket, no threads: every call reads from the socket only while it
waits for something (an answer, a message), and whatever else arrives
meanwhile is handled on the spot -- delivered messages are acknowledged and
queued for L{Client.receive}, the server's PINGs are answered.  A client is
not thread-safe; give each thread its own.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections import deque
from typing import Any, Callable, Iterator, Optional, Union

from hypertcp.client.errors import ACCEPTED, HyperTCPError
from hypertcp.client.settings import ClientSettings
from hypertcp.protocol.bodies import Message
from hypertcp.protocol.client import (
    Answered, ClientConnection, ClientEvent, Closing, Delivered, LoginAnswered, Redirected,
    Refused,
)
from hypertcp.protocol.commands import Status, status

RECV_SIZE = 65536
# With ack, the server answers only once the receiver acknowledged or its own
# ack timeout (10 s by default) ran out; wait that much longer than usual so
# its TIMEOUT answer, not ours, decides.
ACK_GRACE = 30.0
#: Seconds between attempts to reconnect: doubling from the first to the last.
RECONNECT_DELAYS = (0.5, 30.0)
#: A refused login that trying again cannot fix.
FATAL_LOGIN = frozenset((Status.INVALID_TOKEN, Status.NOT_ALLOWED))


class Client(ClientSettings):
    """
    A logged-in connection to a HyperTCP server.

    Transport failures raise L{OSError} (L{ConnectionError}, L{TimeoutError});
    a refused login raises L{HyperTCPError}.  Sends return the server's status
    rather than raising, since DEVICE_NOT_IN_NETWORK is an everyday answer;
    with C{raise_on_error} they raise L{HyperTCPError} for any status but
    SUCCESS and STORED instead.  The client asks the server for reasons
    (C{reasons}): a refusal's is in L{last_reason} and in the error, and a
    closed connection's in the L{ConnectionError}.

    With C{reconnect}, a connection that drops is made again, with backoff,
    by the next call -- and by L{receive} and L{messages} at once, so a
    listener outlives a server restart.  A request the drop interrupted
    still raises: it may or may not have been delivered.
    """

    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__(*args, **options)
        self._sock: Optional[socket.socket] = None
        self._conn: Optional[ClientConnection] = None
        self._redirect: Optional[tuple[str, int, bool]] = None
        self._last_write = 0.0
        self._logged_in_once = False
        self._inbox: deque[Message] = deque()
        self._awaiting: set[int] = set()
        self._answers: dict[int, int] = {}
        self._reasons: dict[int, str] = {}

    # -- connection --

    def connect(self) -> "Client":
        """Connect and log in; HyperTCPError if the server refuses the login."""
        self.close()
        sock = socket.create_connection((self.host, self.port), self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls:
                context = self.ssl_context or ssl.create_default_context()
                sock = context.wrap_socket(
                    sock, server_hostname=self.server_hostname or self.host)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._conn = ClientConnection(self.token, self.device_id, reasons=self.reasons,
                                      use_challenge=self.challenge)
        self._redirect = None
        self._login_answer: Optional[int] = None
        self.closing_reason = None
        self.last_reason = None
        try:
            self._write(self._conn.login())
            deadline = time.monotonic() + self.timeout
            while self._login_answer is None:
                if not self._pump(deadline):
                    raise TimeoutError(f"no login answer from {self.host}:{self.port} in time")
        except BaseException:
            self.close()
            raise
        answer = self._login_answer
        if answer != Status.SUCCESS:
            self.close()
            raise HyperTCPError(answer, f"login to {self.host}:{self.port} refused",
                                self.last_reason)
        self._logged_in_once = True
        return self

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def __enter__(self) -> "Client":
        if self._sock is None:
            self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests --

    def send(self, target: str, payload: dict, ack: bool = False,
             timeout: Optional[float] = None, *, qos: int = 0,
             ttl: Optional[float] = None) -> Union[Status, int]:
        """
        Send C{payload} to the device C{target} and return the server's status.
        With C{ack}, the server answers only once the target has acknowledged
        the message (or with TIMEOUT when it does not).  With C{qos=1}, a
        target that is offline gets the message when it next logs in: the
        answer is then STORED; C{ttl} is how many seconds it may wait.
        """
        if ack and timeout is None:
            timeout = self.timeout + ACK_GRACE
        return self._request(lambda: self._connection().send(target, payload, ack, qos, ttl),
                             timeout, f"send to {target}")

    def broadcast(self, payload: dict, timeout: Optional[float] = None) -> Union[Status, int]:
        """Send C{payload} to every other logged-in client; return the status."""
        return self._request(lambda: self._connection().broadcast(payload), timeout, "broadcast")

    def send_to_server(self, payload: dict, timeout: Optional[float] = None) -> Union[Status, int]:
        """Send C{payload} to the server itself (e.g. C{{"command": "ping"}})."""
        return self.send("server", payload, timeout=timeout)

    def ping(self, timeout: Optional[float] = None) -> float:
        """The round trip of a PING to the server, in seconds."""
        start = time.monotonic()
        self._request(lambda: self._connection().ping(), timeout, "ping")
        return time.monotonic() - start

    # -- incoming messages --

    def receive(self, timeout: Optional[float] = None) -> Optional[Message]:
        """The next message, or None if none arrives within C{timeout} (None: wait for ever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._inbox:
            try:
                if not self._pump(deadline):
                    return None
            except (ConnectionError, TimeoutError):
                if not self.reconnect or not self._logged_in_once:
                    raise
                if not self._reconnect(deadline):
                    return None
        return self._inbox.popleft()

    def messages(self, timeout: Optional[float] = None) -> Iterator[Message]:
        """Incoming messages, until none arrives for C{timeout} seconds (None: for ever)."""
        while True:
            message = self.receive(timeout)
            if message is None:
                return
            yield message

    def __iter__(self) -> Iterator[Message]:
        return self.messages()

    # -- the socket --

    def _connection(self) -> ClientConnection:
        if self._sock is None or self._conn is None:
            raise ConnectionError("not connected: call connect() (or use the client in a "
                                  "with block) before sending")
        return self._conn

    def _reconnect(self, deadline: Optional[float]) -> bool:
        """
        Connect and log in again, backing off between attempts, until
        C{deadline}; False if it passed first.  A refused token is final.
        """
        self.close()
        dropped = self.closing_reason
        delay, longest = RECONNECT_DELAYS
        while True:
            try:
                self.connect()
            except HyperTCPError as e:
                if e.status in FATAL_LOGIN:
                    if dropped:
                        raise HyperTCPError(e.status, f"{self.host}:{self.port} closed the "
                                            f"connection ({dropped}) and refused to log in "
                                            "again", e.reason) from None
                    raise
            except OSError:
                pass
            else:
                if self.on_reconnect is not None:
                    self.on_reconnect(self)
                return True
            wait = delay if deadline is None else min(delay, deadline - time.monotonic())
            if wait <= 0:
                return False
            time.sleep(wait)
            delay = min(delay * 2, longest)

    def _write(self, data: bytes) -> None:
        if self._sock is None:
            raise ConnectionError("not connected: call connect() (or use the client in a "
                                  "with block) before sending")
        self._sock.settimeout(self.timeout)
        self._sock.sendall(data)
        self._last_write = time.monotonic()

    def _request(self, frame: Callable[[], tuple[int, bytes]], timeout: Optional[float] = None,
                 what: str = "request") -> Union[Status, int]:
        """Send the frame C{frame()} makes and wait for the RESPONSE that echoes its msg_id."""
        if self._redirect is not None:
            self._follow_redirect()
        elif self._sock is None and self.reconnect and self._logged_in_once:
            self.connect()
        msg_id, data = frame()
        self._write(data)
        self._awaiting.add(msg_id)
        sock = self._sock
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        try:
            while msg_id not in self._answers:
                if self._sock is not sock:
                    raise ConnectionError(
                        f"redirected to {self.host}:{self.port} before the server answered; "
                        "the message may or may not have been delivered")
                if not self._pump(deadline):
                    raise TimeoutError(f"no answer from {self.host}:{self.port} in time")
            answer = status(self._answers.pop(msg_id))
        finally:
            self._awaiting.discard(msg_id)
        self.last_reason = self._reasons.pop(msg_id, None)
        if self.raise_on_error and answer not in ACCEPTED:
            raise HyperTCPError(answer, f"{what} refused", self.last_reason)
        return answer

    def _pump(self, deadline: Optional[float]) -> bool:
        """
        Read and handle one chunk from the socket; False if C{deadline} passed
        first.  Sends a heartbeat PING whenever we have been silent too long.
        """
        if self._redirect is not None and not self._awaiting:
            self._follow_redirect()
        sock = self._sock
        if sock is None:
            raise ConnectionError("not connected to a HyperTCP server")
        while True:
            now = time.monotonic()
            beat = self._last_write + self.heartbeat
            if now >= beat:
                self._write(self._conn.ping()[1])
                continue
            wait = beat - now
            if deadline is not None:
                wait = min(wait, deadline - now)
            sock.settimeout(max(wait, 0.0))
            try:
                data = sock.recv(RECV_SIZE)
                break
            except (socket.timeout, BlockingIOError, ssl.SSLWantReadError):
                if deadline is not None and time.monotonic() >= deadline:
                    return False
            except ConnectionResetError:
                data = b""
                break
        if not data:
            if self._redirect is not None:
                self._follow_redirect()
                return True
            self.close()
            why = f": {self.closing_reason}" if self.closing_reason else ""
            raise ConnectionError(f"{self.host}:{self.port} closed the connection{why}")
        events, reply = self._conn.receive(data)
        if reply:
            try:
                self._write(reply)
            except (BrokenPipeError, ConnectionResetError):
                # The server closed right after sending these, as after a
                # refused login: what it said still counts, and the next
                # read finds the connection gone.
                pass
        for event in events:
            self._handle(event)
        return True

    def _handle(self, event: ClientEvent) -> None:
        kind = type(event)
        if kind is Answered:
            if event.msg_id in self._awaiting:
                self._answers[event.msg_id] = event.status
        elif kind is Delivered:
            self._inbox.append(event.message)
        elif kind is LoginAnswered:
            self._login_answer = event.status
        elif kind is Redirected:
            # Followed as soon as no answer is outstanding on this connection;
            # the server closes it shortly, which ends any wait for one.
            self._redirect = (event.host, event.port, event.tls)
        elif kind is Refused:
            self._reasons[event.msg_id] = self.last_reason = event.reason
            if len(self._reasons) > 100:  # reasons for requests nobody waits for any more
                self._reasons.pop(next(iter(self._reasons)))
        elif kind is Closing:
            self.closing_reason = event.reason
        # Ignored: a malformed REDIRECT, or a newer server's command.

    def _follow_redirect(self) -> None:
        """Log in again, with the same token and id, where the server sent us."""
        assert self._redirect is not None
        host, port, tls = self._redirect
        self.close()
        self.tls = tls
        if host != self.host:
            self.server_hostname = None
        self.host, self.port = host, port
        self.connect()
