"""
The real OpenSSH client against the manhole: keys, known_hosts, and a
console session read with deadlines.  Shared by the manhole and balancer tests.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from pathlib import Path

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


def known_hosts(tmp_path: Path, port: int, host_key: Path) -> Path:
    """A known_hosts file trusting only the host key the daemon made."""
    kind, blob = (Path(f"{host_key}.pub").read_text().split()[:2])
    path = tmp_path / "known_hosts"
    path.write_text(f"[127.0.0.1]:{port} {kind} {blob}\n")
    return path
