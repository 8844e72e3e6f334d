"""
The embedded store's writer away from the reactor: the child's loop
(L{hypertcp.store.child.serve}) on real pipes and a real file, and the
server's side of it (L{ProcessWriter}) on a fake process and a Clock --
batches answered in order however the bytes arrive, what the writer's
death does to the batches it held, restarts, and stopping.
tests/test_offline.py proves the real process under a real server.
"""

from __future__ import annotations

import os
import pickle
import threading
from pathlib import Path
from typing import Any

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from hypertcp.protocol.commands import Status
from hypertcp.store import child, writers
from hypertcp.store.records import Bounds
from hypertcp.store.sqlite import SQLiteStore
from hypertcp.store.sqlitefile import Writer, messages, open_writer
from hypertcp.store.writers import ProcessWriter, WriterLost
from tests.inprocess import captured_log

BOUNDS = Bounds(3, 1 << 20, 1 << 28)


def put(device: str, n: int) -> tuple:
    return (Writer.put, (device, "app", b'{"n":%d}' % n, 0, 10_000, BOUNDS, 0))


def replies(data: bytes) -> list[tuple]:
    payloads, rest = child.split(data)
    assert rest == b""
    return [pickle.loads(p) for p in payloads]


# -- the child's loop, on pipes --------------------------------------------------

def pipes(path: Path) -> tuple[Any, int, int, threading.Thread]:
    """C{serve} on a thread between two pipes: its transaction count, its input and its output."""
    writer = open_writer(str(path))
    counted = {"transactions": 0}
    batch = writer.batch

    def counting(operations: list) -> list:
        counted["transactions"] += 1
        return batch(operations)

    writer.batch = counting  # type: ignore[method-assign]
    child_in, to_child = os.pipe()
    from_child, child_out = os.pipe()
    thread = threading.Thread(target=child.serve, args=(writer, child_in, child_out),
                              daemon=True)
    return counted, to_child, from_child, thread


def read_replies(fd: int, count: int) -> list[tuple]:
    data = b""
    while len(child.split(data)[0]) < count:
        chunk = os.read(fd, 1 << 16)
        assert chunk, "the child's output ended early"
        data += chunk
    return replies(data)


def test_batches_waiting_together_commit_as_one_transaction_and_are_answered_each(tmp_path):
    counted, to_child, from_child, thread = pipes(tmp_path / "m.db")
    # Both are there before the child reads: one transaction for the two.
    os.write(to_child, child.frame([put("lamp", 0), put("lamp", 1)])
             + child.frame([put("lamp", 2), put("lamp", 3)]))
    thread.start()
    first, second = read_replies(from_child, 2)
    assert first == (True, [Status.STORED, Status.STORED], 0)
    assert second == (True, [Status.STORED, Status.QUOTA_LIMIT], 0), "bounds hold across them"
    assert counted["transactions"] == 1
    os.close(to_child)  # the server closes its input: the child ends
    thread.join(10)
    assert not thread.is_alive()
    stored = messages(open_writer(str(tmp_path / "m.db")).conn, "lamp", 10)
    assert [m.payload for m in stored] == [b'{"n":0}', b'{"n":1}', b'{"n":2}']


def test_a_batch_cut_short_by_a_dying_server_is_dropped_and_the_child_ends(tmp_path):
    counted, to_child, from_child, thread = pipes(tmp_path / "m.db")
    whole = child.frame([put("lamp", 0)])
    os.write(to_child, whole + child.frame([put("lamp", 1)])[:-3])
    thread.start()
    assert read_replies(from_child, 1) == [(True, [Status.STORED], 0)]
    os.close(to_child)
    thread.join(10)
    assert not thread.is_alive()
    stored = messages(open_writer(str(tmp_path / "m.db")).conn, "lamp", 10)
    assert [m.payload for m in stored] == [b'{"n":0}']


def test_a_failing_transaction_fails_each_batch_in_it_and_the_child_goes_on(tmp_path):
    counted, to_child, from_child, thread = pipes(tmp_path / "m.db")
    thread.start()
    bad = (Writer.remove, ("lamp", "not a key", "too many arguments"))
    os.write(to_child, child.frame([put("lamp", 0)]) + child.frame([bad]))
    first, second = read_replies(from_child, 2)
    assert first[0] is False and second[0] is False
    assert isinstance(first[1], TypeError), "the exception itself, for the server to check"
    os.write(to_child, child.frame([put("lamp", 1)]))
    assert read_replies(from_child, 1) == [(True, [Status.STORED], 0)]
    os.close(to_child)
    thread.join(10)
    stored = messages(open_writer(str(tmp_path / "m.db")).conn, "lamp", 10)
    assert [m.payload for m in stored] == [b'{"n":1}'], "the failed transaction left nothing"


# -- the server's side, on a fake process --------------------------------------------

class FakeProcess:
    """What L{ProcessWriter} sees of its child: what it was written, and signals."""

    pid = 4242

    def __init__(self) -> None:
        self.written = b""
        self.stdin_closed = False
        self.signals: list[str] = []

    def write(self, data: bytes) -> None:
        self.written += data

    def closeStdin(self) -> None:
        self.stdin_closed = True

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)


class Spawned:
    """A ProcessWriter whose every start makes a new L{FakeProcess}."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.processes: list[FakeProcess] = []
        self.writer = ProcessWriter("m.db", "full", self.clock, spawn=self.spawn)

    def spawn(self, protocol: ProcessWriter) -> None:
        self.processes.append(FakeProcess())
        protocol.makeConnection(self.processes[-1])

    @property
    def process(self) -> FakeProcess:
        return self.processes[-1]

    def batches(self) -> list[list[tuple]]:
        """What the child was sent: each batch's operations and arguments."""
        payloads, rest = child.split(self.process.written)
        assert rest == b""
        return [pickle.loads(p) for p in payloads]

    def answer(self, *results: tuple, chunk: int = 0) -> None:
        data = b"".join(child.frame(r) for r in results)
        step = chunk or len(data)
        for at in range(0, len(data), step):
            self.writer.outReceived(data[at:at + step])

    def end(self, reason: Any) -> None:
        self.writer.processEnded(Failure(reason))


def fired(d: Any) -> list:
    out: list = []
    d.addBoth(out.append)
    return out


def test_batches_go_to_the_child_as_they_come_and_are_answered_in_order_however_split():
    s = Spawned()
    s.writer.start()
    first = fired(s.writer.run([put("lamp", 0)]))
    second = fired(s.writer.run([put("lamp", 1), put("fan", 2)]))
    assert s.batches() == [[put("lamp", 0)], [put("lamp", 1), put("fan", 2)]]
    assert s.writer.pipelined, "the second went before the first was answered"
    s.answer((True, [Status.STORED], 0), (True, [Status.STORED, Status.STORED], 3), chunk=5)
    assert first == [[Status.STORED]] and second == [[Status.STORED, Status.STORED]]
    assert s.writer.expired == 3


def test_what_the_child_raised_fails_its_batch_with_that_exception():
    s = Spawned()
    s.writer.start()
    failed = fired(s.writer.run([put("lamp", 0)]))
    s.answer((False, ValueError("disk I/O error"), 0))
    assert failed[0].check(ValueError) and "disk I/O error" in failed[0].getErrorMessage()


def test_a_writer_that_dies_fails_what_it_held_and_is_started_again():
    s = Spawned()
    s.writer.start()
    s.clock.advance(writers.STEADY)  # it ran steadily
    held = fired(s.writer.run([put("lamp", 0)]))
    with captured_log() as log:
        s.end(ProcessTerminated(signal=9))
    assert held[0].check(WriterLost), "not known to be stored: the sender hears 19"
    assert "writer ended" in log and "1 batches unanswered" in log
    refused = fired(s.writer.run([put("lamp", 1)]))
    assert refused[0].check(WriterLost), "refused while it is down, not queued without bound"
    s.clock.advance(0)
    assert len(s.processes) == 2, "a writer that had run steadily is started again at once"
    assert s.writer.restarts == 1, "counted, for the stats and /metrics"
    after = fired(s.writer.run([put("lamp", 2)]))
    assert s.batches() == [[put("lamp", 2)]]
    s.answer((True, [Status.STORED], 0))
    assert after == [[Status.STORED]]


def test_a_writer_that_keeps_dying_young_is_started_after_growing_pauses():
    s = Spawned()
    s.writer.start()
    with captured_log():
        pauses = []
        for _ in range(8):
            s.end(ProcessTerminated(exitCode=2))
            [call] = s.clock.getDelayedCalls()
            pauses.append(call.getTime() - s.clock.seconds())
            s.clock.advance(pauses[-1])
    assert pauses == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert len(s.processes) == 9 and s.writer.restarts == 8


def test_what_the_child_writes_to_stderr_is_logged_line_by_line():
    s = Spawned()
    s.writer.start()
    with captured_log() as log:
        s.writer.errReceived(b"the message store m.db is not usable: file is not a database\n\n")
    assert "message store writer: the message store m.db is not usable" in log


def test_stopping_closes_its_input_and_waits_for_it_to_exit_or_kills_it():
    s = Spawned()
    s.writer.start()
    stopped = fired(s.writer.stop())
    assert s.process.stdin_closed and stopped == []
    s.end(ProcessDone(0))
    assert stopped == [None]
    assert s.clock.getDelayedCalls() == [], "not started again, and the kill is called off"
    assert s.writer.restarts == 0, "a stop is no restart"

    s = Spawned()
    s.writer.start()
    stopped = fired(s.writer.stop())
    with captured_log() as log:
        s.clock.advance(writers.STOP_TIMEOUT)
    assert s.process.signals == ["KILL"] and "killing it" in log
    s.end(ProcessTerminated(signal=9))
    assert stopped == [None]


def test_the_store_hands_a_pipelined_writer_each_turns_batch_without_waiting():
    s = Spawned()
    store = SQLiteStore(s.writer, BOUNDS, s.clock, "m.db")
    store.start()
    answered: list = []
    store.put_then("lamp", "app", b"{}", 0, 10_000, lambda *got: answered.append(got), 0)
    s.clock.advance(0)
    store.put_then("lamp", "app", b"{}", 0, 10_000, lambda *got: answered.append(got), 1)
    s.clock.advance(0)
    assert len(s.batches()) == 2, "the second turn's batch went before the first was answered"
    s.answer((True, [Status.STORED], 0), (True, [Status.STORED], 0))
    assert answered == [(Status.STORED, 0), (Status.STORED, 1)]
    closed = fired(store.close())
    assert s.process.stdin_closed and closed == []
    s.end(ProcessDone(0))
    assert closed == [None]


def test_with_a_probe_the_writer_starts_only_when_the_store_is_first_needed(tmp_path):
    from hypertcp.store.sqlitefile import connect

    path = str(tmp_path / "m.db")
    s = Spawned()
    store = SQLiteStore(s.writer, BOUNDS, s.clock, path, probe=connect(path))
    store.start()
    # An empty file: a login's backlog, the sweep, the operators' reads are answered here.
    assert fired(store.fetch("lamp", None, 8)) == [[]]
    assert fired(store.sweep(0)) == [0]
    assert fired(store.queues()) == [[]] and fired(store.purge("lamp")) == [0]
    s.clock.advance(0)
    assert s.processes == [], "nothing stored, no writer"
    # The first put starts it.
    answered: list = []
    store.put_then("lamp", "app", b"{}", 0, 10_000, lambda *got: answered.append(got), 7)
    s.clock.advance(0)
    assert len(s.processes) == 1 and len(s.batches()) == 1
    s.answer((True, [Status.STORED], 0))
    assert answered == [(Status.STORED, 7)]


def test_a_file_that_holds_messages_starts_the_writer_at_the_first_read(tmp_path):
    from hypertcp.store.sqlitefile import connect

    path = str(tmp_path / "m.db")
    # Another server's writer, sharing the file, stored one.
    assert open_writer(path).batch([put("lamp", 0)]) == [Status.STORED]
    s = Spawned()
    store = SQLiteStore(s.writer, BOUNDS, s.clock, path, probe=connect(path))
    store.start()
    assert s.processes == []
    fetched = fired(store.fetch("lamp", None, 8))
    s.clock.advance(0)
    assert len(s.processes) == 1, "the file holds messages: the writer is asked"
    assert [op[0] for op in s.batches()[0]] == [Writer.fetch]
    assert fetched == []  # answered by the writer, once it answers
