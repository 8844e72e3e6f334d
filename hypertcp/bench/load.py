"""
The throughput run: N sender->receiver pairs, each worker process driving
its slice of them from one epoll loop, and the figures that come out.
"""

from __future__ import annotations

import argparse
import array
import resource
import select
import time
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, Callable, Optional

from hypertcp.bench.message import payload_template
from hypertcp.bench.pair import Pair
from hypertcp.bench.report import Progress, percentile
from hypertcp.bench.sockets import Conn, open_many, socket_pairs
from hypertcp.bench.workers import gather, ready, spawn, stop

if TYPE_CHECKING:
    from hypertcp.bench.peers import Broker

DRAIN = 5.0  # seconds after the run for what is in flight to arrive
SWEEP = 0.25  # seconds between reads of every sender's answers
READ_EVERY = 16  # and a sender's are read before it sends, once it has sent this many more


def _open(proto: Any, pairs: list[Pair], receiver: bool, where: Callable[[int], Any],
          tls: Any) -> list[Any]:
    """Log in each pair's receiver (or sender) where C{where(index)} says, in the pairs' order."""
    kind = "r" if receiver else "s"
    groups: dict[Any, list[int]] = {}
    for n, pair in enumerate(pairs):
        groups.setdefault(where(pair.index), []).append(n)
    opened: list[Any] = [None] * len(pairs)
    for address, members in groups.items():
        for n, conn in zip(members, open_many(address, [
                (proto.hello(f"bench-{kind}-{pairs[n].index}", receiver), proto.welcome(receiver))
                for n in members], tls=tls)):
            opened[n] = conn
    return opened


def _connect_pairs(proto: Any, address: Optional[tuple[str, int]], first: int, count: int,
                   size: int, tls: Any = None,
                   place: Optional[Callable[[int], tuple[Any, Any]]] = None) -> list[Pair]:
    """
    Connect and log in pairs C{first} .. C{first + count - 1}, each end at
    the address C{place(index)} names for it (a cluster's nodes), or at
    C{address}.
    """
    inner = payload_template(size)
    pairs = []
    for i in range(first, first + count):
        pairs.append(Pair(i, proto.template(f"bench-s-{i}", f"bench-r-{i}", inner)))
    if hasattr(proto, "connect_pairs"):  # an end on another transport: hypertcp.bench.websocket
        proto.connect_pairs(address, pairs)
        return pairs
    if address is None:
        ends = socket_pairs(count)
        for pair, (near, far) in zip(pairs, ends):
            pair.sender, pair.receiver = Conn(near, pair, False), Conn(far, pair, True)
        return pairs
    if place is None:
        place = lambda index: (address, address)  # noqa: E731
    # Receivers first, so the first message finds its target logged in.
    receivers = _open(proto, pairs, True, lambda index: place(index)[1], tls)
    senders = _open(proto, pairs, False, lambda index: place(index)[0], tls)
    for pair, (rsock, rrest, rtls), (ssock, srest, stls) in zip(pairs, receivers, senders):
        pair.receiver = Conn(rsock, pair, True, rrest, rtls)
        pair.sender = Conn(ssock, pair, False, srest, stls)
    return pairs


def drive(proto: Any, pairs: list[Pair], *, go: float, warmup: float, duration: float,
          rate: float, window: int, ack: bool, report: Callable[[int], None]) -> dict:
    """
    Run the load on C{pairs} and return the counts.  As fast as possible
    (C{rate} 0), each sender keeps at most C{window} messages on their way
    to its receiver, and sends more as they arrive.  At a fixed rate, message
    C{g} of this worker is due at C{go + g / rate}, round robin over the
    pairs, and carries that due time as its send time: a server that falls
    behind shows as latency, not as a quietly lower rate.
    """
    IN, OUT, ERR = select.EPOLLIN, select.EPOLLOUT, select.EPOLLERR | select.EPOLLHUP
    ep = select.epoll()
    by_fd: dict[int, Conn] = {}
    # Receivers are polled for input; senders are not, and their answers are
    # read in sweeps.  So an answer wakes nobody here: on a fleet it costs the
    # server a send, not the wake-up of a load generator sharing its cores,
    # and the generator's epoll returns once per delivery, not twice a message.
    for pair in pairs:
        for conn in (pair.sender, pair.receiver):
            by_fd[conn.fd] = conn
            ep.register(conn.fd, IN if conn.receiver else 0)
    batch, receive, answers = proto.batch, proto.receive, proto.answers
    lat = array.array("q")
    closed = 0
    out: list[bytes] = []

    def send(conn: Conn, data: bytes) -> None:
        write(conn, data if conn.tls is None else conn.tls.encrypt(data))

    def write(conn: Conn, data: bytes) -> None:
        """Bytes for the wire: what the socket does not take waits for it to drain."""
        nonlocal closed
        if conn.outbuf:
            conn.outbuf += data
            return
        try:
            sent = conn.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            if conn.open:
                conn.open = False
                closed += 1
                ep.unregister(conn.fd)
            return
        if sent < len(data):
            conn.outbuf = data[sent:]
            ep.modify(conn.fd, IN | OUT if conn.receiver else OUT)

    def read_answers(conn: Conn) -> None:
        """Read what a sender has been answered (and answer the server's pings)."""
        nonlocal closed
        buf = conn.read(ep)
        if buf is None:
            return
        if not buf:
            closed += 1
            return
        used = answers(conn.pair, buf, out)[0]
        conn.inbuf = buf[used:] if used < len(buf) else b""
        if out:
            send(conn, b"".join(out))
            out.clear()

    def sweep() -> None:
        for pair in pairs:
            if pair.sender.open:
                read_answers(pair.sender)

    def top_up(pair: Pair, count: int, ts: int, step: int) -> None:
        if pair.sent - pair.read_at >= READ_EVERY and pair.sender.open:
            read_answers(pair.sender)
            pair.read_at = pair.sent
        data = batch(pair.template, pair.sent, count, ts, step)
        pair.sent += count
        send(pair.sender, data)

    count = len(pairs)
    win_start = go + warmup
    win_end = win_start + duration
    win_start_ns, win_end_ns = int(win_start * 1e9), int(win_end * 1e9)
    in_window = 0
    period = 1e9 / rate if rate else 0.0
    due_sent = 0  # messages scheduled so far (fixed rate)
    go_ns = int(go * 1e9)
    while time.monotonic() < go:
        time.sleep(min(go - time.monotonic(), 0.05))
    if not rate:
        now_ns = time.monotonic_ns()
        for pair in pairs:
            top_up(pair, window, now_ns, 0)
    sending = True
    stop_at = 0.0
    next_report = go + 1.0
    next_sweep = go + SWEEP
    touched: list[Pair] = []
    while True:
        now = time.monotonic()
        if now >= next_sweep:
            sweep()
            next_sweep = now + SWEEP
        if sending and now >= win_end:
            sending = False
            stop_at = now + DRAIN
        if not sending and (now >= stop_at or all(p.expected >= p.sent for p in pairs)):
            break
        if now >= next_report:
            report(sum(p.unique for p in pairs))
            next_report += 1.0
        timeout = 0.05
        if rate and sending:
            due = int((now - go) * rate) + 1
            if due > due_sent:
                if due - due_sent < count:
                    for g in range(due_sent, due):
                        top_up(pairs[g % count], 1, go_ns + int(g * period), 0)
                else:
                    for i, pair in enumerate(pairs):
                        owed = (due - i + count - 1) // count - pair.sent
                        if owed > 0:
                            top_up(pair, owed, go_ns + int((pair.sent * count + i) * period),
                                   int(count * period))
                due_sent = due
            # epoll sleeps in whole milliseconds and oversleeping would show
            # as latency, so it sleeps only when the next message is far off;
            # closer, short naps leave the broker its CPU (no busy wait).
            left = go + due_sent / rate - time.monotonic()
            timeout = left - 0.0015 if left > 0.0025 else 0
        events = ep.poll(timeout)
        if not events and not timeout and rate and sending:
            time.sleep(0.0001)
        for fd, event in events:
            conn = by_fd[fd]
            if event & OUT and conn.outbuf:
                data, conn.outbuf = conn.outbuf, b""
                write(conn, data)
                if not conn.outbuf and conn.open:
                    ep.modify(fd, IN if conn.receiver else 0)
            if not event & (IN | ERR) or not conn.open:
                continue
            if not conn.receiver:  # gone: its answers are otherwise read in sweeps
                read_answers(conn)
                continue
            buf = conn.read(ep)
            if buf is None:
                continue
            if not buf:
                closed += 1
                continue
            pair = conn.pair
            now_ns = time.monotonic_ns()
            measured = win_start_ns <= now_ns < win_end_ns
            before = pair.unique
            used = receive(pair, buf, now_ns, lat if measured else None, out, ack)
            if measured:
                in_window += pair.unique - before
            if sending and not rate:
                touched.append(pair)
            conn.inbuf = buf[used:] if used < len(buf) else b""
            if out:
                send(conn, b"".join(out))
                out.clear()
        if touched:
            now_ns = time.monotonic_ns()
            for pair in touched:
                room = window - (pair.sent - pair.expected)
                if room > 0 and not pair.sender.outbuf and pair.sender.open:
                    top_up(pair, room, now_ns, 0)
            touched.clear()
    sweep()
    ep.close()
    for conn in by_fd.values():
        conn.sock.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "sent": sum(p.sent for p in pairs),
        "delivered": sum(p.unique for p in pairs),
        "in_window": in_window,
        "lost": sum(p.sent - p.unique for p in pairs),
        "duplicated": sum(p.dups for p in pairs),
        "malformed": sum(p.bad for p in pairs),
        "refused": sum(p.refused for p in pairs),
        "closed": closed,
        "latencies": lat,
        "bench_cpu": usage.ru_utime + usage.ru_stime,
    }


def _job(proto: Any, address: Optional[tuple[str, int]], first: int, count: int, opts: dict,
         pipe: Connection) -> dict:
    """A worker's part of the run: connect its pairs, then drive them from the start time."""
    pairs = _connect_pairs(proto, address, first, count, opts["payload"], opts["tls"],
                           opts["place"])
    go, report = ready(pipe)
    # This process's share of a fixed total rate is its share of the pairs.
    return drive(proto, pairs, go=go, warmup=opts["warmup"], duration=opts["duration"],
                 rate=opts["rate"] * count / opts["pairs"], window=opts["window"],
                 ack=opts["ack"], report=report)


def run_pairs(broker: Broker, args: argparse.Namespace) -> dict:
    """One throughput run against C{broker}; the figures as a dict."""
    opts = {"pairs": args.pairs, "payload": args.payload, "warmup": args.warmup,
            "duration": args.duration, "rate": args.rate, "window": args.window,
            "ack": args.ack, "place": broker.place if broker.address else None}
    workers = spawn(_job, broker, args.pairs, args.procs, opts)
    try:
        gather(workers, "ready", broker, lambda n: None, 600)
        broker.settle()
        go = time.monotonic() + 0.2
        for _, pipe in workers:
            pipe.send(go)
        progress = Progress(broker.name, "delivered", args.quiet)
        # The server's CPU and memory, sampled at the edges of the measured window.
        edges = [go + args.warmup, go + args.warmup + args.duration]
        marks: list[Optional[float]] = []
        memory: dict[str, Optional[int]] = {}

        extra: list[dict[str, float]] = []

        def tick() -> None:
            while len(marks) < 2 and time.monotonic() >= edges[len(marks)]:
                marks.append(broker.cpu())
                extra.append(broker.extra_cpu())
                if len(marks) == 2:
                    memory.update(broker.memory())

        results = gather(workers, "done", broker, progress,
                         args.warmup + args.duration + DRAIN + 60, tick)
        tick()  # the workers stop sending at the window's end, so it has passed
    finally:
        stop(workers)
    progress.done()
    lat = array.array("q")
    for r in results:
        lat.extend(r["latencies"])
    ordered = sorted(lat)
    figures: dict[str, Any] = {key: sum(r[key] for r in results) for key in (
        "sent", "delivered", "lost", "duplicated", "malformed", "refused", "closed")}
    in_window = sum(r["in_window"] for r in results)
    cpu = marks[1] - marks[0] if len(marks) == 2 and marks[0] is not None else None
    figures.update({
        "msgs_per_s": in_window / args.duration,
        "p50_ms": percentile(ordered, 0.50),
        "p99_ms": percentile(ordered, 0.99),
        "p999_ms": percentile(ordered, 0.999),
        "max_ms": ordered[-1] / 1e6 if ordered else None,
        "server_cpu_s": cpu,
        "server_cpu_percent": 100 * cpu / args.duration if cpu is not None else None,
        "server_peak_rss_mb": memory["peak_kb"] / 1024 if memory.get("peak_kb") else None,
        "msgs_per_cpu_s": in_window / cpu if cpu else None,
        "bench_cpu_s": sum(r["bench_cpu"] for r in results),
    })
    if len(extra) == 2:  # e.g. a cluster's Redis, over the same window
        figures.update({name: extra[1][name] - extra[0][name] for name in extra[0]})
    return figures
