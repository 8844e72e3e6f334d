"""
Property-based fuzzing of what the server reads from the network (issue 15,
item 15): the frame decoder on any bytes in any chunking, the LOGIN and
message parsers on any payload, and a whole server session fed random
frames and random bytes.  Never an exception, every frame answered or
skipped, and the stream stays in step.

Bounded in the default run; for a long campaign set HYPERTCP_FUZZ_EXAMPLES
(examples per property, e.g. 20000).  tests/test_wire.py has the decoder's
round-trip and oversize properties on well-formed frames.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hypertcp.protocol.bodies import BadBody, Login, Send, parse_login, parse_send
from hypertcp.protocol.commands import Command
from hypertcp.protocol.frames import HEADER, Decoder, Frame, Oversize, encode
from hypertcp.server.tokens import TokenStore
from tests.inprocess import Server

EXAMPLES = int(os.environ.get("HYPERTCP_FUZZ_EXAMPLES", "100"))
fuzz = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

MAX_PAYLOAD = 300  # the fuzzed server's
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=12)
#: Ids from a dictionary of interesting characters: controls, separators, wide ones.
ids = st.text(st.sampled_from("az09-_. \t\n\r\x00\x1b\x7f\x85\u2028\u00e9\u6e29"), max_size=8)
login_objects = st.fixed_dictionaries({}, optional={
    "token": st.one_of(st.text(max_size=40), json_values),
    "device_id": st.one_of(ids, json_values),
    "proto": json_values, "challenge": json_values, "key": json_values, "proof": json_values})
#: Logins shaped like the real thing, so the checks behind the first ones are reached.
plausible_logins = st.fixed_dictionaries({"token": st.text(min_size=1, max_size=12)}, optional={
    "device_id": ids, "proto": st.integers(-1, 3)})
send_objects = st.fixed_dictionaries({}, optional={
    "targetId": st.one_of(st.sampled_from(["server", "broadcast", "fuzz", "nobody"]), json_values),
    "payload": st.one_of(st.dictionaries(st.text(max_size=8), json_values, max_size=4),
                         json_values),
    "ack": json_values, "qos": json_values, "ttl": json_values})


def as_payload(value: object) -> bytes:
    return json.dumps(value).encode()


# -- the decoder -----------------------------------------------------------------

@fuzz
@given(st.binary(max_size=3000), st.integers(0, 300), st.data())
def test_any_bytes_decode_the_same_in_any_chunking(data, limit, draw):
    whole = Decoder(limit).feed(data)
    cuts = sorted(draw.draw(st.lists(st.integers(0, len(data)), max_size=12)))
    decoder, parts, start = Decoder(limit), [], 0
    for cut in cuts + [len(data)]:
        parts += decoder.feed(data[start:cut])
        start = cut
    assert parts == whole
    for event in whole:
        if type(event) is Frame:
            assert len(event.payload) <= limit
        else:
            assert type(event) is Oversize and event.length > limit


# -- the parsers -------------------------------------------------------------------

@fuzz
@given(st.one_of(st.binary(max_size=300), login_objects.map(as_payload),
                 plausible_logins.map(as_payload)))
def test_parse_login_answers_any_payload_with_a_login_or_bad_body(payload):
    try:
        login = parse_login(payload)
    except BadBody:
        return
    assert type(login) is Login
    assert login.device_id is None or (type(login.device_id) is str
                                       and login.device_id.isprintable())
    assert type(login.proto) is int and login.proto >= 1
    if login.challenge:
        assert login.token is None and login.proof is None
    elif login.proof is not None:
        assert type(login.key) is str and type(login.proof) is str and login.token is None
    else:
        assert type(login.token) is str and login.token


@fuzz
@given(st.sampled_from([Command.JSON_MESSAGE, Command.BROADCAST]),
       st.one_of(st.binary(max_size=300), send_objects.map(as_payload)))
def test_parse_send_answers_any_payload_with_a_send_or_bad_body(command, payload):
    try:
        send = parse_send(command, payload)
    except BadBody:
        return
    assert type(send) is Send and type(send.payload) is dict
    assert type(send.target) is str and send.target
    assert send.qos in (0, 1) and (send.ttl is None or send.ttl > 0)
    if command == Command.BROADCAST:
        assert send.target == "broadcast"


# -- a whole session ---------------------------------------------------------------

@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> tuple[Path, str]:
    """A token file with one fleet token, made once: each example only reads it."""
    where = tmp_path_factory.mktemp("fuzz")
    return where, TokenStore(where / "tokens.json").add("fuzz", "fleet")


def fuzz_server(tokens: tuple[Path, str]) -> tuple[Server, str]:
    where, secret = tokens
    # A small payload limit, so oversize frames are cheap to generate.
    return Server(where, rate_limit=0, login_timeout=1000, ack_timeout=1, idle_timeout=5000,
                  max_payload=MAX_PAYLOAD), secret


def frame_strategy(secret: str) -> st.SearchStrategy:
    """(command, payload) pairs: every kind of frame, well-formed or not."""
    good_logins = st.sampled_from([
        {"token": secret, "proto": 2}, {"token": secret, "device_id": "fuzz", "proto": 2},
        {"token": secret}, {"proto": 2, "challenge": True}])
    return st.one_of(
        st.tuples(st.just(Command.PING), st.binary(max_size=8)),
        st.tuples(st.just(Command.LOGIN), st.one_of(good_logins.map(as_payload),
                                                     st.just(secret.encode()),
                                                     login_objects.map(as_payload),
                                                     st.binary(max_size=60))),
        st.tuples(st.sampled_from([Command.JSON_MESSAGE, Command.BROADCAST]),
                  st.one_of(send_objects.map(as_payload), st.binary(max_size=60))),
        st.tuples(st.just(Command.RESPONSE), st.binary(max_size=2)),
        st.tuples(st.sampled_from([Command.REDIRECT, 7, 99, 255]), st.binary(max_size=20)),
        st.tuples(st.sampled_from(list(Command)),
                  st.binary(min_size=MAX_PAYLOAD + 1, max_size=MAX_PAYLOAD + 40)),
    )


def answers(peer) -> Counter:
    """msg_ids the server answered: RESPONSEs, and LOGIN frames (a challenge's nonce)."""
    data = peer.transport.value()
    peer.transport.clear()
    return Counter(f.msg_id for f in Decoder().feed(data)
                   if f.command in (Command.RESPONSE, Command.LOGIN))


def check(server: Server, peer, expected: Counter) -> None:
    """Every frame answered once; on a connection left open, the stream still in step."""
    server.clock.advance(2)  # acknowledged sends to itself time out
    got = answers(peer)
    if peer.closing:
        assert not got - expected, "answers to frames never sent"
        return
    assert got == expected
    peer.session.dataReceived(encode(Command.PING, 4242))
    assert answers(peer) == Counter({4242: 1}), "the stream is still in step"


@fuzz
@given(st.data())
def test_a_session_answers_every_frame_of_any_sequence(tokens, data):
    server, secret = fuzz_server(tokens)
    frames = data.draw(st.lists(frame_strategy(secret), max_size=25))
    stream = b"".join(encode(command, i, payload) for i, (command, payload) in
                      enumerate(frames, 1))
    peer = server.connect()
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    start = 0
    for cut in cuts + [len(stream)]:
        if stream[start:cut]:
            peer.session.dataReceived(stream[start:cut])
        start = cut
    check(server, peer, Counter(i for i, (command, _) in enumerate(frames, 1)
                                if command != Command.RESPONSE))


def completion(data: bytes) -> bytes:
    """Zero bytes that finish the frame C{data} ends inside of, if any."""
    offset = 0
    while offset + HEADER.size <= len(data):
        offset += HEADER.size + HEADER.unpack_from(data, offset)[2]
    if offset >= len(data):
        return b"\x00" * (offset - len(data))
    missing = HEADER.size - (len(data) - offset)
    length = HEADER.unpack(data[offset:] + b"\x00" * missing)[2]
    return b"\x00" * (missing + length)


@fuzz
@given(st.binary(max_size=2000))
def test_a_session_answers_every_frame_random_bytes_make(tokens, garbage):
    server, _ = fuzz_server(tokens)
    peer = server.connect()
    # Random bytes, then whatever finishes the frame they end inside of.
    stream = garbage + completion(garbage)
    for part in (garbage, stream[len(garbage):]):
        if part and not peer.closing:
            peer.session.dataReceived(part)
    events = Decoder(server.limits.max_payload).feed(stream)
    check(server, peer, Counter(e.msg_id for e in events if e.command != Command.RESPONSE))


def test_the_session_fuzzer_reaches_a_logged_in_session(tokens):
    # The strategies are only worth something if they get past LOGIN.
    server, secret = fuzz_server(tokens)
    peer = server.connect()
    peer.session.dataReceived(encode(Command.LOGIN, 1, as_payload({"token": secret, "proto": 2}))
                              + encode(Command.JSON_MESSAGE, 2, as_payload(
                                  {"targetId": "server", "payload": {"command": "whoami"}})))
    assert answers(peer) == Counter({1: 1, 2: 1})
