"""
The WebSocket gateway's rules, in-process: a browser is a hub peer like a
TCP device, keeps the same limits, and bad input gets a JSON error while
the connection lives on.
"""

from __future__ import annotations

import json

import pytest
from zope.interface.verify import verifyObject

from hypertcp.app.web.api import ApiSender
from hypertcp.app.web.session import SKIP_LIMIT
from hypertcp.protocol.bodies import PROTOCOL_LEVEL
from hypertcp.protocol.challenge import key_id, proof
from hypertcp.protocol.commands import Command, Status
from hypertcp.server.interfaces import IPeer
from hypertcp.server.tokens import TokenStore
from tests.webinprocess import BINARY, PING, TEXT, WebServer, client_frame


@pytest.fixture
def server(tmp_path):
    return WebServer(tmp_path)


def test_browser_and_device_exchange_messages_both_ways(server):
    lamp = server.online("lamp-1")
    panel = server.web_online("panel-1")

    sent = panel.send("lamp-1", {"on": True})
    assert panel.status(sent)["status"] == 200
    assert lamp.delivered() == [(Command.JSON_MESSAGE, {"from": "panel-1", "payload": {"on": True}})]

    lamp.message("panel-1", {"watts": 9})
    [message] = panel.of_type("message")
    refused = panel.status(panel.send("ghost", {}))
    assert (refused["name"], refused["reason"]) == ("DEVICE_NOT_IN_NETWORK",
                                                    "'ghost' is not connected")
    assert message["from"] == "lamp-1" and message["payload"] == {"watts": 9}
    assert isinstance(message["ref"], int)


def test_browsers_and_api_senders_are_whole_peers(server):
    """Everything the hub and its helpers may ask of a peer (a test that new needs break)."""
    panel = server.web_online("panel-1")
    assert verifyObject(IPeer, panel.session)
    assert verifyObject(IPeer, ApiSender(panel.session.token, "api_x", "192.0.2.1:1"))
    assert panel.session.proto >= PROTOCOL_LEVEL


def test_login_answer_names_the_assigned_id_and_role(server):
    ws = server.websocket()
    answer = ws.login(server.token("ops", "fleet", prefix="ops-"))
    assert answer["status"] == 200 and answer["name"] == "SUCCESS"
    assert answer["deviceId"].startswith("ops-web_192.0.2.20_") and answer["role"] == "fleet"


def test_device_token_is_bound_to_its_id(server):
    ws = server.websocket()
    token = server.token("dev-9")
    refused = ws.login(token, "someone-else")
    assert refused["status"] == Status.NOT_ALLOWED and "may not log in" in refused["reason"]
    assert ws.open and not ws.closing  # it may try again
    assert ws.login(token)["deviceId"] == "dev-9"


def test_bad_input_is_named_and_the_connection_lives_on(server):
    ws = server.websocket()
    ws.send_text("not json")
    ws.send_text("[1, 2]")
    ws.send_json({"action": "fly", "id": 7})
    ws.send_json({"id": 8})
    ws.send_json({"action": "send", "id": 9, "targetId": "x", "payload": {}})
    ws.send_frame(BINARY, b"\x00\x01\x02")
    ws.send_text(b"\xff\xfe not utf-8")
    ws.send_json({"action": "ping", "id": "one"})
    got = ws.messages()
    assert got == [
        {"type": "error", "status": 11, "name": "ILLEGAL_COMMAND_BODY", "error": "text is not JSON"},
        {"type": "error", "status": 11, "name": "ILLEGAL_COMMAND_BODY",
         "error": "text is not a JSON object"},
        {"type": "status", "id": 7, "status": 2, "name": "ILLEGAL_COMMAND",
         "reason": "unknown action 'fly'; known: login, send, broadcast, ping, ack"},
        {"type": "status", "id": 8, "status": 2, "name": "ILLEGAL_COMMAND",
         "reason": 'missing "action"'},
        {"type": "status", "id": 9, "status": 5, "name": "NOT_AUTHENTICATED",
         "reason": '"send" before login'},
        {"type": "error", "status": 11, "name": "ILLEGAL_COMMAND_BODY",
         "error": "binary frames are not used: send JSON as text"},
        {"type": "error", "status": 11, "name": "ILLEGAL_COMMAND_BODY", "error": "text is not JSON"},
        {"type": "error", "status": 11, "name": "ILLEGAL_COMMAND_BODY",
         "error": '"id" must be a whole number from 0'},
    ]
    assert ws.open and not ws.closing
    assert ws.login(server.token("late", "fleet"), "late-1")["status"] == 200


def test_oversize_message_is_skipped_whole_even_across_fragments(tmp_path):
    server = WebServer(tmp_path, max_payload=100)
    ws = server.web_online("d-1")
    text = json.dumps({"action": "ping", "id": 1, "pad": "x" * 80}).encode() + b" " * 50
    ws.send_frame(TEXT, text[:60], fin=False)
    ws.send_frame(0, text[60:], fin=True)
    assert ws.messages() == [{"type": "error", "status": 11, "name": "ILLEGAL_COMMAND_BODY",
                              "error": f"{len(text)}-byte message over the 100-byte limit skipped"}]
    assert server.factory.counters["oversize"] == 1
    assert ws.status(ws.action("ping"))["status"] == 200  # still in step


def test_message_beyond_the_skip_limit_ends_the_connection(server):
    ws = server.web_online("d-1")
    ws.send_frame(TEXT, b"x" * (SKIP_LIMIT + 1))
    code, reason = ws.close_frame()
    assert code == 1009 and "over" in reason


def test_fragmented_message_within_the_limit_is_reassembled(server):
    ws = server.web_online("d-1")
    text = json.dumps({"action": "ping", "id": 42}).encode()
    ws.send_frame(TEXT, text[:5], fin=False)
    ws.send_frame(0, text[5:])
    assert ws.status(42)["status"] == 200


def test_frames_many_to_a_read_or_split_across_reads(server):
    ws = server.web_online("d-1")
    frames = b"".join(client_frame(TEXT, json.dumps({"action": "ping", "id": i}).encode())
                      for i in range(1, 5))
    frames += client_frame(TEXT, json.dumps({"action": "ping", "id": 5, "pad": "p" * 300}).encode())
    ws.session.dataReceived(frames[:-200])
    ws.session.dataReceived(frames[-200:-7])
    ws.session.dataReceived(frames[-7:])
    assert [m["id"] for m in ws.of_type("status")] == [1, 2, 3, 4, 5]


def test_observer_browser_sees_presence_of_tcp_devices(server):
    server.online("early-1")
    watcher = server.web_online("watch", "observer", device_id="watch-1")
    server.clock.advance(0)  # the snapshot goes out after the login's answer
    [status] = watcher.of_type("message")
    assert status["from"] == "server" and status["payload"]["event"] == "deviceStatus"
    assert status["payload"]["deviceId"] == "early-1"

    late = server.online("late-1")
    late.lose()
    events = [m["payload"]["event"] for m in watcher.of_type("message")]
    assert events == ["deviceConnected", "deviceDisconnected"]


def test_tcp_observer_sees_browsers_come_and_go(server):
    watcher = server.online("watch", "observer", device_id="watch-1")
    panel = server.web_online("panel-1")
    panel.lose()
    events = [(body["payload"]["event"], body["payload"]["deviceId"])
              for _, body in watcher.delivered()]
    assert events == [("deviceConnected", "panel-1"), ("deviceDisconnected", "panel-1")]


def test_broadcasts_cross_transports_and_skip_the_sender(server):
    lamp = server.online("lamp-1")
    panel = server.web_online("panel-1")
    msg_id = panel.action("broadcast", payload={"all": 1})
    assert panel.status(msg_id)["status"] == 200
    assert lamp.delivered() == [(Command.BROADCAST, {"from": "panel-1", "payload": {"all": 1}})]
    assert panel.of_type("broadcast") == []

    lamp.send_json(Command.BROADCAST, {"payload": {"all": 2}})
    [got] = panel.of_type("broadcast")
    assert got["from"] == "lamp-1" and got["payload"] == {"all": 2}


def test_acknowledged_delivery_waits_for_the_browsers_ack(server):
    lamp = server.online("lamp-1")
    panel = server.web_online("panel-1")
    msg_id = lamp.message("panel-1", {"q": 1}, ack=True)
    [message] = panel.of_type("message")
    assert lamp.answer(msg_id) is None  # not before the browser says so
    panel.send_json({"action": "ack", "ref": message["ref"], "status": Status.NOT_ALLOWED})
    assert lamp.answer(msg_id) == Status.NOT_ALLOWED


def test_an_ack_without_a_status_is_success(server):
    lamp = server.online("lamp-1")
    panel = server.web_online("panel-1")
    msg_id = lamp.message("panel-1", {"q": 1}, ack=True)
    [message] = panel.of_type("message")
    panel.send_json({"action": "ack", "ref": message["ref"]})  # as hypertcp.js sends it
    assert lamp.answer(msg_id) == Status.SUCCESS
    assert panel.messages() == []


@pytest.mark.parametrize("ack, status", [
    ('{"action":"ack","ref":%d}', Status.SUCCESS),             # read without the parser
    ('{"action": "ack", "ref": %d}', Status.SUCCESS),          # the same, through it
    ('{"action":"ack","ref":%d,"status":6}', Status.NOT_ALLOWED),
])
def test_acks_in_any_spelling_reach_the_sender(server, ack, status):
    lamp = server.online("lamp-1")
    panel = server.web_online("panel-1")
    msg_id = lamp.message("panel-1", {"q": 1}, ack=True)
    [message] = panel.of_type("message")
    panel.send_text(ack % message["ref"])
    assert lamp.answer(msg_id) == status


@pytest.mark.parametrize("text", ['{"action":"ack","ref":007}', '{"action":"ack","ref":1x}',
                                  '{"action":"ack","ref":' + "9" * 5000 + "}"])
def test_malformed_acks_are_refused_by_the_parser(server, text):
    panel = server.web_online("panel-1")
    panel.send_text(text)
    [error] = panel.of_type("error")
    assert error["status"] == 11 and panel.open


def test_acknowledged_delivery_times_out_without_an_ack(tmp_path):
    server = WebServer(tmp_path, ack_timeout=3)
    lamp = server.online("lamp-1")
    server.web_online("panel-1")
    msg_id = lamp.message("panel-1", {"q": 1}, ack=True)
    server.clock.advance(3)
    assert lamp.answer(msg_id) == Status.TIMEOUT


def test_browser_sending_with_ack_gets_the_devices_ack(server):
    lamp = server.online("lamp-1")
    panel = server.web_online("panel-1")
    msg_id = panel.send("lamp-1", {"q": 1}, ack=True)
    [frame] = [f for f in lamp.frames() if f.command == Command.JSON_MESSAGE]
    assert panel.status(msg_id) is None
    lamp.ack(frame)
    assert panel.status(msg_id)["status"] == 200


def test_acks_beyond_what_was_delivered_are_a_flood(server):
    panel = server.web_online("panel-1")
    for ref in range(1002):
        panel.send_json({"action": "ack", "ref": ref})
    assert panel.close_frame()[0] == 1008
    assert server.factory.counters["flood"] == 1


def test_rate_limit_answers_quota_then_closes_a_flood(tmp_path):
    server = WebServer(tmp_path, rate_limit=2, rate_burst=2, quota_strikes=3)
    ws = server.web_online("d-1")
    answers = [ws.status(ws.action("ping"))["status"] for _ in range(4)]
    assert answers == [200, Status.QUOTA_LIMIT, Status.QUOTA_LIMIT, Status.QUOTA_LIMIT]
    ws.action("ping")
    assert ws.close_frame()[0] == 1008
    assert server.factory.counters["flood"] == 1


def test_slow_reader_is_dropped_past_the_outbound_cap(tmp_path):
    server = WebServer(tmp_path, max_outbound_buffer=4096)
    lamp = server.online("lamp-1")
    panel = server.web_online("panel-1")
    assert panel.transport.producer is panel.session  # it took the HTTP channel's place
    panel.transport.producer.pauseProducing()  # the transport's buffer is full
    for _ in range(60):
        lamp.message("panel-1", {"pad": "x" * 100})
    assert panel.transport.disconnected  # aborted, not closed politely
    assert server.factory.counters["slow_receiver"] == 1
    written = panel.transport.value()
    lamp.message("panel-1", {})
    assert panel.transport.value() == written  # nothing more is queued for it
    panel.lose()
    assert lamp.answer(lamp.message("panel-1", {})) == Status.DEVICE_NOT_IN_NETWORK


def test_a_slow_reader_dropped_during_a_broadcast_does_not_break_it(tmp_path):
    server = WebServer(tmp_path, max_outbound_buffer=4096)
    lamp = server.online("lamp-1")
    slow = server.web_online("slow-1")
    others = [server.web_online(f"other-{i}") for i in range(3)]
    slow.transport.producer.pauseProducing()
    for _ in range(30):
        msg_id = lamp.send_json(Command.BROADCAST, {"payload": {"pad": "x" * 200}})
        assert lamp.answer(msg_id) == Status.SUCCESS
    assert slow.transport.disconnected
    assert all(len(other.of_type("broadcast")) == 30 for other in others)


def test_login_deadline_says_timeout_and_closes(tmp_path):
    server = WebServer(tmp_path, login_timeout=5)
    ws = server.websocket()
    server.clock.advance(5)
    [error] = ws.of_type("error")
    assert error["status"] == Status.TIMEOUT and "no login within 5 s" in error["error"]
    assert ws.close_frame() == (1008, "no login within 5 s")


def test_idle_connection_is_pinged_then_closed(tmp_path):
    server = WebServer(tmp_path, idle_timeout=20)
    ws = server.web_online("d-1")
    server.clock.advance(10)
    assert (PING, b"") in ws.frames()
    server.clock.advance(10)
    assert ws.close_frame()[0] == 1001
    assert server.factory.counters["idle"] == 1


def test_answered_pings_keep_a_connection(tmp_path):
    server = WebServer(tmp_path, idle_timeout=20)
    ws = server.web_online("d-1")
    for _ in range(4):
        server.clock.advance(10)
        ws.send_frame(10, b"")  # the pong a browser sends by itself
    assert ws.open and ws.close_frame() is None


def test_unanswered_close_is_dropped_at_the_deadline(server):
    ws = server.web_online("d-1")
    server.hub.kick("d-1")
    assert ws.close_frame() == (1000, "kicked by an operator")
    assert not ws.transport.disconnected
    server.clock.advance(server.limits.close_timeout)
    assert ws.transport.disconnected


def test_invalid_token_is_refused_and_closed(server):
    ws = server.websocket()
    answer = ws.login("no-such-token")
    assert answer["status"] == Status.INVALID_TOKEN
    assert ws.close_frame()[0] == 1008


def test_challenge_login_keeps_the_token_off_the_wire(server):
    token = server.token("panel-1")
    ws = server.websocket()
    asked = ws.action("login", challenge=True, proto=2)
    [challenge] = ws.of_type("challenge")
    assert challenge["id"] == asked and len(challenge["nonce"]) == 64
    answer = ws.status(ws.action("login", key=key_id(token),
                                 proof=proof(token, challenge["nonce"], "panel-1"),
                                 device_id="panel-1"))
    assert answer["status"] == 200 and answer["deviceId"] == "panel-1"


def test_a_wrong_challenge_answer_is_refused_and_closed(server):
    token = server.token("panel-1")
    ws = server.websocket()
    ws.action("login", challenge=True)
    [challenge] = ws.of_type("challenge")
    answer = ws.status(ws.action("login", key=key_id(token),
                                 proof=proof("not-the-token", challenge["nonce"], "panel-1"),
                                 device_id="panel-1"))
    assert answer["status"] == Status.INVALID_TOKEN and "wrong challenge answer" in answer["reason"]
    assert ws.close_frame()[0] == 1008


def test_require_challenge_refuses_token_logins(tmp_path):
    server = WebServer(tmp_path)
    server.factory.require_challenge = True
    ws = server.websocket()
    answer = ws.login(server.token("panel-1"))
    assert answer["status"] == Status.NOT_ALLOWED and "require_challenge" in answer["reason"]


def test_an_id_online_under_another_token_is_refused(server):
    server.online("ops-1", "fleet", device_id="shared")
    ws = server.websocket()
    answer = ws.login(server.token("other", "fleet"), "shared")
    assert answer["status"] == Status.NOT_ALLOWED
    assert answer["reason"] == "'shared' is online under another token"


def test_second_login_is_refused(server):
    ws = server.web_online("d-1")
    assert ws.login(server.token("e", "fleet"))["status"] == Status.ILLEGAL_COMMAND


def test_revoked_token_closes_the_browser(server):
    ws = server.web_online("panel-1")
    TokenStore(server.tokens.path).revoke("panel-1")  # as `hypertcp token revoke` does
    server.factory.reload_tokens()
    assert ws.close_frame() == (1000, "token panel-1 revoked")


def test_kick_and_drain_reach_browsers(server):
    boss = server.online("boss", "observer", device_id="boss", grants=["kick", "drain"])
    panel = server.web_online("panel-1")
    other = server.web_online("other-1")
    boss.message("server", {"command": "kick", "deviceId": "panel-1"})
    assert panel.close_frame() == (1000, "kicked by an operator")

    boss.message("server", {"command": "drain", "server": "10.0.0.9", "port": 9000})
    [redirect] = other.of_type("redirect")
    assert redirect["server"] == "10.0.0.9" and redirect["port"] == 9000
    assert other.close_frame() == (1001, "redirected to 10.0.0.9:9000")


def test_browser_observer_runs_server_commands(server):
    server.online("lamp-1")
    boss = server.web_online("boss", "observer", device_id="boss", grants=["kick"])
    boss.messages()
    msg_id = boss.send("server", {"command": "kick", "deviceId": "lamp-1"})
    assert boss.status(msg_id)["status"] == 200
    replies = [m["payload"] for m in boss.of_type("message") if m["from"] == "server"
               and "command" in m["payload"]]
    assert replies == [{"command": "kicked", "sessions": 1}]


def test_browsers_count_against_the_connection_cap(tmp_path):
    server = WebServer(tmp_path, max_connections=2)
    server.web_online("panel-1")
    server.online("lamp-1")
    transport, response = server.upgrade()
    assert response.code == 503 and response.json() == {
        "error": "the server has all the connections it takes"}
    assert server.factory.counters["max_connections"] == 1


def test_a_browser_not_logged_in_yields_its_slot_when_the_server_is_full(tmp_path):
    server = WebServer(tmp_path, max_connections=2)
    server.online("lamp-1")
    idle = server.websocket()  # never logs in
    newcomer = server.web_online("panel-1")
    assert idle.transport.disconnected and not newcomer.closing
    assert server.factory.counters["evicted"] == 1


def test_origin_rules(tmp_path):
    server = WebServer(tmp_path, allowed_origins=("https://app.example.com",))
    assert server.upgrade(origin="http://127.0.0.1:8081")[1].code == 101  # its own page
    assert server.upgrade(origin="https://app.example.com")[1].code == 101
    assert server.upgrade()[1].code == 101  # a program, not a browser
    _, refused = server.upgrade(origin="https://evil.example")
    assert refused.code == 403
    assert refused.json()["error"].startswith("pages from https://evil.example may not open")
    assert WebServer(tmp_path, allowed_origins=("*",)).upgrade(
        origin="https://evil.example")[1].code == 101


def test_gateway_without_upgrade_is_a_json_426(server):
    response = server.request("GET", "/ws")
    assert response.code == 426 and "WebSocket" in response.json()["error"]


def test_manhole_style_listing_sees_browser_sessions(server):
    server.online("lamp-1")
    server.web_online("panel-1")
    kinds = sorted(getattr(s, "kind", "tcp") for s in server.factory.sessions)
    assert kinds == ["tcp", "ws"]
    panel = next(s for s in server.factory.sessions if getattr(s, "kind", "") == "ws")
    assert panel.peer.startswith("192.0.2.20:") and panel.token.name == "panel-1"


@pytest.fixture
def stored(tmp_path):
    """A web server with store and forward."""
    web = WebServer(tmp_path)
    web.with_store()
    return web


def test_a_browser_sending_with_qos_is_stored_for_an_offline_device_as_over_tcp(stored):
    panel = stored.web_online("panel", "fleet", device_id="panel")
    sent = panel.send("lamp", {"on": True}, qos=1, ttl=600)
    stored.clock.advance(0)  # the store's batch commits
    answer = panel.status(sent)
    assert (answer["status"], answer["name"]) == (Status.STORED, "STORED")
    # Without qos, an offline device is still 7; a ttl over the maximum is 11.
    assert panel.status(panel.send("lamp", {"on": False}))["status"] == \
        Status.DEVICE_NOT_IN_NETWORK
    too_long = panel.send("lamp", {"on": False}, qos=1, ttl=10 ** 6)
    assert panel.status(too_long)["status"] == Status.ILLEGAL_COMMAND_BODY
    lamp = stored.online("lamp")
    stored.clock.advance(0)  # its login reads the store
    [(command, body)] = lamp.delivered()
    assert (command, body["from"], body["payload"]) == (Command.JSON_MESSAGE, "panel",
                                                        {"on": True})
