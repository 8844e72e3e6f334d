"""
The daemon end to end: twistd -n hypertcp in a subprocess, peers on real
sockets speaking the sketch's and the original Python client's dialects.
"""

from __future__ import annotations

import json
import time
from typing import Optional

import pytest

from hypertcp.protocol.commands import Command, Status
from hypertcp.protocol.frames import encode, response
from tests.raw import Raw


@pytest.fixture
def server(start_daemon):
    return start_daemon("--idle-timeout", "60")


def sketch(port: int, token: str, proto: Optional[int] = 2) -> Raw:
    """
    A device: a raw-token login as the original sketch sends (C{proto}
    None), or the project's JSON login at protocol level C{proto}, which
    learns every status.
    """
    peer = Raw(port)
    assert peer.login(token, proto) == Status.SUCCESS
    return peer


def test_sketch_and_python_client_dialects_talk(server, token):
    device = sketch(server.port, token("esp32-1"), proto=None)
    fleet = token("backend", "--role", "fleet")
    with device, Raw(server.port) as app:
        assert app.login_json(fleet, "web-1") == Status.SUCCESS

        # device -> app, targeted
        assert app_receives(device, app, {"temperature": 25.6})
        # app -> device, targeted
        msg_id = app.send_json(Command.JSON_MESSAGE, {"targetId": "esp32-1", "payload": {"relay": 1}})
        assert device.message() == {"from": "web-1", "payload": {"relay": 1}}
        assert app.answer_to(msg_id) == Status.SUCCESS
        # both to the server: ping -> pong
        for peer in (device, app):
            msg_id = peer.send_json(Command.JSON_MESSAGE, {
                "targetId": "server", "payload": {"command": "ping", "timestamp": 42}})
            assert peer.answer_to(msg_id) == Status.SUCCESS
            assert peer.message() == {"from": "server",
                                      "payload": {"command": "pong", "timestamp": 42}}
        # broadcasts both ways: the sketch's BROADCAST command, and targetId "broadcast"
        msg_id = device.send_json(Command.BROADCAST, {"targetId": "broadcast", "payload": {"n": 1}})
        assert device.answer_to(msg_id) == Status.SUCCESS
        assert app.message(Command.BROADCAST) == {"from": "esp32-1", "payload": {"n": 1}}
        msg_id = app.send_json(Command.JSON_MESSAGE, {"targetId": "broadcast", "payload": {"n": 2}})
        assert app.answer_to(msg_id) == Status.SUCCESS
        assert device.message(Command.BROADCAST) == {"from": "web-1", "payload": {"n": 2}}


def app_receives(sender: Raw, receiver: Raw, payload: dict) -> bool:
    msg_id = sender.send_json(Command.JSON_MESSAGE, {"targetId": "web-1", "payload": payload})
    assert sender.answer_to(msg_id) == Status.SUCCESS
    return receiver.message() == {"from": "esp32-1", "payload": payload}


def test_sender_cannot_forge_from(server, token):
    with sketch(server.port, token("a")) as a, sketch(server.port, token("b")) as b:
        a.send_json(Command.JSON_MESSAGE, {"targetId": "b", "from": "server",
                                           "payload": {"x": 1}})
        assert b.message() == {"from": "a", "payload": {"x": 1}}


def test_broadcast_reaches_every_other_session_not_the_sender(server, token):
    fleet = token("fleet", "--role", "fleet")
    peers = [Raw(server.port) for _ in range(4)]
    for i, peer in enumerate(peers):
        assert peer.login_json(fleet, f"node-{i}") == Status.SUCCESS
    msg_id = peers[0].send_json(Command.BROADCAST, {"payload": {"hello": True}})
    assert peers[0].answer_to(msg_id) == Status.SUCCESS
    for peer in peers[1:]:
        assert peer.message(Command.BROADCAST) == {"from": "node-0", "payload": {"hello": True}}
    pong = peers[0].send_json(Command.JSON_MESSAGE, {"targetId": "server",
                                                     "payload": {"command": "ping"}})
    assert peers[0].answer_to(pong) == Status.SUCCESS
    # The pong is the next JSON frame node-0 gets: its own broadcast never came back.
    assert peers[0].message()["payload"]["command"] == "pong"
    assert not any(f.command == Command.BROADCAST for f in peers[0].inbox)


def test_a_device_with_two_connections_gets_each_message_on_both(server, token):
    secret = token("twin")
    with sketch(server.port, secret) as one, sketch(server.port, secret) as two, \
            sketch(server.port, token("sender")) as sender:
        sender.send_json(Command.JSON_MESSAGE, {"targetId": "twin", "payload": {"k": 1}})
        assert one.message() == two.message() == {"from": "sender", "payload": {"k": 1}}


def test_assigned_id_is_device_ip_port(server, token):
    fleet = token("fleet", "--role", "fleet")
    observer = token("ops", "--role", "observer")
    with Raw(server.port) as ops, Raw(server.port) as anon:
        assert ops.login_json(observer, "ops") == Status.SUCCESS
        assert anon.login(fleet, proto=2) == Status.SUCCESS
        event = ops.message()["payload"]
        host, port = anon.sock.getsockname()
        assert event["event"] == "deviceConnected"
        assert event["deviceId"] == f"device_{host}_{port}"


def test_presence_events_for_observers(server, token):
    observer = token("ops", "--role", "observer")
    with sketch(server.port, token("early")) as early, Raw(server.port) as ops:
        assert ops.login_json(observer, "ops") == Status.SUCCESS
        status = ops.message()
        assert status["from"] == "server"
        assert status["payload"]["event"] == "deviceStatus"
        assert status["payload"]["deviceId"] == "early"
        late = sketch(server.port, token("late"))
        connected = ops.message()["payload"]
        assert (connected["event"], connected["deviceId"]) == ("deviceConnected", "late")
        assert isinstance(connected["timestamp"], int) and connected["clientId"]
        late.close()
        gone = ops.message()["payload"]
        assert (gone["event"], gone["deviceId"]) == ("deviceDisconnected", "late")
        # A device that is not an observer gets no presence events.
        early.send_json(Command.JSON_MESSAGE, {"targetId": "server", "payload": {"command": "ping"}})
        assert early.message()["payload"]["command"] == "pong"


def test_telemetry_to_server_reaches_observers(server, token):
    with Raw(server.port) as ops, sketch(server.port, token("sensor")) as sensor:
        assert ops.login_json(token("ops", "--role", "observer")) == Status.SUCCESS
        assert ops.message()["payload"]["event"] == "deviceStatus"
        msg_id = sensor.send_json(Command.JSON_MESSAGE, {"targetId": "server",
                                                         "payload": {"temperature": 21.5}})
        assert sensor.answer_to(msg_id) == Status.SUCCESS
        seen = ops.message()
        assert seen == {"from": "sensor", "to": "server", "payload": {"temperature": 21.5}}


def test_not_in_network(server, token):
    with sketch(server.port, token("lonely")) as peer:
        msg_id = peer.send_json(Command.JSON_MESSAGE, {"targetId": "nobody", "payload": {}})
        assert peer.answer_to(msg_id) == Status.DEVICE_NOT_IN_NETWORK


def test_not_allowed(server, token):
    device = token("meter-7")
    with Raw(server.port) as peer:
        assert peer.login_json(device, "someone-else") == Status.NOT_ALLOWED
        assert peer.login_json(device, "meter-7") == Status.SUCCESS, "the connection lives on"
    fleet = token("farm", "--role", "fleet", "--prefix", "farm-")
    with Raw(server.port) as peer:
        assert peer.login_json(fleet, "city-1") == Status.NOT_ALLOWED
        assert peer.login_json(fleet, "server") == Status.NOT_ALLOWED
        assert peer.login_json(fleet, "farm-1") == Status.SUCCESS
    narrow = token("narrow", "--reach", "server", "--reach", "farm-*")
    with sketch(server.port, narrow) as peer, sketch(server.port, token("city-2")):
        msg_id = peer.send_json(Command.JSON_MESSAGE, {"targetId": "city-2", "payload": {}})
        assert peer.answer_to(msg_id) == Status.NOT_ALLOWED
        msg_id = peer.send_json(Command.BROADCAST, {"payload": {}})
        assert peer.answer_to(msg_id) == Status.NOT_ALLOWED
        # Admin server commands need their grant on the token.
        msg_id = peer.send_json(Command.JSON_MESSAGE, {"targetId": "server", "payload": {
            "command": "kick", "deviceId": "city-2"}})
        assert peer.answer_to(msg_id) == Status.NOT_ALLOWED


def test_invalid_token_is_answered_then_closed(server):
    with Raw(server.port) as peer:
        assert peer.login("not-a-token") == Status.INVALID_TOKEN
        assert peer.wait_closed()
    server.wait_for_log("unknown or revoked token")


def test_login_deadline_sends_timeout_then_closes(start_daemon):
    server = start_daemon("--login-timeout", "0.5")
    with Raw(server.port) as peer:
        frame = peer.expect(lambda f: f.command == Command.RESPONSE, timeout=10)
        assert (frame.msg_id, frame.payload) == (1, bytes([Status.TIMEOUT]))
        assert peer.wait_closed()
    server.wait_for_log("no login within")


def test_end_to_end_acknowledged_delivery(server, token):
    with sketch(server.port, token("sender")) as sender, sketch(server.port, token("acker")) as acker:
        msg_id = sender.send_json(Command.JSON_MESSAGE, {"targetId": "acker", "ack": True,
                                                         "payload": {"n": 1}})
        frame = acker.expect(lambda f: f.command == Command.JSON_MESSAGE)
        with pytest.raises(TimeoutError):
            sender.answer_to(msg_id, timeout=0.3)  # not acknowledged before the receiver acks
        acker.sock.sendall(response(frame.msg_id))
        assert sender.answer_to(msg_id) == Status.SUCCESS


def test_unacknowledged_delivery_times_out(start_daemon, token):
    server = start_daemon("--set", "limits.ack_timeout=0.5")
    with sketch(server.port, token("sender")) as sender, sketch(server.port, token("mute")) as mute:
        msg_id = sender.send_json(Command.JSON_MESSAGE, {"targetId": "mute", "ack": True,
                                                         "payload": {}})
        mute.message(ack=False)
        assert sender.answer_to(msg_id) == Status.TIMEOUT


def test_server_exception_keeps_the_connection(start_daemon, token):
    server = start_daemon("--set", "server.handlers=tests.handlers:register")
    with sketch(server.port, token("dev")) as peer:
        msg_id = peer.send_json(Command.JSON_MESSAGE, {"targetId": "server",
                                                       "payload": {"command": "explode"}})
        assert peer.answer_to(msg_id) == Status.SERVER_EXCEPTION
        assert peer.request(Command.PING) == Status.SUCCESS
        # A plugin command that works.
        msg_id = peer.send_json(Command.JSON_MESSAGE, {"targetId": "server",
                                                       "payload": {"command": "echo", "v": 3}})
        assert peer.answer_to(msg_id) == Status.SUCCESS
        assert peer.message() == {"from": "server", "payload": {"command": "echo", "v": 3}}
    server.wait_for_log("explode")


def test_server_pings_a_silent_client_and_closes_it_at_the_idle_timeout(start_daemon, token):
    server = start_daemon("--idle-timeout", "1", "--set", "limits.client_heartbeat=0")
    with sketch(server.port, token("quiet")) as quiet, sketch(server.port, token("polite")) as polite:
        ping = polite.expect(lambda f: f.command == Command.PING, timeout=5)
        polite.sock.sendall(response(ping.msg_id))
        assert quiet.wait_closed(timeout=10)
        # polite answered, so it is still served after the timeout passed.
        ping = polite.expect(lambda f: f.command == Command.PING, timeout=5)
        polite.sock.sendall(response(ping.msg_id))
        assert polite.request(Command.PING) == Status.SUCCESS
    server.wait_for_log("silent for")


def test_redirect_command_from_a_token_granted_it(server, token):
    with Raw(server.port) as ops, sketch(server.port, token("mover")) as mover:
        admin = token("ops", "--role", "observer", "--grant", "redirect")
        assert ops.login_json(admin, "ops") == Status.SUCCESS
        msg_id = ops.send_json(Command.JSON_MESSAGE, {"targetId": "server", "payload": {
            "command": "redirect", "deviceId": "mover", "server": "127.0.0.1", "port": 9999}})
        assert ops.answer_to(msg_id) == Status.SUCCESS
        assert mover.message(Command.REDIRECT, ack=False) == {"server": "127.0.0.1", "port": 9999}
        assert mover.wait_closed()


def test_revoked_token_closes_live_sessions(server, token, tokens_file):
    from tests.daemon import hypertcp
    secret = token("doomed")
    with sketch(server.port, secret) as peer:
        result = hypertcp("token", "revoke", "doomed", "--tokens", str(tokens_file))
        assert result.returncode == 0, result.stderr
        assert peer.wait_closed()
    with Raw(server.port) as again:
        assert again.login(secret) == Status.INVALID_TOKEN


def test_new_token_works_without_restart(server, token):
    secret = token("newcomer")
    # The server re-reads the token file every token_reload seconds: poll.
    deadline = time.monotonic() + 10
    while True:
        with Raw(server.port) as peer:
            status = peer.login(secret)
        if status == Status.SUCCESS or time.monotonic() > deadline:
            break
    assert status == Status.SUCCESS


def test_client_redirect_frames_are_illegal(server, token):
    with sketch(server.port, token("dev")) as peer:
        assert peer.request(Command.REDIRECT, json.dumps({"server": "x", "port": 1}).encode()) \
            == Status.ILLEGAL_COMMAND


def test_response_frames_from_clients_are_never_answered(server, token):
    with sketch(server.port, token("dev")) as peer:
        peer.sock.sendall(encode(Command.RESPONSE, 77, b""))
        ping = peer.send(Command.PING)
        peer.expect(lambda f: f.command == Command.RESPONSE and f.msg_id == ping)
        assert not [f for f in peer.inbox if f.msg_id == 77]


def test_byte_at_a_time_and_a_thousand_frames_in_one_write(start_daemon, token):
    server = start_daemon("--rate-limit", "0")
    with Raw(server.port) as receiver, Raw(server.port) as sender:
        assert receiver.login(token("receiver"), proto=2) == Status.SUCCESS
        login = encode(Command.LOGIN, 1, token("sender").encode())
        message = encode(Command.JSON_MESSAGE, 2, json.dumps(
            {"targetId": "receiver", "payload": {"slow": True}}).encode())
        for byte in login + message:
            sender.sock.sendall(bytes([byte]))
        assert sender.answer_to(1) == Status.SUCCESS
        assert sender.answer_to(2) == Status.SUCCESS
        assert receiver.message() == {"from": "sender", "payload": {"slow": True}}

        frames = b"".join(encode(Command.JSON_MESSAGE, i, json.dumps(
            {"targetId": "receiver", "payload": {"n": i}}).encode()) for i in range(3, 1003))
        sender.sock.sendall(frames)
        assert [receiver.message()["payload"]["n"] for _ in range(1000)] == list(range(3, 1003))
        assert all(sender.answer_to(i) == Status.SUCCESS for i in range(3, 1003))


def test_whoami_tells_a_client_its_id(server, token):
    with sketch(server.port, token("meter-9")) as peer:
        peer.send_json(Command.JSON_MESSAGE, {"targetId": "server", "payload": {"command": "whoami"}})
        assert peer.message() == {"from": "server", "payload": {
            "command": "whoami", "deviceId": "meter-9", "role": "device"}}


def test_an_observer_gets_a_large_fleet_snapshot_without_being_dropped(start_daemon, token):
    # 800 deviceStatus events are ~100 KB: past the transport's 64 KB buffer
    # plus a 4 KB cap if sent in one go; paced by the observer, they all arrive.
    server = start_daemon("--set", "limits.max_outbound_buffer=4096", "--rate-limit", "0")
    fleet = token("fleet", "--role", "fleet")
    devices = []
    try:
        for i in range(800):
            peer = Raw(server.port)
            peer.send_json(Command.LOGIN, {"token": fleet, "device_id": f"d{i:03}"})
            devices.append(peer)
        for peer in devices:
            assert peer.answer_to(1) == Status.SUCCESS
        with Raw(server.port) as ops:
            assert ops.login_json(token("ops", "--role", "observer"), "ops") == Status.SUCCESS
            seen = {ops.message()["payload"]["deviceId"] for _ in range(800)}
            assert seen == {f"d{i:03}" for i in range(800)}
            assert ops.request(Command.PING) == Status.SUCCESS
    finally:
        for peer in devices:
            peer.close()


def test_a_narrowed_token_applies_to_live_sessions(server, token, tokens_file):
    with sketch(server.port, token("roamer")) as roamer, sketch(server.port, token("other")):
        msg_id = roamer.send_json(Command.JSON_MESSAGE, {"targetId": "other", "payload": {}})
        assert roamer.answer_to(msg_id) == Status.SUCCESS
        data = json.loads(tokens_file.read_text())
        for record in data["tokens"]:
            if record["name"] == "roamer":
                record["reach"] = ["server"]
        reloads = server.output.count("reloaded")
        tokens_file.write_text(json.dumps(data))
        server.wait_for(lambda: server.output.count("reloaded") > reloads, 10, "a reload")
        msg_id = roamer.send_json(Command.JSON_MESSAGE, {"targetId": "other", "payload": {}})
        assert roamer.answer_to(msg_id) == Status.NOT_ALLOWED
        assert roamer.request(Command.PING) == Status.SUCCESS, "still connected"


def test_a_vanished_token_file_keeps_the_tokens_in_force(server, token, tokens_file):
    secret = token("survivor")
    with sketch(server.port, secret) as peer:
        tokens_file.unlink()
        server.wait_for_log("has gone")
        assert peer.request(Command.PING) == Status.SUCCESS
        with Raw(server.port) as again:
            assert again.login(secret) == Status.SUCCESS
