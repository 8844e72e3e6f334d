"""
The HTTP API under /api, for back ends that cannot keep a socket open.

C{POST /api/send} sends one message as a TCP client's JSON_MESSAGE would
(same envelope, same reach rules, same statuses); C{GET /api/devices} and
C{GET /api/stats} show this node to observer tokens.  The token comes in
C{Authorization: Bearer TOKEN}; every answer is JSON with the status by
number and name, and an HTTP code mapped from it (L{HTTP_CODES}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from hypertcp.app.web.figures import devices, stats
from hypertcp.app.web.site import JSONResource, WebRequest, answer
from hypertcp.protocol.bodies import PROTOCOL_LEVEL, BadBody, Login, parse_send
from hypertcp.protocol.commands import MEANING, Command, Status, status_name
from hypertcp.protocol.jsoncodec import JSONEncodeError, loads
from hypertcp.server.auth import LoginRefused
from hypertcp.server.interfaces import IPeer
from hypertcp.server.ratelimit import RateLimiter
from hypertcp.server.refusals import RefusalLog

if TYPE_CHECKING:
    from hypertcp.app.web.gateway import WebGateway
    from hypertcp.server.factory import HyperTCPFactory
    from hypertcp.server.tokens import TokenRecord

#: The HTTP code each status is answered with.
HTTP_CODES: dict[int, int] = {
    Status.SUCCESS: 200, Status.STORED: 202, Status.QUOTA_LIMIT: 429,
    Status.ILLEGAL_COMMAND: 400, Status.NOT_AUTHENTICATED: 401, Status.NOT_ALLOWED: 403,
    Status.DEVICE_NOT_IN_NETWORK: 404, Status.INVALID_TOKEN: 401,
    Status.ILLEGAL_COMMAND_BODY: 400, Status.TIMEOUT: 504, Status.SERVER_EXCEPTION: 500,
}
#: Tokens whose request rate is tracked at once; past it the oldest are forgotten.
MAX_TRACKED = 4096


def status_answer(request: WebRequest, status: int, reason: Optional[str] = None,
                  code: Optional[int] = None, **extra: Any) -> bytes:
    """A status as JSON, under the HTTP code it maps to (or C{code})."""
    return answer(request, code or HTTP_CODES.get(status, 500),
                  {"status": status, "name": status_name(status),
                   "reason": reason or MEANING.get(status, ""), **extra})


@implementer(IPeer)
class ApiSender:
    """
    The sender of one C{POST /api/send}: a peer for the length of the
    request, never attached to the hub.  What the hub answers it with (a
    server command's reply) is kept for the HTTP answer.
    """

    paused = False
    proto = PROTOCOL_LEVEL

    def __init__(self, token: "TokenRecord", device_id: str, peer: str) -> None:
        self.token = token
        self.device_id = device_id
        self.peer = peer
        self.replies: list[bytes] = []

    def deliver(self, command: int, body: bytes) -> int:
        self.replies.append(body)
        return 0

    def deliver_acked(self, command: int, body: bytes, timeout: float) -> Deferred:
        self.replies.append(body)
        return succeed(Status.SUCCESS)

    def when_drained(self, callback: Callable[[], None]) -> None:
        callback()

    def redirect(self, host: str, port: int, tls: bool = False) -> None:
        pass

    def close(self, reason: str) -> None:
        pass


class Refused(Exception):
    """A request answered with C{status} before it does anything."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


class Api(JSONResource):
    """/api: the token check and rate limit its resources share, and the resources."""

    log = Logger()

    def __init__(self, node: "HyperTCPFactory", gateway: Optional["WebGateway"]) -> None:
        super().__init__()
        self.node = node
        self.gateway = gateway
        self.rates: dict[bytes, RateLimiter] = {}
        self.refusals = RefusalLog(node.clock.seconds())
        self.putChild(b"send", SendResource(self))
        self.putChild(b"devices", DevicesResource(self))
        self.putChild(b"stats", StatsResource(self))

    def authorize(self, request: WebRequest, observer: bool = False,
                  grant: Optional[str] = None) -> "TokenRecord":
        """
        The token record of the request's bearer token, within its rate (an
        observer's, or one granted C{grant}, when asked); else L{Refused}.
        """
        header = request.getHeader(b"authorization") or b""
        scheme, _, secret = header.partition(b" ")
        if scheme.lower() != b"bearer" or not secret.strip():
            raise Refused(Status.NOT_AUTHENTICATED,
                          "send a HyperTCP token as Authorization: Bearer TOKEN")
        try:
            record, _ = self.node.authenticate(
                Login(secret.strip().decode("utf-8"), None, PROTOCOL_LEVEL))
        except UnicodeDecodeError:
            raise Refused(Status.INVALID_TOKEN, "the token is not UTF-8") from None
        except LoginRefused as e:
            raise Refused(e.status, str(e)) from None
        if observer and not record.observer:
            raise Refused(Status.NOT_ALLOWED, f"token {record.name} is not an observer token")
        if grant is not None and grant not in record.grants:
            raise Refused(Status.NOT_ALLOWED, f"token {record.name} is not granted {grant!r}")
        limits = self.node.limits
        if limits.rate_limit:
            now = self.node.clock.seconds()
            rate = self.rates.get(record.hash)
            if rate is None:
                if len(self.rates) >= MAX_TRACKED:
                    self.rates.clear()
                rate = self.rates[record.hash] = RateLimiter(
                    limits.rate_limit, limits.burst, limits.quota_strikes, now)
            if not rate.allow(now):
                raise Refused(Status.QUOTA_LIMIT,
                              f"token {record.name} is over the rate limit of {rate.rate:g}/s")
        return record

    def refuse(self, request: WebRequest, status: int, why: str,
               code: Optional[int] = None) -> bytes:
        """Count, log (once per window) and answer a refused request."""
        self.node.count(Status(status).name.lower())
        unlogged = self.refusals.admit(self.node.clock.seconds())
        if unlogged is not None:
            self.log.warn("{addr}: {method} {path} refused: {why}: {status}{more}",
                          addr=request.getClientAddress().host,
                          method=request.method.decode("ascii", "replace"),
                          path=request.path.decode("ascii", "replace"), why=why,
                          status=status_name(status),
                          more=f" ({unlogged} more refusals unlogged since the last)"
                          if unlogged else "")
        answer = status_answer(request, status, why, code)
        if request.code == 401:
            request.setHeader(b"www-authenticate", b'Bearer realm="hypertcp"')
        return answer


class _Authorized(JSONResource):
    """
    A resource of the API that needs a token: an observer's, with
    C{observer}; one granted C{grant}, when set.
    """

    isLeaf = True
    observer = False
    grant: Optional[str] = None

    def __init__(self, api: Api) -> None:
        super().__init__()
        self.api = api

    def render(self, request: WebRequest) -> Union[bytes, int]:
        handler = self.handler(request)
        if handler is None:
            return self.not_allowed(request)
        try:
            record = self.api.authorize(request, self.observer, self.grant)
        except Refused as e:
            return self.api.refuse(request, e.status, str(e))
        return handler(request, record)


class SendResource(_Authorized):
    """
    C{POST /api/send}: C{{"targetId", "payload", "ack", "qos", "ttl"}}, as a
    TCP client's JSON_MESSAGE.
    """

    def render_POST(self, request: WebRequest, record: "TokenRecord") -> Union[bytes, int]:
        api = self.api
        limit = request.channel.site.body_limit
        if request.body_too_large:
            return api.refuse(request, Status.ILLEGAL_COMMAND_BODY,
                              f"{request.body_size}-byte body over the {limit}-byte limit", 413)
        request.content.seek(0)
        try:
            send = parse_send(Command.JSON_MESSAGE, request.content.read())
        except BadBody as e:
            return api.refuse(request, Status.ILLEGAL_COMMAND_BODY, str(e))
        addr = request.getClientAddress()
        sender = ApiSender(record, record.device_id or f"{record.prefix or ''}api_{record.name}",
                           f"{getattr(addr, 'host', '?')}:{getattr(addr, 'port', 0)}")
        answered: Deferred = Deferred()
        try:
            result = api.node.hub.route_send(sender, send,
                                             lambda status, _: answered.callback(status), None)
        except JSONEncodeError as e:
            return api.refuse(request, Status.ILLEGAL_COMMAND_BODY,
                              f"payload cannot be relayed: {e}")
        except BadBody as e:  # a qos envelope this server will not keep (ttl over the maximum)
            return api.refuse(request, Status.ILLEGAL_COMMAND_BODY, str(e))
        if result is None:
            result = answered  # the store answers once it has committed
        if isinstance(result, int):
            return self._done(request, sender, send.target, result)
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def acknowledged(status: int) -> None:
            if not gone:
                request.write(self._done(request, sender, send.target, status))
                request.finish()

        result.addCallback(acknowledged)
        return NOT_DONE_YET

    def _done(self, request: WebRequest, sender: ApiSender, target: str, status: int) -> bytes:
        if status not in (Status.SUCCESS, Status.STORED):
            why = getattr(status, "why", None)  # the hub's Answer explains its refusals
            return self.api.refuse(request, status, why or f"to {target!r}: "
                                   + MEANING.get(status, status_name(status)))
        extra: dict[str, Any] = {"from": sender.device_id}
        if sender.replies:
            extra["replies"] = [loads(body) for body in sender.replies]
        return status_answer(request, status, **extra)


class DevicesResource(_Authorized):
    """C{GET /api/devices}: this node's logged-in connections, for observer tokens."""

    observer = True

    def render_GET(self, request: WebRequest, record: "TokenRecord") -> bytes:
        return status_answer(request, Status.SUCCESS, devices=devices(self.api.node.hub))


class StatsResource(_Authorized):
    """C{GET /api/stats}: this node's counts and counters, for tokens granted stats."""

    grant = "stats"  # as the stats command

    def render_GET(self, request: WebRequest, record: "TokenRecord") -> bytes:
        return status_answer(request, Status.SUCCESS,
                             **stats(self.api.node, self.api.gateway))
