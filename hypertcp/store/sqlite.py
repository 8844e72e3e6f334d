"""
The embedded message store as the server uses it: one SQLite file, whose
one writer (L{IBatchWriter}) runs away from the reactor -- in a process of
its own by default (L{hypertcp.store.writers}).

Everything the reactor asks of the store in one turn -- stored messages,
deliveries to forget, a device's next page -- becomes one batch, handed to
the writer, so the reactor never waits on the disk.  Each caller is
answered once its batch has committed, which is when the server may answer
STORED.  The writer commits together whatever has reached it by the time it
is ready (a thread takes one batch at a time: what comes meanwhile waits
here), so commits grow with the load and a burst of messages costs one
commit (one fsync), not one each.

The file is in WAL mode with C{synchronous} FULL by default: a commit
returns once the write-ahead log is fsynced, so a message answered STORED
survives the process being killed and the machine losing power.  With
NORMAL the log is fsynced only at checkpoints: still nothing lost to a
killed process, but a power cut can lose the last commits.  The file's
layout and its writer are L{hypertcp.store.sqlitefile}'s.
"""

from __future__ import annotations

import sqlite3
from contextlib import nullcontext
from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from hypertcp.store.interfaces import IBatchWriter, IMessageStore
from hypertcp.store.records import Bounds
from hypertcp.store.sqlitefile import SWEEP_CHUNK, Writer, has_messages

#: Seconds between log lines about failing batches.
FAILURE_LOG_INTERVAL = 10.0
#: What each operation but a put answers when the file holds no message.
EMPTY = {Writer.fetch: list, Writer.messages: list, Writer.queues: list, Writer.purge: int,
         Writer.sweep: int, Writer.remove: bool}


@implementer(IMessageStore)
class SQLiteStore:
    """
    The embedded store: batches of what the reactor asks, handed to the
    file's writer.  C{path} names the file in what is logged.

    Given C{probe}, a connection to the file, the writer is started only
    when it is first needed: until then, what is asked of a file that holds
    no message (a device's backlog at each login, the sweep) is answered
    here after one read, so a server whose clients never ask for qos runs no
    writer at all.  The first put, or a file found to hold messages (another
    server's, sharing it), starts the writer, and the probe is closed.
    """

    log = Logger()

    def __init__(self, writer: IBatchWriter, bounds: Bounds, clock: Any, path: str,
                 writes: Any = None, probe: Optional[sqlite3.Connection] = None) -> None:
        self.writer = writer
        #: Until the writer is started (when it was given): the file, to look into.
        self._probe = probe
        self._pipelined = writer.pipelined
        self.path = path
        #: The server's write batch (begin/end): a commit's answers go out one write per peer.
        self.writes = writes
        self.bounds = bounds
        self.clock = clock
        #: Batches committed, and the operations in them: how well group commit groups.
        self.batches = self.operations = 0
        #: What the next batch asks of the writer: C{(operation, args)} each...
        self._pending: list[tuple[Callable, tuple]] = []
        # ...and who is answered, beside it: C{(then, then_args)}, C{then} a
        # Deferred or a callable answered as C{then(result, *then_args)} (L{put_then}).
        self._answers: list[tuple[Any, tuple]] = []
        self._running = 0  # batches handed to the writer, not yet answered
        self._call: Any = None
        self._closed: Optional[Deferred] = None
        self._failure_logged = float("-inf")

    def start(self) -> None:
        if self._probe is None:  # else the writer starts when first needed
            self.writer.start()

    def _start_writer(self) -> None:
        """The writer is needed now: let go of the probe and start it."""
        self._probe.close()
        self._probe = None
        self.writer.start()

    # -- batching --

    def _submit(self, operation: Callable, *args: Any) -> Deferred:
        if self._closed is not None:
            return fail(RuntimeError("the message store is closed"))
        if self._probe is not None and operation is not Writer.put:
            if not has_messages(self._probe):
                return succeed(EMPTY[operation]())
            self._start_writer()
        d: Deferred = Deferred()
        self._enqueue(operation, args, d, ())
        return d

    def _enqueue(self, operation: Callable, args: tuple, then: Any, then_args: tuple) -> None:
        """Into the next batch, which goes next turn, or once the writer is free."""
        self._pending.append((operation, args))
        self._answers.append((then, then_args))
        if self._call is None and (self._pipelined or not self._running):
            self._call = self.clock.callLater(0, self._flush)

    def _flush(self) -> None:
        self._call = None
        if not self._pending or (self._running and not self._pipelined):
            return
        if self._probe is not None:
            self._start_writer()
        batch, self._pending = self._pending, []
        answers, self._answers = self._answers, []
        self._running += 1
        self.writer.run(batch).addBoth(self._committed, answers)

    def _committed(self, results: Any, answers: list[tuple[Any, tuple]]) -> None:
        # Still running while the callers' callbacks run: what they submit
        # waits for the next turn's batch.
        failed = isinstance(results, Failure)
        if failed:
            now = self.clock.seconds()
            if now - self._failure_logged >= FAILURE_LOG_INTERVAL:
                # A full disk fails every batch: one line per interval, not a flood.
                self._failure_logged = now
                self.log.failure("message store {path}: a batch of {count} failed", results,
                                 path=self.path, count=len(answers))
            results = [results] * len(answers)
        else:
            self.batches += 1
            self.operations += len(answers)
        with nullcontext() if self.writes is None else self.writes.holding():
            for (then, extra), result in zip(answers, results):
                if type(then) is Deferred:
                    if failed:
                        then.errback(result)
                    else:
                        then.callback(result)
                    continue
                try:
                    then(result, *extra)
                except Exception:
                    # One caller's fault must not leave the others unanswered.
                    self.log.failure("message store {path}: answering a batch", path=self.path)
        self._running -= 1
        if self._pending:
            if self._closed is not None:
                self._flush()  # the last batch, now
            elif self._call is None:
                self._call = self.clock.callLater(0, self._flush)
        elif self._closed is not None and not self._running and not self._closed.called:
            self._shut()

    # -- IMessageStore --

    def put(self, device_id: str, sender: str, payload: bytes, queued_at: int,
            expires_at: int) -> Deferred:
        # It is accepted now: its queued_at is the now its bounds are checked at.
        return self._submit(Writer.put, device_id, sender, payload, queued_at, expires_at,
                            self.bounds, queued_at)

    def put_then(self, device_id: str, sender: str, payload: bytes, queued_at: int,
                 expires_at: int, then: Callable[..., None], *args: Any) -> None:
        # A Deferred and its callbacks cost more than the rest of a stored
        # message on the reactor: a committed batch calls its callers directly.
        if self._closed is not None:
            then(Failure(RuntimeError("the message store is closed")), *args)
            return
        self._enqueue(Writer.put, (device_id, sender, payload, queued_at, expires_at,
                                   self.bounds, queued_at), then, args)

    @property
    def expired(self) -> int:
        return self.writer.expired

    @property
    def restarts(self) -> int:
        return self.writer.restarts

    def fetch(self, device_id: str, after: Optional[int], limit: int) -> Deferred:
        return self._submit(Writer.fetch, device_id, after, limit,
                            int(self.clock.seconds() * 1000))

    def remove(self, device_id: str, key: int) -> Deferred:
        return self._submit(Writer.remove, device_id, key)

    def queues(self) -> Deferred:
        return self._submit(Writer.queues)

    def messages(self, device_id: str, limit: int) -> Deferred:
        return self._submit(Writer.messages, device_id, limit)

    def purge(self, device_id: str) -> Deferred:
        return self._submit(Writer.purge, device_id)

    def sweep(self, now: int) -> Deferred:
        """Chunk by chunk, each its own statement, so other batches run between them."""
        total = 0

        def swept(count: int) -> Any:
            nonlocal total
            total += count
            if count < SWEEP_CHUNK or self._closed is not None:
                return total
            return self._submit(Writer.sweep, now).addCallback(swept)

        return self._submit(Writer.sweep, now).addCallback(swept)

    def close(self) -> Deferred:
        """Commit what was accepted, then let the writer go."""
        if self._closed is None:
            self._closed = Deferred()
            if self._call is not None and self._call.active():
                self._call.cancel()
            self._call = None
            if self._pending:
                self._flush()  # or, if the writer is busy, _committed does it
            elif not self._running:
                self._shut()
        return self._closed

    def _shut(self) -> None:
        if self._probe is not None:
            self._probe.close()
            self._probe = None
        self.writer.stop().addBoth(lambda _: self._closed.callback(None))
