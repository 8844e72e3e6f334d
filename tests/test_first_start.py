"""
A newcomer's first run: twistd -n hypertcp in an empty directory, no config
file and no token file, then hypertcp listen and hypertcp send through it.
The only option given is --listen, so the test gets a port of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.daemon import Daemon

pytestmark = pytest.mark.integration


def test_fresh_start_creates_a_token_and_carries_a_message(tmp_path):
    daemon = Daemon(tmp_path).start()
    try:
        daemon.wait_for_log("log in with:")
        lines = daemon.output.splitlines()
        secret = lines[[i for i, l in enumerate(lines) if "log in with:" in l][0] + 1].strip()
        assert (tmp_path / "hypertcp-tokens.json").exists()
        assert secret not in (tmp_path / "hypertcp-tokens.json").read_text(), \
            "the token file keeps only hashes"

        env = dict(os.environ, HYPERTCP_TOKEN=secret)
        common = ["--port", str(daemon.port)]
        listener = subprocess.Popen(
            [sys.executable, "-m", "hypertcp.cli", "listen", *common, "--device-id", "lamp",
             "--count", "1", "--timeout", "30"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            # It says on stderr once it is logged in.
            assert "listening" in listener.stderr.readline()
            sent = subprocess.run(
                [sys.executable, "-m", "hypertcp.cli", "send", *common, "lamp", '{"switch": "on"}'],
                capture_output=True, text=True, env=env, timeout=30)
            assert sent.returncode == 0, sent.stderr
            out, _ = listener.communicate(timeout=30)
        finally:
            listener.kill()
        message = json.loads(out.strip().splitlines()[0])
        assert message["command"] == "message"
        assert message["payload"] == {"switch": "on"}
        assert message["from"].startswith("device_127.0.0.1_")
    finally:
        daemon.stop()
