"""L{RefusalLog}: one log line per peer per window, saying how many were left out."""

from __future__ import annotations

from hypertcp.server.ratelimit import STRIKE_WINDOW
from hypertcp.server.refusals import RefusalLog


def test_the_first_refusal_is_logged_at_once():
    assert RefusalLog(now=100.0).admit(100.0) == 0


def test_refusals_within_the_window_are_counted_not_logged():
    refusals = RefusalLog(now=0.0)
    assert refusals.admit(0.0) == 0
    assert [refusals.admit(t) for t in (1.0, 5.0, STRIKE_WINDOW - 0.1)] == [None] * 3
    assert refusals.admit(STRIKE_WINDOW) == 3, "the next line says how many were left out"
    assert refusals.admit(STRIKE_WINDOW + 1) is None
    assert refusals.admit(3 * STRIKE_WINDOW) == 1


def test_a_quiet_peer_is_logged_each_time():
    refusals = RefusalLog(now=0.0)
    assert [refusals.admit(t * STRIKE_WINDOW) for t in range(5)] == [0] * 5
