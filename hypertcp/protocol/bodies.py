"""
The JSON bodies of every frame, built and parsed in one place.

Clients build LOGIN, JSON_MESSAGE and BROADCAST bodies and parse what is
delivered to them; the server parses what clients send and builds
deliveries, presence events and REDIRECTs.  Parsers raise L{BadBody} (a
ValueError) with a reason fit for a log line or an error message: the
server answers it with ILLEGAL_COMMAND_BODY.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional, Union

from hypertcp.protocol.jsoncodec import dumps as _dumps, loads as _loads
from hypertcp.protocol.commands import Command
from hypertcp.protocol.frames import MAX_PAYLOAD, Frame

#: The protocol level this project's clients announce in a JSON LOGIN.  A
#: connection at level 2 is sent every status; below it (the original
#: sketch's raw-token login, a JSON login without "proto") it is sent no
#: status byte after its login answer, because the original sketch reads
#: only the header of a RESPONSE and would lose its place in the stream.
PROTOCOL_LEVEL = 2

#: Device ids the server keeps for itself.
RESERVED_IDS = frozenset(("server", "broadcast"))
MAX_DEVICE_ID = 128

_new = tuple.__new__
# Bound once: the message path parses every frame, and on Python 3.11 an
# enum member lookup costs about 60 ns.
_BROADCAST = Command.BROADCAST


class BadBody(ValueError):
    """A payload that is not the JSON its command needs."""


def parse_object(payload: Union[bytes, str]) -> dict:
    """A JSON object payload; L{BadBody} naming what is wrong with anything else."""
    try:
        value = _loads(payload)  # the codec checks UTF-8 as it parses
    except ValueError:
        raise _not_json(payload) from None
    if type(value) is not dict:
        raise BadBody("payload is not a JSON object")
    return value


def _not_json(payload: Union[bytes, str]) -> BadBody:
    """Why a payload the codec refused is not JSON (found only then, off the common path)."""
    if isinstance(payload, bytes):
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            return BadBody("payload is not UTF-8")
    return BadBody("payload is not JSON")


def _encode(value: Any) -> bytes:
    body = _dumps(value)
    if len(body) > MAX_PAYLOAD:
        raise ValueError(f"message is {len(body):,} bytes; a frame carries at most {MAX_PAYLOAD:,}")
    return body


def _object(payload: Any) -> dict:
    # The server refuses anything else with ILLEGAL_COMMAND_BODY; say so before sending.
    if not isinstance(payload, dict):
        raise TypeError(f"a payload must be a JSON object (a dict), not {type(payload).__name__}")
    return payload


# -- LOGIN --------------------------------------------------------------------

class Login(NamedTuple):
    """
    What a LOGIN asks for.  C{token} is the presented secret (None in a
    challenge login); C{challenge} asks for a nonce; C{key} and C{proof}
    answer one (see L{hypertcp.protocol.challenge}); C{reasons} asks the
    server to say why it refuses or closes (L{refusal_body}, L{closing_body}).
    """

    token: Optional[str]
    device_id: Optional[str]
    proto: int = 1
    challenge: bool = False
    key: Optional[str] = None
    proof: Optional[str] = None
    reasons: bool = False


def parse_login(payload: bytes) -> Login:
    """The raw token the sketch sends, or a JSON object as clients of the project send."""
    try:
        text = payload.decode("utf-8").strip("\x00 \t\r\n")
    except UnicodeDecodeError:
        raise BadBody("login is not UTF-8") from None
    if not text.startswith("{"):
        if not text:
            raise BadBody("empty login")
        return Login(text, None)
    body = parse_object(text)
    token, device_id, proto = body.get("token"), body.get("device_id"), body.get("proto", 1)
    if device_id is not None:
        if not isinstance(device_id, str):
            raise BadBody("device_id must be a string")
        if not device_id.isprintable():
            # A newline or an escape in an id would forge lines in the logs.
            raise BadBody("device_id has control characters")
    if type(proto) is not int or proto < 1:
        raise BadBody("proto must be a positive integer")
    reasons = body.get("reasons") is True
    if body.get("challenge") is True:
        return Login(None, device_id or None, proto, challenge=True, reasons=reasons)
    key, proof = body.get("key"), body.get("proof")
    if key is not None or proof is not None:
        if not isinstance(key, str) or not isinstance(proof, str):
            raise BadBody("a challenge answer needs string key and proof")
        return Login(None, device_id or None, proto, key=key, proof=proof, reasons=reasons)
    if not isinstance(token, str) or not token:
        raise BadBody("login needs a string token")
    return Login(token, device_id or None, proto, reasons=reasons)


def login_body(token: str, device_id: Optional[str] = None, proto: int = PROTOCOL_LEVEL,
               reasons: bool = False) -> bytes:
    """A JSON LOGIN; the device id only when chosen, "reasons" only when asked for."""
    body: dict[str, Any] = {"token": token, "proto": proto}
    if device_id is not None:
        body["device_id"] = device_id
    if reasons:
        body["reasons"] = True
    return _encode(body)


def challenge_request_body(reasons: bool = False) -> bytes:
    """The first LOGIN of a challenge login: "send me a nonce"."""
    body: dict[str, Any] = {"proto": PROTOCOL_LEVEL, "challenge": True}
    if reasons:
        body["reasons"] = True
    return _encode(body)


def challenge_body(nonce: str) -> bytes:
    """The server's answer to a challenge request, sent as a LOGIN frame."""
    return _encode({"nonce": nonce})


def parse_challenge(payload: bytes) -> str:
    """The nonce of the server's challenge; BadBody if it carries none."""
    nonce = parse_object(payload).get("nonce")
    if not isinstance(nonce, str) or not nonce:
        raise BadBody("challenge without a nonce")
    return nonce


def proof_body(key: str, proof: str, device_id: Optional[str] = None,
               reasons: bool = False) -> bytes:
    """The second LOGIN of a challenge login: the token's key id and the proof."""
    body: dict[str, Any] = {"proto": PROTOCOL_LEVEL, "key": key, "proof": proof}
    if device_id is not None:
        body["device_id"] = device_id
    if reasons:
        body["reasons"] = True
    return _encode(body)


# -- JSON_MESSAGE and BROADCAST from a client ---------------------------------

class Send(NamedTuple):
    """A client's message: where to, what, and how it wants it delivered."""

    target: str
    payload: dict
    ack: bool = False
    qos: int = 0
    ttl: Optional[float] = None


def message_body(target: str, payload: dict, ack: bool = False, qos: int = 0,
                 ttl: Optional[float] = None) -> bytes:
    body: dict[str, Any] = {"targetId": target, "payload": _object(payload)}
    if ack:
        body["ack"] = True
    if qos:
        body["qos"] = qos
    if ttl is not None:
        body["ttl"] = ttl
    return _encode(body)


def broadcast_body(payload: dict) -> bytes:
    return _encode({"payload": _object(payload)})


def parse_send(command: int, payload: bytes) -> Send:
    """
    A JSON_MESSAGE or BROADCAST from a client.  C{"qos": 1} asks the server
    to store the message for an offline target; C{"ttl"} bounds how long
    (a positive number of seconds; the server applies its own maximum).
    """
    # parse_object, inline: this runs for every message a server relays.
    try:
        body = _loads(payload)
    except ValueError:
        raise _not_json(payload) from None
    if type(body) is not dict:
        raise BadBody("payload is not a JSON object")
    return send_of(command, body)


def send_of(command: int, body: dict) -> Send:
    """
    L{parse_send} for a body already parsed: a WebSocket action is the TCP
    client's envelope with its own keys beside it, read once.
    """
    inner = body.get("payload")
    if type(inner) is not dict:
        raise BadBody('missing a "payload" object')
    if command == _BROADCAST:
        target = "broadcast"
    else:
        target = body.get("targetId")
        if type(target) is not str or not target:
            raise BadBody('missing a "targetId" string')
    if "qos" not in body and "ttl" not in body:
        return _new(Send, (target, inner, body.get("ack") is True, 0, None))
    qos, ttl = body.get("qos", 0), body.get("ttl")
    if type(qos) is not int or qos not in (0, 1):
        raise BadBody('"qos" must be 0 or 1')
    if ttl is not None and (type(ttl) not in (int, float) or not math.isfinite(ttl) or ttl <= 0):
        raise BadBody('"ttl" must be a positive number of seconds')
    if qos and target == "broadcast":
        raise BadBody('"qos" is for messages to one device, not broadcasts')
    return _new(Send, (target, inner, body.get("ack") is True, qos, ttl))


# -- what the server sends ----------------------------------------------------

def delivery_body(sender: str, payload: dict, **extra: Any) -> bytes:
    """A delivered JSON_MESSAGE or BROADCAST: C{{"from", "payload"}}, and any extra fields."""
    if extra:
        return _dumps({"from": sender, "payload": payload, **extra})
    return _dumps({"from": sender, "payload": payload})


def stored_body(sender: str, payload: bytes, queued_at: Optional[int] = None) -> bytes:
    """
    A stored message as it is delivered: C{{"from", "payload"}}, the payload
    already JSON; with C{"queued_at"} (ms) for a receiver at level 2 only --
    it is an addition to the contract.
    """
    head = b'{"from":' + _dumps(sender) + b',"payload":' + payload
    if queued_at is None:
        return head + b"}"
    return head + b',"queued_at":' + str(queued_at).encode() + b"}"


def telemetry_body(sender: str, payload: dict) -> bytes:
    """A message to "server" that no command handles, as observers receive it."""
    return _dumps({"from": sender, "to": "server", "payload": payload})


def event_body(event: str, device_id: Optional[str], client_id: str, timestamp_ms: int,
               **extra: Any) -> bytes:
    """A presence event for observers, from "server"."""
    return _dumps({"from": "server", "payload": {
        "event": event, "deviceId": device_id, "clientId": client_id,
        "timestamp": timestamp_ms, **extra}})


def refusal_body(msg_id: int, status: int, reason: str) -> bytes:
    """
    Why the server refuses frame C{msg_id}: a JSON_MESSAGE body from
    "server", sent just before the RESPONSE, to clients that logged in with
    "reasons": true.
    """
    return _dumps({"from": "server", "payload": {
        "command": "refused", "msgId": msg_id, "status": int(status), "reason": reason}})


def closing_body(reason: str) -> bytes:
    """Why the server is about to close the connection, to clients that asked for reasons."""
    return _dumps({"from": "server", "payload": {"command": "closing", "reason": reason}})


def redirect_body(host: str, port: int, tls: bool = False) -> bytes:
    """The REDIRECT body, {"server", "port"} and "tls" only when true."""
    target: dict[str, Any] = {"server": host, "port": port}
    if tls:
        target["tls"] = True
    return _dumps(target)


def parse_redirect(payload: bytes) -> tuple[str, int, bool]:
    """The (host, port, tls) a REDIRECT names; ValueError if it names none."""
    try:
        body = _loads(payload)
        host, port = body["server"], body["port"]
    except (ValueError, TypeError, KeyError):
        raise ValueError(f"malformed REDIRECT {payload!r}") from None
    if not isinstance(host, str) or type(port) is not int or not 0 < port < 65536:
        raise ValueError(f"malformed REDIRECT {payload!r}")
    return host, port, body.get("tls") is True


class Message(NamedTuple):
    """
    A message delivered to a client: a JSON_MESSAGE or a BROADCAST.

    C{sender} is the authenticated id of whoever sent it ("server" for the
    server itself); C{payload} is the JSON object they sent; C{raw} is the
    frame's payload as it arrived; C{extra} holds any other fields of the
    envelope (such as C{queued_at} on a stored message).
    """

    command: Command
    msg_id: int
    sender: Optional[str]
    payload: Any
    raw: bytes
    extra: Optional[dict] = None


def parse_delivery(frame: Frame) -> Message:
    """
    A delivered JSON_MESSAGE or BROADCAST as a L{Message}.  A body that is not
    the expected object still becomes a message (with no sender), so nothing
    a server sends is silently lost.
    """
    try:
        body = _loads(frame.payload)
    except ValueError:
        body = None
    if type(body) is not dict:
        body = {}
    extra = {k: v for k, v in body.items() if k not in ("from", "payload")} or None
    return Message(Command(frame.command), frame.msg_id, body.get("from"),
                   body.get("payload"), frame.payload, extra)
