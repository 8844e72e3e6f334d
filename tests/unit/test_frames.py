"""The sans-IO codec (hypertcp.protocol.frames): framing, reassembly in any chunking, oversize skipping."""

from hypothesis import given, settings
from hypothesis import strategies as st

from hypertcp.protocol.commands import Command, Status
from hypertcp.protocol.frames import HEADER_SIZE, Decoder, Frame, MsgIds, Oversize, encode, response, response_status


def test_header_is_five_bytes_big_endian():
    assert HEADER_SIZE == 5
    assert encode(Command.JSON_MESSAGE, 0x0102, b"abc") == b"\x1e\x01\x02\x00\x03abc"


def test_success_response_is_empty_except_for_login():
    assert response(7) == b"\x00\x00\x07\x00\x00"
    assert response(7, login=True) == b"\x00\x00\x07\x00\x01\xc8"
    assert response(7, Status.QUOTA_LIMIT) == b"\x00\x00\x07\x00\x01\x01"
    assert response_status(b"") == Status.SUCCESS
    assert response_status(b"\x09") == Status.INVALID_TOKEN


def test_msg_ids_wrap_to_one_never_zero():
    ids = MsgIds(start=65534)
    assert [ids.next(), ids.next(), ids.next()] == [65535, 1, 2]


def test_byte_at_a_time():
    stream = encode(Command.LOGIN, 1, b"token") + encode(Command.PING, 2)
    decoder = Decoder()
    events = []
    for i in range(len(stream)):
        events += decoder.feed(stream[i:i + 1])
    assert events == [Frame(29, 1, b"token"), Frame(6, 2, b"")]
    assert decoder.buffered == 0


def test_thousand_frames_in_one_chunk():
    frames = [Frame(Command.JSON_MESSAGE, i + 1, b'{"n":%d}' % i) for i in range(1000)]
    decoder = Decoder()
    assert decoder.feed(b"".join(encode(*f) for f in frames)) == frames


def test_oversize_payload_is_skipped_byte_exactly():
    decoder = Decoder(max_payload=10)
    big = encode(Command.JSON_MESSAGE, 5, b"x" * 100)
    after = encode(Command.PING, 6)
    events = decoder.feed(big[:20])
    assert events == [Oversize(Command.JSON_MESSAGE, 5, 100)]
    assert decoder.buffered == 0, "an oversize body is never buffered"
    assert decoder.feed(big[20:] + after) == [Frame(Command.PING, 6, b"")]


frames = st.lists(st.builds(
    Frame, st.integers(0, 255), st.integers(1, 65535), st.binary(max_size=300)), max_size=30)


@settings(max_examples=300, deadline=None)
@given(frames, st.data())
def test_round_trip_in_any_chunking(sent, data):
    stream = b"".join(encode(*f) for f in sent)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    decoder = Decoder()
    received = []
    last = 0
    for cut in cuts + [len(stream)]:
        received += decoder.feed(stream[last:cut])
        last = cut
    assert received == sent
    assert decoder.buffered == 0


@settings(max_examples=200, deadline=None)
@given(frames, st.integers(0, 300), st.data())
def test_oversize_frames_never_desync(sent, limit, data):
    stream = b"".join(encode(*f) for f in sent)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = Decoder(max_payload=limit)
    received = []
    last = 0
    for cut in cuts + [len(stream)]:
        received += decoder.feed(stream[last:cut])
        last = cut
    expected = [f if len(f.payload) <= limit else Oversize(f.command, f.msg_id, len(f.payload))
                for f in sent]
    assert received == expected


def test_a_decoder_limit_outside_the_wire_range_is_refused():
    import pytest

    for bad in (-1, 65536):
        with pytest.raises(ValueError, match="max_payload"):
            Decoder(bad)


def test_an_oversize_frame_at_the_end_of_a_chunk_is_skipped_in_the_next():
    decoder = Decoder(max_payload=3)
    big = encode(Command.JSON_MESSAGE, 9, b"abcdef")
    assert decoder.feed(big[:5]) == [Oversize(Command.JSON_MESSAGE, 9, 6)]
    assert decoder.feed(big[5:8]) == []
    assert decoder.feed(big[8:] + encode(Command.PING, 10, b"ok")) == [Frame(Command.PING, 10, b"ok")]
