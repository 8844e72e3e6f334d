"""
The reconnect storm (C{--storm N}): N devices connect and log in at once,
as after a Wi-Fi outage, and the time until all of them are online.

Every device starts at the same moment: each worker opens its share of the
sockets as fast as it can, with no cap on how many are on their way, so the
server's listen backlog and accept loop are part of what is measured.  A
device that fails is counted, not retried.
"""

from __future__ import annotations

import argparse
import array
import resource
import socket
import time
from collections import Counter
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, Optional

from hypertcp.bench.errors import BenchError
from hypertcp.bench.report import Progress, percentile
from hypertcp.bench.sockets import dial
from hypertcp.bench.workers import gather, ready, spawn, stop

if TYPE_CHECKING:
    from hypertcp.bench.peers import Broker


def listen_overflows() -> Optional[int]:
    """
    The kernel's count of connections dropped because a listen queue was
    full (TcpExt ListenOverflows), for this whole network namespace.
    """
    try:
        with open("/proc/net/netstat") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            found = dict(zip(names.split()[1:], values.split()[1:]))
            return int(found["ListenOverflows"]) if "ListenOverflows" in found else None
    return None


def _job(proto: Any, address: Optional[tuple[str, int]], first: int, count: int, opts: dict,
         pipe: Connection) -> dict:
    """
    A worker's share of the storm: at the start time, dial all its devices
    at once; report when each is online or has failed; hold them until the
    server has been measured.
    """
    if address is None:
        raise BenchError("a reconnect storm needs a server")
    greetings = [(proto.hello(f"bench-storm-{i}", False), proto.welcome(False))
                 for i in range(first, first + count)]
    go, report = ready(pipe)
    while time.monotonic() < go:
        time.sleep(min(go - time.monotonic(), 0.01))
    online_ns = array.array("q")
    socks: list[socket.socket] = []
    failures: Counter = Counter()
    next_report = go + 1.0

    def online(index: int, sock: socket.socket, rest: bytes, session: Any) -> None:
        nonlocal next_report
        online_ns.append(time.monotonic_ns())
        socks.append(sock)
        if time.monotonic() >= next_report:
            report(len(online_ns))
            next_report += 1.0

    def failed(index: int, why: str) -> None:
        failures[why] += 1

    try:
        dial(address, greetings, concurrency=len(greetings), timeout=opts["timeout"],
             tls=opts["tls"], online=online, failed=failed)
        pipe.send(("storm_done", None))
        pipe.recv()  # the server has been measured
    finally:
        for sock in socks:
            sock.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"online_ns": online_ns, "failures": dict(failures),
            "bench_cpu": usage.ru_utime + usage.ru_stime}


def run_storm(broker: Broker, args: argparse.Namespace) -> dict:
    """A reconnect storm of C{args.storm} devices against C{broker}; the figures as a dict."""
    workers = spawn(_job, broker, args.storm, args.procs, {"timeout": args.storm_timeout})
    try:
        gather(workers, "ready", broker, lambda n: None, 120)
        overflows = listen_overflows()
        cpu0 = broker.cpu()
        go = time.monotonic() + 0.2
        for _, pipe in workers:
            pipe.send(go)
        progress = Progress(broker.name, "online", args.quiet)
        gather(workers, "storm_done", broker, progress, args.storm_timeout + 60)
        cpu1 = broker.cpu()
        memory = broker.memory()
        overflows_after = listen_overflows()
        for _, pipe in workers:
            pipe.send(None)
        results = gather(workers, "done", broker, progress, 60)
    finally:
        stop(workers)
    progress.done()
    go_ns = int(go * 1e9)
    ordered = sorted(t - go_ns for r in results for t in r["online_ns"])
    failures: Counter = Counter()
    for r in results:
        failures.update(r["failures"])
    all_online_s = ordered[-1] / 1e9 if ordered else None
    return {
        "devices": args.storm,
        "online": len(ordered),
        "failures": sum(failures.values()),
        "failure_reasons": dict(failures.most_common(5)),
        "all_online_s": all_online_s,
        "logins_per_s": len(ordered) / all_online_s if all_online_s else None,
        "online_p50_ms": percentile(ordered, 0.50),
        "online_p99_ms": percentile(ordered, 0.99),
        "server_cpu_s": cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None,
        "server_rss_mb": memory["rss_kb"] / 1024 if memory.get("rss_kb") else None,
        "listen_overflows": (overflows_after - overflows
                             if overflows is not None and overflows_after is not None else None),
        "bench_cpu_s": sum(r["bench_cpu"] for r in results),
    }
