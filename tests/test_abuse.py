"""
Bad input, each answered with the contract's status and logged, and none of
it taking down the server or slowing other clients.
"""

from __future__ import annotations

import json
import random
import socket
import threading
import time

import pytest

from hypertcp.protocol.commands import Command, Status
from hypertcp.protocol.frames import encode
from tests.raw import Closed, Raw


@pytest.fixture
def server(start_daemon):
    return start_daemon("--max-payload", "1024", "--rate-limit", "0")


@pytest.fixture
def bystander(server, token):
    """A well-behaved client that must keep being served through every test."""
    peer = Raw(server.port)
    assert peer.login(token("bystander"), proto=2) == Status.SUCCESS
    yield peer
    assert server.alive()
    assert peer.request(Command.PING, timeout=5) == Status.SUCCESS
    peer.close()


def logged_in(server, token, name: str = "dev") -> Raw:
    peer = Raw(server.port)
    assert peer.login(token(name), proto=2) == Status.SUCCESS
    return peer


def test_oversize_frame_is_skipped_and_the_stream_stays_in_sync(server, token, bystander):
    with logged_in(server, token) as peer:
        body = json.dumps({"targetId": "bystander", "payload": {"pad": "x" * 5000}}).encode()
        assert peer.request(Command.JSON_MESSAGE, body) == Status.ILLEGAL_COMMAND_BODY
        assert peer.request(Command.PING) == Status.SUCCESS
        # Byte-at-a-time oversize frame, then a good message in the same stream.
        big = encode(Command.JSON_MESSAGE, 500, body)
        for i in range(0, len(big), 997):
            peer.sock.sendall(big[i:i + 997])
        assert peer.answer_to(500) == Status.ILLEGAL_COMMAND_BODY
        msg_id = peer.send_json(Command.JSON_MESSAGE, {"targetId": "bystander", "payload": {"ok": 1}})
        assert peer.answer_to(msg_id) == Status.SUCCESS
        assert bystander.message() == {"from": "dev", "payload": {"ok": 1}}
    server.wait_for_log("over the 1,024-byte limit")


def test_random_garbage(server, token, bystander):
    garbage = random.Random(1234).randbytes(20000)
    with Raw(server.port) as peer:
        peer.sock.sendall(garbage)
        # Garbage parses as frames of random types: each gets some status.
        frame = peer.expect(lambda f: f.command == Command.RESPONSE)
        assert frame.payload and frame.payload[0] in {
            Status.ILLEGAL_COMMAND, Status.NOT_AUTHENTICATED, Status.ILLEGAL_COMMAND_BODY,
            Status.INVALID_TOKEN}
    with logged_in(server, token, "after") as peer:
        assert peer.request(Command.PING) == Status.SUCCESS


def test_invalid_utf8(server, token, bystander):
    with Raw(server.port) as peer:
        assert peer.request(Command.LOGIN, b"\xff\xfe\xfd") == Status.ILLEGAL_COMMAND_BODY
    with logged_in(server, token) as peer:
        assert peer.request(Command.JSON_MESSAGE, b'{"targetId": "\xff"}') \
            == Status.ILLEGAL_COMMAND_BODY
        assert peer.request(Command.PING) == Status.SUCCESS
    server.wait_for_log("not UTF-8")


@pytest.mark.parametrize("body", [
    b"not json", b"[1, 2]", b'"text"', b"{}", b'{"targetId": "bystander"}',
    b'{"targetId": "bystander", "payload": 5}', b'{"targetId": 7, "payload": {}}',
    b'{"payload": {}}',
], ids=["not-json", "array", "string", "empty", "no-payload", "payload-not-object",
        "target-not-string", "no-target"])
def test_bad_message_bodies(server, token, bystander, body):
    with logged_in(server, token) as peer:
        assert peer.request(Command.JSON_MESSAGE, body) == Status.ILLEGAL_COMMAND_BODY
        assert peer.request(Command.PING) == Status.SUCCESS
    assert not bystander.inbox


def test_broadcast_needs_a_payload_object(server, token, bystander):
    with logged_in(server, token) as peer:
        assert peer.request(Command.BROADCAST, b'{"payload": [1]}') == Status.ILLEGAL_COMMAND_BODY


def test_unknown_command(server, token, bystander):
    with logged_in(server, token) as peer:
        assert peer.request(99, b"whatever") == Status.ILLEGAL_COMMAND
        assert peer.request(Command.PING) == Status.SUCCESS
    server.wait_for_log("unknown command 99")


def test_commands_before_login(server, token, bystander):
    with Raw(server.port) as peer:
        assert peer.request(Command.PING) == Status.SUCCESS, "PING is allowed before login"
        assert peer.request(Command.JSON_MESSAGE, b'{"targetId":"bystander","payload":{}}') \
            == Status.NOT_AUTHENTICATED
        assert peer.request(Command.BROADCAST, b'{"payload":{}}') == Status.NOT_AUTHENTICATED
        assert peer.login(token("late"), proto=2) == Status.SUCCESS, "the connection lives on"
    assert not bystander.inbox


def test_login_twice(server, token, bystander):
    secret = token("twice")
    with Raw(server.port) as peer:
        assert peer.login(secret, proto=2) == Status.SUCCESS
        assert peer.request(Command.LOGIN, secret.encode()) == Status.ILLEGAL_COMMAND
        assert peer.request(Command.PING) == Status.SUCCESS


def test_flood_past_the_rate_limit(start_daemon, token):
    server = start_daemon("--rate-limit", "20", "--set", "limits.quota_strikes=200")
    with Raw(server.port) as calm, Raw(server.port) as flooder:
        assert calm.login(token("calm"), proto=2) == Status.SUCCESS
        assert flooder.login(token("flooder"), proto=2) == Status.SUCCESS
        burst = b"".join(encode(Command.PING, i) for i in range(1, 101))
        flooder.sock.sendall(burst)
        statuses = [flooder.answer_to(i) for i in range(1, 101)]
        assert statuses.count(Status.SUCCESS) >= 10, "the burst allowance is served"
        assert statuses.count(Status.QUOTA_LIMIT) >= 50
        server.wait_for_log("over the rate limit")
        # Sustained abuse: the connection is closed, and says why in the log.
        flooder.sock.sendall(b"".join(encode(Command.PING, i) for i in range(1, 301)))
        assert flooder.wait_closed()
        server.wait_for_log("flood:")
        assert calm.request(Command.PING) == Status.SUCCESS


def test_a_reader_that_never_reads_costs_bounded_memory(start_daemon, token):
    server = start_daemon("--rate-limit", "0", "--max-payload", "65535")
    baseline = server.rss_kb()
    sink = socket.socket()
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sink.connect(("127.0.0.1", server.port))
    sink.sendall(encode(Command.LOGIN, 1, token("sink").encode()))
    sender = Raw(server.port)
    assert sender.login(token("sender"), proto=2) == Status.SUCCESS
    bystander = Raw(server.port)
    assert bystander.login(token("bystander"), proto=2) == Status.SUCCESS

    chunk = json.dumps({"targetId": "sink", "payload": {"blob": "x" * 8000}}).encode()
    count = 50 * 1024 * 1024 // len(chunk) + 1
    peak = [baseline]
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], server.rss_kb())
            done.wait(0.05)

    def send_all():
        frame = encode(Command.JSON_MESSAGE, 0, chunk)
        for i in range(count):
            msg_id = i % 65535 + 1
            sender.sock.sendall(frame[:1] + msg_id.to_bytes(2, "big") + frame[3:])

    watcher = threading.Thread(target=watch)
    watcher.start()
    pusher = threading.Thread(target=send_all)
    pusher.start()
    statuses = {}
    try:
        # Every message is answered: delivered while the sink is connected,
        # DEVICE_NOT_IN_NETWORK once it has been dropped.  Reading the answers
        # as they come proves the sender is never held up by the sink.
        for i in range(count):
            status = sender.answer_to(i % 65535 + 1, timeout=30)
            statuses[status] = statuses.get(status, 0) + 1
            if i % 1000 == 0:
                assert bystander.request(Command.PING, timeout=5) == Status.SUCCESS
        pusher.join(30)
        assert not pusher.is_alive()
    finally:
        done.set()
        watcher.join()
        sink.close()
    server.wait_for_log("slow receiver")
    assert statuses.get(Status.DEVICE_NOT_IN_NETWORK, 0) > count // 2
    assert set(statuses) <= {Status.SUCCESS, Status.DEVICE_NOT_IN_NETWORK}
    grown_mb = (peak[0] - baseline) / 1024
    assert grown_mb < 64, f"server RSS grew {grown_mb:.0f} MB while 50 MB went to a stalled reader"
    assert bystander.request(Command.PING) == Status.SUCCESS
    sender.close()
    bystander.close()


def test_connections_past_max_connections_are_closed_at_once(start_daemon, token):
    server = start_daemon("--set", "limits.max_connections=2")
    with Raw(server.port) as one, Raw(server.port) as two:
        assert one.login(token("one"), proto=2) == Status.SUCCESS
        assert two.login(token("two"), proto=2) == Status.SUCCESS
        with Raw(server.port) as three:
            assert three.wait_closed()
        server.wait_for_log("2 connections already open")
        assert one.request(Command.PING) == Status.SUCCESS
    # Room again once one has gone.
    deadline = time.monotonic() + 10
    while True:
        with Raw(server.port) as again:
            try:
                if again.request(Command.PING, timeout=2) == Status.SUCCESS:
                    break
            except (Closed, TimeoutError, OSError):
                assert time.monotonic() < deadline


def test_a_payload_nested_too_deeply_to_relay_is_a_bad_body(server, token, bystander):
    deep = "[" * 300 + "]" * 300  # orjson reads this, but writes at most 255 levels
    body = ('{"targetId": "bystander", "payload": {"x": %s}}' % deep).encode()
    with logged_in(server, token) as peer:
        assert peer.request(Command.JSON_MESSAGE, body) == Status.ILLEGAL_COMMAND_BODY
        assert peer.request(Command.PING) == Status.SUCCESS
    assert not bystander.inbox
    server.wait_for_log("cannot be relayed")


def test_a_flood_of_response_frames_is_closed(server, token, bystander):
    with logged_in(server, token) as peer:
        assert peer.request(Command.PING) == Status.SUCCESS
        peer.sock.sendall(b"".join(encode(Command.RESPONSE, i % 65535 + 1) for i in range(1500)))
        assert peer.wait_closed()
    server.wait_for_log("RESPONSE frames for")


def test_refusals_are_logged_once_per_window_not_once_per_frame(server, token, bystander):
    with logged_in(server, token) as peer:
        peer.sock.sendall(b"".join(encode(99, i) for i in range(1, 51)))
        assert [peer.answer_to(i) for i in range(1, 51)] == [Status.ILLEGAL_COMMAND] * 50
        host, port = peer.sock.getsockname()
    # The server logs the close after every refusal: once it shows, the log is complete.
    server.wait_for_log(f"{host}:{port} (dev) disconnected")
    assert server.output.count("unknown command 99") == 1
