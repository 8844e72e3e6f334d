"""
The HTTP API and the site around it, in-process: JSON answers with the
statuses a TCP client gets, HTTP codes mapped from them, and never an HTML
error or a traceback page.
"""

from __future__ import annotations

import json

import pytest

from hypertcp.protocol.commands import Command
from tests.webinprocess import WebServer


@pytest.fixture
def server(tmp_path):
    return WebServer(tmp_path)


def post(server, body, token, path="/api/send"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return server.request("POST", path, data, token=token)


def test_send_reaches_a_device_as_the_tokens_id(server):
    lamp = server.online("lamp-1")
    token = server.token("backend", "fleet")
    response = post(server, {"targetId": "lamp-1", "payload": {"on": True}}, token)
    assert response.code == 200
    assert response.json() == {"status": 200, "name": "SUCCESS", "reason": "done",
                               "from": "api_backend"}
    assert lamp.delivered() == [(Command.JSON_MESSAGE,
                                 {"from": "api_backend", "payload": {"on": True}})]


def test_send_to_a_device_that_is_away_is_a_404_with_the_status(server):
    response = post(server, {"targetId": "ghost", "payload": {}}, server.token("b", "fleet"))
    assert response.code == 404
    assert response.json() == {"status": 7, "name": "DEVICE_NOT_IN_NETWORK",
                               "reason": "'ghost' is not connected"}


def test_send_with_ack_waits_for_the_receiver(server):
    lamp = server.online("lamp-1")
    token = server.token("b", "fleet")
    transport = server.channel()
    body = json.dumps({"targetId": "lamp-1", "payload": {}, "ack": True}).encode()
    transport.protocol.dataReceived(
        b"POST /api/send HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer " + token.encode()
        + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    assert transport.value() == b""  # waiting
    [frame] = [f for f in lamp.frames() if f.command == Command.JSON_MESSAGE]
    lamp.ack(frame)
    assert transport.value().startswith(b"HTTP/1.0 200 ")
    assert b'"name":"SUCCESS"' in transport.value()


def test_server_commands_answer_in_the_response(server):
    token = server.token("ops", "observer")
    response = post(server, {"targetId": "server", "payload": {"command": "whoami"}}, token)
    assert response.json()["replies"] == [
        {"from": "server", "payload": {"command": "whoami", "deviceId": "api_ops",
                                       "role": "observer"}}]


def test_reach_rules_hold(server):
    server.online("lamp-1")
    token = server.token("narrow", "fleet", reach=["door-1"])
    response = post(server, {"targetId": "lamp-1", "payload": {}}, token)
    assert response.code == 403 and response.json()["name"] == "NOT_ALLOWED"


@pytest.mark.parametrize("header, status, code", [
    (None, "NOT_AUTHENTICATED", 401),
    ("Basic dXNlcjpwYXNz", "NOT_AUTHENTICATED", 401),
    ("Bearer not-a-token", "INVALID_TOKEN", 401),
    ("Bearer \xff", "INVALID_TOKEN", 401),
])
def test_missing_or_bad_tokens_are_401(server, header, status, code):
    headers = {"Authorization": header} if header else {}
    response = server.request("GET", "/api/devices", headers=headers)
    assert response.code == code and response.json()["name"] == status
    assert response.headers["www-authenticate"] == 'Bearer realm="hypertcp"'


@pytest.mark.parametrize("body, why", [
    (b"not json", "payload is not JSON"),
    (b"[]", "payload is not a JSON object"),
    (b'{"payload": {}}', 'missing a "targetId" string'),
    (b'{"targetId": "x"}', 'missing a "payload" object'),
])
def test_bad_bodies_are_400_naming_the_problem(server, body, why):
    response = post(server, body, server.token("b", "fleet"))
    assert response.code == 400
    assert response.json() == {"status": 11, "name": "ILLEGAL_COMMAND_BODY", "reason": why}


def test_oversize_body_is_413(tmp_path):
    server = WebServer(tmp_path, max_payload=64)
    body = json.dumps({"targetId": "x", "payload": {"pad": "y" * 100}}).encode()
    response = post(server, body, server.token("b", "fleet"))
    assert response.code == 413
    assert response.json()["reason"] == f"{len(body)}-byte body over the 64-byte limit"


def test_token_over_its_rate_is_429(tmp_path):
    server = WebServer(tmp_path, rate_limit=1, rate_burst=2)
    token = server.token("b", "fleet")
    codes = [post(server, {"targetId": "server", "payload": {}}, token).code for _ in range(3)]
    assert codes == [200, 200, 429]
    assert server.factory.counters["quota_limit"] == 1


def test_devices_lists_both_transports_for_observers(server):
    server.online("lamp-1")
    server.web_online("panel-1")
    server.clock.advance(7)
    response = server.request("GET", "/api/devices", token=server.token("ops", "observer"))
    assert response.code == 200
    rows = response.json()["devices"]
    assert [(r["deviceId"], r["transport"], r["role"]) for r in rows] == [
        ("lamp-1", "tcp", "device"), ("panel-1", "ws", "device")]
    assert rows[0]["messagesIn"] == 1 and rows[0]["address"].startswith("192.0.2.10:")


def test_devices_need_an_observer_and_stats_the_stats_grant(server):
    response = server.request("GET", "/api/devices", token=server.token("b", "fleet"))
    assert response.code == 403
    assert response.json()["reason"] == "token b is not an observer token"
    response = server.request("GET", "/api/stats", token=server.token("o", "observer"))
    assert response.code == 403
    assert response.json()["reason"] == "token o is not granted 'stats'"
    assert server.request("GET", "/api/stats",
                          token=server.token("g", "fleet", grants=["stats"])).code == 200


def test_stats_count_both_transports(server):
    lamp = server.online("lamp-1")
    panel = server.web_online("panel-1")
    panel.send("lamp-1", {})
    lamp.message("panel-1", {})
    panel.lose()
    stats = server.request("GET", "/api/stats",
                           token=server.token("ops", "observer", grants=["stats"])).json()
    assert stats["connections"] == 1 and stats["sessions"] == 1
    assert stats["messagesIn"] == 4  # two logins, two messages
    assert stats["messagesOut"] == 2 and stats["delivered"] == 2


def test_unknown_paths_and_methods_are_json(server):
    response = server.request("GET", "/nowhere")
    assert response.code == 404 and response.json() == {"error": "no such resource: /nowhere"}
    response = server.request("GET", "/api/nothing")
    assert response.code == 404 and response.json()["error"] == "no such resource: /api/nothing"
    response = server.request("DELETE", "/api/send", token=server.token("b", "fleet"))
    assert response.code == 405 and response.headers["allow"] == "POST"
    assert response.json() == {"error": "DELETE is not allowed here; use POST"}
    response = server.request("PUT", "/")
    assert response.code == 405 and response.json()["error"].startswith("PUT is not allowed")


def test_a_failure_inside_is_a_json_500_without_a_traceback(server, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("secret detail")
    monkeypatch.setattr(server.hub, "route", broken)
    response = post(server, {"targetId": "x", "payload": {}}, server.token("b", "fleet"))
    assert response.code == 500
    assert response.json() == {"error": "the server failed internally; the log says why"}
    assert b"secret" not in response.body and b"Traceback" not in response.body


def test_static_files_are_served_with_a_strict_policy(server):
    page = server.request("GET", "/")
    assert page.code == 200 and page.headers["content-type"].startswith("text/html")
    assert "connect-src 'self'" in page.headers["content-security-policy"]
    assert b'<script type="module" src="dashboard.js">' in page.body
    script = server.request("GET", "/hypertcp.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert b"export class HyperTCPClient" in script.body


def test_send_with_qos_is_stored_for_a_device_that_is_away(tmp_path):
    from tests.webinprocess import parse_response

    server = WebServer(tmp_path)
    server.with_store(max_queued=1)
    token = server.token("backend", "fleet")

    def send(body: dict):
        transport = server.channel()
        data = json.dumps(body).encode()
        transport.protocol.dataReceived(
            b"POST /api/send HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer " + token.encode()
            + b"\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
        server.clock.advance(0)  # the store's batch commits
        return parse_response(transport.value())

    stored = send({"targetId": "lamp-1", "payload": {"on": True}, "qos": 1, "ttl": 600})
    assert (stored.code, stored.json()) == (202, {"status": 202, "name": "STORED",
                                                  "reason": stored.json()["reason"],
                                                  "from": "api_backend"})
    full = send({"targetId": "lamp-1", "payload": {"on": False}, "qos": 1})
    assert (full.code, full.json()["name"]) == (429, "QUOTA_LIMIT"), "over the bound of 1"
    too_long = send({"targetId": "lamp-1", "payload": {}, "qos": 1, "ttl": 10 ** 6})
    assert (too_long.code, too_long.json()["name"]) == (400, "ILLEGAL_COMMAND_BODY")
    lamp = server.online("lamp-1")
    server.clock.advance(0)  # its login reads the store
    [(command, body)] = lamp.delivered()
    assert (body["from"], body["payload"]) == ("api_backend", {"on": True})
