"""
L{Deadlines}: every session's timed checks under one reactor timer, each
at its own time, and nothing kept for a session that has gone.
"""

from __future__ import annotations

import gc
import weakref
from typing import Optional

from twisted.internet.task import Clock

from hypertcp.server.deadlines import IDLE, LOGIN, Deadlines
from tests.inprocess import Server


class Checked:
    """What Deadlines needs of a session: when each check is due, and the check."""

    def __init__(self, deadlines: Deadlines, clock: Clock, every: Optional[float] = None) -> None:
        self.deadlines, self.clock, self.every = deadlines, clock, every
        self.when: dict[int, Optional[float]] = {LOGIN: None, IDLE: None}
        self.fired: list[tuple[int, float]] = []

    def expect(self, what: int, at: float) -> None:
        self.when[what] = at
        self.deadlines.add(at, self, what)

    def due(self, what: int) -> Optional[float]:
        return self.when[what]

    def deadline(self, what: int) -> None:
        self.when[what] = None
        self.fired.append((what, self.clock.seconds()))
        if self.every is not None:  # checks in again, as the idle check does
            self.expect(what, self.clock.seconds() + self.every)

    def gone(self) -> None:
        due = sum(when is not None for when in self.when.values())
        self.when = {LOGIN: None, IDLE: None}
        self.deadlines.drop(due)


def test_one_timer_serves_every_check_each_at_its_own_time():
    clock = Clock()
    deadlines = Deadlines(clock)
    sessions = [Checked(deadlines, clock) for _ in range(100)]
    for i, session in enumerate(sessions):
        session.expect(IDLE, 10 + i)
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(9.9)
    assert not any(s.fired for s in sessions)
    clock.advance(0.1)
    assert sessions[0].fired == [(IDLE, 10)] and not sessions[1].fired
    clock.pump([1] * 99)
    assert [s.fired for s in sessions] == [[(IDLE, 10 + i)] for i in range(100)]
    assert clock.getDelayedCalls() == [] and len(deadlines) == 0


def test_a_check_added_as_one_fires_does_not_delay_the_others():
    clock = Clock()
    deadlines = Deadlines(clock)
    again = Checked(deadlines, clock, every=30)
    other = Checked(deadlines, clock)
    again.expect(IDLE, 30)
    other.expect(IDLE, 31)
    clock.advance(30)
    assert again.fired == [(IDLE, 30)]
    clock.advance(1)
    assert other.fired == [(IDLE, 31)], "not held until the re-added check at 60"
    clock.advance(29)
    assert again.fired == [(IDLE, 30), (IDLE, 60)]


def test_an_earlier_check_added_later_moves_the_timer():
    clock = Clock()
    deadlines = Deadlines(clock)
    late, early = Checked(deadlines, clock), Checked(deadlines, clock)
    late.expect(IDLE, 60)
    early.expect(LOGIN, 10)
    clock.advance(10)
    assert early.fired == [(LOGIN, 10)] and late.fired == []


def test_a_check_no_longer_due_is_skipped():
    clock = Clock()
    deadlines = Deadlines(clock)
    session = Checked(deadlines, clock)
    session.expect(LOGIN, 10)
    session.expect(IDLE, 45)
    session.when[LOGIN] = None  # logged in
    deadlines.drop()
    clock.advance(10)
    assert session.fired == []
    clock.advance(35)
    assert session.fired == [(IDLE, 45)]


def test_sessions_that_left_are_not_kept_and_leave_no_timer():
    clock = Clock()
    deadlines = Deadlines(clock)
    sessions = [Checked(deadlines, clock) for _ in range(1000)]
    for session in sessions:
        session.expect(LOGIN, 10)
        session.expect(IDLE, 45)
    refs = [weakref.ref(s) for s in sessions]
    for session in sessions:
        session.gone()
    del sessions, session
    gc.collect()
    assert all(ref() is None for ref in refs), "the heap let go of them"
    assert clock.getDelayedCalls() == [] and len(deadlines) == 0


def test_a_server_holds_one_timer_for_all_its_sessions(tmp_path):
    server = Server(tmp_path, idle_timeout=60)
    peers = [server.online(f"device-{i}") for i in range(20)]
    assert len(server.clock.getDelayedCalls()) == 1
    server.clock.advance(30)
    assert all(len(p.frames()) == 1 for p in peers), "each pinged at half the timeout"
    for peer in peers:
        peer.lose()
    assert server.clock.getDelayedCalls() == []
