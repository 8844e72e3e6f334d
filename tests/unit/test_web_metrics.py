"""
/metrics in-process: the server's own counters, read at scrape time and
parsed back with prometheus_client's parser, so the names and values are
what Prometheus itself would store.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.address import IPv4Address

from hypertcp.app.listeners import Listener
from hypertcp.protocol.commands import Command
from tests.webinprocess import WebServer


def scrape(server, token=None) -> dict[tuple[str, tuple], float]:
    response = server.request("GET", "/metrics", token=token)
    assert response.code == 200, response
    assert response.headers["content-type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.body.decode())
            for sample in family.samples}


def test_metrics_are_the_servers_own_counters(tmp_path):
    server = WebServer(tmp_path)
    lamp = server.online("lamp-1")
    panel = server.web_online("panel-1")
    server.online("ops", "observer", device_id="ops")
    panel.send("lamp-1", {})
    panel.send("nobody", {})
    lamp.message("panel-1", {})
    lamp.send_json(30, {"no": "payload"})
    idle = server.connect()
    server.clock.advance(server.limits.login_timeout)  # closes the one that never logged in
    assert idle.closing  # closing, still open until the peer goes

    got = scrape(server)
    assert got[("hypertcp_connections", (("transport", "tcp"),))] == 3
    assert got[("hypertcp_connections", (("transport", "ws"),))] == 1
    assert got[("hypertcp_connections_opened_total", ())] == 4
    assert got[("hypertcp_sessions", (("role", "device"),))] == 2
    assert got[("hypertcp_sessions", (("role", "observer"),))] == 1
    assert got[("hypertcp_devices", ())] == 3
    assert got[("hypertcp_messages_received_total", (("transport", "ws"),))] == 3
    assert got[("hypertcp_messages_received_total", (("transport", "tcp"),))] == 4
    assert got[("hypertcp_deliveries_total", ())] == 2
    assert got[("hypertcp_refusals_total", (("status", "DEVICE_NOT_IN_NETWORK"),))] == 1
    assert got[("hypertcp_refusals_total", (("status", "ILLEGAL_COMMAND_BODY"),))] == 1
    assert got[("hypertcp_drops_total", (("reason", "login_timeout"),))] == 1
    assert got[("hypertcp_drops_total", (("reason", "slow_receiver"),))] == 0
    assert ("process_resident_memory_bytes", ()) in got


def test_frames_by_command_and_transport(tmp_path):
    server = WebServer(tmp_path)
    lamp = server.online("lamp-1")
    panel = server.web_online("panel-1")
    lamp.message("panel-1", {})
    lamp.message("panel-1", {})
    lamp.ping()
    panel.send("lamp-1", {})
    for frame in lamp.frames():
        if frame.command == Command.JSON_MESSAGE:
            lamp.ack(frame)
    got = scrape(server)

    def frames(direction: str, transport: str, command: str) -> float:
        return got.get((f"hypertcp_frames_{direction}_total",
                        (("command", command), ("transport", transport))), 0)

    assert frames("received", "tcp", "LOGIN") == 1
    assert frames("received", "tcp", "JSON_MESSAGE") == 2
    assert frames("received", "tcp", "PING") == 1
    assert frames("received", "ws", "LOGIN") == 1
    assert frames("received", "ws", "JSON_MESSAGE") == 1
    assert frames("sent", "ws", "JSON_MESSAGE") == 2
    assert frames("sent", "tcp", "JSON_MESSAGE") == 1
    assert frames("received", "tcp", "RESPONSE") == 1
    assert frames("received", "ws", "RESPONSE") == 0, "the browser has not acknowledged yet"
    refs = [m["ref"] for m in panel.messages() if "ref" in m]
    assert len(refs) == 2
    panel.send_text('{"action":"ack","ref":%d}' % refs[0])  # as hypertcp.js writes it
    panel.send_json({"action": "ack", "ref": refs[1]})  # any other way
    got = scrape(server)
    assert frames("received", "ws", "RESPONSE") == 2


def test_closed_connections_keep_their_counts(tmp_path):
    server = WebServer(tmp_path)
    lamp = server.online("lamp-1")
    panel = server.web_online("panel-1")
    lamp.message("panel-1", {})
    panel.send("lamp-1", {})
    panel.lose()
    lamp.lose()
    got = scrape(server)
    assert got[("hypertcp_messages_received_total", (("transport", "ws"),))] == 2
    assert got[("hypertcp_messages_sent_total", (("transport", "ws"),))] == 1
    assert got[("hypertcp_messages_received_total", (("transport", "tcp"),))] == 2
    assert got[("hypertcp_messages_sent_total", (("transport", "tcp"),))] == 1


def test_listener_figures(tmp_path):
    server = WebServer(tmp_path)

    class Bound:  # what a listening port answers about itself
        def getHost(self):
            return IPv4Address("TCP", "127.0.0.1", 8081)

    listener = Listener("web", "tcp:0", server.site, server.clock)
    listener.port = Bound()
    listener.setServiceParent(server.top)
    server.web_online("panel-1")
    got = scrape(server)
    assert got[("hypertcp_listener_connections",
                (("address", "127.0.0.1:8081"), ("kind", "web")))] == 1


def test_metrics_token(tmp_path):
    server = WebServer(tmp_path, metrics_token="s3cret")
    refused = server.request("GET", "/metrics")
    assert refused.code == 401 and "metrics_token" in refused.json()["error"]
    assert server.request("GET", "/metrics", token="wrong").code == 401
    assert ("hypertcp_devices", ()) in scrape(server, token="s3cret")


def test_store_and_forward_counts_are_metrics_when_there_is_a_store(tmp_path):
    server = WebServer(tmp_path, rate_limit=0)
    assert not any(name.startswith("hypertcp_store") for name, _ in scrape(server)), \
        "no store, no store metrics"
    server.with_store(max_queued=2)
    app = server.online("app", "fleet", device_id="app")
    for n in range(3):  # the third is over the bound of 2
        app.message("lamp", {"n": n}, qos=1)
    server.clock.advance(0)
    got = scrape(server)
    events = {labels[0][1]: value for (name, labels), value in got.items()
              if name == "hypertcp_store_messages_total"}
    assert events == {"stored": 2, "refused": 1, "failed": 0, "delivered": 0, "expired": 0,
                      "undelivered": 0}
    assert got[("hypertcp_store_backlogs", ())] == 0
    assert got[("hypertcp_store_writer_restarts_total", ())] == 0
