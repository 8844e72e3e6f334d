"""
The embedded message store: one SQLite file, written from one thread.

Everything the reactor asks of the store in one turn -- stored messages,
deliveries to forget, a device's next page -- becomes one batch, run in a
single transaction on the store's own thread, so the reactor never waits
on the disk and a burst of messages costs one commit (one fsync), not one
each.  Each caller's Deferred fires once the batch has committed, which is
when the server may answer STORED.  A batch that arrives while another runs
waits for it, so batches grow with the load (group commit).

The file is in WAL mode with C{synchronous} FULL by default: a commit
returns once the write-ahead log is fsynced, so a message answered STORED
survives the process being killed and the machine losing power.  With
NORMAL the log is fsynced only at checkpoints: still nothing lost to a
killed process, but a power cut can lose the last commits.

The functions taking a connection are the store's operations; the
C{hypertcp queue} command runs them on the file directly.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from hypertcp.protocol.commands import Status
from hypertcp.store.interfaces import IMessageStore
from hypertcp.store.records import Bounds, Queue, Stored, size

#: The layout this code reads and writes (PRAGMA user_version).
SCHEMA_VERSION = 1
#: Seconds a writer waits for another process (the queue command) to let go of the file.
BUSY_TIMEOUT = 5.0
#: Expired messages deleted per statement by a sweep, so a sweep never holds the file long.
SWEEP_CHUNK = 1000
SYNCHRONOUS = ("full", "normal")
#: Seconds between log lines about failing batches.
FAILURE_LOG_INTERVAL = 10.0

# The queues and totals tables are kept by triggers, so every delete --
# delivered, expired, purged by the queue command from another process --
# keeps each device's count and bytes and the store's right, and the bounds
# are checked in SQL.
SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- the order accepted; never reused
    device TEXT NOT NULL,
    sender TEXT NOT NULL,
    payload BLOB NOT NULL,
    size INTEGER NOT NULL,
    queued_at INTEGER NOT NULL,             -- ms since the epoch
    expires_at INTEGER NOT NULL             -- ms since the epoch
);
CREATE INDEX IF NOT EXISTS messages_by_device ON messages (device, seq);
CREATE INDEX IF NOT EXISTS messages_by_expiry ON messages (expires_at);
CREATE TABLE IF NOT EXISTS queues (
    device TEXT PRIMARY KEY,
    count INTEGER NOT NULL,
    bytes INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS totals (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    count INTEGER NOT NULL,
    bytes INTEGER NOT NULL
);
INSERT OR IGNORE INTO totals (id, count, bytes) VALUES (1, 0, 0);
CREATE TRIGGER IF NOT EXISTS queued AFTER INSERT ON messages BEGIN
    INSERT INTO queues (device, count, bytes) VALUES (new.device, 1, new.size)
        ON CONFLICT (device) DO UPDATE SET count = count + 1, bytes = bytes + new.size;
    UPDATE totals SET count = count + 1, bytes = bytes + new.size;
END;
CREATE TRIGGER IF NOT EXISTS unqueued AFTER DELETE ON messages BEGIN
    UPDATE queues SET count = count - 1, bytes = bytes - old.size WHERE device = old.device;
    DELETE FROM queues WHERE device = old.device AND count <= 0;
    UPDATE totals SET count = count - 1, bytes = bytes - old.size;
END;
"""

# One statement checks the bounds and appends: ?4 is the size, ?7 and ?8
# the device's bounds, ?9 the whole store's.
_APPEND = ("INSERT INTO messages (device, sender, payload, size, queued_at, expires_at) "
           "SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE ?4 <= ?8 "
           "AND (SELECT bytes FROM totals) + ?4 <= ?9 AND NOT EXISTS ("
           "SELECT 1 FROM queues WHERE device = ?1 AND (count >= ?7 OR bytes + ?4 > ?8))")
_COLUMNS = "seq, sender, payload, queued_at, expires_at"


class StoreFileError(Exception):
    """The store file cannot be used (a newer layout, not a database); the message says which."""


def connect(path: str, synchronous: str = "full", create: bool = True) -> sqlite3.Connection:
    """
    Open the store at C{path}, in WAL mode, made if C{create} and missing.
    The connection is in autocommit mode: batches say BEGIN and COMMIT.
    """
    if synchronous not in SYNCHRONOUS:
        raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS)}")
    target, uri = path, False
    if not create and path != ":memory:":
        target, uri = f"file:{path}?mode=rw", True
    try:
        conn = sqlite3.connect(target, timeout=BUSY_TIMEOUT, isolation_level=None,
                               check_same_thread=False, uri=uri)
    except sqlite3.OperationalError as e:
        raise StoreFileError(f"cannot open the message store {path}: {e}") from None
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreFileError(f"the message store {path} was written by a newer HyperTCP "
                                 f"(layout {version}; this one knows {SCHEMA_VERSION})")
        if create:
            conn.executescript(SCHEMA)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    except sqlite3.DatabaseError as e:
        conn.close()
        raise StoreFileError(f"the message store {path} is not usable: {e}") from None
    except StoreFileError:
        conn.close()
        raise
    return conn


# -- the operations, each on a connection inside a transaction --------------

def put(conn: sqlite3.Connection, device: str, sender: str, payload: bytes, queued_at: int,
        expires_at: int, bounds: Bounds, now: int) -> tuple[int, int]:
    """Append within the bounds: (STORED or QUOTA_LIMIT, messages expired to make room)."""
    args = (device, sender, payload, size(sender, payload), queued_at, expires_at, *bounds)
    if conn.execute(_APPEND, args).rowcount:
        return Status.STORED, 0
    # Full -- perhaps of messages that expired and wait for the sweep: they
    # do not count, and go now (the device's; the whole store's is the sweep's).
    expired = conn.execute("DELETE FROM messages WHERE device = ? AND expires_at <= ?",
                           (device, now)).rowcount
    if expired and conn.execute(_APPEND, args).rowcount:
        return Status.STORED, expired
    return Status.QUOTA_LIMIT, expired


def fetch(conn: sqlite3.Connection, device: str, after: Optional[int], limit: int,
          now: int) -> list[Stored]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM messages WHERE device = ? AND seq > ? "
                        "AND expires_at > ? ORDER BY seq LIMIT ?",
                        (device, after or 0, now, limit))
    return [Stored(*row) for row in rows]


def remove(conn: sqlite3.Connection, device: str, seq: int) -> bool:
    return conn.execute("DELETE FROM messages WHERE seq = ? AND device = ?",
                        (seq, device)).rowcount > 0


def queues(conn: sqlite3.Connection) -> list[Queue]:
    rows = conn.execute("SELECT device, count, bytes, (SELECT queued_at FROM messages m "
                        "WHERE m.device = q.device ORDER BY seq LIMIT 1) FROM queues q "
                        "ORDER BY device")
    return [Queue(*row) for row in rows]


def messages(conn: sqlite3.Connection, device: str, limit: int) -> list[Stored]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM messages WHERE device = ? ORDER BY seq LIMIT ?",
                        (device, limit))
    return [Stored(*row) for row in rows]


def purge(conn: sqlite3.Connection, device: str) -> int:
    return conn.execute("DELETE FROM messages WHERE device = ?", (device,)).rowcount


def sweep(conn: sqlite3.Connection, now: int, limit: int = SWEEP_CHUNK) -> int:
    """Delete up to C{limit} expired messages; how many."""
    return conn.execute("DELETE FROM messages WHERE seq IN (SELECT seq FROM messages "
                        "WHERE expires_at <= ? LIMIT ?)", (now, limit)).rowcount


def transaction(conn: sqlite3.Connection, operations: list[tuple[Callable, tuple]]) -> list[Any]:
    """Run C{operations} in one transaction; their results, once it has committed."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        results = [operation(conn, *args) for operation, args in operations]
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return results


# -- the store the server uses ------------------------------------------------

@implementer(IMessageStore)
class SQLiteStore:
    """
    The embedded store.  C{run(function, *args)} runs a batch and returns a
    Deferred of its result: by default on a thread pool of one thread (SQLite
    takes one writer at a time anyway); tests run it inline.
    """

    log = Logger()

    def __init__(self, path: str, bounds: Bounds, clock: Any, synchronous: str = "full",
                 run: Optional[Callable[..., Deferred]] = None) -> None:
        self.path = path
        self.bounds = bounds
        self.clock = clock
        self.conn = connect(path, synchronous)
        self._pool: Any = None
        if run is None:
            from twisted.internet.threads import deferToThreadPool
            from twisted.python.threadpool import ThreadPool
            # Started by start(): a thread left running would keep the process alive.
            self._pool = ThreadPool(1, 1, name="hypertcp-store")
            pool = self._pool
            run = lambda f, *args: deferToThreadPool(clock, pool, f, *args)  # noqa: E731
        self._run = run
        #: Messages deleted because they expired (by sweeps, or to make room).
        self.expired = 0
        #: Batches committed, and the operations in them: how well group commit groups.
        self.batches = self.operations = 0
        self._pending: list[tuple[Callable, tuple, Deferred]] = []
        self._busy = False
        self._call: Any = None
        self._closed: Optional[Deferred] = None
        self._failure_logged = float("-inf")

    def start(self) -> None:
        if self._pool is not None:
            self._pool.start()

    # -- batching --

    def _submit(self, operation: Callable, *args: Any) -> Deferred:
        if self._closed is not None:
            return fail(RuntimeError("the message store is closed"))
        d: Deferred = Deferred()
        self._pending.append((operation, args, d))
        if not self._busy and self._call is None:
            self._call = self.clock.callLater(0, self._flush)
        return d

    def _flush(self) -> None:
        self._call = None
        if self._busy or not self._pending:
            return
        batch, self._pending = self._pending, []
        self._busy = True
        self._run(transaction, self.conn, [(op, args) for op, args, _ in batch]).addBoth(
            self._committed, batch)

    def _committed(self, results: Any, batch: list[tuple[Callable, tuple, Deferred]]) -> None:
        # Still busy while the callers' callbacks run: what they submit
        # waits for the next turn's batch.
        if isinstance(results, Failure):
            now = self.clock.seconds()
            if now - self._failure_logged >= FAILURE_LOG_INTERVAL:
                # A full disk fails every batch: one line per interval, not a flood.
                self._failure_logged = now
                self.log.failure("message store {path}: a batch of {count} failed", results,
                                 path=self.path, count=len(batch))
            for _, _, d in batch:
                d.errback(results)
        else:
            self.batches += 1
            self.operations += len(batch)
            for (_, _, d), result in zip(batch, results):
                d.callback(result)
        self._busy = False
        if self._pending:
            if self._closed is not None:
                self._flush()  # the last batch, now
            else:
                self._call = self.clock.callLater(0, self._flush)
        elif self._closed is not None and not self._closed.called:
            self._shut()

    # -- IMessageStore --

    def put(self, device_id: str, sender: str, payload: bytes, queued_at: int,
            expires_at: int) -> Deferred:
        now = int(self.clock.seconds() * 1000)
        return self._submit(put, device_id, sender, payload, queued_at, expires_at,
                            self.bounds, now).addCallback(self._put)

    def _put(self, outcome: tuple[int, int]) -> int:
        status, expired = outcome
        self.expired += expired
        return status

    def fetch(self, device_id: str, after: Optional[int], limit: int) -> Deferred:
        return self._submit(fetch, device_id, after, limit, int(self.clock.seconds() * 1000))

    def remove(self, device_id: str, key: int) -> Deferred:
        return self._submit(remove, device_id, key)

    def queues(self) -> Deferred:
        return self._submit(queues)

    def messages(self, device_id: str, limit: int) -> Deferred:
        return self._submit(messages, device_id, limit)

    def purge(self, device_id: str) -> Deferred:
        return self._submit(purge, device_id)

    def sweep(self, now: int) -> Deferred:
        """Chunk by chunk, each its own statement, so other batches run between them."""
        total = 0

        def swept(count: int) -> Any:
            nonlocal total
            total += count
            self.expired += count
            if count < SWEEP_CHUNK or self._closed is not None:
                return total
            return self._submit(sweep, now).addCallback(swept)

        return self._submit(sweep, now).addCallback(swept)

    def close(self) -> Deferred:
        """Commit what was accepted, then close the file and stop the thread."""
        if self._closed is None:
            self._closed = Deferred()
            if self._call is not None and self._call.active():
                self._call.cancel()
            self._call = None
            if not self._busy:
                if self._pending:
                    self._flush()  # _committed closes once it is done
                else:
                    self._shut()
        return self._closed

    def _shut(self) -> None:
        self.conn.close()
        if self._pool is not None:
            self._pool.stop()
        self._closed.callback(None)
