"""
A short C{hypertcp bench --transport ws}: pairs with a WebSocket end go
through the gateway beside TCP<->TCP, and nothing is lost or duplicated.
It checks the figures come out, never how fast anything is.
"""

from __future__ import annotations

import json

import pytest

from tests.daemon import hypertcp

pytestmark = pytest.mark.integration


def test_websocket_pairs_beside_tcp():
    result = hypertcp("bench", "--transport", "ws", "--pairs", "3", "--duration", "1",
                      "--warmup", "0.2", "--quiet", "--json", timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert list(report["runs"]) == ["ws-tcp", "hypertcp", "tcp-ws"]
    for name, figures in report["runs"].items():
        assert figures["delivered"] > 0 and figures["sent"] == figures["delivered"], name
        for key in ("lost", "duplicated", "malformed", "refused", "closed"):
            assert figures[key] == 0, (name, key)
        assert 0 < figures["p50_ms"] <= figures["p99_ms"], name
        assert figures["server_cpu_s"] > 0, name
    # The WebSocket runs are measured against TCP<->TCP.
    assert set(report["ratios"]) == {"ws-tcp", "tcp-ws"}
    assert report["ratios"]["ws-tcp"]["msgs_per_s"] > 0


def test_websocket_pairs_need_a_server_the_bench_starts():
    result = hypertcp("bench", "--transport", "ws", "--port", "1", "--token", "x")
    assert result.returncode == 1
    assert "--transport ws measures pairs, without TLS, through a server the bench starts" \
        in result.stderr
