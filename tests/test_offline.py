"""
Store and forward through real processes and sockets: a message sent with
qos 1 to a device that is away waits for it -- across a SIGKILL of the
server, across the nodes of a cluster -- and arrives once, in order, to
the project's clients and to the ESP32 library.  The rules in detail are
tests/unit/test_offline.py's.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from typing import Callable

import pytest

from hypertcp.client import Client
from hypertcp.protocol.commands import Command, Status
from hypertcp.store import child
from hypertcp.store.records import Bounds
from hypertcp.store.sqlitefile import Writer
from tests.daemon import hypertcp
from tests.firmware import Device
from tests.raw import Raw

pytestmark = pytest.mark.integration


@pytest.fixture
def fleet(token):
    return token("fleet", "--role", "fleet")


def queue_list(*where: str) -> list[dict]:
    result = hypertcp("queue", "list", "--json", *where)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def eventually(check: Callable[[], bool], what: str, timeout: float = 10) -> None:
    """Poll C{check} until it holds (the store forgets a message once its ack is committed)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def nothing_stored_for(device: str, *where: str) -> None:
    eventually(lambda: device not in [q["device"] for q in queue_list(*where)],
               f"{device}'s queue to empty")


def first_message_is_live(port: int, token: str, sender: Client, device_id=None) -> None:
    """
    Log in again with an empty queue: the first message must be one sent
    now, so nothing stored came again.
    """
    with Client("127.0.0.1", port, token, device_id, timeout=10).connect() as again:
        assert sender.send(again.device_id or "lamp", {"live": True}) == Status.SUCCESS
        message = again.receive(10)
        assert (message.payload, message.extra) == ({"live": True}, None)


def test_offline_device_gets_its_message_at_login_once(start_daemon, token, fleet, tmp_path):
    server = start_daemon()
    lamp = token("lamp")
    sent = hypertcp("send", "lamp", '{"on": true}', "--qos", "1", "--ttl", "600",
                    "--port", str(server.port), "--token", fleet, "--device-id", "app")
    assert (sent.returncode, sent.stdout.strip()) == (0, "STORED"), sent.stderr
    where = ("--store", str(tmp_path / "hypertcp-messages.db"))
    [queued] = queue_list(*where)
    assert (queued["device"], queued["count"]) == ("lamp", 1)
    before = time.time() * 1000
    with Client("127.0.0.1", server.port, lamp, timeout=10).connect() as device:
        message = device.receive(10)
        assert (message.command, message.sender, message.payload) == (
            Command.JSON_MESSAGE, "app", {"on": True})
        assert before - 60_000 < message.extra["queued_at"] <= before
    nothing_stored_for("lamp", *where)
    with Client("127.0.0.1", server.port, fleet, "app", timeout=10).connect() as app:
        first_message_is_live(server.port, lamp, app)
        # Without qos, an offline device is still 7, as it always was.
        assert app.send("fan", {"n": 1}) == Status.DEVICE_NOT_IN_NETWORK


def test_a_stored_message_survives_sigkill_and_arrives_exactly_once(start_daemon, token, fleet):
    server = start_daemon()
    lamp = token("lamp")
    with Client("127.0.0.1", server.port, fleet, "app", timeout=10).connect() as app:
        assert app.send("lamp", {"kept": 1}, qos=1) == Status.STORED
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(10)
    again = start_daemon()
    with Client("127.0.0.1", again.port, lamp, timeout=10).connect() as device:
        message = device.receive(10)
        assert (message.sender, message.payload) == ("app", {"kept": 1})
    nothing_stored_for("lamp", "--store", str(again.workdir / "hypertcp-messages.db"))
    with Client("127.0.0.1", again.port, fleet, "app", timeout=10).connect() as app:
        first_message_is_live(again.port, lamp, app)


def children(server) -> list[int]:
    pid = server.proc.pid
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(child) for child in f.read().split()]


def writer_pids(server) -> list[int]:
    """The server's children: its store's writer, once it runs as a process of its own."""
    server.wait_for_log("written by a process")  # the store starts once the listeners are up
    return children(server)


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie has exited
    except FileNotFoundError:
        return True


def test_a_killed_store_writer_is_started_again_and_nothing_stored_is_lost(start_daemon, token,
                                                                           fleet):
    server = start_daemon()
    lamp = token("lamp")
    with Client("127.0.0.1", server.port, fleet, "app", timeout=10).connect() as app:
        assert app.send("lamp", {"n": 0}, qos=1) == Status.STORED
        [writer] = writer_pids(server)
        os.kill(writer, signal.SIGKILL)
        server.wait_for_log("the message store's writer ended")
        eventually(lambda: children(server) not in ([], [writer]), "a new writer")
        # While it starts the sender may hear 19 (not known to be stored); then STORED again.
        eventually(lambda: app.send("lamp", {"n": 1}, qos=1) == Status.STORED,
                   "storing to go on")
    assert server.alive()
    with Client("127.0.0.1", server.port, lamp, timeout=10).connect() as device:
        assert device.receive(10).payload == {"n": 0}, "what was stored before the kill stays"
        assert device.receive(10).payload == {"n": 1}


def test_the_store_writer_ends_with_the_server_however_the_server_ends(start_daemon, token,
                                                                       fleet):
    server = start_daemon()
    with Client("127.0.0.1", server.port, fleet, "app", timeout=10).connect() as app:
        assert app.send("lamp", {"n": 0}, qos=1) == Status.STORED
    [writer] = writer_pids(server)
    server.stop()
    assert "Server Shut Down." in server.output, "it stopped as twistd stops on SIGTERM"
    eventually(lambda: gone(writer), "the writer to exit after a clean stop")
    assert "writer ended" not in server.output, "a clean stop is no failure"

    again = start_daemon()
    with Client("127.0.0.1", again.port, fleet, "app", timeout=10).connect():
        pass  # a login reads its backlog: the file holds lamp's message, so the writer starts
    [writer] = writer_pids(again)
    again.proc.send_signal(signal.SIGKILL)
    again.proc.wait(10)
    # Its input ends with the server: it commits what it has and exits, holding no port.
    eventually(lambda: gone(writer), "the writer to exit after the server was killed")
    nothing_lost = queue_list("--store", str(again.workdir / "hypertcp-messages.db"))
    assert [(q["device"], q["count"]) for q in nothing_lost] == [("lamp", 1)]


def test_the_store_writer_starts_only_once_something_is_stored(start_daemon, token, fleet):
    server = start_daemon()
    lamp = token("lamp")
    with Client("127.0.0.1", server.port, lamp, timeout=10).connect() as device, \
            Client("127.0.0.1", server.port, fleet, "app", timeout=10).connect() as app:
        assert app.send("lamp", {"plain": True}) == Status.SUCCESS
        assert device.receive(10).payload == {"plain": True}
    assert writer_pids(server) == [], "logins and plain messages need no writer"
    with Client("127.0.0.1", server.port, fleet, "app", timeout=10).connect() as app:
        assert app.send("lamp", {"kept": True}, qos=1) == Status.STORED
    assert len(writer_pids(server)) == 1
    server.stop()
    again = start_daemon()  # the same file, now holding a message
    assert writer_pids(again) == []
    with Client("127.0.0.1", again.port, lamp, timeout=10).connect() as device:
        assert device.receive(10).payload == {"kept": True}
    assert len(writer_pids(again)) == 1


def test_the_store_writer_leaves_the_process_groups_signals_to_the_server(tmp_path):
    # Ctrl-C at a terminal, or a service manager's TERM, reaches the whole
    # group; the writer must not die mid-commit: the server stops it.
    proc = subprocess.Popen([sys.executable, "-m", "hypertcp.store.child",
                             str(tmp_path / "m.db"), "full"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def stored() -> tuple:
        proc.stdin.write(child.frame([(Writer.put, ("lamp", "app", b"{}", 0, 10_000,
                                                    Bounds(10, 1 << 20, 1 << 28), 0))]))
        proc.stdin.flush()
        (length,) = child.LENGTH.unpack(proc.stdout.read(4))
        return pickle.loads(proc.stdout.read(length))

    try:
        assert stored() == (True, [Status.STORED], 0)  # it is up, its handlers in place
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            proc.send_signal(signum)
        assert stored() == (True, [Status.STORED], 0)
        proc.stdin.close()
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_device_that_never_acknowledges_gets_them_again_in_order(start_daemon, token, fleet):
    server = start_daemon("--set", "limits.ack_timeout=1")
    lamp = token("lamp")
    with Client("127.0.0.1", server.port, fleet, "app", timeout=10).connect() as app:
        for n in range(5):
            assert app.send("lamp", {"n": n}, qos=1) == Status.STORED
    with Raw(server.port) as silent:
        assert silent.login_json(lamp) == Status.SUCCESS
        got = [silent.message(ack=False)["payload"]["n"] for _ in range(5)]
        assert got == list(range(5))
    with Client("127.0.0.1", server.port, lamp, timeout=10).connect() as device:
        assert [device.receive(10).payload["n"] for _ in range(5)] == list(range(5))


def test_the_1001st_message_over_a_bound_of_1000_gets_1(start_daemon, token, fleet):
    server = start_daemon("--rate-limit", "0", "--set", "store.max_queued=1000")
    with Raw(server.port) as app:
        assert app.login_json(fleet, "app") == Status.SUCCESS
        body = json.dumps({"targetId": "lamp", "payload": {"x": 1}, "qos": 1}).encode()
        ids = [app.send(Command.JSON_MESSAGE, body) for _ in range(1001)]
        answers = [app.answer_to(msg_id) for msg_id in ids]
    assert answers == [Status.STORED] * 1000 + [Status.QUOTA_LIMIT]


def test_an_expired_message_is_never_delivered(start_daemon, token, fleet, tmp_path):
    server = start_daemon()
    lamp = token("lamp")
    with Client("127.0.0.1", server.port, fleet, "app", timeout=10).connect() as app:
        assert app.send("lamp", {"short": True}, qos=1, ttl=0.5) == Status.STORED
        assert app.send("lamp", {"long": True}, qos=1) == Status.STORED
    result = hypertcp("queue", "show", "lamp", "--json",
                      "--store", str(tmp_path / "hypertcp-messages.db"))
    expires = json.loads(result.stdout)[0]["expires_at"]
    eventually(lambda: time.time() * 1000 > expires + 50, "the short ttl to pass")
    with Client("127.0.0.1", server.port, lamp, timeout=10).connect() as device:
        # In order, the expired one would have come first.
        assert device.receive(10).payload == {"long": True}


def test_operators_list_show_and_purge_a_devices_queue(start_daemon, token, fleet, tmp_path):
    server = start_daemon()
    lamp = token("lamp")
    where = ("--store", str(tmp_path / "hypertcp-messages.db"))
    with Client("127.0.0.1", server.port, fleet, "app", timeout=10).connect() as app:
        for n in range(2):
            assert app.send("lamp", {"n": n}, qos=1) == Status.STORED
        listed = hypertcp("queue", "list", *where)
        assert listed.returncode == 0 and "lamp" in listed.stdout and \
            "2 messages for 1 devices" in listed.stdout, listed
        shown = hypertcp("queue", "show", "lamp", *where)
        assert '{"n":0}' in shown.stdout and '{"n":1}' in shown.stdout, shown
        purged = hypertcp("queue", "purge", "lamp", *where)
        assert purged.stdout.strip().startswith("purged 2 messages stored for lamp"), purged
        assert queue_list(*where) == []
        first_message_is_live(server.port, lamp, app)


def cluster_token(redis, name: str) -> str:
    """
    A device token added to a running cluster: its nodes' token files are
    copies of the cluster's tokens, so one added to a file would not last.
    """
    added = hypertcp("token", "add", name, "--cluster", redis.url)
    assert added.returncode == 0, added.stderr
    return added.stdout.strip().splitlines()[-1]


def test_clustered_stored_via_one_node_delivered_at_another(start_daemon, redis, token, fleet):
    nodes = [start_daemon("--cluster", redis.url, "--set", f"cluster.node_id=n{i}",
                          "--set", "cluster.ttl=2", "--set", "cluster.refresh=0.3")
             for i in range(2)]
    for node in nodes:
        node.wait_for_log("is up")
    one, two = nodes
    lamp = cluster_token(redis, "lamp")
    with Client("127.0.0.1", one.port, fleet, "app", timeout=10).connect() as app:
        assert app.send("lamp", {"via": "n0"}, qos=1) == Status.STORED
    assert [(q["device"], q["count"]) for q in queue_list("--cluster", redis.url)] == [("lamp", 1)]
    # The node that accepted it dies; the message was never only there.
    one.proc.send_signal(signal.SIGKILL)
    one.proc.wait(10)
    with Client("127.0.0.1", two.port, lamp, timeout=10).connect() as device:
        message = device.receive(10)
        assert (message.sender, message.payload) == ("app", {"via": "n0"})
        assert "queued_at" in message.extra
    nothing_stored_for("lamp", "--cluster", redis.url)
    with Client("127.0.0.1", two.port, fleet, "app", timeout=10).connect() as app:
        first_message_is_live(two.port, lamp, app)


def test_clustered_bounds_expiry_sweep_and_purge_in_redis(start_daemon, redis, token, fleet):
    node = start_daemon("--cluster", redis.url, "--rate-limit", "0",
                        "--set", "store.max_queued=3", "--set", "store.sweep_interval=0.2")
    node.wait_for_log("is up")
    cluster = ("--cluster", redis.url)
    lamp = cluster_token(redis, "lamp")
    with Client("127.0.0.1", node.port, fleet, "app", timeout=10).connect() as app:
        assert app.send("lamp", {"n": 0}, qos=1, ttl=0.3) == Status.STORED
        assert [app.send("lamp", {"n": n}, qos=1) for n in (1, 2, 3)] == [
            Status.STORED, Status.STORED, Status.QUOTA_LIMIT]
        # The sweep deletes the expired one, and its place is free again.
        eventually(lambda: queue_list(*cluster)[0]["count"] == 2, "the sweep")
        assert app.send("lamp", {"n": 4}, qos=1) == Status.STORED
        assert app.send("fan", {"n": 5}, qos=1) == Status.STORED
        purged = hypertcp("queue", "purge", "fan", *cluster)
        assert purged.stdout.startswith("purged 1 message stored for fan"), purged
        assert [q["device"] for q in queue_list(*cluster)] == ["lamp"]
        with Client("127.0.0.1", node.port, lamp, timeout=10).connect() as device:
            assert [device.receive(10).payload["n"] for _ in range(3)] == [1, 2, 4]
        nothing_stored_for("lamp", *cluster)
    assert redis.cli("GET", "hypertcp:queue-total").strip() == "0"
    # Nothing per device is left behind: only the total and, for a moment, the sweep's lock.
    assert set(redis.cli("KEYS", "hypertcp:queue*").split()) <= {"hypertcp:queue-total",
                                                                 "hypertcp:queue-sweep"}


def test_the_esp32_library_stores_with_qos_and_takes_what_was_stored(start_daemon, token, fleet,
                                                                    device, tmp_path):
    server = start_daemon("--idle-timeout", "60")
    esp32 = token("esp32-1")
    where = ("--store", str(tmp_path / "hypertcp-messages.db"))
    with Client("127.0.0.1", server.port, fleet, "app", timeout=10).connect() as app:
        for n in range(12):  # more than the window of 8
            assert app.send("esp32-1", {"n": n}, qos=1) == Status.STORED
    d = device(esp32, server.port)
    d.expect("connected")
    got = [json.loads(d.expect(r"message app .*").group(0).split(" ", 2)[2])["n"]
           for _ in range(12)]
    assert got == list(range(12))
    nothing_stored_for("esp32-1", *where)
    # sendMessage(target, json, HYPER_TCP_QOS_1) to a device that is away: 202.
    msg_id = d.send("sendq", "lamp", '{"switch":"on"}')
    d.expect(f"response {msg_id} {int(Status.STORED)}")
    [queued] = queue_list(*where)
    assert (queued["device"], queued["count"]) == ("lamp", 1)


def test_an_original_firmware_device_takes_stored_messages_in_step(start_daemon, token, fleet,
                                                                   build, tmp_path):
    server = start_daemon("--idle-timeout", "60")
    legacy = token("legacy-1")
    with Client("127.0.0.1", server.port, fleet, "app", timeout=10).connect() as app:
        for n in range(3):
            assert app.send("legacy-1", {"n": n}, qos=1) == Status.STORED
    d = Device(build / "original", "--token", legacy, "--host", "127.0.0.1",
               "--port", str(server.port))
    try:
        d.expect("login-ok")
        for n in range(3):
            _, sender, text = d.expect(r"message .*").group(0).split(" ", 2)
            # The contract's frame exactly: no "queued_at" for a device below level 2.
            assert (sender, json.loads(text)) == ("app", {"n": n})
        nothing_stored_for("legacy-1", "--store", str(tmp_path / "hypertcp-messages.db"))
        with Client("127.0.0.1", server.port, fleet, "app", timeout=10).connect() as app:
            assert app.send("legacy-1", {"live": True}, ack=True) == Status.SUCCESS
            _, sender, text = d.expect(r"message .*").group(0).split(" ", 2)
            assert (sender, json.loads(text)) == ("app", {"live": True}), "still in step"
    finally:
        d.close()


def test_the_qos_bench_reports_stored_throughput_and_an_ordered_drain():
    # Figures come out and the drain is whole and in order; how fast is for
    # docs/performance.rst, never asserted here.
    result = hypertcp("bench", "--qos", "1", "--pairs", "2", "--window", "8", "--duration", "0.5",
                      "--warmup", "0.2", "--queued", "300", "--devices", "7", "--json", "--quiet",
                      timeout=120)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["scenario"]["devices"] == 7
    for run in ("plain", "qos_online", "stored"):
        assert figures[run]["msgs_per_s"] > 0 and figures[run]["probes"] > 0
        assert 0 < figures[run]["load_cpu_s"] <= 0.6, "one process, a 0.5 s window"
    assert set(figures["stored"]["answers"]) == {"STORED"}
    assert set(figures["plain"]["answers"]) == set(figures["qos_online"]["answers"]) == {"SUCCESS"}
    drain = figures["drain"]
    assert (drain["backlog"], drain["in_order"], drain["duplicated"]) == (300, True, 0)
    assert figures["stored_to_plain"] > 0
