"""
What every bench message carries, and how its receiver counts it.

The payload holds its sequence number and send time as fixed-width strings
at fixed offsets, so a receiver finds them with one C{bytes.find} instead of
parsing JSON, whatever the broker did to the message around them.  Each
protocol only finds where its messages' payloads are; L{count} does the
rest, the same for all of them.
"""

from __future__ import annotations

from typing import Any

from hypertcp.bench.errors import BenchError
from hypertcp.bench.pair import Pair

SEQ_KEY = b'"seq":"'
_SEQ = len(SEQ_KEY)
_TS = _SEQ + 10 + len(b'","ts":"')


def payload_template(size: int) -> bytes:
    """
    The application payload, a JSON object of exactly C{size} bytes with
    C{%d} holes for the sequence number and the send time (monotonic ns).
    """
    head = b'{"seq":"%010d","ts":"%019d","pad":"'
    fixed = len(head % (0, 0)) + len(b'"}')
    if size < fixed:
        raise BenchError(f"--payload must be at least {fixed} bytes")
    return head + b"x" * (size - fixed) + b'"}'


def literal(data: bytes) -> bytes:
    """Fixed bytes made safe to put in a %-template."""
    return data.replace(b"%", b"%%")


def count(pair: Pair, buf: bytes, spans: list[tuple[int, int]], now: int, lat: Any) -> None:
    """
    Count the messages whose payloads lie at C{spans} (start, stop) in
    C{buf}, all delivered to C{pair}'s receiver at C{now}: new, duplicated
    or malformed, and their latency into C{lat} (None outside the measured
    window).

    This is the load generator's hot path.  Taking the spans as one list per
    read, rather than a call per message, is what lets the protocols share
    it at no measurable cost.
    """
    find = buf.find
    expected = pair.expected
    unique = dups = bad = 0
    for start, stop in spans:
        k = find(SEQ_KEY, start, stop)
        if k < 0:
            bad += 1
        else:
            seq = int(buf[k + _SEQ:k + _SEQ + 10])
            if seq >= expected:
                expected = seq + 1
                unique += 1
                if lat is not None:
                    lat.append(now - int(buf[k + _TS:k + _TS + 19]))
            else:
                dups += 1
    pair.expected = expected
    pair.unique += unique
    pair.dups += dups
    pair.bad += bad
