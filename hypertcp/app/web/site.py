"""
The web listener's site: every answer JSON (errors too), the static files,
and the tree that puts the dashboard, /ws, /api and /metrics on one port.

twisted.web's own error pages are HTML, and a failed render shows a
traceback page; here a request that fails, names a path that is not there
or uses a method a resource does not take gets a JSON body naming the
problem, and the failure goes to the log only.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any, Callable, Optional

from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from hypertcp.protocol.jsoncodec import dumps

JSON = b"application/json"


def answer(request: Request, code: int, value: Any) -> bytes:
    """
    A JSON body with HTTP status C{code}; the caller returns it from its
    render.  It ends in a newline, so a shell prompt after curl's output
    starts on a line of its own.
    """
    request.setResponseCode(code)
    request.setHeader(b"content-type", JSON)
    request.setHeader(b"cache-control", b"no-store")
    return dumps(value) + b"\n"


def problem(request: Request, code: int, why: str, **extra: Any) -> bytes:
    """An error answer: C{{"error": why, ...}} with HTTP status C{code}."""
    return answer(request, code, {"error": why, **extra})


class WebRequest(Request):
    """
    A request that keeps at most C{site.body_limit} bytes of its body (it
    reads and drops the rest, so a large upload costs no memory) and fails
    with a JSON 500, never a traceback page.
    """

    log = Logger()
    body_size = 0

    def handleContentChunk(self, data: bytes) -> None:
        self.body_size += len(data)
        if self.body_size <= self.channel.site.body_limit:
            self.content.write(data)

    @property
    def body_too_large(self) -> bool:
        return self.body_size > self.channel.site.body_limit

    def processingFailed(self, reason: Any) -> Any:
        self.log.failure("{method} {path} failed", failure=reason,
                         method=self.method.decode("ascii", "replace"),
                         path=self.path.decode("ascii", "replace"))
        if self.finished or self._disconnected:
            return reason
        if self.startedWriting:
            # Half an answer is out: only closing tells the client it is not whole.
            self.channel.loseConnection()
            return reason
        body = problem(self, 500, "the server failed internally; the log says why")
        self.setHeader(b"content-length", b"%d" % len(body))
        self.write(body)
        self.finish()
        return reason


class JSONResource(Resource):
    """
    A resource whose errors are JSON: a method it has no C{render_X} for is
    answered 405, a child it does not have 404.
    """

    def methods(self) -> list[str]:
        """The methods this resource answers: each C{render_X}, and HEAD where GET is."""
        names = {name[7:] for name in dir(self)
                 if name.startswith("render_") and name != "render_HEAD"}
        if "GET" in names:
            names.add("HEAD")
        return sorted(names)

    def handler(self, request: Request) -> Optional[Callable[..., Any]]:
        """The C{render_X} for the request's method (GET's for HEAD); None if there is none."""
        method = request.method.decode("ascii", "replace")
        if method not in self.methods():
            return None
        return getattr(self, "render_GET" if method == "HEAD" else f"render_{method}")

    def not_allowed(self, request: Request) -> bytes:
        allowed = self.methods()
        request.setHeader(b"allow", ", ".join(allowed).encode())
        return problem(request, 405, f"{request.method.decode('ascii', 'replace')} is not "
                                     "allowed here; use " + " or ".join(allowed))

    def render(self, request: Request) -> Any:
        handler = self.handler(request)
        return self.not_allowed(request) if handler is None else handler(request)

    def getChild(self, path: bytes, request: Request) -> Resource:
        return NotFound()


class NotFound(JSONResource):
    isLeaf = True

    def render(self, request: Request) -> bytes:
        return problem(request, 404, f"no such resource: {request.path.decode('ascii', 'replace')}")


#: What the dashboard's pages may load and connect to: this server, nothing else.
POLICY = (b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
          b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")

TYPES = {"html": b"text/html; charset=utf-8", "js": b"text/javascript; charset=utf-8",
         "css": b"text/css; charset=utf-8"}


class Static(JSONResource):
    """One file of the package's static/ folder, read once at start."""

    isLeaf = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self.data = (files("hypertcp.app.web") / "static" / name).read_bytes()
        self.type = TYPES[name.rpartition(".")[2]]

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", self.type)
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"content-security-policy", POLICY)
        request.setHeader(b"referrer-policy", b"no-referrer")
        return self.data


#: The static files and the paths they are served at.
STATIC = {b"": "index.html", b"dashboard.js": "dashboard.js", b"dashboard.css": "dashboard.css",
          b"hypertcp.js": "hypertcp.js"}


class WebSite(Site):
    """
    The site on every web listener.  No access log: a scrape every few
    seconds would drown the broker's own lines; refusals are logged where
    they happen.
    """

    requestFactory = WebRequest
    displayTracebacks = False
    noisy = False

    def __init__(self, root: Resource, body_limit: Callable[[], int], reactor: Any = None
                 ) -> None:
        super().__init__(root, reactor=reactor)
        self._body_limit = body_limit

    @property
    def body_limit(self) -> int:
        """The largest request body kept, in bytes: asked each time, as SIGHUP may change it."""
        return self._body_limit()

    def log(self, request: Request) -> None:
        pass


def root(children: dict[bytes, Resource]) -> JSONResource:
    """The tree: the static files at their paths, then C{children} (ws, api, metrics)."""
    top = JSONResource()
    for path, name in STATIC.items():
        top.putChild(path, Static(name))
    for path, child in children.items():
        top.putChild(path, child)
    return top
