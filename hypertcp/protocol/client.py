"""
A client's side of one connection, sans-IO, in the manner of h11: requests
become bytes to send, received bytes become events, and whatever the
protocol itself must answer (acknowledgements of delivered messages,
PINGs, a login challenge) comes back as bytes to send.  The blocking, the
asyncio and the Twisted clients each drive one of these over their own I/O.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Union

from hypertcp.protocol.bodies import (
    BadBody, Message, broadcast_body, challenge_request_body, login_body, message_body,
    parse_challenge, parse_delivery, parse_redirect, proof_body,
)
from hypertcp.protocol.challenge import key_id, proof
from hypertcp.protocol.commands import Command, Status
from hypertcp.protocol.frames import MAX_PAYLOAD, Decoder, Frame, MsgIds, encode, response


class Answered(NamedTuple):
    """The RESPONSE to request C{msg_id}."""

    msg_id: int
    status: int


class LoginAnswered(NamedTuple):
    """The server's answer to the login: SUCCESS, or why not."""

    status: int


class Delivered(NamedTuple):
    """A JSON_MESSAGE or BROADCAST for us; its acknowledgement is already in the bytes to send."""

    message: Message


class Redirected(NamedTuple):
    """The server asks us to log in at another address."""

    host: str
    port: int
    tls: bool


class Refused(NamedTuple):
    """Why the server refuses request C{msg_id}; its RESPONSE follows (reasons=True only)."""

    msg_id: int
    status: int
    reason: str


class Closing(NamedTuple):
    """Why the server is closing the connection (reasons=True only)."""

    reason: str


class Ignored(NamedTuple):
    """A frame this client cannot use (a malformed REDIRECT, a newer server's command)."""

    frame: Frame
    why: str


ClientEvent = Union[Answered, LoginAnswered, Delivered, Redirected, Refused, Closing, Ignored]


class ClientConnection:
    """
    One connection's protocol state: the msg_id sequence, the login in
    progress and the decoder.  Make a new one for each connection.  With
    C{reasons}, the login asks the server to say why it refuses a request
    or closes the connection, and those notices come as L{Refused} and
    L{Closing} events instead of messages.
    """

    def __init__(self, token: str, device_id: Optional[str] = None, *,
                 use_challenge: bool = False, max_payload: int = MAX_PAYLOAD,
                 reasons: bool = False) -> None:
        self.token = token
        self.device_id = device_id
        self.use_challenge = use_challenge
        self.reasons = reasons
        self.logged_in = False
        self._ids = MsgIds()
        self._decoder = Decoder(max_payload)
        self._login_id: Optional[int] = None

    def _frame(self, command: int, body: bytes = b"") -> tuple[int, bytes]:
        msg_id = self._ids.next()
        return msg_id, encode(command, msg_id, body)

    # -- requests: each returns (msg_id, bytes to send) --

    def login(self) -> bytes:
        """The LOGIN that opens the connection (a challenge request, if so configured)."""
        body = (challenge_request_body(self.reasons) if self.use_challenge
                else login_body(self.token, self.device_id, reasons=self.reasons))
        self._login_id, data = self._frame(Command.LOGIN, body)
        return data

    def send(self, target: str, payload: dict, ack: bool = False, qos: int = 0,
             ttl: Optional[float] = None) -> tuple[int, bytes]:
        return self._frame(Command.JSON_MESSAGE, message_body(target, payload, ack, qos, ttl))

    def broadcast(self, payload: dict) -> tuple[int, bytes]:
        return self._frame(Command.BROADCAST, broadcast_body(payload))

    def ping(self) -> tuple[int, bytes]:
        return self._frame(Command.PING)

    # -- what arrives --

    def receive(self, data: bytes) -> tuple[list[ClientEvent], bytes]:
        """The events in C{data}, and the bytes the protocol must send in reply."""
        events: list[ClientEvent] = []
        out: list[bytes] = []
        for frame in self._decoder.feed(data):
            if type(frame) is not Frame:
                # Over our own limit: skipped exactly; still acknowledge what
                # was delivered, so the sender's end-to-end wait ends.
                if frame.command in (Command.JSON_MESSAGE, Command.BROADCAST):
                    out.append(response(frame.msg_id, Status.ILLEGAL_COMMAND_BODY))
                continue
            event = self._frame_event(frame, out)
            if event is not None:
                events.append(event)
        return events, b"".join(out)

    def _frame_event(self, frame: Frame, out: list[bytes]) -> Optional[ClientEvent]:
        command = frame.command
        if command == Command.RESPONSE:
            status = frame.payload[0] if frame.payload else Status.SUCCESS
            if frame.msg_id == self._login_id and not self.logged_in:
                self.logged_in = status == Status.SUCCESS
                return LoginAnswered(status)
            return Answered(frame.msg_id, status)
        if command == Command.JSON_MESSAGE or command == Command.BROADCAST:
            # Acknowledge on receipt: that is what end-to-end acks measure.
            out.append(response(frame.msg_id))
            message = parse_delivery(frame)
            if self.reasons and message.sender == "server":
                notice = _notice(message.payload)
                if notice is not None:
                    return notice
            return Delivered(message)
        if command == Command.PING:
            out.append(response(frame.msg_id))
            return None
        if command == Command.REDIRECT:
            try:
                return Redirected(*parse_redirect(frame.payload))
            except ValueError as e:
                return Ignored(frame, str(e))
        if command == Command.LOGIN and frame.msg_id == self._login_id and self.use_challenge:
            try:
                nonce = parse_challenge(frame.payload)
            except BadBody as e:
                return Ignored(frame, str(e))
            self._login_id, data = self._frame(Command.LOGIN, proof_body(
                key_id(self.token), proof(self.token, nonce, self.device_id),
                self.device_id, self.reasons))
            out.append(data)
            return None
        return Ignored(frame, f"unknown command {command}")


def _notice(payload: object) -> Optional[Union[Refused, Closing]]:
    """A "refused" or "closing" notice from the server, or None for any other message."""
    if type(payload) is not dict:
        return None
    command, reason = payload.get("command"), payload.get("reason")
    if not isinstance(reason, str):
        return None
    if command == "refused":
        msg_id, status = payload.get("msgId"), payload.get("status")
        if type(msg_id) is int and type(status) is int:
            return Refused(msg_id, status, reason)
    elif command == "closing":
        return Closing(reason)
    return None
