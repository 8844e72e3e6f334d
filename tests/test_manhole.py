"""
The SSH manhole, driven with the real OpenSSH client: an operator logs in
with a key, lists sessions, kicks, sends, broadcasts, redirects and manages
tokens; a key that is not authorized is refused; the host key survives a
restart.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
import pytest

from hypertcp.protocol.commands import Command, Status
from tests.raw import Raw
from tests.ssh import Console, fingerprint, keygen, known_hosts, ssh_command

pytestmark = pytest.mark.integration


def test_the_openssh_client_is_installed() -> None:
    # README's test command installs it; its absence is a failure, not a skip.
    assert shutil.which("ssh") and shutil.which("ssh-keygen"), \
        "the OpenSSH client is not installed (apt-get install openssh-client)"


@pytest.fixture
def operator(tmp_path: Path):
    """The operator's key, the authorized_keys holding it, and the manhole's options."""
    key = keygen(tmp_path / "operator")
    authorized = tmp_path / "authorized_keys"
    shutil.copy(f"{key}.pub", authorized)
    host_key = tmp_path / "host_key"
    args = ("--manhole", "tcp:0:interface=127.0.0.1",
            "--set", f"manhole.authorized_keys={authorized}",
            "--set", f"manhole.host_key={host_key}")
    return key, host_key, args


def logged_in(port: int, token: str, device_id: str) -> Raw:
    raw = Raw(port)
    assert raw.login_json(token, device_id) == Status.SUCCESS
    return raw


def test_an_operator_lists_kicks_sends_and_broadcasts(start_daemon, token, operator,
                                                      tmp_path: Path) -> None:
    key, host_key, args = operator
    daemon = start_daemon(*args, expect=("tcp", "manhole"))
    assert oct(host_key.stat().st_mode & 0o777) == "0o600"
    fleet = token("fleet", "--role", "fleet")
    a, b, c = (logged_in(daemon.port, fleet, name) for name in ("dev-a", "dev-b", "dev-c"))
    assert a.request(Command.PING) == Status.SUCCESS

    console = Console(daemon.ports["manhole"], key, known_hosts(tmp_path, daemon.ports["manhole"],
                                                                host_key))
    try:
        listing = console.run("sessions()")
        rows = {line.split()[0]: line.split() for line in listing.splitlines() if line.strip()}
        assert {"dev-a", "dev-b", "dev-c"} <= set(rows), listing
        assert rows["dev-a"][2] == "fleet:fleet"
        assert int(rows["dev-a"][-3]) >= 2, "LOGIN and PING counted in"
        assert "3 connections, 3 devices online" in listing
        daemon.wait_for_log(f"manhole: operator logged in with key {fingerprint(key)}")

        assert console.run('print("kicked", kick("dev-a"))').strip() == "kicked 1"
        assert a.wait_closed(), "a kicked device sees its connection close"

        assert console.run('print("sent", send("dev-b", {"led": "on"}))').strip() == "sent SUCCESS"
        assert b.message() == {"from": "server", "payload": {"led": "on"}}

        assert console.run('print("reached", broadcast({"notice": "maintenance"}))').strip() \
            == "reached 2"
        for raw in (b, c):
            assert raw.message(Command.BROADCAST) == {"from": "server",
                                                      "payload": {"notice": "maintenance"}}

        moved = console.run(f'print("moved", redirect("dev-c", "127.0.0.1", {daemon.port}))')
        assert moved.strip() == "moved 1"
        frame = c.expect(lambda f: f.command == Command.REDIRECT)
        assert json.loads(frame.payload) == {"server": "127.0.0.1", "port": daemon.port}

        counters = console.run("print(counters())")
        assert "'connections'" in counters and "'received_per_s'" in counters

        secret = console.run('print("secret", add_token("dev-z"))').split()[-1]
        z = logged_in(daemon.port, secret, "dev-z")
        assert console.run('print("revoked", revoke_token("dev-z"))').strip() == "revoked 1"
        assert z.wait_closed(), "revoking a token closes its sessions at once"

        assert "kick(device_id)" in console.run("helpers()")
    finally:
        console.close()
        for raw in (a, b, c):
            raw.close()


def test_a_key_not_in_authorized_keys_is_refused(start_daemon, operator, tmp_path: Path) -> None:
    _, host_key, args = operator
    daemon = start_daemon(*args, expect=("tcp", "manhole"))
    stranger = keygen(tmp_path / "stranger")
    port = daemon.ports["manhole"]
    result = subprocess.run(ssh_command(port, stranger, known_hosts(tmp_path, port, host_key)),
                            input=b"print(1)\r", capture_output=True, timeout=30)
    assert result.returncode == 255
    assert b"Permission denied (publickey)" in result.stderr
    daemon.wait_for_log(f"manhole: refused key {fingerprint(stranger)} for operator")


def test_the_host_key_is_kept_across_restarts(start_daemon, operator, tmp_path: Path) -> None:
    key, host_key, args = operator
    first = start_daemon(*args, expect=("tcp", "manhole"))
    made = host_key.read_bytes()
    first.stop()
    second = start_daemon(*args, expect=("tcp", "manhole"))
    assert host_key.read_bytes() == made
    port = second.ports["manhole"]
    # StrictHostKeyChecking: ssh accepts the server only with the key made the first time.
    console = Console(port, key, known_hosts(tmp_path, port, host_key))
    try:
        assert console.run("print(6 * 7)").strip() == "42"
    finally:
        console.close()


def test_there_is_no_manhole_unless_configured(start_daemon) -> None:
    daemon = start_daemon()
    assert "manhole" not in daemon.ports
    assert "twisted.conch" not in daemon.output
