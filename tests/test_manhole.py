"""
The SSH manhole, driven with the real OpenSSH client: an operator logs in
with a key, lists sessions, kicks, sends, broadcasts, redirects and manages
tokens; a key that is not authorized is refused; the host key survives a
restart.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
import pytest

from hypertcp.wire import Command, Status
from tests.raw import Raw

pytestmark = pytest.mark.skipif(shutil.which("ssh") is None or shutil.which("ssh-keygen") is None,
                                reason="OpenSSH client not installed (apt-get install openssh-client)")

# Terminal control sequences the manhole draws its prompt and colours with.
ESCAPES = re.compile(r"\x1b(\[[0-9;?]*[A-Za-z]|.)")


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
                   check=True)
    return path


def fingerprint(key: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-l", "-f", f"{key}.pub"], check=True,
                         capture_output=True, text=True).stdout
    return out.split()[1]


def ssh_command(port: int, key: Path, known_hosts: Path) -> list[str]:
    return ["ssh", "-tt", "-F", "/dev/null", "-p", str(port), "-i", str(key),
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
            "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "operator@127.0.0.1"]


class Console:
    """An interactive ssh session to the manhole, fed through a pipe."""

    def __init__(self, port: int, key: Path, known_hosts: Path) -> None:
        self.proc = subprocess.Popen(ssh_command(port, key, known_hosts), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._raw = b""
        self._changed = threading.Condition()
        self._runs = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout
        while True:
            data = self.proc.stdout.read1(65536)
            with self._changed:
                self._raw += data
                self._changed.notify_all()
            if not data:
                return

    @property
    def text(self) -> str:
        with self._changed:
            return ESCAPES.sub("", self._raw.decode("utf-8", "replace")).replace("\r", "")

    def type(self, line: str) -> None:
        assert self.proc.stdin
        self.proc.stdin.write(line.encode() + b"\r")
        self.proc.stdin.flush()

    def run(self, code: str, timeout: float = 15) -> str:
        """
        Type C{code} and return what it printed.  Markers are printed around
        it as sums of strings, so the echo of the typed line never matches
        them.
        """
        self._runs += 1
        begin, end = f"BEGIN{self._runs}", f"END{self._runs}"
        self.type(f'print("BEGIN" + "{self._runs}")')
        self.type(code)
        self.type(f'print("END" + "{self._runs}")')
        deadline = time.monotonic() + timeout
        with self._changed:
            while f"\n{end}\n" not in self.text:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(f"no answer to {code!r}; the console shows:\n{self.text}")
                self._changed.wait(min(left, 0.2))
            text = self.text
        printed = text[text.index(f"\n{begin}\n") + len(begin) + 2:text.index(f"\n{end}\n")]
        # What remains of the echo are the lines that start with the prompt.
        return "\n".join(line for line in printed.splitlines() if not line.startswith(">>>"))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.type("\x04")  # ^D: the manhole logs out
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


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


def known_hosts(tmp_path: Path, port: int, host_key: Path) -> Path:
    """A known_hosts file trusting only the host key the daemon made."""
    kind, blob = (Path(f"{host_key}.pub").read_text().split()[:2])
    path = tmp_path / "known_hosts"
    path.write_text(f"[127.0.0.1]:{port} {kind} {blob}\n")
    return path


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
