"""
The load generator's processes.  Each runs a job on its slice of the pairs
or of the idle fleet and talks to us over a pipe: ready once connected, then
progress each second, then done with its counts (or an error).
"""

from __future__ import annotations

import multiprocessing
import time
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any, Callable, Optional

from hypertcp.bench.errors import BenchError

if TYPE_CHECKING:
    from hypertcp.bench.peers import Broker

#: A worker's job: (protocol, address, first, count, options, pipe) -> its counts.
Job = Callable[[Any, Optional[tuple[str, int]], int, int, dict, Connection], dict]


def ready(pipe: Connection) -> tuple[float, Callable[[int], None]]:
    """
    Say this worker is connected and wait for the start time; return it and
    the function that passes progress on.
    """
    pipe.send(("ready", None))
    go = pipe.recv()
    return go, lambda n: pipe.send(("progress", n))


def _worker(job: Job, proto: Any, address: Optional[tuple[str, int]], first: int, count: int,
            opts: dict, pipe: Connection) -> None:
    """A load-generator process: run C{job}, send back its counts."""
    try:
        pipe.send(("done", job(proto, address, first, count, opts, pipe)))
    except BenchError as e:
        pipe.send(("error", str(e)))
    except Exception as e:  # a worker must always answer, or the run hangs
        pipe.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        pipe.close()


def spawn(job: Job, broker: Broker, total: int, procs: int, opts: dict) -> list:
    """
    Fork up to C{procs} workers running C{job}, the C{total} split evenly
    between them.  C{opts["tls"]} is the broker's client TLS context (None
    for plain TCP); forked, not pickled.
    """
    opts = dict(opts, tls=broker.tls)
    ctx = multiprocessing.get_context("fork")
    workers = []
    for n in range(procs):
        first = total * n // procs
        count = total * (n + 1) // procs - first
        if not count:
            continue
        ours, theirs = ctx.Pipe()
        proc = ctx.Process(target=_worker, daemon=True,
                           args=(job, broker.proto, broker.address, first, count, opts, theirs))
        proc.start()
        theirs.close()
        workers.append((proc, ours))
    return workers


def gather(workers: list, kind: str, broker: Broker, progress: Callable[[int], None],
           timeout: float, tick: Callable[[], None] = lambda: None) -> list:
    """
    Wait for a message of C{kind} from every worker, passing their progress
    on, and calling C{tick} at least every 50 ms.
    """
    results: dict[int, Any] = {}
    counts = [0] * len(workers)
    deadline = time.monotonic() + timeout
    pipes = {pipe: i for i, (_, pipe) in enumerate(workers)}
    while len(results) < len(workers):
        tick()
        broker.check()
        if time.monotonic() > deadline:
            raise BenchError(f"the load generator timed out waiting for {kind}")
        for pipe in wait(list(pipes), 0.05):
            i = pipes[pipe]
            try:
                what, value = pipe.recv()
            except EOFError:
                raise BenchError("a load-generator process died") from None
            if what == "error":
                raise BenchError(value)
            if what == "progress":
                counts[i] = value
                progress(sum(counts))
            elif what == kind:
                results[i] = value
                del pipes[pipe]  # a worker that is done may exit: its pipe then reads EOF
    return [results[i] for i in range(len(workers))]


def stop(workers: list) -> None:
    """Close the pipes and see the workers gone."""
    for proc, pipe in workers:
        pipe.close()
        proc.join(2)
        if proc.is_alive():
            proc.kill()
