"""
The ESP32 library (firmware/), built for the host and run as a device.

C{make -C firmware/host} compiles the library's host programs with
AddressSanitizer and UndefinedBehaviorSanitizer: C{device} (a sketch driven
by command-line options and stdin commands, printing one line per event),
the example sketch (Wi-Fi stubbed), the JSON scanner checks and the size
report.  The device runs against the real C{twistd hypertcp} for the
end-to-end behaviour, and against a small socket server written here with
L{hypertcp.protocol} for stream shapes the real server will not produce on
demand (oversize frames, single-byte segments, 100 frames at once, a server
that goes silent).

Every device process is checked when it ends: exit status 0 and nothing from
the sanitizers on stderr.  Waits are deadlines on the device's output lines
or on sockets, never sleeps.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import socket
import time
from typing import Optional

import pytest

from hypertcp.protocol import frames as wire
from hypertcp.client import Client
from hypertcp.protocol import challenge
from hypertcp.protocol.commands import Command, Status

from tests.firmware import RX_BUFFER, run_program, sanitizer_env


# -- a scripted server on a raw socket --------------------------------------

class Link:
    """The server's end of one device connection."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.decoder = wire.Decoder()
        self.pending: list[wire.Frame] = []

    def frame(self, timeout: float = 10) -> wire.Frame:
        deadline = time.monotonic() + timeout
        while not self.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no frame from the device in time")
            self.conn.settimeout(left)
            data = self.conn.recv(65536)
            if not data:
                raise AssertionError("the device closed the connection")
            for event in self.decoder.feed(data):
                assert isinstance(event, wire.Frame), event
                self.pending.append(event)
        return self.pending.pop(0)

    def login(self, token: str, device_id: Optional[str] = None) -> None:
        """Expect the library's LOGIN (JSON, protocol level 2, msg_id 1) and accept it."""
        f = self.frame()
        assert (f.command, f.msg_id) == (Command.LOGIN, 1)
        expected = {"token": token, "proto": 2, **({"device_id": device_id} if device_id else {})}
        assert json.loads(f.payload) == expected
        self.send(wire.response(f.msg_id, Status.SUCCESS, login=True))

    def send(self, data: bytes) -> None:
        self.conn.sendall(data)

    def closed_by_peer(self, timeout: float = 10) -> bool:
        """Whether the device closes its end in time (frames before that are decoded)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.conn.settimeout(left)
            try:
                data = self.conn.recv(65536)
            except ConnectionResetError:
                return True
            except socket.timeout:
                return False
            if not data:
                return True
            self.pending.extend(self.decoder.feed(data))

    def close(self) -> None:
        self.conn.close()


class ScriptedServer:
    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.links: list[Link] = []

    def accept(self, timeout: float = 10) -> Link:
        self.sock.settimeout(timeout)
        conn, _ = self.sock.accept()
        link = Link(conn)
        self.links.append(link)
        return link

    def close(self) -> None:
        for link in self.links:
            link.close()
        self.sock.close()


@pytest.fixture
def scripted():
    server = ScriptedServer()
    yield server
    server.close()


def delivery(command: int, msg_id: int, sender: str, payload: dict) -> bytes:
    body = json.dumps({"from": sender, "payload": payload}, separators=(",", ":")).encode()
    return wire.encode(command, msg_id, body)


def padded_delivery(msg_id: int, size: int) -> bytes:
    """A JSON_MESSAGE whose payload is exactly C{size} bytes of valid JSON."""
    empty = len(json.dumps({"from": "alice", "payload": {"pad": ""}}, separators=(",", ":")))
    body = json.dumps({"from": "alice", "payload": {"pad": "x" * (size - empty)}},
                      separators=(",", ":")).encode()
    assert len(body) == size
    return wire.encode(Command.JSON_MESSAGE, msg_id, body)


def challenge_proof(token: str, nonce: str, device_id: str = "") -> tuple[str, str]:
    """
    The reference for the challenge login's second LOGIN: the key id and the
    proof the device must send for C{nonce} (docs/protocol.rst).
    """
    key_id = hashlib.sha256(token.encode()).hexdigest()[:16]
    client_key = hmac.new(token.encode(), b"HyperTCP client key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    signature = hmac.new(stored_key, f"{nonce}:{device_id}".encode(), hashlib.sha256).digest()
    return key_id, bytes(a ^ b for a, b in zip(client_key, signature)).hex()


def printed(line: str) -> tuple[str, str, dict]:
    """Split a device 'message FROM JSON' line."""
    kind, sender, text = line.split(" ", 2)
    return kind, sender, json.loads(text)


# -- host programs ----------------------------------------------------------

def test_host_build_includes_the_example_sketch(build):
    # make built the example as the Arduino build does (the .ino as C++),
    # with warnings as errors; its presence is the proof that it compiles.
    assert (build / "example").is_file()
    assert os.access(build / "example", os.X_OK)


def test_json_scanner_checks_pass(build):
    result = run_program(build / "json_test")
    assert result.returncode == 0, result.stdout
    assert re.fullmatch(r"ok \d+\n", result.stdout), result.stdout


def test_memory_is_the_buffers_plus_a_small_fixed_part(build):
    result = run_program(build / "sizes")
    assert result.returncode == 0
    sizes = dict(line.split() for line in result.stdout.splitlines())
    sizes = {k: int(v) for k, v in sizes.items()}
    buffers = (sizes["rx_buffer"] + sizes["tx_buffer"] + sizes["token"] + sizes["device_id"]
               + sizes["hosts"])
    assert sizes["rx_buffer"] == RX_BUFFER + 1
    # Everything else the object holds (state, timers, the transport
    # reference, the vtable pointer) fits in 128 bytes.
    assert buffers <= sizes["protocol"] <= buffers + 128, sizes


# -- against a scripted server: stream shapes ----------------------------------

def test_frame_larger_than_the_buffer_is_skipped_byte_exactly(device, scripted):
    d = device("secret", scripted.port, "--trace-frames")
    link = scripted.accept()
    link.login("secret")
    d.expect("connected")

    # The oversize bodies are full of bytes that parse as frame headers, so
    # a reader that lost count would see phantom frames.
    phantom = wire.encode(Command.JSON_MESSAGE, 0x1E1E, b"")
    oversize = wire.encode(Command.JSON_MESSAGE, 8, (phantom * 300)[:RX_BUFFER + 1])
    huge = wire.encode(Command.BROADCAST, 9, (phantom * 2000)[:9000])
    link.send(padded_delivery(7, RX_BUFFER)   # exactly fits
              + oversize + huge
              + delivery(Command.JSON_MESSAGE, 10, "bob", {"after": True}))

    kind, sender, payload = printed(d.expect(r"message alice .*").group(0))
    assert len(payload["pad"]) > 900
    d.expect(f"oversize 30 8 {RX_BUFFER + 1}")
    d.expect("oversize 50 9 9000")
    assert printed(d.expect(r"message bob .*").group(0)) == ("message", "bob", {"after": True})
    # The device answered each frame in order: the fitting one and the last
    # with an empty RESPONSE, the two oversize ones with ILLEGAL_COMMAND_BODY.
    answers = [link.frame() for _ in range(4)]
    assert [(a.command, a.msg_id, a.payload) for a in answers] == [
        (Command.RESPONSE, 7, b""),
        (Command.RESPONSE, 8, bytes([Status.ILLEGAL_COMMAND_BODY])),
        (Command.RESPONSE, 9, bytes([Status.ILLEGAL_COMMAND_BODY])),
        (Command.RESPONSE, 10, b""),
    ]
    # No phantom frame was ever seen.
    assert not [line for line in d.history if line.startswith(f"frame 30 {0x1E1E} ")]
    assert "disconnected" not in d.history


def test_frame_split_into_single_bytes(device, scripted):
    d = device("secret", scripted.port, "--trace-reads")
    link = scripted.accept()
    link.login("secret")
    d.expect("connected")
    d.forget_unmatched()

    frame = delivery(Command.JSON_MESSAGE, 4321, "alice", {"text": "one byte at a time"})
    for i in range(len(frame)):
        link.send(frame[i:i + 1])
        # The device read exactly that byte before the next one is sent.
        assert d.next_line() == "read 1", f"byte {i}"
    assert printed(d.next_line()) == ("message", "alice", {"text": "one byte at a time"})
    ack = link.frame()
    assert (ack.command, ack.msg_id, ack.payload) == (Command.RESPONSE, 4321, b"")


def test_hundred_frames_in_one_segment(device, scripted):
    d = device("secret", scripted.port)
    link = scripted.accept()
    link.login("secret")
    d.expect("connected")

    frames = []
    expected_lines = []
    for n in range(100):
        msg_id = 1000 + n
        if n % 10 == 9:
            frames.append(wire.encode(Command.PING, msg_id))
        elif n % 3 == 0:
            frames.append(delivery(Command.BROADCAST, msg_id, "carol", {"n": n}))
            expected_lines.append(("broadcast", "carol", {"n": n}))
        else:
            frames.append(delivery(Command.JSON_MESSAGE, msg_id, "alice", {"n": n}))
            expected_lines.append(("message", "alice", {"n": n}))
    link.send(b"".join(frames))  # one sendall; loopback carries it as one segment

    got = [printed(d.expect(r"(message|broadcast) .*").group(0)) for _ in expected_lines]
    assert got == expected_lines
    answers = [link.frame() for _ in range(100)]
    assert [(a.command, a.msg_id, a.payload) for a in answers] == [
        (Command.RESPONSE, 1000 + n, b"") for n in range(100)]


def test_malformed_frames_get_a_status_and_the_link_lives(device, scripted):
    d = device("secret", scripted.port)
    link = scripted.accept()
    link.login("secret")
    d.expect("connected")

    link.send(wire.encode(Command.JSON_MESSAGE, 21, b'{"from":"x"}')             # no payload
              + wire.encode(Command.JSON_MESSAGE, 22, b"not json at all")
              + wire.encode(Command.BROADCAST, 23, b'{"from":"x","payload":[1]}')  # not an object
              + wire.encode(Command.JSON_MESSAGE, 24, b'{"from":"x","payload":{}')  # truncated
              + wire.encode(77, 25, b"")                                            # unknown command
              + wire.encode(Command.REDIRECT, 26, b'{"server":"h"}')               # no port: ignored
              + delivery(Command.JSON_MESSAGE, 27, "alice", {"ok": 1}))
    assert printed(d.expect(r"message .*").group(0)) == ("message", "alice", {"ok": 1})
    answers = [link.frame() for _ in range(6)]
    assert [(a.command, a.msg_id, a.payload) for a in answers] == [
        (Command.RESPONSE, 21, bytes([Status.ILLEGAL_COMMAND_BODY])),
        (Command.RESPONSE, 22, bytes([Status.ILLEGAL_COMMAND_BODY])),
        (Command.RESPONSE, 23, bytes([Status.ILLEGAL_COMMAND_BODY])),
        (Command.RESPONSE, 24, bytes([Status.ILLEGAL_COMMAND_BODY])),
        (Command.RESPONSE, 25, bytes([Status.ILLEGAL_COMMAND])),
        (Command.RESPONSE, 27, b""),
    ]
    assert "disconnected" not in d.history and not any(l.startswith("redirect") for l in d.history)


def test_silent_server_is_dropped_and_the_device_logs_in_again(device, scripted):
    # millis() starts 300 ms before its 32-bit wrap, so the heartbeat and
    # timeout arithmetic runs across the wrap.
    d = device("secret", scripted.port, "--heartbeat", "200", "--timeout", "600",
               "--backoff", "50:100", env=sanitizer_env(HOST_MILLIS_START=str(2**32 - 300)))
    first = scripted.accept()
    first.login("secret")
    d.expect("connected")
    # The device's own heartbeat: a PING with a fresh msg_id, never answered.
    ping = first.frame(timeout=5)
    assert (ping.command, ping.payload) == (Command.PING, b"")
    assert ping.msg_id != 0
    started = time.monotonic()
    d.expect("disconnected", timeout=5)
    assert first.closed_by_peer()
    # Until it gave up it only pinged (every 200 ms of silence).
    assert {f.command for f in first.pending} <= {Command.PING}
    # It comes back on its own, with the same token.
    second = scripted.accept(timeout=5)
    second.login("secret")
    d.expect("connected")
    assert d.count("connected") == 2
    assert time.monotonic() - started < 5


def test_msg_id_wraps_from_65535_to_1_and_is_never_0(device, scripted):
    d = device("secret", scripted.port)
    link = scripted.accept()
    link.login("secret")
    d.expect("connected")

    count = 65536
    d.command(f'flood {count} bob {{"n":1}}')
    ids = []
    while len(ids) < count:
        f = link.frame(timeout=30)
        assert f.command == Command.JSON_MESSAGE
        ids.append(f.msg_id)
    d.expect(f"flooded {count}", timeout=30)
    # LOGIN took 1; messages run 2..65535, then wrap to 1, skipping 0.
    assert ids == list(range(2, 65536)) + [1, 2]


@pytest.mark.parametrize("device_id", [None, "esp32-kitchen"])
def test_challenge_login_sends_the_proof_not_the_token(device, scripted, device_id):
    token = "s3cret-token"
    options = ("--challenge",) + (("--device-id", device_id) if device_id else ())
    d = device(token, scripted.port, *options)
    link = scripted.accept()
    ask = link.frame()
    assert (ask.command, ask.msg_id) == (Command.LOGIN, 1)
    assert json.loads(ask.payload) == {"proto": 2, "challenge": True}
    nonce = secrets.token_hex(32)
    link.send(wire.encode(Command.LOGIN, ask.msg_id, json.dumps({"nonce": nonce}).encode()))
    answer = link.frame()
    key_id, proof = challenge_proof(token, nonce, device_id or "")
    assert answer.command == Command.LOGIN and answer.msg_id != 0
    assert json.loads(answer.payload) == {"proto": 2, "key": key_id, "proof": proof,
                                          **({"device_id": device_id} if device_id else {})}
    assert token.encode() not in ask.payload + answer.payload
    link.send(wire.response(answer.msg_id, Status.SUCCESS, login=True))
    d.expect("connected")


@pytest.mark.parametrize("device_id", [None, "esp32-kitchen", "caf\u00e9"])
def test_the_reference_proof_is_the_one_the_server_checks(device_id):
    # The server's side of the construction (hypertcp.protocol.challenge)
    # accepts what the reference above, and so the device, computes.
    token, nonce = "s3cret-token", challenge.new_nonce()
    key_id, proof = challenge_proof(token, nonce, device_id or "")
    assert key_id == challenge.key_id(token)
    assert challenge.verify(challenge.stored_key(token), nonce, device_id, proof)


def test_a_refused_proof_is_a_failed_login(device, scripted):
    d = device("s3cret-token", scripted.port, "--challenge", "--backoff", "50:100")
    link = scripted.accept()
    ask = link.frame()
    link.send(wire.encode(Command.LOGIN, ask.msg_id, json.dumps({"nonce": "0" * 64}).encode()))
    answer = link.frame()
    link.send(wire.response(answer.msg_id, Status.INVALID_TOKEN, login=True))
    d.expect(r"login-failed 9 \d+")
    assert link.closed_by_peer()
    assert "connected" not in d.history


def test_a_qos_1_message_asks_to_be_stored_and_hears_stored(device, scripted):
    d = device("secret", scripted.port)
    link = scripted.accept()
    link.login("secret")
    d.expect("connected")
    msg_id = d.send("sendq", "lamp", '{"switch":"on"}')
    f = link.frame()
    assert (f.command, f.msg_id) == (Command.JSON_MESSAGE, msg_id)
    assert json.loads(f.payload) == {"targetId": "lamp", "payload": {"switch": "on"}, "qos": 1}
    link.send(wire.response(msg_id, Status.STORED))
    d.expect(f"response {msg_id} 202")


# -- against the real server --------------------------------------------------

@pytest.fixture
def server(start_daemon):
    return start_daemon("--idle-timeout", "60")


def test_device_logs_in_and_talks_to_the_server_and_a_python_client(server, token, device):
    device_token = token("esp32-1")
    app_token = token("app")
    d = device(device_token, server.port)
    d.expect("connect 1")
    d.expect("connected")

    # To the server: ping -> pong.
    msg_id = d.send("server", '{"command":"ping","timestamp":1234}')
    d.expect(f"response {msg_id} 200")
    assert printed(d.expect(r"message server .*").group(0)) == (
        "message", "server", {"command": "pong", "timestamp": 1234})

    with Client("127.0.0.1", server.port, token=app_token) as app:
        # To a Python client.
        msg_id = d.send("send", "app", '{"temperature":25.6,"unit":"C"}')
        message = app.receive(timeout=10)
        assert message is not None
        assert (message.command, message.sender, message.payload) == (
            Command.JSON_MESSAGE, "esp32-1", {"temperature": 25.6, "unit": "C"})
        d.expect(f"response {msg_id} 200")

        # From the Python client, targeted; ack=True means the server only
        # answers SUCCESS once the device itself acknowledged the frame.
        assert app.send("esp32-1", {"command": "control", "action": "on"}, ack=True) == Status.SUCCESS
        assert printed(d.expect(r"message app .*").group(0)) == (
            "message", "app", {"command": "control", "action": "on"})

        # And a broadcast.
        assert app.broadcast({"notification": "maintenance", "minutes": 5}) == Status.SUCCESS
        assert printed(d.expect(r"broadcast app .*").group(0)) == (
            "broadcast", "app", {"notification": "maintenance", "minutes": 5})

        # The device's broadcast reaches the Python client.
        msg_id = d.send("broadcast", '{"hello":"all"}')
        message = app.receive(timeout=10)
        assert message is not None
        assert (message.command, message.sender, message.payload) == (
            Command.BROADCAST, "esp32-1", {"hello": "all"})
        d.expect(f"response {msg_id} 200")

        # A status other than success reaches onResponse.
        msg_id = d.send("send", "nobody-here", '{"x":1}')
        d.expect(f"response {msg_id} {int(Status.DEVICE_NOT_IN_NETWORK)}")


def test_device_answers_the_servers_pings(start_daemon, token, device):
    # The server pings a connection silent for 1 s and closes it at 2 s; the
    # device's own heartbeat (60 s) would be far too late.
    server = start_daemon("--idle-timeout", "2", "--set", "limits.client_heartbeat=0")
    d = device(token("esp32-1"), server.port, "--heartbeat", "60000", "--trace-frames")
    d.expect("connected")
    for _ in range(4):
        d.expect(r"frame 6 \d+ 0", timeout=5)
    # Each ping follows 1 s of silence, so four of them span more than the
    # 2 s idle timeout: the link held only because the device answered.
    assert "disconnected" not in d.history
    with Client("127.0.0.1", server.port, token=token("app")) as app:
        assert app.send("esp32-1", {"still": "here"}, ack=True) == Status.SUCCESS
    assert printed(d.expect(r"message app .*").group(0)) == ("message", "app", {"still": "here"})


def test_device_heartbeat_keeps_a_quiet_link_open(start_daemon, token, device):
    # The device pings every 300 ms of quiet, well inside the server's 1 s
    # ping threshold, so the server never needs to ping it.
    server = start_daemon("--idle-timeout", "2", "--set", "limits.client_heartbeat=0")
    d = device(token("esp32-1"), server.port, "--heartbeat", "300", "--trace-frames")
    d.expect("connected")
    for _ in range(8):  # eight answered heartbeats: over 2 s, past the idle timeout
        d.expect(r"frame 0 \d+ 0", timeout=5)
    assert not [line for line in d.history if line.startswith("frame 6 ")]
    assert "disconnected" not in d.history
    # The answers to the library's own PINGs are not handed to onResponse.
    assert not [line for line in d.history if line.startswith("response ")]


def test_device_reconnects_after_the_server_restarts(start_daemon, token, device):
    first = start_daemon("--idle-timeout", "60")
    port = first.port
    device_token, app_token = token("esp32-1"), token("app")
    d = device(device_token, port, "--backoff", "100:500")
    d.expect("connected")

    first.stop()
    d.expect("disconnected")
    second = start_daemon("--idle-timeout", "60", "--listen", f"tcp:{port}:interface=127.0.0.1")
    assert second.port == port
    d.expect("connected", timeout=15)

    with Client("127.0.0.1", port, token=app_token) as app:
        d.send("send", "app", '{"after":"restart"}')
        message = app.receive(timeout=10)
        assert message is not None
        assert (message.sender, message.payload) == ("esp32-1", {"after": "restart"})


def test_device_follows_a_redirect_to_a_second_server(start_daemon, token, device):
    home = start_daemon("--idle-timeout", "60")
    other = start_daemon("--idle-timeout", "60")
    d = device(token("esp32-1"), home.port)
    d.expect("connected")

    admin = token("ops", "--role", "observer", "--grant", "redirect")
    with Client("127.0.0.1", home.port, token=admin) as ops:
        assert ops.send_to_server({"command": "redirect", "deviceId": "esp32-1",
                                   "server": "127.0.0.1", "port": other.port}) == Status.SUCCESS
    d.expect(f"redirect 127.0.0.1 {other.port} 0")
    d.expect("disconnected")
    d.expect("connected")

    with Client("127.0.0.1", other.port, token=token("app")) as app:
        d.send("send", "app", '{"moved":true}')
        message = app.receive(timeout=10)
        assert message is not None
        assert (message.sender, message.payload) == ("esp32-1", {"moved": True})


def test_invalid_token_waits_the_longest_delay_before_trying_again(server, device):
    d = device("not-a-token", server.port, "--backoff", "50:1000")
    first = int(d.expect(r"login-failed 9 (\d+)").group(1))
    second = int(d.expect(r"login-failed 9 (\d+)", timeout=10).group(1))
    # Measured on the device's clock.  Another failure would retry after
    # 25..50 ms; a refused token waits the full maximum.
    assert second - first >= 995  # (less a few ms between setting the timer and printing)
    assert "connected" not in d.history


def test_a_fleet_token_logs_in_as_the_device_id_the_sketch_names(server, token, device):
    d = device(token("fleet", "--role", "fleet"), server.port, "--device-id", "esp32-kitchen")
    d.expect("connected")
    with Client("127.0.0.1", server.port, token=token("app")) as app:
        assert app.send("esp32-kitchen", {"switch": "on"}, ack=True) == Status.SUCCESS
        assert printed(d.expect(r"message app .*").group(0)) == ("message", "app", {"switch": "on"})


def test_the_library_learns_every_status_the_server_answers(start_daemon, token, device):
    # It logs in announcing protocol level 2, so the server sends it every
    # status byte (a raw-token login, as the original sketch's, gets empty
    # RESPONSEs after its login answer).
    server = start_daemon("--idle-timeout", "60", "--max-payload", "200", "--rate-limit", "10")
    d = device(token("esp32-1", "--reach", "app", "--reach", "nobody-here"), server.port)
    d.expect("connected")
    with Client("127.0.0.1", server.port, token=token("app")):
        for target, body, status in [
                ("nobody-here", '{"x":1}', Status.DEVICE_NOT_IN_NETWORK),
                ("elsewhere", '{"x":1}', Status.NOT_ALLOWED),
                ("app", '{"x":', Status.ILLEGAL_COMMAND_BODY),                      # not JSON
                ("app", json.dumps({"pad": "x" * 300}), Status.ILLEGAL_COMMAND_BODY)]:  # oversize
            msg_id = d.send("send", target, body)
            d.expect(f"response {msg_id} {int(status)}")
        d.command('flood 40 app {"n":1}')
        d.expect("flooded 40")
        d.expect(rf"response \d+ {int(Status.QUOTA_LIMIT)}")
    assert "disconnected" not in d.history


# -- against the real server: challenge login and stored delivery ----------------

def test_challenge_login_against_the_real_server(server, token, device):
    d = device(token("esp32-1"), server.port, "--challenge")
    d.expect("connected")
    with Client("127.0.0.1", server.port, token=token("app")) as app:
        d.send("send", "app", '{"via":"challenge"}')
        message = app.receive(timeout=10)
        assert message is not None
        assert (message.sender, message.payload) == ("esp32-1", {"via": "challenge"})
    wrong = device("not-a-token", server.port, "--challenge", "--backoff", "50:100")
    wrong.expect(r"login-failed 9 \d+")
    assert "connected" not in wrong.history


def test_a_qos_1_message_to_an_offline_device_is_stored_and_delivered_at_its_login(
        server, token, device):
    sender = device(token("esp32-1"), server.port)
    sender.expect("connected")
    lamp_token = token("lamp")
    msg_id = sender.send("sendq", "lamp", '{"switch":"on"}')
    sender.expect(f"response {msg_id} {int(Status.STORED)}")
    lamp = device(lamp_token, server.port)
    lamp.expect("connected")
    assert printed(lamp.expect(r"message esp32-1 .*").group(0)) == (
        "message", "esp32-1", {"switch": "on"})
