"""
The embedded store on a real SQLite file: group commit, what another
process (the queue command) sees and changes, the file's guards.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import maybeDeferred
from twisted.internet.task import Clock

from hypertcp.protocol.commands import Status
from hypertcp.store import sqlitefile as db
from hypertcp.store.records import Bounds
from hypertcp.store.sqlite import SQLiteStore
from hypertcp.store.sqlitefile import StoreFileError
from hypertcp.store.writers import ThreadWriter


def store(path: Path, clock: Clock, bounds: Bounds = Bounds(3, 1 << 20, 1 << 28),
          synchronous: str = "full") -> SQLiteStore:
    writer = ThreadWriter(db.open_writer(str(path), synchronous), clock, run=maybeDeferred)
    return SQLiteStore(writer, bounds, clock, str(path))


def results(d: Any) -> list:
    out: list = []
    d.addCallback(out.append)
    return out


def test_one_turns_operations_commit_as_one_batch(tmp_path):
    clock = Clock()
    s = store(tmp_path / "m.db", clock)
    answers = [results(s.put("lamp", "app", b'{"n":%d}' % n, 0, 10_000)) for n in range(4)]
    assert answers == [[], [], [], []], "nothing is answered before the commit"
    clock.advance(0)
    assert answers == [[Status.STORED]] * 3 + [[Status.QUOTA_LIMIT]]
    assert (s.batches, s.operations) == (1, 4)


def test_put_then_answers_each_caller_once_its_batch_has_committed(tmp_path):
    # The server's path for every stored message: no Deferred per message.
    clock = Clock()
    s = store(tmp_path / "m.db", clock)
    answered: list = []
    for n in range(4):
        s.put_then("lamp", "app", b'{"n":%d}' % n, 0, 10_000, lambda *got: answered.append(got),
                   n)
    assert answered == [], "nothing is answered before the commit"
    clock.advance(0)
    assert answered == [(Status.STORED, 0), (Status.STORED, 1), (Status.STORED, 2),
                        (Status.QUOTA_LIMIT, 3)]
    assert [m.payload for m in db.messages(db.connect(str(tmp_path / "m.db"), create=False),
                                           "lamp", 10)] == [b'{"n":0}', b'{"n":1}', b'{"n":2}']


@pytest.mark.parametrize("chunks", [db.INSERT_CHUNKS, (128, 64)])
def test_a_batch_of_any_size_goes_in_whole_and_in_order(tmp_path, chunks):
    # Chunks of fixed sizes, then the rest; (128, 64) is what an SQLite that
    # binds at most 999 variables a statement gets.
    clock = Clock()
    s = store(tmp_path / "m.db", clock, Bounds(10_000, 1 << 20, 1 << 28))
    s.writer.writer._chunks = chunks
    count = 256 + 128 + 64 + 63 + 128 + 5
    answers = [results(s.put("lamp", "app", b'{"n":%d}' % n, 0, 10_000)) for n in range(count)]
    clock.advance(0)
    assert answers == [[Status.STORED]] * count
    stored = db.messages(db.connect(str(tmp_path / "m.db"), create=False), "lamp", 10_000)
    assert [m.payload for m in stored] == [b'{"n":%d}' % n for n in range(count)]
    assert [m.key for m in stored] == sorted(m.key for m in stored)


def test_put_then_hands_a_failed_batch_to_every_caller_and_one_callers_error_to_the_log(
        tmp_path):
    from twisted.python.failure import Failure

    from tests.inprocess import captured_log

    clock = Clock()
    s = store(tmp_path / "m.db", clock)
    answered: list = []

    def broken(result: Any) -> None:
        raise RuntimeError("a caller's bug")

    with captured_log() as log:
        s.put_then("lamp", "app", b"{}", 0, 10_000, broken)
        s.put_then("lamp", "app", b"{}", 0, 10_000, answered.append)
        clock.advance(0)
        assert answered == [Status.STORED], "the caller after a broken one is answered"
        assert "answering a batch" in log
        s.writer.writer.conn.close()  # the disk is gone
        s.put_then("lamp", "app", b"{}", 0, 10_000, answered.append)
        s.put_then("lamp", "app", b"{}", 0, 10_000, answered.append)
        clock.advance(0)
    assert [type(a) for a in answered[1:]] == [Failure, Failure]


def test_a_message_answered_stored_is_in_the_file_for_anyone_who_opens_it(tmp_path):
    clock = Clock()
    path = tmp_path / "m.db"
    s = store(path, clock)
    answer = results(s.put("lamp", "app", b'{"on":true}', 5, 10_000))
    clock.advance(0)
    assert answer == [Status.STORED]
    # Another connection, as a restarted server or the queue command would open it.
    other = db.connect(str(path), create=False)
    [message] = db.messages(other, "lamp", 10)
    assert (message.sender, message.payload, message.queued_at) == ("app", b'{"on":true}', 5)


def test_the_file_is_in_wal_mode_with_the_synchronous_setting_asked_for(tmp_path):
    for setting, number in (("full", 2), ("normal", 1)):
        conn = db.connect(str(tmp_path / f"{setting}.db"), setting)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == number


def test_a_purge_by_another_process_keeps_the_bounds_right(tmp_path):
    clock = Clock()
    path = tmp_path / "m.db"
    s = store(path, clock)
    for n in range(3):
        s.put("lamp", "app", b"{}", n, 10_000)
    clock.advance(0)
    other = db.connect(str(path), create=False)
    assert db.transaction(other, [(db.purge, ("lamp",))]) == [3]
    assert db.queues(other) == []
    # The server sees another process wrote, and counts the file again.
    answer = results(s.put("lamp", "app", b"{}", 9, 10_000))
    clock.advance(0)
    assert answer == [Status.STORED]


def test_counts_and_bytes_follow_every_insert_and_delete(tmp_path):
    writer = db.Writer(db.connect(str(tmp_path / "m.db")))
    bounds = Bounds(2, 1 << 20, 1 << 28)
    Put = db.Writer.put
    assert writer.batch([(Put, ("lamp", "app", b"12345", 0, 100, bounds, 0)),
                         (Put, ("lamp", "app", b"123", 1, 50, bounds, 0)),
                         (Put, ("lamp", "app", b"1", 1, 50, bounds, 0)),
                         (Put, ("fan", "ops", b"1", 2, 100, bounds, 0))]) == [
        Status.STORED, Status.STORED, Status.QUOTA_LIMIT, Status.STORED]
    assert [(q.device, q.count, q.bytes, q.oldest) for q in db.queues(writer.conn)] == [
        ("fan", 1, 4, 2), ("lamp", 2, 14, 0)]
    assert (writer.counts, writer.total) == ({"lamp": [2, 14], "fan": [1, 4]}, 18)
    assert writer.batch([(db.Writer.sweep, (50,))]) == [1]
    assert (writer.counts, writer.total) == ({"lamp": [1, 8], "fan": [1, 4]}, 12)
    [first] = writer.batch([(db.Writer.fetch, ("lamp", None, 10, 0))])[0]
    assert writer.batch([(db.Writer.remove, ("lamp", first.key)),
                         (db.Writer.remove, ("lamp", first.key))]) == [True, False]
    assert (writer.counts, writer.total) == ({"fan": [1, 4]}, 4)


def test_a_full_queue_makes_room_by_deleting_its_expired_messages(tmp_path):
    writer = db.Writer(db.connect(str(tmp_path / "m.db")))
    bounds = Bounds(2, 1 << 20, 21)
    Put = db.Writer.put
    writer.batch([(Put, ("lamp", "app", b"1", 0, 10, bounds, 0)),
                  (Put, ("lamp", "app", b"2", 0, 99, bounds, 0)),
                  (Put, ("fan", "app", b"3", 0, 10, bounds, 0))])
    # lamp is full, one of its two expired; the store's total is near its bound.
    assert writer.batch([(Put, ("lamp", "app", b"4", 0, 99, bounds, 10))]) == [Status.STORED]
    assert writer.expired == 1
    assert writer.batch([(Put, ("pump", "app", b"5" * 10, 0, 99, bounds, 10))]) == [
        Status.STORED], "over the total: anyone's expired messages go"
    assert writer.expired == 2
    assert [q.device for q in db.queues(writer.conn)] == ["lamp", "pump"]


def test_close_commits_what_was_accepted(tmp_path):
    clock = Clock()
    path = tmp_path / "m.db"
    s = store(path, clock)
    answer = results(s.put("lamp", "app", b"{}", 0, 10_000))
    closed = results(s.close())
    assert answer == [Status.STORED] and closed == [None]
    assert len(db.messages(db.connect(str(path), create=False), "lamp", 10)) == 1
    late = []
    s.put("lamp", "app", b"{}", 0, 10_000).addErrback(late.append)
    assert late and "closed" in late[0].getErrorMessage()


def test_a_file_from_a_newer_layout_or_not_a_database_is_refused_by_name(tmp_path):
    newer = tmp_path / "newer.db"
    sqlite3.connect(newer).execute(f"PRAGMA user_version={db.SCHEMA_VERSION + 1}")
    with pytest.raises(StoreFileError, match="newer HyperTCP"):
        db.connect(str(newer))
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database, whatever its name says" * 100)
    with pytest.raises(StoreFileError, match="junk.db"):
        db.connect(str(junk))
    with pytest.raises(StoreFileError, match="missing.db"):
        db.connect(str(tmp_path / "missing.db"), create=False)


def test_a_layout_1_file_loses_its_device_index_and_keeps_every_message(tmp_path):
    # Files written before the per-device index moved into memory.
    path = tmp_path / "m.db"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE messages (seq INTEGER PRIMARY KEY, device TEXT NOT NULL,
            sender TEXT NOT NULL, payload BLOB NOT NULL, size INTEGER NOT NULL,
            queued_at INTEGER NOT NULL, expires_at INTEGER NOT NULL);
        CREATE INDEX messages_by_device ON messages (device, seq);
        CREATE INDEX messages_by_expiry ON messages (expires_at);
        INSERT INTO messages VALUES (1, 'lamp', 'app', '{"n":1}', 10, 0, 100);
        INSERT INTO messages VALUES (2, 'fan', 'app', '{"n":2}', 10, 0, 100);
        INSERT INTO messages VALUES (3, 'lamp', 'app', '{"n":3}', 10, 0, 100);
        PRAGMA user_version = 1;
    """)
    old.close()
    writer = db.Writer(db.connect(str(path)))
    names = [row[0] for row in writer.conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'index'")]
    assert names == ["messages_by_expiry"]
    assert writer.conn.execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION
    [lamp] = writer.batch([(db.Writer.fetch, ("lamp", None, 10, 0))])
    assert [m.key for m in lamp] == [1, 3]
    assert (writer.counts, writer.total) == ({"lamp": [2, 20], "fan": [1, 10]}, 30)
    put = (db.Writer.put, ("fan", "app", b"{}", 0, 100, Bounds(5, 1 << 20, 1 << 28), 0))
    assert writer.batch([put]) == [Status.STORED]
    assert [m.key for m in writer.batch([(db.Writer.fetch, ("fan", None, 10, 0))])[0]] == [2, 4]


def test_a_fetch_reads_past_expired_messages_to_fill_its_page(tmp_path):
    writer = db.Writer(db.connect(str(tmp_path / "m.db")))
    bounds = Bounds(100, 1 << 20, 1 << 28)
    Put = db.Writer.put
    # Interleaved with another device's, and the first three expired but not swept.
    writer.batch([(Put, (device, "app", b"%d" % n, 0, 10 if n < 3 else 99, bounds, 0))
                  for n in range(8) for device in ("lamp", "fan")])
    [page] = writer.batch([(db.Writer.fetch, ("lamp", None, 4, 50))])
    assert [m.payload for m in page] == [b"3", b"4", b"5", b"6"]
    [rest] = writer.batch([(db.Writer.fetch, ("lamp", page[-1].key, 4, 50))])
    assert [m.payload for m in rest] == [b"7"]


def test_more_keys_than_one_statement_takes_come_back_whole_and_in_order(tmp_path):
    writer = db.Writer(db.connect(str(tmp_path / "m.db")))
    bounds = Bounds(10_000, 1 << 30, 1 << 30)
    Put = db.Writer.put
    count = db.KEYS_PER_STATEMENT * 2 + 3
    writer.batch([(Put, ("lamp", "app", b"%d" % n, 0, 99, bounds, 0)) for n in range(count)]
                 + [(Put, ("fan", "app", b"x", 0, 99, bounds, 0))])
    [page] = writer.batch([(db.Writer.fetch, ("lamp", None, count + 10, 0))])
    assert [m.payload for m in page] == [b"%d" % n for n in range(count)]
    assert writer.batch([(db.Writer.purge, ("lamp",))]) == [count]
    assert (writer.counts, writer.keys.keys()) == ({"fan": [1, 4]}, {"fan"})
    assert [q.device for q in db.queues(writer.conn)] == ["fan"]


def test_another_process_s_purge_is_seen_in_what_a_device_is_sent(tmp_path):
    clock = Clock()
    path = tmp_path / "m.db"
    s = store(path, clock, Bounds(10, 1 << 20, 1 << 28))
    for n in range(3):
        s.put("lamp", "app", b"%d" % n, 0, 10_000)
        s.put("fan", "app", b"%d" % n, 0, 10_000)
    clock.advance(0)
    other = db.connect(str(path), create=False)
    assert db.transaction(other, [(db.purge, ("lamp",))]) == [3]
    fetched = results(s.fetch("lamp", None, 10))
    fan = results(s.fetch("fan", None, 10))
    clock.advance(0)
    assert fetched == [[]]
    assert [m.payload for m in fan[0]] == [b"0", b"1", b"2"]
