"""
Writes the seed corpus of the firmware's fuzz targets (fuzz_protocol.cpp
and fuzz_json.cpp describe their input formats): a few inputs that reach
each part of the receive state machine and of the JSON scanner, for the
fuzzer to mutate.  Run from anywhere; it rewrites protocol/ and json/ here.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESPONSE, PING, LOGIN, JSON_MESSAGE, REDIRECT, BROADCAST = 0, 6, 29, 30, 41, 50
CHALLENGE, DEVICE_ID, FAST_HEARTBEAT = 1, 2, 4
SEND = b"\x00"


def frame(command: int, msg_id: int, payload: bytes = b"") -> bytes:
    return struct.pack("!BHH", command, msg_id, len(payload)) + payload


def segment(data: bytes) -> bytes:
    """Ops that deliver `data`, in segments of at most 127 bytes."""
    return b"".join(bytes([len(data[i:i + 127])]) + data[i:i + 127] for i in range(0, len(data), 127))


def wait(ms: int) -> bytes:
    return bytes([128 + min(ms // 100, 127)])


def delivery(command: int, msg_id: int, sender: str, payload: dict) -> bytes:
    return frame(command, msg_id, json.dumps({"from": sender, "payload": payload}).encode())


LOGGED_IN = segment(frame(RESPONSE, 1, bytes([200])))

PROTOCOL = {
    "login-refused": bytes([0]) + segment(frame(RESPONSE, 1, bytes([9]))) + wait(2000),
    "messages": bytes([DEVICE_ID]) + LOGGED_IN + segment(
        delivery(JSON_MESSAGE, 7, "alice", {"switch": "on", "n": [1, 2, {"a": None}]})
        + delivery(BROADCAST, 8, "ops", {"notice": "at 5"}) + frame(PING, 9)) + SEND
        + segment(frame(RESPONSE, 2) + frame(RESPONSE, 3, bytes([7])) + frame(RESPONSE, 4, bytes([202]))),
    "split": bytes([0]) + LOGGED_IN + b"".join(
        segment(bytes([b])) for b in delivery(JSON_MESSAGE, 4321, "a\\u00e9", {"t": "slow"})),
    "oversize": bytes([0]) + LOGGED_IN + segment(frame(JSON_MESSAGE, 8, b"\x06\x06\x06\x00\x00" * 220)
                                                 + frame(JSON_MESSAGE, 9, b'{"from":"x","payload":{}}')),
    "malformed": bytes([0]) + LOGGED_IN + segment(
        frame(JSON_MESSAGE, 21, b'{"from":"x"}') + frame(JSON_MESSAGE, 22, b"not json")
        + frame(BROADCAST, 23, b'{"from":"x","payload":[1]}') + frame(77, 25)
        + frame(REDIRECT, 26, b'{"server":"h"}')),
    "redirect": bytes([0]) + LOGGED_IN + segment(
        frame(REDIRECT, 12, b'{"server":"node-2","port":9000,"tls":true}')) + segment(
        frame(RESPONSE, 1, bytes([200]))),
    "heartbeat": bytes([FAST_HEARTBEAT]) + LOGGED_IN + wait(1000) + segment(frame(RESPONSE, 2))
        + wait(1600) + wait(1000),
    "challenge": bytes([CHALLENGE | DEVICE_ID]) + segment(
        frame(LOGIN, 1, json.dumps({"nonce": "0123456789abcdef" * 4}).encode()))
        + segment(frame(RESPONSE, 2, bytes([200]))) + SEND,
}

JSON = {
    "delivery": b'{"from": "alice", "payload": {"a": [1, {"b": "}"}], "c": null}}',
    "escapes": b'{"from":"a\\u00e9\\"\\ud83d\\ude00z","payload":{},"port":8080}\x00port',
    "nested": b'{"payload":' + b"[" * 31 + b"]" * 31 + b"}",
    "redirect": b'{"server":"node-2","port":65535,"tls":true}\x00server',
}


def main() -> None:
    for folder, seeds in (("protocol", PROTOCOL), ("json", JSON)):
        out = HERE / folder
        out.mkdir(exist_ok=True)
        for old in out.iterdir():
            old.unlink()
        for name, data in seeds.items():
            (out / name).write_bytes(data)


if __name__ == "__main__":
    main()
