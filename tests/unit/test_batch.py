"""L{WriteBatch}: frames written during a read held and written once per session."""

from __future__ import annotations

from typing import Optional

from hypertcp.server.batch import WriteBatch


class FakeSession:
    """What the batch needs of a session: an C{out} list it fills and C{flush}."""

    def __init__(self) -> None:
        self.out: Optional[list[bytes]] = None
        self.written: list[bytes] = []

    def flush(self) -> None:
        out, self.out = self.out, None
        if out:
            self.written.append(b"".join(out))


def test_held_frames_are_written_once_per_session_when_the_read_ends():
    batch = WriteBatch()
    a, b = FakeSession(), FakeSession()
    batch.begin()
    assert batch.active
    for data in (b"1", b"2", b"3"):
        batch.hold(a, data)
    batch.hold(b, b"x")
    assert a.written == b.written == [], "nothing goes out during the read"
    batch.end()
    assert not batch.active
    assert (a.written, b.written) == ([b"123"], [b"x"])
    assert a.out is None and b.out is None


def test_each_read_is_a_new_batch():
    batch = WriteBatch()
    a = FakeSession()
    for data in (b"1", b"2"):
        batch.begin()
        batch.hold(a, data)
        batch.end()
    assert a.written == [b"1", b"2"]


def test_a_read_that_wrote_nothing_flushes_nothing():
    batch = WriteBatch()
    batch.begin()
    batch.end()
    batch.begin()
    a = FakeSession()
    batch.end()
    assert a.written == []


def test_holding_inside_an_open_batch_leaves_the_writing_to_that_batch_s_end():
    # A store's answers or a cluster's deliveries arriving during a read.
    batch = WriteBatch()
    a = FakeSession()
    batch.begin()
    with batch.holding():
        batch.hold(a, b"1")
    assert batch.active and a.written == [], "the read's batch is still open"
    batch.hold(a, b"2")
    batch.end()
    assert a.written == [b"12"]
    with batch.holding():
        batch.hold(a, b"3")
        assert a.written == [b"12"]
    assert not batch.active and a.written == [b"12", b"3"]
