"""L{RateLimiter}: the token bucket and the strikes that make a flood."""

from __future__ import annotations

from hypertcp.server.ratelimit import STRIKE_WINDOW, RateLimiter


def test_a_full_bucket_allows_a_burst_then_nothing_until_it_refills():
    rate = RateLimiter(rate=10, burst=5, max_strikes=100, now=0.0)
    assert [rate.allow(0.0) for _ in range(6)] == [True] * 5 + [False]
    assert rate.allow(0.05) is False, "half a frame's allowance is not one"
    assert rate.allow(0.1) is True, "a tenth of a second at 10/s is one frame"


def test_the_bucket_never_holds_more_than_the_burst():
    rate = RateLimiter(rate=10, burst=5, max_strikes=100, now=0.0)
    assert [rate.allow(1000.0) for _ in range(6)] == [True] * 5 + [False]


def test_every_refusal_is_a_strike_and_past_max_strikes_it_is_a_flood():
    rate = RateLimiter(rate=1, burst=1, max_strikes=3, now=0.0)
    assert rate.allow(0.0)
    for strikes in (1, 2, 3):
        assert not rate.allow(0.0)
        assert rate.strikes == strikes and not rate.flooding
    assert not rate.allow(0.0)
    assert rate.flooding


def test_allowed_frames_are_no_strikes():
    rate = RateLimiter(rate=100, burst=100, max_strikes=0, now=0.0)
    assert all(rate.allow(0.0) for _ in range(100))
    assert rate.strikes == 0 and not rate.flooding


def test_strikes_count_within_a_window_and_start_again_after_it():
    rate = RateLimiter(rate=1, burst=1, max_strikes=3, now=0.0)
    rate.allow(0.0)
    for _ in range(3):
        rate.allow(0.0)
    assert rate.strikes == 3
    # The window is measured from its start: past it, the count restarts.
    later = STRIKE_WINDOW + 0.5
    assert rate.allow(later)  # refilled
    assert not rate.allow(later)
    assert rate.strikes == 1 and not rate.flooding


def test_strikes_within_the_same_window_accumulate_across_refills():
    rate = RateLimiter(rate=1, burst=1, max_strikes=3, now=0.0)
    for t in (0.0, 2.0, 4.0, 6.0):
        assert rate.allow(t)
        assert not rate.allow(t)
    assert rate.strikes == 4 and rate.flooding
