"""
An asyncio HyperTCP client, with the blocking L{Client}'s API in coroutines.

One task reads the connection: it answers the server's PINGs, acknowledges
and queues delivered messages for L{AsyncClient.receive}, completes each
request's future with its RESPONSE, and follows REDIRECT once no answer is
outstanding.  Another sends a PING after C{heartbeat} seconds of our
silence, and drops a connection whose PING goes unanswered::

    async with AsyncClient("127.0.0.1", 8080, token, "web-1") as client:
        await client.send("lamp", {"switch": "on"})
        async for message in client.messages(timeout=5):
            print(message.sender, message.payload)
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any, AsyncIterator, Callable, Optional, Union

from hypertcp.client.errors import ACCEPTED, HyperTCPError
from hypertcp.client.settings import ClientSettings
from hypertcp.protocol.bodies import Message
from hypertcp.protocol.client import (
    Answered, ClientConnection, Closing, Delivered, LoginAnswered, Redirected, Refused,
)
from hypertcp.protocol.commands import Status, status

RECV_SIZE = 65536
ACK_GRACE = 30.0
RECONNECT_DELAYS = (0.5, 30.0)
MAX_REDIRECTS = 5
FATAL_LOGIN = frozenset((Status.INVALID_TOKEN, Status.NOT_ALLOWED))


class AsyncClient(ClientSettings):
    """
    A logged-in connection to a HyperTCP server, for asyncio programs.

    The same options and behaviour as L{hypertcp.client.Client}: transport
    failures raise L{OSError}; a refused login raises L{HyperTCPError};
    sends return the status (or raise, with C{raise_on_error}); reasons
    are asked for; with C{reconnect}, a dropped connection is made again
    with backoff, at once by the reader so L{receive} goes on.
    """

    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__(*args, **options)
        self._conn: Optional[ClientConnection] = None
        self._writer: Optional[asyncio.StreamWriter] = None
        self._tasks: list[asyncio.Task] = []
        self._pending: dict[int, asyncio.Future] = {}
        self._reasons: dict[int, str] = {}
        # Made in connect(), inside the event loop.
        self._inbox: Optional[asyncio.Queue[Message]] = None
        self._lost: Optional[asyncio.Event] = None
        self._login: Optional[asyncio.Future] = None
        self._redirect: Optional[tuple[str, int, bool]] = None
        self._reconnecting: Optional[asyncio.Task] = None
        self._closing = False
        #: This connection logged in (a reader that ends before it did has nothing to follow).
        self._online = False
        self._last_write = 0.0

    # -- connection --

    async def connect(self) -> "AsyncClient":
        """
        Connect and log in, following a REDIRECT that comes with the login
        answer (a load balancer's); HyperTCPError if the server refuses.
        """
        for _ in range(MAX_REDIRECTS):
            await self._connect_once()
            if self._redirect is None:
                return self
            self._move(self._redirect)
        raise ConnectionError(f"more than {MAX_REDIRECTS} REDIRECTs in a row; "
                              f"the last to {self.host}:{self.port}")

    async def _connect_once(self) -> None:
        await self._drop()
        self._closing = False
        loop = asyncio.get_running_loop()
        context = (self.ssl_context or ssl.create_default_context()) if self.tls else None
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            self.host, self.port, ssl=context,
            server_hostname=(self.server_hostname or self.host) if context else None),
            self.timeout)
        self._conn = ClientConnection(self.token, self.device_id, reasons=self.reasons,
                                      use_challenge=self.challenge)
        self._writer, self._redirect = writer, None
        self.closing_reason = self.last_reason = None
        self._login = loop.create_future()
        if self._inbox is None:
            self._inbox, self._lost = asyncio.Queue(), asyncio.Event()
        self._tasks = [asyncio.create_task(self._read(reader))]
        try:
            self._write(self._conn.login())
            answer = await asyncio.wait_for(asyncio.shield(self._login), self.timeout)
        except asyncio.TimeoutError:
            await self._drop()
            raise TimeoutError(f"no login answer from {self.host}:{self.port} in time") from None
        except BaseException:
            await self._drop()
            raise
        if answer != Status.SUCCESS:
            await self._drop()
            raise HyperTCPError(answer, f"login to {self.host}:{self.port} refused",
                                self.last_reason)
        self._online = True
        self._lost.clear()
        self._tasks.append(asyncio.create_task(self._beat()))

    def _move(self, where: tuple[str, int, bool]) -> None:
        """Point the client at the server a REDIRECT names."""
        host, port, self.tls = where
        if host != self.host:
            self.server_hostname = None
        self.host, self.port = host, port

    async def close(self) -> None:
        """Close the connection; no reconnecting after this."""
        self._closing = True
        reconnecting, self._reconnecting = self._reconnecting, None
        if reconnecting is not None and reconnecting is not asyncio.current_task():
            reconnecting.cancel()
        await self._drop()
        if self._lost is not None:
            self._lost.set()

    async def _drop(self) -> None:
        self._online = False
        tasks, self._tasks = self._tasks, []
        current = asyncio.current_task()
        for task in tasks:
            if task is not current:
                task.cancel()
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except (OSError, asyncio.CancelledError):
                pass
        for task in tasks:
            if task is not current:
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
        self._fail_pending(ConnectionError(self._closed_message()))

    async def __aenter__(self) -> "AsyncClient":
        if self._writer is None:
            await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- requests --

    async def send(self, target: str, payload: dict, ack: bool = False,
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
        return await self._request(lambda conn: conn.send(target, payload, ack, qos, ttl),
                                   timeout, f"send to {target}")

    async def broadcast(self, payload: dict, timeout: Optional[float] = None
                        ) -> Union[Status, int]:
        """Send C{payload} to every other logged-in client; return the status."""
        return await self._request(lambda conn: conn.broadcast(payload), timeout, "broadcast")

    async def send_to_server(self, payload: dict, timeout: Optional[float] = None
                             ) -> Union[Status, int]:
        """Send C{payload} to the server itself (e.g. C{{"command": "ping"}})."""
        return await self.send("server", payload, timeout=timeout)

    async def ping(self, timeout: Optional[float] = None) -> float:
        """The round trip of a PING to the server, in seconds."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        await self._request(lambda conn: conn.ping(), timeout, "ping")
        return loop.time() - start

    async def _request(self, frame: Callable[[ClientConnection], tuple[int, bytes]],
                       timeout: Optional[float], what: str) -> Union[Status, int]:
        reconnecting = self._reconnecting
        if self._writer is None and reconnecting is not None and not reconnecting.done():
            # A REDIRECT or a drop is being followed: wait for it, within the timeout.
            await asyncio.wait([reconnecting], timeout=self.timeout)
        if self._writer is None or self._conn is None:
            raise ConnectionError("not connected: await connect() (or use the client in an "
                                  "async with block) before sending")
        msg_id, data = frame(self._conn)
        future = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = future
        self._write(data)
        wait = self.timeout if timeout is None else timeout
        try:
            answer = status(await asyncio.wait_for(future, wait))
        except asyncio.TimeoutError:
            raise TimeoutError(f"no answer from {self.host}:{self.port} in time") from None
        finally:
            self._pending.pop(msg_id, None)
        self.last_reason = self._reasons.pop(msg_id, None)
        if self.raise_on_error and answer not in ACCEPTED:
            raise HyperTCPError(answer, f"{what} refused", self.last_reason)
        return answer

    def _write(self, data: bytes) -> None:
        if self._writer is None:
            raise ConnectionError("not connected to a HyperTCP server")
        self._writer.write(data)
        self._last_write = asyncio.get_running_loop().time()

    # -- incoming messages --

    async def receive(self, timeout: Optional[float] = None) -> Optional[Message]:
        """The next message, or None if none arrives within C{timeout} (None: wait for ever)."""
        if self._inbox is None or self._lost is None:
            raise ConnectionError("not connected: await connect() first")
        if not self._inbox.empty():
            return self._inbox.get_nowait()
        if self._lost.is_set():
            raise ConnectionError(self._closed_message())
        get = asyncio.ensure_future(self._inbox.get())
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            done, _ = await asyncio.wait([get, lost], timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (get, lost):
                if not waiter.done():
                    waiter.cancel()
        if get in done:
            return get.result()
        if lost in done:
            raise ConnectionError(self._closed_message())
        return None

    async def messages(self, timeout: Optional[float] = None) -> AsyncIterator[Message]:
        """Incoming messages, until none arrives for C{timeout} seconds (None: for ever)."""
        while True:
            message = await self.receive(timeout)
            if message is None:
                return
            yield message

    def __aiter__(self) -> AsyncIterator[Message]:
        return self.messages()

    # -- the connection's tasks --

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                data = await reader.read(RECV_SIZE)
                if not data:
                    break
                events, reply = self._conn.receive(data)
                if reply:
                    self._write(reply)
                for event in events:
                    self._handle(event)
                # Follow a REDIRECT once nothing is outstanding here (one that
                # came with the login answer, connect() follows itself).
                if self._redirect is not None and self._online and not self._pending:
                    break
        except (OSError, asyncio.IncompleteReadError):
            pass
        await self._ended()

    def _handle(self, event: object) -> None:
        kind = type(event)
        if kind is Answered:
            future = self._pending.get(event.msg_id)
            if future is not None and not future.done():
                future.set_result(event.status)
        elif kind is Delivered:
            self._inbox.put_nowait(event.message)
        elif kind is LoginAnswered:
            if self._login is not None and not self._login.done():
                self._login.set_result(event.status)
        elif kind is Redirected:
            self._redirect = (event.host, event.port, event.tls)
        elif kind is Refused:
            self._reasons[event.msg_id] = self.last_reason = event.reason
            if len(self._reasons) > 100:
                self._reasons.pop(next(iter(self._reasons)))
        elif kind is Closing:
            self.closing_reason = event.reason

    async def _ended(self) -> None:
        """The connection ended: follow a REDIRECT, reconnect, or report it lost."""
        redirect = self._redirect
        online, self._online = self._online, False
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()  # the heartbeat
        error = ConnectionError(self._closed_message())
        self._fail_pending(error)
        if self._login is not None and not self._login.done():
            self._login.set_exception(error)
        if not online:
            return  # a login that failed: connect() reports it
        if self._closing or (redirect is None and not self.reconnect):
            self._lost.set()
            return
        if redirect is not None:
            self._move(redirect)
        self._reconnecting = asyncio.create_task(self._reconnect(at_once=redirect is not None))

    async def _reconnect(self, at_once: bool) -> None:
        """Log in again, with backoff; a refused token, or a failed redirect without C{reconnect}, ends it."""
        delay, longest = RECONNECT_DELAYS
        if not at_once:
            await asyncio.sleep(delay)
        while not self._closing:
            try:
                await self.connect()
            except HyperTCPError as e:
                if e.status in FATAL_LOGIN:
                    break
            except OSError:
                pass
            else:
                if self.on_reconnect is not None:
                    self.on_reconnect(self)
                return
            if not self.reconnect:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, longest)
        self._lost.set()

    async def _beat(self) -> None:
        """PING after C{heartbeat} seconds of our silence; no answer means a dead link."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(max(self._last_write + self.heartbeat - loop.time(), 0.0))
            if loop.time() < self._last_write + self.heartbeat:
                continue
            try:
                await self._request(lambda conn: conn.ping(), self.timeout, "heartbeat")
            except (TimeoutError, ConnectionError):
                writer = self._writer
                if writer is not None:
                    writer.transport.abort()
                return

    def _fail_pending(self, error: Exception) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)

    def _closed_message(self) -> str:
        why = f": {self.closing_reason}" if self.closing_reason else ""
        return f"{self.host}:{self.port} closed the connection{why}"
