"""
The web side end to end: the real daemon with a web listener, a WebSocket
client (websocket-client, blocking like the rest of these tests), the
blocking TCP client and plain HTTP, all on loopback.  The rules are proved
in-process (tests/unit/test_web_*.py); these prove the wiring and the
sockets: the upgrade through twisted.web, TLS, the API and /metrics.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Optional

import pytest
import websocket

from hypertcp.client import Client
from hypertcp.protocol.commands import Command
from tests.daemon import make_certs
from tests.raw import Raw

pytestmark = pytest.mark.integration

WEB = ("--web", "tcp:0:interface=127.0.0.1")


def ws_connect(url: str, **options: Any) -> websocket.WebSocket:
    return websocket.create_connection(url, timeout=10, **options)


def next_of(ws: websocket.WebSocket, kind: str) -> dict:
    """The next JSON message of C{kind}, skipping others (presence events, say)."""
    for _ in range(50):
        message = json.loads(ws.recv())
        if message["type"] == kind:
            return message
    raise AssertionError(f"no {kind} message")


def http(url: str, token: Optional[str] = None, body: Optional[dict] = None,
         context: Optional[ssl.SSLContext] = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, json.dumps(body).encode() if body is not None else None)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            raw = response.read()
            code, kind = response.status, response.headers["content-type"]
    except urllib.error.HTTPError as e:
        raw, code, kind = e.read(), e.code, e.headers["content-type"]
    return code, json.loads(raw) if kind.startswith("application/json") else raw.decode()


def test_browser_and_tcp_device_talk_through_the_daemon(start_daemon, token):
    daemon = start_daemon(*WEB, expect=("tcp", "web"))
    url = f"ws://127.0.0.1:{daemon.ports['web']}/ws"
    panel_token = token("panel-1")
    with Raw(daemon.port) as lamp:
        assert lamp.login_json(token("lamp-1")) == 200
        # Stored while the browser is away (qos 1), delivered when it logs in.
        assert lamp.request(Command.JSON_MESSAGE, json.dumps(
            {"targetId": "panel-1", "qos": 1, "payload": {"missed": 1}}).encode()) == 202
        ws = ws_connect(url, origin=f"http://127.0.0.1:{daemon.ports['web']}")
        try:
            ws.send("not json")  # refused by name, the connection lives on
            assert json.loads(ws.recv())["error"] == "text is not JSON"
            ws.send(json.dumps({"action": "login", "id": 1, "token": panel_token}))
            assert next_of(ws, "status") == {"type": "status", "id": 1, "status": 200,
                                             "name": "SUCCESS", "reason": "done",
                                             "deviceId": "panel-1", "role": "device"}

            stored = next_of(ws, "message")
            assert (stored["from"], stored["payload"]) == ("lamp-1", {"missed": 1})
            assert "queued_at" in stored
            ws.send(json.dumps({"action": "ack", "ref": stored["ref"]}))
            ws.send(json.dumps({"action": "send", "id": 2, "targetId": "lamp-1",
                                "payload": {"on": True}}))
            assert next_of(ws, "status")["status"] == 200
            assert lamp.message() == {"from": "panel-1", "payload": {"on": True}}
            # And the other way: the browser stores for a device that is away.
            ws.send(json.dumps({"action": "send", "id": 3, "targetId": "fan-1", "qos": 1,
                                "ttl": 600, "payload": {"speed": 2}}))
            assert next_of(ws, "status")["name"] == "STORED"

            # An acknowledged delivery: the device is answered with the browser's ack.
            msg_id = lamp.send_json(Command.JSON_MESSAGE, {"targetId": "panel-1", "ack": True,
                                                           "payload": {"watts": 9}})
            message = next_of(ws, "message")
            assert (message["from"], message["payload"]) == ("lamp-1", {"watts": 9})
            ws.send(json.dumps({"action": "ack", "ref": message["ref"], "status": 6}))
            assert lamp.answer_to(msg_id) == 6
        finally:
            ws.close()
    daemon.wait_for_log("logged in over WebSocket as panel-1")
    daemon.wait_for_log("(panel-1) WebSocket disconnected: closed by peer")
    with Raw(daemon.port) as fan:
        assert fan.login_json(token("fan-1")) == 200
        got = fan.message()
        assert (got["from"], got["payload"], type(got["queued_at"])) == ("panel-1",
                                                                         {"speed": 2}, int)


def test_pages_from_other_sites_are_refused(start_daemon):
    daemon = start_daemon(*WEB, expect=("tcp", "web"))
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        ws_connect(f"ws://127.0.0.1:{daemon.ports['web']}/ws", origin="https://evil.example")
    assert refused.value.status_code == 403
    assert b"may not open this gateway" in refused.value.resp_body
    daemon.wait_for_log("origin https://evil.example refused")


def test_http_api_and_metrics(start_daemon, token):
    daemon = start_daemon(*WEB, "--set", "web.metrics_token=scrape-me", expect=("tcp", "web"))
    base = f"http://127.0.0.1:{daemon.ports['web']}"
    backend, ops = token("backend", "--role", "fleet"), token("ops", "--role", "observer")
    with Client(port=daemon.port, token=token("lamp-1"), timeout=10) as lamp:
        code, answer = http(f"{base}/api/send", backend, {"targetId": "lamp-1",
                                                          "payload": {"on": 1}})
        assert (code, answer["name"]) == (200, "SUCCESS")
        got = lamp.receive(timeout=10)
        assert (got.sender, got.payload) == ("api_backend", {"on": 1})

        code, answer = http(f"{base}/api/devices", ops)
        assert code == 200
        assert [(d["deviceId"], d["transport"]) for d in answer["devices"]] == [("lamp-1", "tcp")]
        assert http(f"{base}/api/devices", backend)[0] == 403
        assert http(f"{base}/api/devices")[0] == 401
        assert http(f"{base}/api/send", backend, {"targetId": "ghost", "payload": {}})[0] == 404

        assert http(f"{base}/metrics")[0] == 401
        code, text = http(f"{base}/metrics", "scrape-me")
        assert code == 200
        assert 'hypertcp_sessions{role="device"} 1.0' in text
        assert "hypertcp_refusals_total{status=\"DEVICE_NOT_IN_NETWORK\"} 1.0" in text


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    return make_certs(tmp_path / "certs", "--host", "localhost")


def test_dashboard_gateway_and_api_over_tls(start_daemon, token, certs):
    daemon = start_daemon(*WEB, "--set", "web.tls=yes", "--tls-cert", str(certs / "server.pem"),
                          "--tls-key", str(certs / "server.key"), expect=("tcp", "web"))
    port = daemon.ports["web"]
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    code, page = http(f"https://localhost:{port}/", context=context)
    assert code == 200 and "<title>HyperTCP</title>" in page
    ws = ws_connect(f"wss://localhost:{port}/ws", sslopt={"context": context})
    try:
        ws.send(json.dumps({"action": "login", "id": 1, "token": token("panel-1")}))
        assert next_of(ws, "status")["status"] == 200
        ws.send(json.dumps({"action": "send", "id": 2, "targetId": "server",
                            "payload": {"command": "whoami"}}))
        assert next_of(ws, "message")["payload"]["deviceId"] == "panel-1"
    finally:
        ws.close()
    assert http(f"https://localhost:{port}/api/stats",
                token("ops", "--role", "observer", "--grant", "stats"), context=context)[0] == 200
