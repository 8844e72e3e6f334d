"""
The codec is chosen in one place (hypertcp.protocol.jsoncodec): with
HYPERTCP_JSON=ujson -- the codec of platforms without orjson wheels -- the
server's own parse-and-relay path still refuses what is not JSON.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.integration
def test_HYPERTCP_JSON_chooses_ujson_and_the_server_still_refuses_nan():
    # The server's parse and relay path, in a process whose codec is ujson.
    script = """
from hypertcp.protocol import bodies, jsoncodec
from hypertcp.protocol.commands import Command
assert jsoncodec.name == "ujson", jsoncodec.name
send = bodies.parse_send(Command.JSON_MESSAGE, b'{"targetId": "x", "payload": {"t": NaN}}')
try:
    bodies.delivery_body("y", send.payload)
except jsoncodec.JSONEncodeError:
    print("refused")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=dict(os.environ, HYPERTCP_JSON="ujson"), timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "refused\n"
