"""
A short run of C{hypertcp bench} against our server, Mosquitto, the
contract's floor and the no-broker sink.  These check that the figures come out and that nothing is
lost or duplicated on the way -- never how fast anything is.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from hypertcp.bench import mqtt, peers, report
from hypertcp.bench.errors import BenchError
from hypertcp.bench.frames import HyperTCP, Sink
from hypertcp.bench.message import payload_template
from hypertcp.bench.pair import Pair
from hypertcp.protocol.bodies import (
    Login, message_body, parse_delivery, parse_login, parse_send,
)
from hypertcp.protocol.commands import Command, Status
from hypertcp.protocol.frames import Decoder, encode, response
from tests.daemon import hypertcp
from tests.raw import Raw

SHORT = ("--pairs", "3", "--duration", "1", "--warmup", "0.2", "--quiet", "--json")


@pytest.mark.integration
def test_mosquitto_is_installed():
    # README's test command installs it; without it the baseline tests below
    # would measure nothing, so its absence is a failure, not a skip.
    assert os.path.exists(peers.MOSQUITTO) or shutil.which("mosquitto"), \
        "mosquitto is not installed (apt-get install mosquitto)"


def run(*args: str) -> dict:
    result = hypertcp("bench", *args, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def assert_delivered_all(figures: dict) -> None:
    assert figures["delivered"] > 0
    assert figures["sent"] == figures["delivered"]
    for key in ("lost", "duplicated", "malformed", "refused", "closed"):
        assert figures[key] == 0, key
    assert figures["msgs_per_s"] > 0
    assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]


def assert_server_measured(figures: dict) -> None:
    assert figures["server_cpu_s"] > 0
    assert figures["server_peak_rss_mb"] > 0
    assert figures["msgs_per_cpu_s"] > 0


@pytest.mark.integration
def test_hypertcp_and_sink_as_fast_as_possible():
    report = run(*SHORT, "--peer", "sink")
    assert report["scenario"]["pairs"] == 3 and report["scenario"]["ack"] is True
    ours, sink = report["runs"]["hypertcp"], report["runs"]["sink"]
    assert_delivered_all(ours)
    assert_server_measured(ours)
    assert_delivered_all(sink)
    assert sink["server_cpu_s"] is None  # no broker, nothing to measure
    assert report["ratios"]["hypertcp"]["msgs_per_s"] > 0


@pytest.mark.integration
def test_the_floors_beside_hypertcp_and_mosquitto():
    report = run(*SHORT, "--window", "1", "--peer", "floor", "--peer", "pyfloor",
                 "--peer", "mosquitto")
    assert list(report["runs"]) == ["hypertcp", "floor", "pyfloor", "mosquitto"]
    for figures in report["runs"].values():
        assert_delivered_all(figures)
        assert_server_measured(figures)
    # All are set against Mosquitto, the baseline.
    assert set(report["ratios"]) == {"hypertcp", "floor", "pyfloor"}


def exchange(address: tuple[str, int], messages: int) -> None:
    """Messages one at a time from "s" to "r", each delivered, acknowledged and answered."""
    host, port = address
    with Raw(port, host) as receiver, Raw(port, host) as sender:
        for raw, name in ((receiver, "r"), (sender, "s")):
            assert raw.login_json("any", name) == Status.SUCCESS
        for n in range(1, messages + 1):
            sender.send(Command.JSON_MESSAGE, message_body("r", {"n": n}), msg_id=n)
            delivery = receiver.expect(lambda f: f.command == Command.JSON_MESSAGE)
            message = parse_delivery(delivery)
            assert (message.sender, message.payload, delivery.msg_id) == ("s", {"n": n}, n)
            receiver.sock.sendall(response(delivery.msg_id))
            answer = sender.expect(lambda f: f.command == Command.RESPONSE)
            assert answer == (Command.RESPONSE, n, b"")
        sender.send(Command.JSON_MESSAGE, message_body("nobody", {}), msg_id=99)
        assert sender.expect(lambda f: True) == (
            Command.RESPONSE, 99, bytes([Status.DEVICE_NOT_IN_NETWORK]))
        # Nothing more than those frames came.
        assert sender.inbox == receiver.inbox == []


@pytest.mark.integration
def test_the_python_floor_keeps_the_contract():
    broker = peers.start_floor("python")
    try:
        exchange(broker.address, 20)
    finally:
        broker.stop()


@pytest.mark.integration
def test_the_floor_makes_the_contracts_calls_and_no_more():
    # What the floor stands for: per message, one read of it and one of the
    # receiver's acknowledgement, one send of the delivery and one of the
    # sender's answer.  Its own counts say so once it has stopped.
    broker = peers.start_floor()
    messages = 20
    try:
        exchange(broker.address, messages)
    finally:
        broker.stop()
    said = "".join(broker.lines)
    calls = re.search(r"floor: epoll_wait \d+ recv (\d+) send (\d+)", said)
    frames = re.search(r"frames in: response (\d+) ping 0 login (\d+) json (\d+)", said)
    assert calls and frames, broker.lines
    recv, send = map(int, calls.groups())
    acks, logins, sends = map(int, frames.groups())
    assert (acks, logins, sends) == (messages, 2, messages + 1)
    # The logins' answers, two a message, and the refusal of the message to nobody.
    assert send == 2 + 2 * messages + 1
    # A read for every frame but no more (and one for each connection's close):
    # two a message, though two acknowledgements may come in one read.
    assert 3 + messages <= recv <= acks + logins + sends + 2


@pytest.mark.integration
def test_fixed_rate_without_acks_over_two_processes():
    report = run(*SHORT, "--rate", "600", "--no-ack", "--procs", "2")
    ours = report["runs"]["hypertcp"]
    assert_delivered_all(ours)
    # 600/s for 1.2 s, split between the processes: the schedule, not a speed.
    assert 600 <= ours["sent"] <= 800


def assert_tail_measured(figures: dict) -> None:
    assert figures["p99_ms"] <= figures["p999_ms"] <= figures["max_ms"]
    # Over a 1 s window the share of a core is the CPU seconds, as a percentage.
    assert figures["server_cpu_percent"] == pytest.approx(100 * figures["server_cpu_s"])


@pytest.mark.integration
def test_many_pairs_at_a_fixed_rate_beside_mosquitto():
    # Issue 14's first load, scaled down: many pairs, a fixed total rate, the
    # tail and the server's share of a core for both brokers in one run.
    report = run("--pairs", "20", "--rate", "5000", "--duration", "1", "--warmup", "0.2",
                 "--quiet", "--json", "--peer", "mosquitto")
    ours, theirs = report["runs"]["hypertcp"], report["runs"]["mosquitto"]
    for figures in (ours, theirs):
        assert_delivered_all(figures)
        assert_server_measured(figures)
        assert_tail_measured(figures)
        assert 5000 <= figures["sent"] <= 7000  # the schedule: 5,000/s for 1.2 s
    assert set(report["ratios"]["hypertcp"]) >= {"msgs_per_s", "p99_ms", "p999_ms",
                                                "server_cpu_percent", "msgs_per_cpu_s"}


@pytest.mark.integration
def test_refusals_are_counted_though_answers_are_read_in_sweeps():
    # Senders' answers are not polled for, only read now and then: every one
    # must still be read and counted by the end of the run.
    report = run("--pairs", "2", "--rate", "300", "--duration", "1", "--warmup", "0.2",
                 "--quiet", "--json", "--server-arg=--rate-limit=20")
    ours = report["runs"]["hypertcp"]
    assert ours["closed"] == 0
    assert ours["refused"] > ours["sent"] // 2  # 20/s of 150/s per sender pass
    assert ours["refused"] + ours["delivered"] == ours["sent"]
    assert ours["lost"] == ours["refused"]


@pytest.mark.integration
def test_request_response_beside_mosquitto():
    # One message in flight per sender: the next goes when the last arrived.
    report = run(*SHORT, "--window", "1", "--peer", "mosquitto")
    assert report["scenario"]["window"] == 1
    for figures in report["runs"].values():
        assert_delivered_all(figures)
        assert_server_measured(figures)


@pytest.mark.integration
@pytest.mark.parametrize("tls", [(), ("--tls",)])
def test_reconnect_storm_beside_mosquitto(tls):
    report = run("--storm", "60", "--procs", "2", "--quiet", "--json", "--peer", "mosquitto",
                 *tls)
    assert report["scenario"]["storm"] == 60 and report["scenario"]["tls"] == bool(tls)
    assert set(report["runs"]) == {"hypertcp", "mosquitto"}
    for figures in report["runs"].values():
        assert figures["devices"] == figures["online"] == 60
        assert figures["failures"] == 0 and figures["failure_reasons"] == {}
        assert figures["all_online_s"] > 0
        assert figures["logins_per_s"] == pytest.approx(60 / figures["all_online_s"])
        assert 0 < figures["online_p50_ms"] <= figures["online_p99_ms"]
        assert figures["online_p99_ms"] <= 1000 * figures["all_online_s"] + 1e-6  # the last
        assert figures["server_cpu_s"] is not None and figures["server_rss_mb"] > 0
    assert report["ratios"]["hypertcp"]["all_online_s"] > 0


@pytest.mark.integration
def test_pairs_over_tls_beside_mosquitto():
    report = run(*SHORT, "--tls", "--peer", "mosquitto")
    assert report["scenario"]["tls"] is True
    for figures in report["runs"].values():
        assert_delivered_all(figures)
        assert_server_measured(figures)


@pytest.mark.integration
def test_pairs_through_two_cluster_nodes_same_node_and_cross_node():
    # Issue 11's cluster figure, scaled down: a Redis and two nodes per run,
    # each pair on one node, then split across the two; nothing lost either way.
    # The rate is what makes the nodes' CPU several of /proc's 10 ms ticks in
    # half a second (at 400/s it could read 0).
    report = run("--nodes", "2", "--pairs", "2", "--rate", "2000", "--duration", "0.5",
                 "--warmup", "0.2", "--quiet", "--json")
    assert report["scenario"]["nodes"] == 2
    assert set(report["runs"]) == {"same_node", "cross_node"}
    for figures in report["runs"].values():
        assert_delivered_all(figures)
        assert_server_measured(figures)
        assert figures["redis_cpu_s"] is not None
    summary = report["cluster"]
    assert summary["cross_to_same_msgs"] > 0
    assert summary["added_p99_ms"] == pytest.approx(
        report["runs"]["cross_node"]["p99_ms"] - report["runs"]["same_node"]["p99_ms"])


@pytest.mark.integration
def test_runs_that_cannot_be_combined():
    for args, why in ((("--storm", "5", "--idle", "5"), "choose one"),
                      (("--tls", "--peer", "sink"), "no TLS"),
                      (("--storm", "5", "--peer", "sink"), "--storm"),
                      (("--tls", "--peer", "floor"), "no TLS"),
                      (("--nodes", "2", "--peer", "pyfloor"), "but mosquitto"),
                      (("--idle", "5", "--peer", "floor"), "--idle"),
                      (("--nodes", "2", "--tls"), "plain TCP"),
                      (("--nodes", "1",), "at least 2")):
        result = hypertcp("bench", *args)
        assert result.returncode == 1, args
        assert why in result.stderr and "Traceback" not in result.stderr


@pytest.mark.integration
@pytest.mark.parametrize("peer", [(), ("--peer", "mosquitto")])
def test_idle_fleet(peer):
    report = run("--idle", "40", "--idle-time", "1", "--heartbeat", "0.5", "--quiet", "--json",
                 *peer)
    assert len(report["runs"]) == 1 + len(peer) // 2
    for figures in report["runs"].values():
        assert figures["connections"] == 40
        assert figures["closed"] == 0
        assert figures["heartbeats"] >= 40
        assert figures["answered"] == figures["heartbeats"]
        assert figures["rss_per_conn_kb"] is not None
        assert figures["idle_cpu_s"] is not None


@pytest.mark.integration
def test_running_server_needs_a_token():
    result = hypertcp("bench", "--port", "1", "--duration", "1")
    assert result.returncode == 1
    assert "--token" in result.stderr


def test_nodes_without_redis_server_say_what_to_install(monkeypatch):
    from hypertcp.bench import cluster

    monkeypatch.setattr(cluster, "REDIS", "/nonexistent/redis-server")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(BenchError, match=r"apt-get install redis-server"):
        cluster.Redis()


def test_the_floor_without_a_compiler_says_what_to_install(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(BenchError, match=r"apt-get install gcc"):
        peers.start_floor()


def test_table_puts_ratios_beside_the_figures():
    runs = {"hypertcp": {"msgs_per_s": 50.0, "p99_ms": 2.0},
            "mosquitto": {"msgs_per_s": 100.0, "p99_ms": 1.0}}
    text = report.table(runs, report.PAIR_ROWS, {"hypertcp": "HyperTCP", "mosquitto": "Mosquitto"})
    header, rate, p50, p99 = text.splitlines()[:4]
    assert header.split() == ["HyperTCP", "Mosquitto", "HyperTCP/Mosquitto"]
    assert rate.split()[-3:] == ["50", "100", "0.50x"]
    assert p50.split()[-2:] == ["-", "-"]
    assert p99.split()[-3:] == ["2.000", "1.000", "2.00x"]


def test_message_layout():
    template = payload_template(64)
    message = template % (12, 345)
    assert len(message) == 64
    assert json.loads(message)["seq"] == "0000000012"
    with pytest.raises(BenchError):
        payload_template(20)
    # The MQTT remaining-length examples of the specification, section 2.2.3.
    assert mqtt._varint(0) == b"\x00"
    assert mqtt._varint(127) == b"\x7f"
    assert mqtt._varint(321) == b"\xc1\x02"
    assert mqtt._varint(16384) == b"\x80\x80\x01"


def test_mqtt_qos1_packets():
    proto = mqtt.MQTT(qos=1)
    hello = proto.hello("bench-r-0", True)
    assert hello.endswith(b"bench/bench-r-0\x01")  # SUBSCRIBE asks for QoS 1
    assert proto.welcome(True).endswith(b"\x90\x03\x00\x01\x01")  # and is granted it
    template = proto.template("bench-s-0", "bench-r-0", payload_template(64))
    data = proto.batch(template, 65534, 2, 1000, 7)
    pair = Pair(0, template)
    out: list = []
    # Our own publishes, read back as a receiver would: QoS 1, identifiers
    # 65535 then 1 (never 0), and each acknowledged with its identifier.
    assert proto.receive(pair, data, 2000, None, out, ack=False) == len(data)
    assert data[0] == 0x32 and out == [b"\x40\x02\xff\xff", b"\x40\x02\x00\x01"]
    assert pair.unique == 2 and pair.expected == 65536 and pair.bad == 0
    # QoS 0 publishes are counted, never acknowledged.
    plain = mqtt.MQTT()
    out.clear()
    zero = plain.batch(plain.template("s", "bench-r-0", payload_template(64)), 0, 1, 0, 0)
    assert zero[0] == 0x30 and plain.receive(Pair(1, b""), zero, 0, None, out, True) == len(zero)
    assert out == []
    # A sender's stream: two PUBACKs and a PINGRESP, then half a PUBACK.
    answers = b"\x40\x02\x00\x01" + b"\xd0\x00" + b"\x40\x02\x00\x02" + b"\x40\x02"
    assert proto.answers(None, answers, out) == (10, 3)


@pytest.mark.integration
def test_request_response_beside_mosquitto_at_qos1():
    # Mosquitto at QoS 1 answers every publish and awaits a PUBACK for every
    # delivery, HyperTCP's shape.  It is started with the window (here 1) as
    # its limit of unacknowledged deliveries, so without the receivers'
    # PUBACKs the second message would never arrive.
    report = run(*SHORT, "--window", "1", "--peer", "mosquitto", "--mqtt-qos", "1")
    assert report["scenario"]["mqtt_qos"] == 1
    for figures in report["runs"].values():
        assert_delivered_all(figures)


def test_frames_are_the_protocols():
    # The bench's precomputed templates must make exactly what the protocol
    # package makes, or the figures would measure some other protocol.
    proto = HyperTCP("secret")
    inner = payload_template(64)
    template = proto.template("bench-s-3", "bench-r-3", inner)
    frames = Decoder().feed(proto.batch(template, 65534, 3, 1000, 7))
    assert [f.command for f in frames] == [Command.JSON_MESSAGE] * 3
    assert [f.msg_id for f in frames] == [65535, 1, 2]  # never 0
    sent = [parse_send(f.command, f.payload) for f in frames]
    assert [s.target for s in sent] == ["bench-r-3"] * 3
    assert [s.payload["seq"] for s in sent] == ["0000065534", "0000065535", "0000065536"]
    assert [int(s.payload["ts"]) for s in sent] == [1000, 1007, 1014]
    (login,) = Decoder().feed(proto.hello("bench-r-3", True))
    assert login.command == Command.LOGIN
    assert parse_login(login.payload) == Login("secret", "bench-r-3", proto=2)
    assert proto.welcome(True) == response(login.msg_id, Status.SUCCESS, login=True)

    sink = Sink("").template("bench-s-3", "bench-r-3", inner)
    (delivered,) = Decoder().feed(Sink("").batch(sink, 0, 1, 5, 0))
    message = parse_delivery(delivered)
    assert message.sender == "bench-s-3" and message.payload["seq"] == "0000000000"


def test_receiver_counts_and_acknowledges_through_the_protocol():
    proto = HyperTCP("secret")
    pair = Pair(0, b"")
    body = b'{"from":"bench-s-0","payload":' + payload_template(64) % (0, 10) + b"}"
    stream = (encode(Command.JSON_MESSAGE, 9, body) + encode(Command.PING, 4)
              + encode(Command.JSON_MESSAGE, 10, body)[:7])  # the last one half-read
    out: list[bytes] = []
    lat: list[int] = []
    used = proto.receive(pair, stream, 25, lat, out, ack=True)
    assert used == len(encode(Command.JSON_MESSAGE, 9, body)) + len(encode(Command.PING, 4))
    assert out == [response(9), response(4)]
    assert (pair.unique, pair.dups, pair.bad, lat) == (1, 0, 0, [15])
    answers = response(1) + response(2, Status.QUOTA_LIMIT) + encode(Command.PING, 5)
    out.clear()
    assert proto.answers(pair, answers, out) == (len(answers), 2)
    assert pair.refused == 1 and out == [response(5)]


def test_bench_without_epoll():
    # macOS and the BSDs have no epoll: every other command must work there,
    # `hypertcp bench --help` too, and the bench itself says why it cannot run.
    script = ("import runpy, select, sys; del select.epoll, select.EPOLLIN, select.EPOLLOUT; "
              "import hypertcp.bench.load, hypertcp.bench.fleet, hypertcp.bench.sockets; "
              "sys.argv = ['hypertcp'] + sys.argv[1:]; "
              "runpy.run_module('hypertcp.cli', run_name='__main__')")

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                              text=True, timeout=60)

    helped = cli("bench", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "--pairs" in helped.stdout
    refused = cli("bench", "--pairs", "1", "--duration", "1")
    assert refused.returncode == 1
    assert "epoll" in refused.stderr and "Traceback" not in refused.stderr


def test_tls_in_memory(tmp_path):
    # The load generator's TLS against a server-side SSLObject, no sockets:
    # a record cut in two yields nothing until it is whole, and the server's
    # close_notify marks the session closed.
    import ssl

    from hypertcp.bench.tls import TLSClient, client_context, make_certificates

    certs = make_certificates(tmp_path)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(certs.cert, certs.key)
    s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_context.wrap_bio(s_in, s_out, server_side=True)
    client = TLSClient(client_context(certs.ca), "127.0.0.1")
    done, records = client.handshake()
    for _ in range(10):
        s_in.write(records)
        try:
            server.do_handshake()
        except ssl.SSLWantReadError:
            pass
        done, records = client.handshake(s_out.read())
        if done:
            break
    assert done
    s_in.write(records + client.encrypt(b"hello"))
    assert server.read(100) == b"hello"
    server.write(b"x" * 5000)
    wire = s_out.read()
    assert client.decrypt(wire[:100]) == b""
    assert client.decrypt(wire[100:]) == b"x" * 5000 and not client.closed
    try:
        server.unwrap()
    except ssl.SSLWantReadError:
        pass
    assert client.decrypt(s_out.read()) == b"" and client.closed


@pytest.mark.integration
def test_startup_rss_reports_each_configuration_it_is_asked_for() -> None:
    # tools/startup_rss.py gives docs/performance.rst its start-up memory
    # figures: it must start the real server and read a size, not how large.
    script = os.path.join(os.path.dirname(__file__), "..", "tools", "startup_rss.py")
    result = subprocess.run([sys.executable, script, "--starts", "1", "plain", "tls"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    sizes = {line.split()[0]: float(line.split()[1]) for line in result.stdout.splitlines()}
    assert set(sizes) == {"plain", "tls"} and all(size > 0 for size in sizes.values())
    bad = subprocess.run([sys.executable, script, "nosuch"], capture_output=True, text=True)
    assert bad.returncode == 2 and "no configuration nosuch" in bad.stderr
