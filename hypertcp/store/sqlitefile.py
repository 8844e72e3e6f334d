"""
The embedded store's file: its layout, what operators do to it, and
L{Writer}, its one writer.

The file holds the messages in the order accepted and an index by expiry;
which messages are whose is kept in the writer's memory (each device's
keys, in order), read from the file at start.  An index by device on disk
cost more than everything else a stored message costs: every commit
rewrote a page of it per device the batch touched, so storing slowed with
the number of devices (16 us a row with 1,000 devices, against 2 without
it).

Nothing here knows of the reactor: the writer runs in a process of its own
(L{hypertcp.store.child}) or on a thread (L{hypertcp.store.writers}), and
the C{hypertcp queue} command runs the operators' functions on the file
directly, from another process, while the server runs.
"""

from __future__ import annotations

import sqlite3
from array import array
from bisect import bisect_left, bisect_right
from itertools import chain
from typing import Any, Callable, Optional

from hypertcp.protocol.commands import Status
from hypertcp.store.records import Bounds, Queue, Stored

#: The layout this code reads and writes (PRAGMA user_version).  1 had an
#: index by device, which 2 drops (L{MIGRATIONS}).
SCHEMA_VERSION = 2
#: Seconds a writer waits for another process (the queue command) to let go of the file.
BUSY_TIMEOUT = 5.0
#: Expired messages deleted per statement by a sweep, so a sweep never holds the file long.
SWEEP_CHUNK = 1000
SYNCHRONOUS = ("full", "normal")
STORED, QUOTA_LIMIT = Status.STORED, Status.QUOTA_LIMIT  # bound once: a lookup per put costs

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY,     -- the order accepted
    device TEXT NOT NULL,
    sender TEXT NOT NULL,
    payload BLOB NOT NULL,
    size INTEGER NOT NULL,       -- what it counts against the bounds
    queued_at INTEGER NOT NULL,  -- ms since the epoch
    expires_at INTEGER NOT NULL  -- ms since the epoch
);
CREATE INDEX IF NOT EXISTS messages_by_expiry ON messages (expires_at);
"""
#: What takes a file from each older layout to the next.
MIGRATIONS = {1: "DROP INDEX IF EXISTS messages_by_device"}

_INSERT = "INSERT INTO messages (seq, device, sender, payload, size, queued_at, expires_at) VALUES "
_ROW = "(?, ?, ?, ?, ?, ?, ?)"
#: Rows per INSERT statement: whole chunks of these sizes, largest first,
#: then the rest (fewer than the smallest) in one.  Python's sqlite3 lets go
#: of the GIL around each step of a statement; with the writer on a thread
#: (C{[store] writer = thread}) the reactor's is busy under load, and each
#: step waits for it to yield the GIL again (in a bench --qos 1 profile,
#: ~0.1 ms a step), so a batch of ~300 puts should take a few steps, not one
#: per 64 rows.  Sizes are few and fixed because every size is a prepared
#: statement kept in the cache: one per size up to 256 rows would hold ~29 MB.
INSERT_CHUNKS = (256, 128, 64)
#: The most variables a statement may bind where SQLite cannot say (before
#: 3.32.0 the default limit, and Python < 3.11 cannot ask).
DEFAULT_VARIABLES = 999
_COLUMNS = "seq, sender, payload, queued_at, expires_at"
#: Keys looked up per statement at most; lists are padded to a power of two
#: (repeating the last key), so a few statements serve every length.
KEYS_PER_STATEMENT = 512
_NO_KEYS = array("q")


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
        # Room in the statement cache for an INSERT of each size (INSERT_CHUNKS, and
        # each rest smaller than the smallest).
        conn = sqlite3.connect(target, timeout=BUSY_TIMEOUT, isolation_level=None,
                               check_same_thread=False, uri=uri, cached_statements=256)
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
            for old in range(version, SCHEMA_VERSION):
                if old in MIGRATIONS:
                    conn.execute(MIGRATIONS[old])
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    except sqlite3.DatabaseError as e:
        conn.close()
        raise StoreFileError(f"the message store {path} is not usable: {e}") from None
    except StoreFileError:
        conn.close()
        raise
    return conn


def transaction(conn: sqlite3.Connection, operations: list[tuple[Callable, tuple]]) -> list[Any]:
    """Run C{operations} (each C{f(conn, *args)}) in one transaction; their results."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        results = [operation(conn, *args) for operation, args in operations]
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return results


# -- what operators do to the file (the queue command; the server's own too) --

def queues(conn: sqlite3.Connection) -> list[Queue]:
    rows = conn.execute("SELECT device, count(*), sum(size), min(queued_at) FROM messages "
                        "GROUP BY device ORDER BY device")
    return [Queue(*row) for row in rows]


def messages(conn: sqlite3.Connection, device: str, limit: int) -> list[Stored]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM messages WHERE device = ? ORDER BY seq LIMIT ?",
                        (device, limit))
    return [Stored(*row) for row in rows]


def has_messages(conn: sqlite3.Connection) -> bool:
    """Whether the file holds any message (expired or not): one read of one page."""
    return conn.execute("SELECT EXISTS (SELECT 1 FROM messages)").fetchone()[0] == 1


def purge(conn: sqlite3.Connection, device: str) -> int:
    return conn.execute("DELETE FROM messages WHERE device = ?", (device,)).rowcount


class Writer:
    """
    The store as its writer sees it: the connection, the next sequence
    number, and each device's count, bytes and keys (its messages' sequence
    numbers, in order), against which the bounds are checked and by which
    its messages are found without an index on disk.  It alone writes the
    file, but for the queue command: when another connection has committed
    since the last batch (C{PRAGMA data_version} tells), all that is read
    afresh.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.seq = 0
        self.counts: dict[str, list[int]] = {}  # device -> [messages, bytes]
        self.keys: dict[str, array] = {}  # device -> its messages' seqs, ascending
        self.total = 0
        #: Messages deleted because they expired (swept, or to make room).
        self.expired = 0
        self._rows: list[tuple] = []  # puts not yet inserted
        self._statements: dict[int, str] = {}  # an INSERT of n rows, by n
        getlimit = getattr(conn, "getlimit", None)  # Python 3.11
        variables = (getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) if getlimit is not None
                     else DEFAULT_VARIABLES)
        #: The chunk sizes this SQLite binds in one statement (7 variables a row).
        self._chunks = tuple(n for n in INSERT_CHUNKS if n * 7 <= variables)
        self._version = -1
        conn.execute("BEGIN")
        try:
            self._recount()
        finally:
            conn.execute("COMMIT")

    def _recount(self) -> None:
        conn = self.conn
        self._version = conn.execute("PRAGMA data_version").fetchone()[0]
        counts: dict[str, list[int]] = {}
        keys: dict[str, array] = {}
        rows = conn.execute("SELECT device, seq, size FROM messages ORDER BY seq")
        for device, seq, size in rows:
            counted = counts.get(device)
            if counted is None:
                counts[device] = [1, size]
                keys[device] = array("q", (seq,))
            else:
                counted[0] += 1
                counted[1] += size
                keys[device].append(seq)
        self.counts, self.keys = counts, keys
        self.total = sum(size for _, size in counts.values())
        self.seq = max(self.seq, conn.execute(
            "SELECT coalesce(max(seq), 0) FROM messages").fetchone()[0])

    def batch(self, operations: list[tuple]) -> list[Any]:
        """
        Run C{operations} (each C{(f, args)}, run as C{f(writer, *args)}) in
        one transaction; their results, once it has committed.  Consecutive
        puts go in as one statement.
        """
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("PRAGMA data_version").fetchone()[0] != self._version:
                self._recount()  # the queue command changed the file
            results = []
            put = Writer.put
            for op in operations:
                operation = op[0]
                if operation is not put:
                    self._insert()  # what follows must see the puts before it
                results.append(operation(self, *op[1]))
            self._insert()
            conn.execute("COMMIT")
        except BaseException:
            self._rows.clear()
            conn.execute("ROLLBACK")
            self._recount()  # the counts ran ahead of what was rolled back
            raise
        return results

    def _insert(self) -> None:
        rows = self._rows
        start, left = 0, len(rows)
        while left:
            n = left
            for size in self._chunks:
                if size <= left:
                    n = size
                    break
            statement = self._statements.get(n)
            if statement is None:
                statement = self._statements[n] = _INSERT + ", ".join([_ROW] * n)
            self.conn.execute(statement, list(chain.from_iterable(rows[start:start + n])))
            start += n
            left -= n
        rows.clear()

    def _fits(self, device: str, size: int, bounds: Bounds) -> bool:
        count, used = self.counts.get(device) or (0, 0)
        return (count < bounds.max_count and used + size <= bounds.max_bytes
                and self.total + size <= bounds.max_total_bytes)

    def _forget(self, device: str, seq: int, size: int) -> None:
        counted = self.counts[device]
        counted[0] -= 1
        counted[1] -= size
        self.total -= size
        if counted[0] <= 0:
            del self.counts[device], self.keys[device]
            return
        keys = self.keys[device]
        at = bisect_left(keys, seq)  # nearly always 0: messages go in the order they came
        if at < len(keys) and keys[at] == seq:
            del keys[at]

    def _each(self, head: str, keys: Any, tail: str = "", *args: Any) -> list[tuple]:
        """C{head WHERE seq IN (keys) tail}, a statement per chunk of C{keys}; the rows."""
        rows: list[tuple] = []
        for start in range(0, len(keys), KEYS_PER_STATEMENT):
            chunk = keys[start:start + KEYS_PER_STATEMENT].tolist()
            n = 1 << (len(chunk) - 1).bit_length()
            chunk += chunk[-1:] * (n - len(chunk))
            rows += self.conn.execute(f"{head} WHERE seq IN ({', '.join('?' * n)}) {tail}",
                                      chunk + [*args]).fetchall()
        return rows

    # -- the operations --

    def put(self, device: str, sender: str, payload: bytes, queued_at: int, expires_at: int,
            bounds: Bounds, now: int) -> int:
        """Append within the bounds: STORED, or QUOTA_LIMIT."""
        n = len(payload) + len(sender.encode("utf-8"))  # size(), inline: it runs for every put
        counted = self.counts.get(device)
        count, used = counted or (0, 0)
        if (count >= bounds.max_count or used + n > bounds.max_bytes
                or self.total + n > bounds.max_total_bytes):  # _fits, inline
            # Full -- perhaps of messages that expired and wait for the
            # sweep: they do not count, and go now.
            self._insert()
            self._expire(now, device)
            if not self._fits(device, n, bounds) and self.total + n > bounds.max_total_bytes:
                self._expire(now)
            if not self._fits(device, n, bounds):
                return QUOTA_LIMIT
            counted = self.counts.get(device)
        seq = self.seq = self.seq + 1
        self._rows.append((seq, device, sender, payload, n, queued_at, expires_at))
        if counted is None:
            self.counts[device] = [1, n]
            self.keys[device] = array("q", (seq,))
        else:
            counted[0] += 1
            counted[1] += n
            self.keys[device].append(seq)
        self.total += n
        return STORED

    def _expire(self, now: int, device: Optional[str] = None) -> int:
        """Delete expired messages (one device's, or a chunk of anyone's); how many."""
        if device is None:
            gone = self.conn.execute(
                "DELETE FROM messages WHERE seq IN (SELECT seq FROM messages WHERE "
                "expires_at <= ? LIMIT ?) RETURNING device, seq, size",
                (now, SWEEP_CHUNK)).fetchall()
        else:
            gone = [(device, seq, n) for seq, n in self._each(
                "DELETE FROM messages", self.keys.get(device, _NO_KEYS),
                "AND expires_at <= ? RETURNING seq, size", now)]
        for owner, seq, n in gone:
            self._forget(owner, seq, n)
        self.expired += len(gone)
        return len(gone)

    def fetch(self, device: str, after: Optional[int], limit: int, now: int) -> list[Stored]:
        keys = self.keys.get(device)
        if not keys:
            return []
        found: list[Stored] = []
        at = bisect_right(keys, after or 0)
        while at < len(keys) and len(found) < limit:
            # Some may have expired (not yet swept): read on until there are C{limit}.
            wanted = keys[at:at + limit - len(found)]
            at += len(wanted)
            found += [Stored(*row) for row in self._each(
                f"SELECT {_COLUMNS} FROM messages", wanted, "AND expires_at > ? ORDER BY seq", now)]
        return found

    def remove(self, device: str, seq: int) -> bool:
        gone = self.conn.execute("DELETE FROM messages WHERE seq = ? AND device = ? RETURNING size",
                                 (seq, device)).fetchone()
        if gone is None:
            return False
        self._forget(device, seq, gone[0])
        return True

    def queues(self) -> list[Queue]:
        return queues(self.conn)

    def messages(self, device: str, limit: int) -> list[Stored]:
        return [Stored(*row) for row in self._each(
            f"SELECT {_COLUMNS} FROM messages", self.keys.get(device, _NO_KEYS)[:limit],
            "ORDER BY seq")]

    def purge(self, device: str) -> int:
        count = len(self._each("DELETE FROM messages", self.keys.pop(device, _NO_KEYS),
                               "RETURNING seq"))
        counted = self.counts.pop(device, None)
        if counted is not None:
            self.total -= counted[1]
        return count

    def sweep(self, now: int) -> int:
        """Delete up to a chunk of expired messages; how many."""
        return self._expire(now)


def open_writer(path: str, synchronous: str = "full") -> Writer:
    """The writer of the file at C{path}, made if missing; L{StoreFileError} if it cannot be."""
    conn = connect(path, synchronous)
    try:
        return Writer(conn)
    except sqlite3.DatabaseError as e:
        conn.close()
        raise StoreFileError(f"the message store {path} is not usable: {e}") from None
