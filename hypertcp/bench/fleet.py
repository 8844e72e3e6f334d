"""
The idle fleet (C{--idle N}): the other cost of a broker for devices, N
logged-in connections that only heartbeat, and the server memory and CPU
they take.
"""

from __future__ import annotations

import argparse
import select
import time
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, Callable, Optional

from hypertcp.bench.report import Progress
from hypertcp.bench.sockets import Conn, open_many
from hypertcp.bench.workers import gather, ready, spawn, stop
from hypertcp.protocol.frames import MAX_MSG_ID

if TYPE_CHECKING:
    from hypertcp.bench.peers import Broker


def heartbeat(proto: Any, conns: list[Conn], *, go: float, duration: float, every: float,
              report: Callable[[int], None]) -> dict:
    """
    Keep C{conns} logged in and otherwise idle: each sends one heartbeat per
    C{every} seconds (spread evenly over the fleet) and answers the server's.
    """
    ep = select.epoll()
    by_fd = {}
    for conn in conns:
        by_fd[conn.fd] = conn
        ep.register(conn.fd, select.EPOLLIN)
    rate = len(conns) / every
    due_sent = answered = closed = 0
    out: list[bytes] = []
    end = go + duration
    next_report = go + 1.0
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if now >= next_report:
            report(answered)
            next_report += 1.0
        due = int((now - go) * rate) + 1
        for g in range(due_sent, due):
            conn = conns[g % len(conns)]
            if conn.open:
                try:
                    conn.sock.send(conn.seal(proto.heartbeat(g // len(conns) % MAX_MSG_ID + 1)))
                except OSError:
                    pass
        due_sent = max(due, due_sent)
        left = go + due_sent / rate - time.monotonic()
        for fd, event in ep.poll(max(0.0, min(left, end - now, 0.5))):
            conn = by_fd[fd]
            buf = conn.read(ep)
            if buf is None:
                continue
            if not buf:
                closed += 1
                continue
            used, count = proto.answers(None, buf, out)
            answered += count
            conn.inbuf = buf[used:]
            if out:
                conn.sock.send(conn.seal(b"".join(out)))
                out.clear()
    ep.close()
    return {"heartbeats": min(due_sent, int(duration * rate)), "answered": answered,
            "closed": closed}


def _job(proto: Any, address: Optional[tuple[str, int]], first: int, count: int, opts: dict,
         pipe: Connection) -> dict:
    """
    A worker's part of the fleet: log its devices in, heartbeat from the
    start time, then keep them connected until the server has been measured.
    """
    welcome = proto.welcome(False)
    socks = open_many(address, [(proto.hello(f"bench-idle-{i}", False), welcome)
                                for i in range(first, first + count)], tls=opts["tls"])
    conns = [Conn(sock, None, False, rest, tls) for sock, rest, tls in socks]
    go, report = ready(pipe)
    result = heartbeat(proto, conns, go=go, duration=opts["duration"], every=opts["heartbeat"],
                       report=report)
    pipe.send(("idle_done", None))
    pipe.recv()  # the server has been measured
    for conn in conns:
        conn.sock.close()
    return result


def run_idle(broker: Broker, args: argparse.Namespace) -> dict:
    """An idle fleet against C{broker}: memory per connection, CPU per idle second."""
    opts = {"duration": args.idle_time, "heartbeat": args.heartbeat}
    time.sleep(0.5)
    before = broker.memory()
    started = time.monotonic()
    workers = spawn(_job, broker, args.idle, args.procs, opts)
    try:
        gather(workers, "ready", broker, lambda n: None, 900)
        connect_s = time.monotonic() - started
        time.sleep(1.0)  # let the server finish logging the logins
        go = time.monotonic()
        cpu0 = broker.cpu()
        for _, pipe in workers:
            pipe.send(go)
        progress = Progress(broker.name, "heartbeats", args.quiet)
        gather(workers, "idle_done", broker, progress, args.idle_time + 60)
        cpu1 = broker.cpu()
        after = broker.memory()
        for _, pipe in workers:
            pipe.send(None)
        results = gather(workers, "done", broker, progress, 60)
    finally:
        stop(workers)
    progress.done()
    figures: dict[str, Any] = {"connections": args.idle, "connect_s": connect_s}
    for key in ("heartbeats", "answered", "closed"):
        figures[key] = sum(r[key] for r in results)
    known = before["rss_kb"] is not None
    figures.update({
        "rss_before_mb": before["rss_kb"] / 1024 if known else None,
        "rss_after_mb": after["rss_kb"] / 1024 if known else None,
        "rss_per_conn_kb": (after["rss_kb"] - before["rss_kb"]) / args.idle if known else None,
        "idle_cpu_s": cpu1 - cpu0 if known else None,
        "idle_cpu_percent": 100 * (cpu1 - cpu0) / args.idle_time if known else None,
    })
    return figures
