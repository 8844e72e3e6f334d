"""One operation on the cluster's Redis from a command line: connect, do it, stop."""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred

from hypertcp.cluster.keys import Keys
from hypertcp.cluster.redis import RedisLink
from hypertcp.cluster.url import parse

#: Seconds to reach Redis before giving up.
CONNECT_TIMEOUT = 10.0


def run(url_text: str, action: Callable[[Callable[..., Deferred], Keys], Deferred],
        prefix: str = "hypertcp:", ca: Optional[str] = None) -> Any:
    """
    Run C{action(call, keys)} against the Redis at C{url_text} and return
    its result; raise what it raised, or ConnectionError if Redis cannot be
    reached in time.  Runs (and stops) the reactor: for a process that does
    one thing.
    """
    from twisted.internet import reactor

    url = parse(url_text)
    keys = Keys(prefix)
    tls = None
    if url.tls:
        from hypertcp.app.tls import client_options
        tls = client_options(url.host, ca)
    outcome: list[Any] = []

    def finish(result: Any) -> None:
        if not outcome:
            outcome.append(result)
            link.stopService()
            reactor.stop()

    def up() -> None:
        d = action(link.call, keys)
        d.addBoth(finish)

    link = RedisLink(url, [keys.everyone], lambda channel, data: None, up, lambda: None,
                     tls=tls, reactor=reactor)
    link.log = _Quiet()
    reactor.callWhenRunning(link.startService)
    reactor.callLater(CONNECT_TIMEOUT, finish,
                      ConnectionError(f"Redis at {url} is unreachable"))
    reactor.run()
    [result] = outcome
    if isinstance(result, Exception):
        raise result
    if hasattr(result, "raiseException"):  # a Failure
        result.raiseException()
    return result


class _Quiet:
    """A command line says what went wrong once, as its error; the link's log lines are not for it."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None
