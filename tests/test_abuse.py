"""
A reader that never reads, against the real daemon: the real transport's
backpressure and the outbound cap keep the server's memory bounded and
never hold the sender up.  Every other bad input is answered by a rule
tested in-process (tests/unit/test_limits.py, test_routing.py, test_login.py).
"""

from __future__ import annotations

import json
import socket
import threading

import pytest

from hypertcp.protocol.commands import Command, Status
from hypertcp.protocol.frames import encode
from tests.raw import Raw

pytestmark = pytest.mark.integration


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
