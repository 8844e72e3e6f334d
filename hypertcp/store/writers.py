"""
Where the embedded store's batches run (L{IBatchWriter}): the file's one
writer in a process of its own (the default), or on a thread of the
server's.

Under load the process stores about a third more messages a second: a
thread's SQLite calls let go of the GIL, but its Python does not, so it and
the reactor take turns on one core while the other idles (docs/
performance.rst).  The thread costs no second process (about 14 MB).
"""

from __future__ import annotations

import os
import pickle
import sys
from collections import deque
from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

import hypertcp
from hypertcp.store.child import frame, split
from hypertcp.store.interfaces import IBatchWriter
from hypertcp.store.sqlitefile import Writer

#: A writer that lived this many seconds was steady: if it dies, it is restarted at once.
STEADY = 10.0
#: The pause before restarting a writer that died young, doubled each time it does again...
FIRST_PAUSE = 0.5
#: ...up to this many seconds.
LONGEST_PAUSE = 30.0
#: Seconds a stopping writer has to commit what it has and exit before it is killed.
STOP_TIMEOUT = 30.0


class WriterLost(ConnectionError):
    """
    The writer's process ended with batches unanswered, or is being
    restarted: what they held is not known to be stored.
    """


@implementer(IBatchWriter)
class ThreadWriter:
    """
    The writer on a thread of the server's own (a pool of one: SQLite takes
    one writer at a time); C{run(f, *args)} may be given instead, to run its
    batches some other way (tests run them inline).
    """

    pipelined = False
    restarts = 0  # it dies with the server

    def __init__(self, writer: Writer, clock: Any,
                 run: Optional[Callable[..., Deferred]] = None) -> None:
        self.writer = writer
        self._pool: Any = None
        if run is None:
            from twisted.internet.threads import deferToThreadPool
            from twisted.python.threadpool import ThreadPool
            # Started by start(): a thread left running would keep the process alive.
            pool = self._pool = ThreadPool(1, 1, name="hypertcp-store")
            run = lambda f, *args: deferToThreadPool(clock, pool, f, *args)  # noqa: E731
        self._run = run

    @property
    def expired(self) -> int:
        # The writer's count, read across threads: an int, read whole.
        return self.writer.expired

    def start(self) -> None:
        if self._pool is not None:
            self._pool.start()

    def run(self, operations: list) -> Deferred:
        return self._run(self.writer.batch, operations)

    def stop(self) -> Deferred:
        self.writer.conn.close()
        if self._pool is not None:
            self._pool.stop()
        return succeed(None)


@implementer(IBatchWriter)
class ProcessWriter(ProcessProtocol):
    """
    The writer in a child process (L{hypertcp.store.child}), which opens the
    file itself.  Batches are written to it as they come; it answers them in
    order.  If it dies, the batches it held fail with L{WriterLost} (their
    senders are answered SERVER_EXCEPTION: they may or may not be stored)
    and it is started again -- at once if it had run steadily, after a
    growing pause if it keeps dying young -- reading the file afresh.
    What it writes to its standard error is logged.
    """

    pipelined = True
    log = Logger()

    def __init__(self, path: str, synchronous: str, reactor: Any,
                 spawn: Optional[Callable[["ProcessWriter"], None]] = None) -> None:
        self.path = path
        self.synchronous = synchronous
        self.clock = reactor
        self._spawn = spawn or self._spawn_child
        self.expired = 0
        self.restarts = 0
        self.transport: Any = None
        self._waiting: deque[Deferred] = deque()
        self._buffered = b""
        self._started = 0.0
        self._pause = 0.0
        self._restart: Any = None
        self._stopped: Optional[Deferred] = None
        self._kill: Any = None

    def start(self) -> None:
        self._restart = None
        self._buffered = b""
        self._started = self.clock.seconds()
        self._spawn(self)  # connects: self.transport is the process

    def _spawn_child(self, protocol: ProcessProtocol) -> None:
        # The child imports this very package, wherever it was imported from here.
        where = os.path.dirname(os.path.dirname(os.path.abspath(hypertcp.__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [where, env.get("PYTHONPATH")]))
        self.clock.spawnProcess(protocol, sys.executable,
                                [sys.executable, "-m", "hypertcp.store.child", self.path,
                                 self.synchronous], env=env)

    def run(self, operations: list) -> Deferred:
        if self.transport is None or self._stopped is not None:
            return fail(WriterLost("the message store's writer is not running "
                                   "(it is being restarted)"))
        self.transport.write(frame(operations))
        d: Deferred = Deferred()
        self._waiting.append(d)
        return d

    def outReceived(self, data: bytes) -> None:
        payloads, self._buffered = split(self._buffered + data)
        for payload in payloads:
            ok, result, self.expired = pickle.loads(payload)
            d = self._waiting.popleft()
            if ok:
                d.callback(result)
            else:
                d.errback(Failure(result))

    def errReceived(self, data: bytes) -> None:
        for line in data.decode("utf-8", "replace").splitlines():
            if line.strip():
                self.log.error("message store writer: {line}", line=line)

    def processEnded(self, reason: Failure) -> None:
        self.transport = None
        waiting, self._waiting = self._waiting, deque()
        if self._kill is not None and self._kill.active():
            self._kill.cancel()
        ended = reason.value
        why = (f"killed by signal {ended.signal}" if getattr(ended, "signal", None)
               else f"exit code {getattr(ended, 'exitCode', None)}")
        for d in waiting:
            d.errback(Failure(WriterLost(f"the message store's writer ended: {why}")))
        if self._stopped is not None:
            self._stopped.callback(None)
            return
        lived = self.clock.seconds() - self._started
        self._pause = 0.0 if lived >= STEADY else min(max(2 * self._pause, FIRST_PAUSE),
                                                      LONGEST_PAUSE)
        self.log.error("the message store's writer ended ({why}) with {count} batches "
                       "unanswered; starting it again in {pause:g} s", why=why,
                       count=len(waiting), pause=self._pause)
        self.restarts += 1
        self._restart = self.clock.callLater(self._pause, self.start)

    def stop(self) -> Deferred:
        """Close its input: it commits what it has and exits (or is killed after STOP_TIMEOUT)."""
        if self._stopped is None:
            self._stopped = Deferred()
            if self._restart is not None and self._restart.active():
                self._restart.cancel()
            if self.transport is None:
                self._stopped.callback(None)
            else:
                self.transport.closeStdin()
                self._kill = self.clock.callLater(STOP_TIMEOUT, self._signal, "KILL")
        return self._stopped

    def _signal(self, name: str) -> None:
        if self.transport is not None:
            self.log.warn("the message store's writer has not exited; killing it")
            self.transport.signalProcess(name)
