"""
A short run of C{hypertcp bench} against our server, Mosquitto and the
no-broker sink.  These check that the figures come out and that nothing is
lost or duplicated on the way -- never how fast anything is.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from hypertcp.bench import mqtt, peers, report
from hypertcp.bench.errors import BenchError
from hypertcp.bench.message import payload_template
from tests.daemon import hypertcp

SHORT = ("--pairs", "3", "--duration", "1", "--warmup", "0.2", "--quiet", "--json")


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


def test_hypertcp_and_sink_as_fast_as_possible():
    report = run(*SHORT, "--peer", "sink")
    assert report["scenario"]["pairs"] == 3 and report["scenario"]["ack"] is True
    ours, sink = report["runs"]["hypertcp"], report["runs"]["sink"]
    assert_delivered_all(ours)
    assert_server_measured(ours)
    assert_delivered_all(sink)
    assert sink["server_cpu_s"] is None  # no broker, nothing to measure
    assert report["ratios"]["hypertcp"]["msgs_per_s"] > 0


def test_fixed_rate_without_acks_over_two_processes():
    report = run(*SHORT, "--rate", "600", "--no-ack", "--procs", "2")
    ours = report["runs"]["hypertcp"]
    assert_delivered_all(ours)
    # 600/s for 1.2 s, split between the processes: the schedule, not a speed.
    assert 600 <= ours["sent"] <= 800


def test_mosquitto_beside_hypertcp():
    report = run(*SHORT, "--peer", "mosquitto")
    ours, theirs = report["runs"]["hypertcp"], report["runs"]["mosquitto"]
    for figures in (ours, theirs):
        assert_delivered_all(figures)
        assert_server_measured(figures)
    assert set(report["ratios"]["hypertcp"]) >= {"msgs_per_s", "p99_ms", "msgs_per_cpu_s"}


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


def test_running_server_needs_a_token():
    result = hypertcp("bench", "--port", "1", "--duration", "1")
    assert result.returncode == 1
    assert "--token" in result.stderr


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
