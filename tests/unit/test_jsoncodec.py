"""
The JSON codec contract, checked against each backend the project may run
on -- orjson where it has wheels, ujson elsewhere (32-bit ARM gateways) --
for what the server relies on: nothing that is not JSON is ever relayed
(NaN, Infinity, numbers beyond a double, lone surrogates, bytes that are
not UTF-8), and what it writes is compact UTF-8 with "/" and non-ASCII
characters as they are.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hypertcp.protocol import jsoncodec

CODECS = [jsoncodec.codec(name) for name in jsoncodec.BACKENDS]


@pytest.fixture(params=CODECS, ids=lambda c: c.name)
def codec(request) -> jsoncodec.Codec:
    return request.param


def relayed(codec: jsoncodec.Codec, data: bytes) -> bytes | None:
    """What the server would pass on after reading C{data}, or None if it refuses it."""
    try:
        value = codec.loads(data)
    except ValueError:
        return None
    try:
        return codec.dumps(value)
    except codec.encode_error:
        return None


def strict(data: bytes) -> object:
    """Parse as RFC 8259 JSON, refusing everything Python's json module would let through."""
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    text = data.decode("utf-8")  # strict: no surrogates
    return json.loads(text, parse_constant=refuse)


def test_both_backends_are_installed():
    # ujson is in the test extra: its absence is a failure, not a skip.
    assert [c.name for c in CODECS] == ["orjson", "ujson"]


@pytest.mark.parametrize("data", [
    b'{"t": NaN}', b'{"t": Infinity}', b'{"t": -Infinity}', b'{"t": 1e400}', b'{"t": -1e400}',
    b'{"t": "\\ud800"}', b'{"t": "\\udfff x"}', b'{"t": "\\ud800\\u0041"}',
    b'{"t": "\xed\xa0\x80"}',  # a surrogate encoded as UTF-8 bytes
    b'{"t": "\xff"}', b'{"t": "\xc3"}', b'{"t": "\xc0\xaf"}',  # not UTF-8; overlong "/"
])
def test_what_is_not_json_is_never_relayed(codec, data):
    assert relayed(codec, data) is None


@pytest.mark.parametrize("value", ["\ud800", {"k\udc00": 1}, ["a\udfffb"]])
def test_a_lone_surrogate_is_never_written(codec, value):
    with pytest.raises(codec.encode_error):
        codec.dumps({"t": value})
    assert issubclass(codec.encode_error, TypeError)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_nan_and_infinity_are_never_written_as_such(codec, value):
    # ujson refuses them; orjson writes null.  Neither writes what is not JSON.
    try:
        data = codec.dumps({"t": value})
    except codec.encode_error:
        return
    assert strict(data) == {"t": None}


def test_output_is_compact_utf8_with_slash_and_non_ascii_as_they_are(codec):
    assert codec.dumps({"path": "a/b", "name": "Grüße ☃ 🌡", "n": [1, 2.5, True, None]}) == \
        '{"path":"a/b","name":"Grüße ☃ 🌡","n":[1,2.5,true,null]}'.encode("utf-8")


def test_text_and_bytes_both_read(codec):
    assert codec.loads('{"a": "é"}') == codec.loads('{"a": "é"}'.encode()) == {"a": "é"}


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(st.characters()),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(st.characters(), max_size=8), children, max_size=4),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(value=JSON_VALUES)
def test_whatever_is_written_is_strict_json_that_reads_back(value):
    # st.characters() includes lone surrogates; floats include nan and inf.
    for codec in CODECS:
        try:
            data = codec.dumps(value)
        except codec.encode_error:
            continue
        assert strict(data) == codec.loads(data)
        assert relayed(codec, data) == data
